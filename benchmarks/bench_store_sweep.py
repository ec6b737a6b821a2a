"""Wall time of the paper's 4-run LSAP sweep from one target cache vs 4 online runs.

    python benchmarks/bench_store_sweep.py --data DIR [--surrogate smollm2] [--seq-len 128]
        [--steps 0] [--out runs/bench-cache-sweep]

The sweep is α = 0.01, 0.05, 0.2 (λ constant) and α = 0.05 with λ cosine-annealed (the
paper's "anneal" run), each training the `olmo2-tiny` base model on the same data with
the same seed. "online": 4 runs that each run the surrogate on every micro-batch;
"cache": one `build_store` (k = 15, min_alpha = 0.01) + the same 4 runs reading it.
--steps 0 trains one epoch of the train split per run (so online runs do as much
surrogate work as the build). Prints each wall time, checks that every cache run's
losses equal its online twin's, and prints the ratio online / (build + cache runs).
Result (2-core shared CPU, heavily loaded, torch CPU, smollm2 surrogate, tiny_world-style
600-token BPE base tokenizer, 1,440-token corpus from pydoc topics, T = 32, 11 steps × 4
per run): online 227.6 s (76.2 / 71.6 / 45.5 / 34.3) vs cache 69.7 s (build 33.7 + runs
10.9 / 0.7 / 12.2 / 12.2) → 3.27x; every cache run's losses equal its online twin's.
Timings are noisy on this machine (other jobs share the cores); the ratio approaches
4x as surrogate cost dominates.
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from pathlib import Path

SWEEP = {
    "a0.01": ["lsap.alpha=0.01"],
    "a0.05": ["lsap.alpha=0.05"],
    "a0.2": ["lsap.alpha=0.2"],
    "a0.05-cos": ["lsap.alpha=0.05", "lsap.lambda_schedule=cosine"],
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", required=True, help="prepared token shards")
    ap.add_argument("--surrogate", default="smollm2")
    ap.add_argument("--seq-len", type=int, default=128)
    ap.add_argument("--batch-size", type=int, default=4)
    ap.add_argument("--steps", type=int, default=0, help="optimizer steps per run (0: one epoch)")
    ap.add_argument("--out", default="runs/bench-cache-sweep")
    args = ap.parse_args()

    import torch

    from lsap.config import load_config
    from lsap.data.shards import TokenShards
    from lsap.surrogate.store_build import build_store
    from lsap.train.loop import Trainer

    out = Path(args.out)
    shutil.rmtree(out, ignore_errors=True)
    n_windows = (len(TokenShards(args.data)) - 1) // args.seq_len
    steps = args.steps or n_windows // args.batch_size

    def run(name, extra):
        cfg = load_config(None, [
            f"data.dir={args.data}", f"out_dir={out / name}", f"data.seq_len={args.seq_len}", "loss=lsap",
            f"train.batch_size={args.batch_size}", f"train.micro_batch_size={args.batch_size}",
            f"train.max_steps={steps}", "train.log_every=1", "train.eval_batches=1", "optim.warmup_steps=2",
            "lsap.k=15", f"surrogate.model={args.surrogate}", "train.device=cpu", *extra])
        t0 = time.perf_counter()
        Trainer.from_config(cfg).run()
        dt = time.perf_counter() - t0
        rows = [json.loads(l) for l in (out / name / "metrics.jsonl").read_text().splitlines()]
        return dt, [r["loss"] for r in rows if r["kind"] == "train"]

    times, losses = {}, {}
    for name, extra in SWEEP.items():
        times[f"online/{name}"], losses[f"online/{name}"] = run(f"online-{name}", extra)
    t0 = time.perf_counter()
    m = build_store(args.surrogate, args.data, args.seq_len, out / "cache", k=15, min_alpha=0.01, batch_size=8,
                    progress=False)
    times["cache/build"] = time.perf_counter() - t0
    for name, extra in SWEEP.items():
        times[f"cache/{name}"], losses[f"cache/{name}"] = run(
            f"cache-{name}", extra + ["surrogate.source=store", f"surrogate.store_dir={out / 'cache'}"])
    same = {n: losses[f"online/{n}"] == losses[f"cache/{n}"] for n in SWEEP}
    online = sum(v for k, v in times.items() if k.startswith("online/"))
    cached = sum(v for k, v in times.items() if k.startswith("cache/"))
    res = {"surrogate": args.surrogate, "seq_len": args.seq_len, "steps_per_run": steps,
           "tokens_per_run": steps * args.batch_size * args.seq_len, "cache_positions": m["positions"],
           "bytes_per_token": m["bytes_per_token"], "threads": torch.get_num_threads(), "times_s": times,
           "online_total_s": online, "cache_total_s": cached, "ratio_online_over_cache": online / cached,
           "losses_equal": same}
    for k, v in times.items():
        print(f"{k:>16}: {v:7.1f} s")
    print(f"online sweep {online:.1f} s | cache sweep (1 build + 4 runs) {cached:.1f} s | "
          f"ratio online/cache = {online / cached:.2f}x | losses equal: {same}")
    (out / "result.json").write_text(json.dumps(res, indent=2))


if __name__ == "__main__":
    main()
