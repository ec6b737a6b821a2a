"""`lsap prepare` throughput at 1, 2, ... worker processes, and whether the bytes match.

    python benchmarks/bench_prepare.py --tokenizer dolma2 --source pydoc-topics --workers 1 2 [--out /tmp/bp]

Each configuration runs the real command in a fresh process and directory; tokens/s is
prepare's own figure (new tokens / time from the first document to the last shard,
tokenizer loading excluded). "1 (1 thread)" is one worker with TOKENIZERS_PARALLELISM=false:
workers > 1 run one tokenizer thread each, while one worker uses the tokenizers
library's own thread pool, so that row is the per-core rate.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tokenizer", default="dolma2")
    ap.add_argument("--source", default="pydoc-topics")
    ap.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--max-tokens", type=int, default=None)
    ap.add_argument("--out", default="/tmp/bench-prepare")
    args = ap.parse_args()

    configs = [("1 (1 thread)", 1, {"TOKENIZERS_PARALLELISM": "false"})] + [(str(w), w, {}) for w in args.workers]
    rows, ref = [], None
    for name, w, extra in configs:
        out = Path(args.out) / f"w{name.split()[0]}{'t' if extra else ''}"
        shutil.rmtree(out, ignore_errors=True)
        argv = [sys.executable, "-m", "lsap", "prepare", "--tokenizer", args.tokenizer, "--source", args.source,
                "--out", str(out), "--workers", str(w)] + (["--max-tokens", str(args.max_tokens)] if args.max_tokens
                                                             else [])
        r = subprocess.run(argv, capture_output=True, text=True, env={**os.environ, **extra})
        if r.returncode:
            raise SystemExit(r.stderr[-3000:])
        m = re.search(r"([\d,]+) new tokens in ([\d.]+)s \(([\d,]+) tok/s\)", r.stdout + r.stderr)
        files = {str(p.relative_to(out)): p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()}
        same = ref is None or files == ref
        ref = ref or files
        rows.append((name, int(m.group(1).replace(",", "")), float(m.group(2)), int(m.group(3).replace(",", "")), same))
    total = json.loads((Path(args.out) / "w1t" / "manifest.json").read_text())["total_tokens"]
    print(f"prepare {args.source} with {args.tokenizer}: {total:,} tokens, {os.cpu_count()} CPU(s)")
    print("| workers | tokens | seconds | tokens/s | ratio vs 1 worker (1 thread) | same bytes |")
    print("|---|---|---|---|---|---|")
    for name, tok, s, tps, same in rows:
        print(f"| {name} | {tok:,} | {s:.1f} | {tps:,} | {tps / rows[0][3]:.2f} | {same} |")


if __name__ == "__main__":
    main()
