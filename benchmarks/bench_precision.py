"""bf16 vs fp32: the same LSAP training run in both precisions, loss by loss.

    python benchmarks/bench_precision.py --steps 20                    # device default
    python benchmarks/bench_precision.py --base olmo2-60m --seq-len 1024 --device cuda

Same init, same batches, same auxiliary targets (random, fixed per step, ~3 per
position), AdamW: once in fp32 (TF32 off: the reference) and once as the trainer runs
on a GPU (bf16 autocast, TF32 on, the loss head in bf16 with fp32 LSE/gradients).
Prints the per-step losses, the largest relative loss difference and the relative
difference of the final parameters. bf16 rounding makes the runs drift apart slowly;
a bug in the precision path (a bf16 LSE, a bf16-accumulated head gradient) shows as a
jump at step 1 or a drift orders of magnitude faster.
"""

from __future__ import annotations

import argparse
import time

import torch


def run(args, bf16: bool):
    from lsap.model import build_model, model_config
    from lsap.train.loop import LossModule

    dev = torch.device(args.device)
    if dev.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = bf16
        torch.backends.cudnn.allow_tf32 = bf16
    over = {k: int(v) for k, v in (p.split("=") for p in args.base_overrides.split(",") if p)}
    cfg = model_config(args.base, vocab_size=args.vocab, **over)
    model = build_model(cfg, device=dev, seed=0)
    module = LossModule(model, "linear")
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, foreach=True)
    g = torch.Generator().manual_seed(0)
    V, B, T = cfg.vocab_size, args.micro_batch, args.seq_len
    losses = []
    for _ in range(args.steps):
        x = torch.randint(0, V, (B, T + 1), generator=g)
        ids = torch.randint(0, V, (B, T, 15), generator=g)
        mask = torch.arange(15)[None, None, :] < torch.randint(0, 7, (B, T, 1), generator=g)
        x, ids, mask = x.to(dev), torch.where(mask, ids, -1).to(dev), mask.to(dev)
        with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=bf16):
            out = module(x[:, :-1], x[:, 1:], ids, mask, None, 1.0)
            loss, n_lab, n_aux = out.loss, out.n_labels, out.n_aux
        z = float(n_lab + n_aux)
        (loss / z).backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        losses.append(float(loss.detach()) / z)
    return losses, torch.cat([p.detach().float().flatten() for p in model.parameters()])


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--base", default="olmo2-tiny")
    ap.add_argument("--base-overrides", default="")
    ap.add_argument("--vocab", type=int, default=None)
    ap.add_argument("--seq-len", type=int, default=128)
    ap.add_argument("--micro-batch", type=int, default=4)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = ap.parse_args()
    t0 = time.perf_counter()
    l32, p32 = run(args, bf16=False)
    l16, p16 = run(args, bf16=True)
    rel = [abs(a - b) / abs(a) for a, b in zip(l32, l16)]
    print(f"# bench_precision {time.strftime('%Y-%m-%d')} | {args.device} | base {args.base} "
          f"V={args.vocab or 'preset'} B={args.micro_batch} T={args.seq_len} | {args.steps} AdamW steps, lr {args.lr}")
    print("| step | loss fp32 | loss bf16 | rel. diff |")
    print("|---|---|---|---|")
    for i, (a, b, r) in enumerate(zip(l32, l16, rel), 1):
        if i in (1, 2, 5, 10) or i % 10 == 0 or i == len(l32):
            print(f"| {i} | {a:.5f} | {b:.5f} | {r:.2e} |")
    dp = float((p16 - p32).norm() / p32.norm())
    print(f"max rel. loss difference over {args.steps} steps: {max(rel):.2e} (step 1: {rel[0]:.2e}); "
          f"final parameters: ‖Δθ‖/‖θ‖ = {dp:.2e}; {time.perf_counter() - t0:.0f} s")


if __name__ == "__main__":
    main()
