"""Step time and peak memory of CE vs LSAP (online surrogate, or from a target store).

    python benchmarks/bench_train.py                       # CPU: small shapes, random surrogate
    python benchmarks/bench_train.py --base olmo2-1b --surrogate qwen3-0.6b --seq-len 4096 \
        --micro-batch 4 --device cuda --compile --modes ce lsap store \
        --store STORE --data SHARDS                         # GPU: the paper's shapes
    python benchmarks/bench_train.py --compile-ratio        # eager vs train.compile, same shapes

Both models are randomly initialised from presets (no weights, no network), so the
numbers measure the method's cost, not its quality. One optimizer step = forward +
backward + AdamW on `--micro-batch` sequences, set up as the trainer does (LossModule,
bf16 autocast on GPU, TF32, fused AdamW on CUDA / foreach elsewhere, optional
`train.compile` and activation checkpointing). Modes: `ce`; `lsap` adds the surrogate
forward (inference mode; body in bf16 on GPU, head in fp32), target selection and the
k auxiliary NLLs; `store` looks the targets up in a real `lsap store build` output
(`--store`, windows of `--data`; CPU-side decoding included in the step). The random
surrogate's logits are sharpened (×`--logit-scale`) so that α = 0.05 selects a
realistic number of targets (printed). Reports tokens/s, MFU (GPU, bf16 peak from
`lsap.method.flops`; model FLOPs incl. the surrogate's 2·N_s per token for both LSAP modes,
as the paper counts), peak memory.
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # for tests.helpers

MODES = ("ce", "lsap", "store")


def _kv(s):
    return {k: int(v) for k, v in (p.split("=") for p in s.split(",") if p)}


def build(args, compile_: bool):
    """Models, data and one `step(mode)` set up as the trainer would; the same seeds for
    every variant, so eager and compiled variants start from the same weights."""
    from tests.helpers import random_vmap

    from lsap import distributed
    from lsap.method.flops import FlopsLedger, peak_flops_for_device
    from lsap.method.targets import propose_targets
    from lsap.model import build_model, model_config
    from lsap.surrogate.load import freeze
    from lsap.train.loop import LossModule

    dev = torch.device(args.device)
    gpu = dev.type == "cuda"
    if gpu:
        distributed.enable_tf32()
    bcfg = model_config(args.base, vocab_size=args.base_vocab if args.base == "olmo2-tiny" else None,
                        **(_kv(args.base_overrides) if args.base == "olmo2-tiny" else {}))
    scfg = model_config(args.surrogate, vocab_size=args.surrogate_vocab if args.surrogate == "olmo2-tiny" else None,
                        **(_kv(args.surrogate_overrides) if args.surrogate == "olmo2-tiny" else {}))
    vb, vs = bcfg.vocab_size, scfg.vocab_size
    base = build_model(bcfg, device=dev)
    sur = None
    if "lsap" in args.modes:
        sur = freeze(build_model(scfg, device=dev, dtype=torch.bfloat16 if gpu else torch.float32, seed=1))
        with torch.no_grad():  # sharpen the random surrogate's outputs
            sur.get_output_embeddings().weight.mul_(args.logit_scale)
    vmap = random_vmap(vb, vs, int(0.95 * min(vb, vs)), seed=0).to(dev)
    module = LossModule(base, args.loss_impl, compile_loss=compile_)
    if args.activation_checkpointing:
        distributed.checkpoint_blocks(base.model.layers)
    if compile_:
        distributed.compile_blocks(base.model.layers)
    opt = torch.optim.AdamW(base.parameters(), lr=1e-4, fused=gpu, foreach=None if gpu else True)
    B, T = args.micro_batch, args.seq_len
    store = shards = None
    if "store" in args.modes:
        from lsap.data.shards import TokenShards
        from lsap.surrogate.store import TargetStore

        store, shards = TargetStore(args.store), TokenShards(args.data, "train")
        if store.seq_len != T:
            raise SystemExit(f"--store holds windows of {store.seq_len} tokens, --seq-len is {T}")
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, vb, (B, T + 1), generator=g).to(dev)
    state = {"window": 0}

    def batch(mode):
        if mode != "store":
            return x[:, :-1], x[:, 1:], None
        w = [(state["window"] + i) % store.n_windows for i in range(B)]
        state["window"] += B
        rows = torch.stack([torch.from_numpy(shards.tokens(j * T, T + 1).astype("int64")) for j in w]).to(dev)
        return rows[:, :-1], rows[:, 1:], w

    def step(mode):
        inp, lab, windows = batch(mode)
        ids = mask = None
        if mode == "lsap":
            ids, mask, _ = propose_targets(sur, inp, lab, vmap, args.k, args.alpha)
        elif mode == "store":
            ids, mask, _ = store.lookup(windows, args.k, args.alpha, device=dev)
        with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=gpu):
            loss, *_ = module(inp, lab, ids, mask, None, 0.0 if mode == "ce" else 1.0)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        return mask

    dev_name = torch.cuda.get_device_name(dev) if gpu else f"CPU {platform.machine()}, {torch.get_num_threads()} threads"
    header = (f"# bench_train {time.strftime('%Y-%m-%d')} | {dev_name} | torch {torch.__version__} | "
              f"base {args.base} ({sum(p.numel() for p in base.parameters()) / 1e6:.1f}M, V={vb}) | "
              f"surrogate {args.surrogate} ({sum(p.numel() for p in sur.parameters()) / 1e6 if sur else 0:.1f}M, "
              f"V={vs}) | B={B} T={T} k={args.k} α={args.alpha} loss_impl={args.loss_impl} compile={compile_} "
              f"activation_checkpointing={args.activation_checkpointing}")
    return step, FlopsLedger.from_configs(bcfg, scfg), (peak_flops_for_device(dev) if gpu else None), header


def measure_all(args, variants) -> dict:
    """Every (variant, mode) pair measured twice, interleaved; the second pass is reported
    (the first includes warm-up and compilation). Interleaving keeps a noisy machine's
    drift out of the ratios."""
    gpu = torch.device(args.device).type == "cuda"
    built = {v: build(args, v == "compile") for v in variants}
    sync = torch.cuda.synchronize if gpu else (lambda: None)
    res = {v: {} for v in variants}
    for _ in range(2):
        for mode in args.modes:
            for v in variants:
                step, ledger, peak, _ = built[v]
                mask = step(mode)  # warm-up (and compile)
                sync()
                if gpu:
                    torch.cuda.reset_peak_memory_stats()
                t0 = time.perf_counter()
                for _ in range(args.steps):
                    mask = step(mode)
                sync()
                dt = (time.perf_counter() - t0) / args.steps
                # CPU: peak RSS so far (monotone; the first pass's value is kept)
                mem = (torch.cuda.max_memory_allocated() if gpu
                       else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024) / 2**30
                if mode in res[v] and not gpu:
                    mem = res[v][mode]["mem_gib"]
                tokens = args.micro_batch * args.seq_len
                fpt = ledger.base_flops_per_token + (0 if mode == "ce" else ledger.surrogate_flops_per_token)
                res[v][mode] = dict(step_s=dt, tok_s=tokens / dt, mfu=(tokens * fpt / dt / peak) if peak else None,
                                    mem_gib=mem,
                                    aux_per_tok=float(mask.float().sum(-1).mean()) if mask is not None else 0.0)
    return {v: {"results": res[v], "header": built[v][3]} for v in variants}


def table(out: dict) -> str:
    res = out["results"]
    lines = [out["header"],
             "| loss | step s | tok/s | MFU (model FLOPs incl. surrogate) | peak GiB (GPU: allocated; CPU: RSS) | aux targets/token |",
             "|---|---|---|---|---|---|"]
    for name, r in res.items():
        mfu = "-" if r["mfu"] is None else f"{r['mfu']:.1%}"
        lines.append(f"| {name} | {r['step_s']:.3f} | {r['tok_s']:,.0f} | {mfu} | {r['mem_gib']:.2f} | {r['aux_per_tok']:.2f} |")
    if "ce" in res:
        for m in ("lsap", "store"):
            if m in res:
                lines.append(f"{m} / ce step time: {res[m]['step_s'] / res['ce']['step_s']:.2f}x, "
                             f"peak memory: {res[m]['mem_gib'] / res['ce']['mem_gib']:.2f}x")
    return "\n".join(lines)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--base", default="olmo2-tiny")
    ap.add_argument("--base-overrides", default="hidden_size=256,intermediate_size=1024,num_hidden_layers=4,"
                    "num_attention_heads=4,num_key_value_heads=4")
    ap.add_argument("--surrogate", default="olmo2-tiny")
    ap.add_argument("--surrogate-overrides", default="hidden_size=128,intermediate_size=512,num_hidden_layers=4,"
                    "num_attention_heads=4,num_key_value_heads=4")
    ap.add_argument("--base-vocab", type=int, default=8192)
    ap.add_argument("--surrogate-vocab", type=int, default=12288)
    ap.add_argument("--seq-len", type=int, default=256)
    ap.add_argument("--micro-batch", type=int, default=8)
    ap.add_argument("--k", type=int, default=15)
    ap.add_argument("--alpha", type=float, default=0.05)
    ap.add_argument("--logit-scale", type=float, default=40.0)
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--loss-impl", default="linear", choices=["linear", "logits"])
    ap.add_argument("--modes", nargs="+", default=["ce", "lsap"], choices=MODES)
    ap.add_argument("--store", help="target store (`lsap store build --out`) for mode 'store'")
    ap.add_argument("--data", help="the shards the store was built on (mode 'store')")
    ap.add_argument("--compile", action="store_true", help="train.compile: blocks and loss chunk")
    ap.add_argument("--compile-ratio", action="store_true", help="measure eager and compiled; report the ratio")
    ap.add_argument("--activation-checkpointing", action="store_true")
    ap.add_argument("--json", help="also write the results to this file")
    args = ap.parse_args()
    if "store" in args.modes and not (args.store and args.data):
        ap.error("mode 'store' needs --store and --data")

    variants = ["eager", "compile"] if args.compile_ratio else ["compile" if args.compile else "eager"]
    runs = measure_all(args, variants)
    for out in runs.values():
        print(table(out), flush=True)
    if args.compile_ratio:
        for m in args.modes:
            e, c = runs["eager"]["results"][m], runs["compile"]["results"][m]
            print(f"{m}: compile / eager step time {c['step_s'] / e['step_s']:.2f}x "
                  f"({e['step_s']:.3f} s → {c['step_s']:.3f} s)")
    if args.json:
        Path(args.json).write_text(json.dumps({k: v["results"] for k, v in runs.items()}, indent=2))


if __name__ == "__main__":
    main()
