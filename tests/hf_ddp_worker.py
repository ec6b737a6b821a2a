"""Run LSAPTrainer for a few steps (under torchrun or alone) and dump its logs and weights.

python -m torch.distributed.run --nproc_per_node=2 tests/hf_ddp_worker.py OUT BASE_DIR DATA SURROGATE PER_DEVICE
"""

import json
import os
import sys

import torch
import transformers

from lsap.integrations.transformers import LSAPTrainer, WindowDataset


def main(out, base_dir, data, surrogate, per_device):
    model = transformers.AutoModelForCausalLM.from_pretrained(base_dir)
    tok = transformers.AutoTokenizer.from_pretrained(base_dir)
    args = transformers.TrainingArguments(
        output_dir=out,
        per_device_train_batch_size=int(per_device),
        gradient_accumulation_steps=1,
        max_steps=2,
        learning_rate=4e-4,
        lr_scheduler_type="constant",
        weight_decay=0.0,
        adam_beta2=0.95,
        max_grad_norm=1.0,
        logging_steps=1,
        save_strategy="no",
        report_to="none",
        use_cpu=True,
        seed=0,
        ddp_backend="gloo" if int(os.environ.get("WORLD_SIZE", "1")) > 1 else None,
        dataloader_num_workers=0,
        disable_tqdm=True,
    )
    tr = LSAPTrainer(
        model=model,
        args=args,
        train_dataset=WindowDataset(data, 32),
        processing_class=tok,
        data_collator=transformers.default_data_collator,
        surrogate=surrogate,
        k=4,
        alpha=0.02,
    )
    tr.train()
    if tr.is_world_process_zero():
        logs = [r for r in tr.state.log_history if "loss" in r]
        torch.save(
            {k: v.detach().clone() for k, v in model.state_dict().items()}, f"{out}/weights.pt"
        )
        with open(f"{out}/logs.json", "w") as f:
            json.dump(logs, f)


if __name__ == "__main__":
    main(*sys.argv[1:])
