"""`lsap store build` throughput: build a store through the CLI and report tokens/s.

    python benchmarks/bench_store_build.py --surrogate DIR --data SHARDS --seq-len 4096 --out STORE \
        [--batch-size 4] [--max-windows 32] [--device cuda] [--dtype auto]

Runs the real command (surrogate load, weight hashing, body in `--dtype`, fp32 head,
selection, packing, sha256, manifest) and prints its own `build_stats.json` figure
(compute loop only) next to the wall time of the whole command.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--surrogate", required=True)
    ap.add_argument("--data", required=True)
    ap.add_argument("--seq-len", type=int, required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--batch-size", type=int, default=4)
    ap.add_argument("--max-windows", type=int, default=None)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--dtype", default="auto")
    args = ap.parse_args()

    from lsap.cli import main as cli

    argv = ["cache", "build", "--surrogate", args.surrogate, "--data", args.data, "--seq-len", str(args.seq_len),
            "--k", "15", "--min-alpha", "0.01", "--out", args.out, "--batch-size", str(args.batch_size),
            "--device", args.device, "--dtype", args.dtype, "--no-progress"]
    if args.max_windows:
        argv += ["--max-windows", str(args.max_windows)]
    t0 = time.perf_counter()
    rc = cli(argv)
    wall = time.perf_counter() - t0
    if rc:
        raise SystemExit(rc)
    s = json.loads((Path(args.out) / "build_stats.json").read_text())
    m = json.loads((Path(args.out) / "manifest.json").read_text())
    print(f"cache build: {s['tokens_computed']:,} tokens (seq_len {args.seq_len}, batch {args.batch_size}) on "
          f"{s['device']}, surrogate {m['surrogate']['dtype']} (selection logits {m['surrogate']['logits_dtype']}): "
          f"{s['tokens_per_s']:,.0f} tokens/s in the build loop ({s['wall_s']:.1f} s); whole command {wall:.1f} s; "
          f"{m['bytes_per_token']:.1f} bytes/token")


if __name__ == "__main__":
    main()
