"""`lsap store build` throughput at 1, 2, ... processes (torchrun, gloo/nccl) and their ratio.

    python benchmarks/world.py --out /tmp/world --surrogate olmo2-tiny --surrogate-vocab 1024 --dtype float32
    python benchmarks/bench_store_build.py --surrogate /tmp/world/surrogate --data /tmp/world/data \\
        --seq-len 128 --out /tmp/bench-store --nproc 1 2 [--max-windows 256] [--device cpu]

Runs the real command per world size into a fresh directory (surrogate load, weight
hashing, agreement, selection, packing, sha256, manifest), checks that every world
size wrote the same bytes, and prints tokens/s of the compute loop (all ranks' tokens
/ the slowest rank's loop time, from `build_stats.json`) next to the whole command's
wall time. Every process gets OMP_NUM_THREADS=--threads (torchrun's default is 1).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path


def store_files(d: Path) -> dict:
    return {str(p.relative_to(d)): p.read_bytes() for p in sorted(d.rglob("*"))
            if p.is_file() and p.name != "build_stats.json"}


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--surrogate", required=True)
    ap.add_argument("--data", required=True)
    ap.add_argument("--seq-len", type=int, required=True)
    ap.add_argument("--out", required=True, help="the store of the first world size (rebuilt); the others go "
                    "to OUT-npN")
    ap.add_argument("--nproc", type=int, nargs="+", default=[1],
                    help="world sizes to run (default 1; e.g. 1 2 — on GPUs one rank per device)")
    ap.add_argument("--batch-size", type=int, default=4)
    ap.add_argument("--chunk-windows", type=int, default=16)
    ap.add_argument("--max-windows", type=int, default=None)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--dtype", default="auto")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()

    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads)}
    rows, ref = [], None
    for i, n in enumerate(args.nproc):
        out = Path(args.out) if i == 0 else Path(f"{args.out}-np{n}")  # the first stays usable at --out
        shutil.rmtree(out, ignore_errors=True)
        argv = ["store", "build", "--surrogate", args.surrogate, "--data", args.data, "--seq-len", str(args.seq_len),
                "--k", "15", "--min-alpha", "0.01", "--out", str(out), "--batch-size", str(args.batch_size),
                "--chunk-windows", str(args.chunk_windows), "--device", args.device, "--dtype", args.dtype,
                "--no-progress"] + (["--max-windows", str(args.max_windows)] if args.max_windows else [])
        launch = ([sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={n}", "-m",
                   "lsap.cli.main"] if n > 1 else [sys.executable, "-m", "lsap"])
        t0 = time.perf_counter()
        r = subprocess.run(launch + argv, env=env, capture_output=True, text=True)
        wall = time.perf_counter() - t0
        if r.returncode:
            raise SystemExit(r.stderr[-3000:])
        s = json.loads((out / "build_stats.json").read_text())
        files = store_files(out)
        same = ref is None or files == ref
        ref = ref or files
        rows.append((n, s["tokens_computed"], s["compute_s"], s["tokens_per_s"], wall, same))
    m = json.loads((Path(args.out) / "manifest.json").read_text())
    print(f"store build: {m['n_windows']} windows x seq_len {args.seq_len} ({m['window_layout']}), surrogate "
          f"{m['surrogate']['dtype']} (selection logits {m['surrogate']['logits_dtype']}) on "
          f"{m['surrogate']['device_type']}, batch {args.batch_size}, OMP_NUM_THREADS={args.threads}, "
          f"{m['bytes_per_token']:.1f} bytes/token")
    print("| processes | tokens | compute loop s | tokens/s in the build loop | ratio vs first | whole command s "
          "| same bytes |")
    print("|---|---|---|---|---|---|---|")
    for n, tok, cs, tps, wall, same in rows:
        print(f"| {n} | {tok:,} | {cs:.1f} | {tps:,.0f} | {tps / rows[0][3]:.2f} | {wall:.1f} | {same} |")


if __name__ == "__main__":
    main()
