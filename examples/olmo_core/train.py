"""The paper's runs in OLMo-core: OLMo2-1B from scratch, CE or LSAP, at 2.3165e20 FLOPs.

One lsap run config (configs/paper-*.yaml: model, data, surrogate, lsap, optim, train)
drives OLMo-core's Trainer; nothing is re-stated here. Launch with torchrun:

    # 1 node x 8 GPUs
    torchrun --nproc_per_node=8 examples/olmo_core/train.py --config configs/paper-lsap-a0.05.yaml
    # N nodes x 8 GPUs (run on every node; NODE_RANK = 0..N-1, MASTER = node 0's address)
    torchrun --nnodes=$N --node_rank=$NODE_RANK --nproc_per_node=8 --rdzv-backend=c10d \
        --rdzv-endpoint=$MASTER:29400 --rdzv-id=lsap-a0.05 \
        examples/olmo_core/train.py --config configs/paper-lsap-a0.05.yaml
    # then: every checkpoint to HF in lsap's run layout, read by `lsap eval` / `lsap report` / lm-eval
    python examples/olmo_core/train.py --config configs/paper-lsap-a0.05.yaml --export

`key=value` overrides work as in `lsap train` (e.g. `train.max_steps=100 surrogate.source=store
surrogate.store_dir=stores/qwen3`). Data: `data.dir` is an `lsap prepare` directory (its
train shards, in order — the OLMo-core instance index is then a store's window id), or
`--paths 'glob'` for token files written by `dolma tokens` (with `--dtype uint32` for
dolma2's 100k vocabulary and `--tokenizer dolma2`). A store must be built with
`--window-layout olmo` over the same files. `--tiny`: a 2-layer d=64 model on CPU
(tests/test_olmo_core_example.py runs it).

What maps to what: optim.lr / betas / weight_decay → AdamW; warmup_steps + min_lr_ratio →
CosWithWarmup; grad_clip → max_grad_norm; train.batch_size (sequences) → the global batch;
micro_batch_size → rank_microbatch_size; max_flops / max_tokens / max_steps → steps by
`lsap.method.flops.plan_steps` (6·N_b + the surrogate's 2·N_s per token); ckpt_every → DCP
checkpoints in out_dir; train.distributed=fsdp → FSDP2 (bf16 params, fp32 reduce on GPU);
train.loggers wandb → OLMo-core's W&B callback; lsap.* → `LSAPTrainModule` (aux_weighting
included). Weight decay as `lsap train`: none on parameters with dim < 2 (norms).
Printed at start-up: global batch tokens = micro-batch × seq × ranks × grad-accum (the
paper's 524K-token batch at seq 1024 is 512 sequences: micro-batch ≤ 8 at 64 GPUs).
--compile: OLMo-core's compile_model; --tf32: TF32 matmuls (the fp32 surrogate head too);
--hsdp [--shard-degree G]: shard within G ranks (default a node), replicate across nodes.
Before any work the data files, tokenizer, model.vocab_size and store are checked against each
other; a mismatch is one line on stderr and exit 2 (LSAP_DEBUG=1: the traceback).
"""

from __future__ import annotations

import argparse
import glob
import json
import logging
import os
import sys
from pathlib import Path

import torch

# OLMo-core logs at import that NVIDIA's optional transformer_engine is absent (it then uses
# its own attention): a stray line before every refusal on machines without it, so only its
# errors are shown.
logging.getLogger("olmo_core.nn.attention.te_attn_api").setLevel(logging.ERROR)


class Refusal(Exception):
    """A run this example will not start: one line on stderr, exit 2, no traceback."""


def refuse(msg: str):
    raise Refusal(msg)


def model_config(preset: str, vocab_size: int):
    from olmo_core.nn.transformer import TransformerBlockType, TransformerConfig

    if preset == "tiny":
        return TransformerConfig.llama_like(d_model=64, vocab_size=vocab_size, n_layers=2, n_heads=4,
                                            block_name=TransformerBlockType.reordered_norm, qk_norm=True,
                                            layer_norm_eps=1e-6, hidden_size_multiple_of=64)
    if preset == "olmo2-1b":
        # 16 layers, d 2048, MLP 8192: allenai/OLMo-2-0425-1B, N_b = 1.485e9 (OLMo-core's
        # `olmo2_1B` has 18 layers; `_v2` is the released 1B).
        return TransformerConfig.olmo2_1B_v2(vocab_size=vocab_size)
    refuse(f"model.preset {preset!r}: this example knows olmo2-1b (the paper) and --tiny")


def no_decay_overrides(model) -> list:
    """`lsap train`'s weight-decay rule (`lsap.train.optim.decays`) as OLMo-core group
    overrides: parameters with dim < 2 (every norm's weight, any bias) get weight_decay 0;
    matrices (embeddings and the head included, as in `lsap train`) keep optim.weight_decay."""
    from olmo_core.optim import OptimGroupOverride

    from lsap.train.optim import decays

    names = [n for n, p in model.named_parameters() if not decays(p)]
    return [OptimGroupOverride(params=names, opts={"weight_decay": 0.0})] if names else []


def batch_arithmetic(batch_size: int, micro_batch_size: int, seq_len: int, ranks: int) -> dict:
    """Global batch tokens = micro-batch × seq × ranks × grad-accum. batch_size and
    micro_batch_size are sequences (global, per rank). Refuses a batch that does not
    split evenly: e.g. the paper's 512 × 1024 = 524K tokens at 64 GPUs leaves 8 sequences
    per rank, so micro_batch_size must divide 8 (≤ 8)."""
    per_rank, rem = divmod(batch_size, ranks)
    if rem or per_rank == 0:
        refuse(f"train.batch_size={batch_size} sequences does not split over {ranks} ranks; "
                         f"use a multiple of {ranks}")
    if micro_batch_size > per_rank or per_rank % micro_batch_size:
        refuse(f"train.micro_batch_size={micro_batch_size} must divide the {per_rank} sequences per "
                         f"rank (batch_size {batch_size} / {ranks} ranks); set it to a divisor of {per_rank}")
    accum = per_rank // micro_batch_size
    tokens = micro_batch_size * seq_len * ranks * accum
    assert tokens == batch_size * seq_len
    return {"micro_batch": micro_batch_size, "seq_len": seq_len, "ranks": ranks, "grad_accum": accum,
            "global_batch_tokens": tokens,
            "text": f"global batch {tokens:,} tokens = micro-batch {micro_batch_size} x seq {seq_len} x "
                    f"{ranks} ranks x grad-accum {accum}"}


def data_paths(cfg, args) -> list[str]:
    if args.paths:
        paths = sorted(p for g in args.paths for p in glob.glob(g))
        if not paths:
            refuse(f"--paths {args.paths} matched no files")
        return paths
    try:
        from lsap.surrogate.store_build import olmo_paths  # the store's own rule, so instance index = window id
        return olmo_paths(cfg.data.dir)
    except ImportError:
        from lsap.data.shards import TokenShards

        sh = TokenShards(cfg.data.dir, "train")
        return [str(sh.dir / s["path"]) for s in sh.info["shards"]]


def check_inputs(cfg, args, tokenizer, vocab_size: int, paths: list[str], dtype: str | None) -> None:
    """Data files ↔ tokenizer ↔ model vocabulary ↔ store, before anything is built: a
    `Refusal` naming the fix (a wrong --dtype or tokenizer would otherwise train on garbage
    ids or fail deep inside OLMo-core)."""
    import numpy as np

    n_tok = len(tokenizer)
    if vocab_size < n_tok:
        refuse(f"model.vocab_size={vocab_size} is smaller than the tokenizer's {n_tok} ids; set "
               f"model.vocab_size >= {n_tok} (unset: {-(-n_tok // 128) * 128})")
    if dtype == "uint16" and n_tok > 1 << 16:
        refuse(f"the tokenizer has {n_tok} ids, more than uint16 holds: tokenize with "
               "`dolma tokens --dtype uint32` and pass --dtype uint32")
    if not args.paths:
        from lsap.data.shards import TokenShards

        shards = TokenShards(cfg.data.dir, "train")
        shards.check_tokenizer(tokenizer)  # DataError naming both tokenizers
        shards.check_vocab(vocab_size)
    itemsize = np.dtype(dtype or ("uint32" if vocab_size > 1 << 16 else "uint16")).itemsize
    for path in paths:
        size = os.path.getsize(path)
        if size % itemsize:
            refuse(f"{path}: {size} bytes is not a whole number of {itemsize}-byte tokens; "
                   "pass the --dtype the files were written with")
        head = np.memmap(path, dtype=f"uint{8 * itemsize}", mode="r", shape=(min(size // itemsize, 1 << 20),))
        top = int(head.max()) if len(head) else 0
        if top >= vocab_size:
            refuse(f"{path}: token id {top} >= model vocab {vocab_size}: these are not "
                   f"{dtype or 'uint' + str(8 * itemsize)} tokens of this tokenizer; pass the right "
                   "--dtype / --tokenizer (or model.vocab_size)")
    if cfg.loss == "lsap" and cfg.surrogate.source == "store" and args.paths:
        want = [os.path.realpath(p) for p in data_paths(cfg, argparse.Namespace(paths=None))]
        if [os.path.realpath(p) for p in paths] != want:
            refuse(f"--paths are not the files the store's data.dir ({cfg.data.dir}) lists, in order, so "
                   "instance indices would not be the store's window ids; drop --paths (data.dir's "
                   "files are used) or prepare data.dir from them (`lsap prepare --from-arrays`)")


def apply_precision(tf32: bool) -> None:
    """--tf32: TF32 matmuls and convolutions on Ampere+ GPUs (OLMo's recipes run with it;
    the fp32 surrogate head then runs in TF32 too). Off: PyTorch's default (strict fp32)."""
    torch.backends.cuda.matmul.allow_tf32 = tf32
    torch.backends.cudnn.allow_tf32 = tf32
    if tf32:
        torch.set_float32_matmul_precision("high")


def dp_config(kind: str, device, ranks: int, shard_degree: int | None):
    """FSDP2 / DDP / HSDP (--hsdp: shard within `shard_degree` ranks, a node by default,
    replicate across nodes; OLMo's multi-node recipe)."""
    from olmo_core.config import DType
    from olmo_core.distributed.parallel import DataParallelType
    from olmo_core.train.train_module import TransformerDataParallelConfig

    kw = {}
    if kind == "hsdp":
        shard = shard_degree or int(os.environ.get("LOCAL_WORLD_SIZE", ranks))
        if shard < 1 or ranks % shard:
            refuse(f"--shard-degree {shard} must divide the {ranks} ranks (HSDP replicas x shard degree)")
        kw = {"num_replicas": ranks // shard, "shard_degree": shard}
    return TransformerDataParallelConfig(
        name=getattr(DataParallelType, kind),
        param_dtype=DType.bfloat16 if device.type == "cuda" else None, reduce_dtype=DType.float32, **kw)


def token_dtype(cfg, args) -> str:
    if args.dtype:
        return args.dtype
    m = json.loads((Path(cfg.data.dir) / "manifest.json").read_text())
    return m.get("dtype", "uint16")


def target_source(cfg, tokenizer, vocab_size: int, device):
    """The run's TargetSource through lsap's one factory: online, or a store refused by name
    unless built for these shards, seq_len, surrogate, map and OLMo-core's window layout."""
    from lsap.surrogate.sources import build_target_source

    shards = None
    if cfg.loss == "lsap" and cfg.surrogate.source == "store":
        from lsap.data.shards import TokenShards

        shards = TokenShards(cfg.data.dir, "train")
    return build_target_source(cfg, tokenizer, vocab_size, shards, device=device, window_layout="olmo")


def export(cfg, args, vocab_size: int, source_fpt: float) -> list[Path]:
    """Every OLMo-core checkpoint `out_dir/stepN` (DCP) → `out_dir/checkpoints/step_XXXXXXXX/`
    in `lsap train`'s layout: `model/` (transformers Olmo2ForCausalLM + the base tokenizer),
    `config.yaml`, `meta.json` (step, tokens, FLOPs). `lsap eval out_dir` and `lsap report`
    then read an OLMo-core run like one of their own; lm-eval reads `model/` (`--model hf`)."""
    from olmo_core.distributed.checkpoint import load_model_and_optim_state
    from olmo_core.nn.hf.checkpoint import save_hf_model

    from lsap.train.checkpoint import save
    from lsap.method.flops import FlopsLedger
    from lsap.integrations.olmo_core import base_flops_per_token
    from lsap.data.tokenizer import load_tokenizer

    out = Path(cfg.out_dir)
    steps = sorted(out.glob("step[0-9]*"), key=lambda p: int(p.name[4:]))
    if not steps:
        refuse(f"{out}: no OLMo-core checkpoint (stepN/) to export")
    tokenizer = load_tokenizer(args.tokenizer or _data_tokenizer(cfg))
    (out / "config.yaml").write_text(cfg.to_yaml())
    written = []
    for d in steps:
        step = int(d.name[4:])
        model = model_config("tiny" if args.tiny else cfg.model.preset, vocab_size).build(init_device="cpu")
        load_model_and_optim_state(str(d / "model_and_optim"), model)
        tokens = step * cfg.train.batch_size * cfg.data.seq_len
        ledger = FlopsLedger(base_flops_per_token(model), source_fpt)
        ledger.add(tokens, tokens if source_fpt else 0)

        def write(tmp: Path, model=model):
            save_hf_model(tmp / "model", model.state_dict(), model, save_overwrite=True)
            # OLMo-core leaves max_position_embeddings = -1; lm-eval reads it as the context length
            hf_cfg = json.loads((tmp / "model" / "config.json").read_text())
            hf_cfg["max_position_embeddings"] = cfg.data.seq_len
            (tmp / "model" / "config.json").write_text(json.dumps(hf_cfg, indent=2))
            tokenizer.model_max_length = cfg.data.seq_len
            tokenizer.save_pretrained(tmp / "model")
            (tmp / "config.yaml").write_text(cfg.to_yaml())

        meta = {"step": step, "tokens": tokens, "flops_base": ledger.base_flops,
                "flops_surrogate": ledger.surrogate_flops, "flops": ledger.total, "source": str(d)}
        written.append(save(out, step, write, meta))
        print(f"exported {d} -> {written[-1]}")
    return written


def _data_tokenizer(cfg) -> str:
    return json.loads((Path(cfg.data.dir) / "manifest.json").read_text())["args"]["tokenizer"]


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--config", required=True, help="an lsap run config (configs/paper-*.yaml)")
    p.add_argument("overrides", nargs="*", help="key=value, as in `lsap train`")
    p.add_argument("--paths", nargs="*", help="token files (globs), e.g. `dolma tokens` output; default: data.dir")
    p.add_argument("--dtype", choices=["uint16", "uint32"], help="token dtype of --paths")
    p.add_argument("--tokenizer", help="base tokenizer spec (default: the one data.dir was prepared with)")
    p.add_argument("--tiny", action="store_true", help="2 layers, d=64 (CPU)")
    p.add_argument("--compile", action="store_true", help="torch.compile the model's blocks (OLMo-core's compile_model)")
    p.add_argument("--tf32", action="store_true", help="TF32 matmuls on GPU (surrogate head included)")
    p.add_argument("--hsdp", action="store_true", help="HSDP: shard within a node, replicate across nodes")
    p.add_argument("--shard-degree", type=int, help="ranks per HSDP shard group (default: LOCAL_WORLD_SIZE)")
    p.add_argument("--z-loss", type=float, default=0.0, help="z-loss multiplier (OLMo2's recipes: 1e-5); 0: off")
    p.add_argument("--export", action="store_true",
                   help="convert every checkpoint to HF in lsap's run layout (out_dir/checkpoints/) and exit")
    args = p.parse_args(argv)
    try:
        run(args)
    except Exception as e:  # noqa: BLE001 — only refusals and lsap's fixable errors become one line
        from lsap.utils.errors import LsapError

        if not isinstance(e, (Refusal, LsapError)) or os.environ.get("LSAP_DEBUG"):
            raise
        print(f"train.py: error: {str(e).splitlines()[0] if str(e) else type(e).__name__}", file=sys.stderr)
        raise SystemExit(2) from None


def run(args) -> None:

    from olmo_core.data import NumpyDataLoaderConfig, NumpyFSLDatasetConfig, TokenizerConfig
    from olmo_core.distributed.utils import get_rank, get_world_size, init_distributed, is_distributed
    from olmo_core.optim import AdamWConfig, CosWithWarmup
    from olmo_core.train import Duration, TrainerConfig
    from olmo_core.train.callbacks import CheckpointerCallback, ConfigSaverCallback, WandBCallback
    from olmo_core.utils import seed_all

    from lsap.config import load_config
    from lsap.integrations.olmo_core import LSAPTrainModule, plan
    from lsap.method.schedules import LambdaSchedule
    from lsap.data.tokenizer import load_tokenizer

    cfg = load_config(args.config, args.overrides)
    tok_spec = args.tokenizer or _data_tokenizer(cfg)
    tokenizer = load_tokenizer(tok_spec)
    vocab_size = cfg.model.vocab_size or -(-len(tokenizer) // 128) * 128
    paths = data_paths(cfg, args)
    dtype = token_dtype(cfg, args) if (args.dtype or not args.paths) else None
    check_inputs(cfg, args, tokenizer, vocab_size, paths, dtype)
    if args.export:
        fpt = 0.0
        if cfg.loss == "lsap":  # 2·N_s of the surrogate (or the store's), as charged in training
            fpt = target_source(cfg, tokenizer, vocab_size, torch.device("cpu")).flops_per_token
        export(cfg, args, vocab_size, fpt)
        return

    if "RANK" in os.environ and not is_distributed():
        init_distributed(backend="nccl" if torch.cuda.is_available() else "gloo")
    device = torch.device("cuda", torch.cuda.current_device()) if torch.cuda.is_available() else torch.device("cpu")
    apply_precision(args.tf32)
    seed_all(cfg.train.seed)
    T, tr, op, L = cfg.data.seq_len, cfg.train, cfg.optim, cfg.lsap

    ranks = get_world_size() if is_distributed() else 1
    batch = batch_arithmetic(tr.batch_size, tr.micro_batch_size, T, ranks)
    model = model_config("tiny" if args.tiny else cfg.model.preset, vocab_size).build(init_device="meta")
    source = target_source(cfg, tokenizer, vocab_size, device)
    budget = plan(model, tr.batch_size * T, source, max_steps=tr.max_steps, max_tokens=tr.max_tokens,
                  max_flops=tr.max_flops)
    lam = (LambdaSchedule("cosine", L.lam, L.lam_min, budget.total_steps) if L.lambda_schedule == "cosine"
           else LambdaSchedule("constant", L.lam))
    if args.hsdp and not is_distributed():
        refuse("--hsdp needs torchrun (several ranks)")
    dp = None
    if is_distributed():
        kind = "hsdp" if args.hsdp else ("fsdp" if tr.distributed == "fsdp" else "ddp")
        dp = dp_config(kind, device, ranks, args.shard_degree)
    module = LSAPTrainModule(
        model, AdamWConfig(lr=op.lr, betas=tuple(op.betas), eps=op.eps, weight_decay=op.weight_decay,
                           group_overrides=no_decay_overrides(model)),
        rank_microbatch_size=tr.micro_batch_size * T, max_sequence_length=T, targets=source, lam=lam,
        normalization=L.normalization, aux_weighting=L.aux_weighting, max_grad_norm=op.grad_clip or None, dp_config=dp, device=device,
        scheduler=CosWithWarmup(warmup=op.warmup_steps, alpha_f=op.min_lr_ratio),
        z_loss_multiplier=args.z_loss or None, compile_model=args.compile)
    tok = TokenizerConfig(vocab_size=vocab_size, eos_token_id=tokenizer.eos_token_id or 0,
                          pad_token_id=tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0)
    dataset = NumpyFSLDatasetConfig(paths=paths, sequence_length=T, tokenizer=tok, dtype=dtype,
                                    work_dir=os.path.join(cfg.out_dir, "dataset-cache")).build()
    loader = NumpyDataLoaderConfig(global_batch_size=tr.batch_size * T, seed=tr.seed, num_workers=4 if device.type
                                   == "cuda" else 0).build(dataset, dp_process_group=module.dp_process_group)
    callbacks = {"checkpointer": CheckpointerCallback(save_interval=tr.ckpt_every or budget.total_steps,
                                                      ephemeral_save_interval=None),
                 "config_saver": ConfigSaverCallback()}
    if "wandb" in tr.loggers:
        callbacks["wandb"] = WandBCallback(name=cfg.name, project=os.environ.get("WANDB_PROJECT", "lsap"))
    trainer = TrainerConfig(save_folder=cfg.out_dir, metrics_collect_interval=tr.log_every,
                            max_duration=Duration.steps(budget.total_steps), callbacks=callbacks,
                            device=device.type).build(module, loader)
    trainer.callbacks["config_saver"].config = cfg.to_dict()  # the lsap run config, in every checkpoint
    if get_rank() == 0:
        print(f"[lsap/olmo-core] {cfg.name}: {budget.total_steps} steps x {budget.tokens_per_step} tokens "
              f"({budget.limited_by}), {budget.flops_per_step:.4g} FLOPs/step, loss={cfg.loss}", file=sys.stderr)
        print(f"[lsap/olmo-core] {batch['text']}", file=sys.stderr)
    trainer.fit()


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "src"))
    main()
