"""Step time and peak memory of CE vs LSAP (online surrogate), as ratios in one run.

    python benchmarks/bench_train.py                       # CPU: small shapes, random surrogate
    python benchmarks/bench_train.py --base olmo2-1b --surrogate qwen3-0.6b --seq-len 1024 \
        --micro-batch 8 --device cuda                       # GPU: the paper's shapes

Both models are randomly initialised from presets (no weights, no network), so the
numbers measure the method's cost, not its quality. One optimizer step = forward +
backward + AdamW on `--micro-batch` sequences; LSAP adds the surrogate forward
(inference mode), target selection and the k auxiliary NLLs. The random surrogate's
logits are sharpened (×`--logit-scale`) so that α = 0.05 selects a realistic number of
targets (printed). Reports tokens/s, MFU (GPU, bf16 peak from `lsap.flops`), peak memory.
"""

from __future__ import annotations

import argparse
import platform
import resource
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # for tests.helpers


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
    args = ap.parse_args()

    from lsap.flops import FlopsLedger, peak_flops_for_device
    from lsap.model import build_model, model_config
    from lsap.surrogate import freeze
    from lsap.targets import propose_targets
    from lsap.train import LossModule
    from tests.helpers import random_vmap

    def kv(s):
        return {k: int(v) for k, v in (p.split("=") for p in s.split(",") if p)}

    dev = torch.device(args.device)
    gpu = dev.type == "cuda"
    bcfg = model_config(args.base, vocab_size=args.base_vocab if args.base != "olmo2-1b" else None,
                        **(kv(args.base_overrides) if args.base == "olmo2-tiny" else {}))
    scfg = model_config(args.surrogate, vocab_size=args.surrogate_vocab if args.surrogate == "olmo2-tiny" else None,
                        **(kv(args.surrogate_overrides) if args.surrogate == "olmo2-tiny" else {}))
    vb, vs = bcfg.vocab_size, scfg.vocab_size
    base = build_model(bcfg, device=dev)
    sur = freeze(build_model(scfg, device=dev, dtype=torch.bfloat16 if gpu else torch.float32, seed=1))
    with torch.no_grad():  # sharpen the random surrogate's outputs
        head = sur.lm_head if not getattr(scfg, "tie_word_embeddings", False) else sur.model.embed_tokens
        head.weight.mul_(args.logit_scale)
    vmap = random_vmap(vb, vs, int(0.95 * min(vb, vs)), seed=0).to(dev)
    module = LossModule(base, args.loss_impl, "targets")
    opt = torch.optim.AdamW(base.parameters(), lr=1e-4, fused=gpu)
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, vb, (args.micro_batch, args.seq_len + 1), generator=g).to(dev)
    inp, lab = x[:, :-1], x[:, 1:]
    ledger = FlopsLedger.from_configs(bcfg, scfg)
    peak = peak_flops_for_device(dev) if gpu else None

    def step(lsap: bool):
        ids = mask = None
        if lsap:
            with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=gpu):
                ids, mask, _ = propose_targets(sur, inp, lab, vmap, args.k, args.alpha)
        with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=gpu):
            loss, *_ = module(inp, lab, ids, mask, None, 1.0 if lsap else 0.0)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        return mask

    sync = torch.cuda.synchronize if gpu else (lambda: None)
    res = {}
    for name in ("ce", "lsap", "ce", "lsap"):  # interleaved, second pass reported
        lsap = name == "lsap"
        mask = step(lsap)
        sync()
        if gpu:
            torch.cuda.reset_peak_memory_stats()
        t0 = time.perf_counter()
        for _ in range(args.steps):
            mask = step(lsap)
        sync()
        dt = (time.perf_counter() - t0) / args.steps
        # CPU: peak RSS so far (monotone; CE is measured first, so LSAP's is its own peak
        # whenever LSAP needs more)
        mem = (torch.cuda.max_memory_allocated() if gpu else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024) / 2**30
        tokens = args.micro_batch * args.seq_len
        fpt = ledger.base_flops_per_token + (ledger.surrogate_flops_per_token if lsap else 0)
        if name in res and not gpu:
            mem = res[name]["mem_gib"]  # keep the first (uncontaminated) CPU peak
        res[name] = dict(step_s=dt, tok_s=tokens / dt, mfu=(tokens * fpt / dt / peak) if peak else None,
                         mem_gib=mem, aux_per_tok=float(mask.float().sum(-1).mean()) if mask is not None else 0.0)
    dev_name = torch.cuda.get_device_name(dev) if gpu else f"CPU {platform.machine()}, {torch.get_num_threads()} threads"
    print(f"# bench_train {time.strftime('%Y-%m-%d')} | {dev_name} | torch {torch.__version__} | "
          f"base {args.base} ({sum(p.numel() for p in base.parameters()) / 1e6:.1f}M, V={vb}) | "
          f"surrogate {args.surrogate} ({sum(p.numel() for p in sur.parameters()) / 1e6:.1f}M, V={vs}) | "
          f"B={args.micro_batch} T={args.seq_len} k={args.k} α={args.alpha} loss_impl={args.loss_impl}")
    print("| loss | step s | tok/s | MFU (model FLOPs incl. surrogate) | peak GiB (GPU: allocated; CPU: RSS) | aux targets/token |")
    print("|---|---|---|---|---|---|")
    for name, r in res.items():
        mfu = "-" if r["mfu"] is None else f"{r['mfu']:.1%}"
        mem = f"{r['mem_gib']:.2f}"
        print(f"| {name} | {r['step_s']:.3f} | {r['tok_s']:,.0f} | {mfu} | {mem} | {r['aux_per_tok']:.2f} |")
    print(f"LSAP / CE step time: {res['lsap']['step_s'] / res['ce']['step_s']:.2f}x, "
          f"peak memory: {res['lsap']['mem_gib'] / res['ce']['mem_gib']:.2f}x")


if __name__ == "__main__":
    main()
