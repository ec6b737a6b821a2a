"""Forward+backward time and peak memory of the LSAP losses vs F.cross_entropy.

    python benchmarks/bench_loss.py [--vocab 32000 100352 151936] [--n 2048 8192] [--k 15]

Ratios are against the baseline measured in the same run:
- lsap_loss        vs F.cross_entropy on the same full logits [N, V];
- lsap_linear_loss vs lm-head matmul (hidden @ Wᵀ) + F.cross_entropy.
In bf16 (`--dtype bfloat16`) the baselines hand F.cross_entropy the bf16 logits as they
are (no fp32 copy); lsap_linear_loss runs its head matmul in bf16 with fp32 LSE/grads.
Peak memory is what one forward+backward step adds above its inputs: peak RSS growth
on CPU (each case in a fresh subprocess, so cases do not hide each other's peaks) or
torch.cuda.max_memory_allocated growth on GPU.
Sizes whose estimated footprint exceeds --max-gb are skipped and reported as such.
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import time

import torch
import torch.nn.functional as F


def make(n, v, h, k, device, dtype, seed=0):
    g = torch.Generator(device="cpu").manual_seed(seed)
    hidden = (torch.randn(n, h, generator=g)).to(device, dtype)
    weight = (torch.randn(v, h, generator=g) / h**0.5).to(device, dtype)
    labels = torch.randint(0, v, (n,), generator=g).to(device)
    aux_ids = torch.randint(0, v, (n, k), generator=g).to(device)
    # ~3 targets per position, as α = 0.05 gives on real text (paper Table 1)
    aux_mask = (torch.arange(k)[None, :] < torch.randint(0, 7, (n, 1), generator=g)).to(device)
    return hidden, weight, labels, aux_ids, aux_mask


def run_case(case: str, n: int, v: int, h: int, k: int, device: str, dtype: str, reps: int) -> dict:
    from lsap.method.loss import lsap_linear_loss, lsap_loss

    dt = getattr(torch, dtype)
    hidden, weight, labels, aux_ids, aux_mask = make(n, v, h, k, device, dt)
    logits = (hidden @ weight.t()).detach() if case in ("ce", "lsap") else None

    def step():
        if case == "ce":
            x = logits.clone().requires_grad_(True)
            F.cross_entropy(x, labels, reduction="sum").backward()
        elif case == "lsap":
            x = logits.clone().requires_grad_(True)
            lsap_loss(x, labels, aux_ids, aux_mask, lam=1.0).loss.backward()
        elif case == "ce_linear":
            hh, ww = hidden.clone().requires_grad_(True), weight.clone().requires_grad_(True)
            z = hh @ ww.t()
            F.cross_entropy(z, labels, reduction="sum").backward()
        elif case == "lsap_linear":
            hh, ww = hidden.clone().requires_grad_(True), weight.clone().requires_grad_(True)
            lsap_linear_loss(hh, ww, labels, aux_ids, aux_mask, lam=1.0).loss.backward()

    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    # Peak memory of the first step above what the inputs already hold.
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
        before = torch.cuda.memory_allocated()
    else:
        before = _rss_now()
    step()
    sync()
    peak = (torch.cuda.max_memory_allocated() if device == "cuda" else _rss_peak()) - before
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        step()
        sync()
        times.append(time.perf_counter() - t0)
    return {"case": case, "time_s": sorted(times)[len(times) // 2], "peak_bytes": peak}


def _rss_now() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096


def _rss_peak() -> int:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--vocab", type=int, nargs="+", default=[32000, 100352, 151936])
    ap.add_argument("--n", type=int, nargs="+", default=[2048, 8192])
    ap.add_argument("--k", type=int, default=15)
    ap.add_argument("--hidden", type=int, default=1024)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--dtype", default="float32")
    ap.add_argument("--max-gb", type=float, default=16.0, help="skip sizes whose estimate exceeds this")
    ap.add_argument("--json", help="also write the rows to this file")
    ap.add_argument("--in-process", action="store_true",
                    help="measure every case in this process (faster start; peaks are not isolated)")
    ap.add_argument("--_case", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args._case:  # child process: one measurement, JSON on stdout
        case, n, v = args._case.split(":")
        print(json.dumps(run_case(case, int(n), int(v), args.hidden, args.k, args.device, args.dtype, args.reps)))
        return
    print(f"# bench_loss  device={args.device} ({platform.processor() or platform.machine()}, "
          f"{torch.get_num_threads()} threads)  torch={torch.__version__}  dtype={args.dtype}  "
          f"H={args.hidden} k={args.k}  {time.strftime('%Y-%m-%d')}")
    print("| V | N | CE ms | lsap ms | lsap/CE time | CE+head ms | linear ms | linear/CE time | CE+head peak MB | linear peak MB | linear/CE peak |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    rows = []
    for v in args.vocab:
        for n in args.n:
            est_gb = 4 * n * v * 4 / 1e9  # logits, their grad, log-softmax, a temporary
            if est_gb > args.max_gb:
                print(f"| {v} | {n} | skipped: ~{est_gb:.0f} GB of full logits exceeds --max-gb {args.max_gb} |")
                continue
            res = {}
            for case in ("ce", "lsap", "ce_linear", "lsap_linear"):
                if args.in_process:
                    res[case] = run_case(case, n, v, args.hidden, args.k, args.device, args.dtype, args.reps)
                    continue
                out = subprocess.run([sys.executable, __file__, "--_case", f"{case}:{n}:{v}", "--hidden",
                                      str(args.hidden), "--k", str(args.k), "--device", args.device,
                                      "--dtype", args.dtype, "--reps", str(args.reps)],
                                     capture_output=True, text=True)
                if out.returncode:
                    res[case] = None
                    print(f"# {case} V={v} N={n} failed: {out.stderr.strip().splitlines()[-1:]}")
                else:
                    res[case] = json.loads(out.stdout.strip().splitlines()[-1])
            if not all(res.values()):
                continue
            ce, ls, cl, ll = (res[c] for c in ("ce", "lsap", "ce_linear", "lsap_linear"))
            pc, pl = cl["peak_bytes"], ll["peak_bytes"]
            row = dict(V=v, N=n, ce_ms=1e3 * ce["time_s"], lsap_ms=1e3 * ls["time_s"],
                       ce_head_ms=1e3 * cl["time_s"], linear_ms=1e3 * ll["time_s"],
                       ce_head_peak_mb=pc / 2**20, linear_peak_mb=pl / 2**20)
            rows.append(row)
            print(f"| {v} | {n} | {row['ce_ms']:.0f} | {row['lsap_ms']:.0f} | {row['lsap_ms'] / row['ce_ms']:.2f}x "
                  f"| {row['ce_head_ms']:.0f} | {row['linear_ms']:.0f} | {row['linear_ms'] / row['ce_head_ms']:.2f}x "
                  f"| {row['ce_head_peak_mb']:.0f} | {row['linear_peak_mb']:.0f} | "
                  f"{row['linear_peak_mb'] / row['ce_head_peak_mb']:.2f}x |", flush=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=2)


if __name__ == "__main__":
    main()
