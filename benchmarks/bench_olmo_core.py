"""OLMo-core step time and peak memory: CE (OLMo-core's own head) vs LSAP (`LSAPTrainModule`).

    python benchmarks/bench_olmo_core.py                                  # CPU, toy shapes (≤ 2 min)
    python benchmarks/bench_olmo_core.py --base olmo2-1b --surrogate qwen3-0.6b --seq-len 1024 \
        --micro-batch 8 --steps 6 --device cuda                           # one GPU, the paper's shapes

Each mode runs in its own process (clean peak memory) through OLMo-core's `Trainer` on a
random uint16/uint32 token file: `ce` = `TransformerTrainModule` (OLMo-core's default
head: full [B·T, V] logits + F.cross_entropy); `lsap0` = `LSAPTrainModule` at λ = 0 with
no surrogate (the chunked head loss alone); `lsap` = `LSAPTrainModule` with the online
surrogate (a randomly initialised lsap preset, logits sharpened so α = 0.05 selects
targets), k = 15, α = 0.05, λ = 1. Step = forward + backward + AdamW (+ grad clipping),
timed from the trainer's `pre_step` to `post_step`; the first `--warmup` steps are
dropped, the median of the rest is reported. Peak memory: CUDA max allocated on GPU,
the process's max RSS on CPU (includes Python and the libraries).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
MODES = ("ce", "lsap0", "lsap")


def one(a) -> dict:
    from olmo_core.config import DType
    from olmo_core.data import NumpyDataLoaderConfig, NumpyFSLDatasetConfig, TokenizerConfig
    from olmo_core.nn.transformer import TransformerBlockType, TransformerConfig
    from olmo_core.optim import AdamWConfig, CosWithWarmup
    from olmo_core.train import Duration, TrainerConfig
    from olmo_core.train.callbacks import Callback
    from olmo_core.train.train_module import TransformerTrainModule
    from olmo_core.utils import seed_all

    from lsap.integrations.olmo_core import LSAPTrainModule

    dev = torch.device(a.device)
    gpu = dev.type == "cuda"
    seed_all(0)
    if a.base == "olmo2-1b":
        mcfg = TransformerConfig.olmo2_1B_v2(vocab_size=a.vocab)
    else:
        mcfg = TransformerConfig.llama_like(d_model=a.d_model, vocab_size=a.vocab, n_layers=a.layers, n_heads=4,
                                            block_name=TransformerBlockType.reordered_norm, qk_norm=True,
                                            layer_norm_eps=1e-6, hidden_size_multiple_of=64)
    model = mcfg.build(init_device="meta")
    T = a.seq_len
    common = dict(rank_microbatch_size=a.micro_batch * T, max_sequence_length=T, max_grad_norm=1.0, device=dev,
                  scheduler=CosWithWarmup(warmup=1), autocast_precision=torch.bfloat16 if gpu else None)
    optim = AdamWConfig(lr=1e-4, fused=gpu or None)
    n_aux = []
    if a.mode == "ce":
        module = TransformerTrainModule(model, optim, **common)
    else:
        source = None
        if a.mode == "lsap":
            from tests.helpers import random_vmap

            from lsap.method.flops import inference_flops_per_token
            from lsap.model import build_model, model_config
            from lsap.surrogate.load import freeze
            from lsap.surrogate.sources import OnlineTargets

            scfg = model_config(a.surrogate, vocab_size=a.surrogate_vocab if a.surrogate == "olmo2-tiny" else None)
            sur = freeze(build_model(scfg, device=dev, dtype=torch.bfloat16 if gpu else torch.float32, seed=1))
            with torch.no_grad():
                sur.get_output_embeddings().weight.mul_(a.logit_scale)
            vmap = random_vmap(a.vocab, scfg.vocab_size, int(0.95 * min(a.vocab, scfg.vocab_size)), seed=0).to(dev)
            source = OnlineTargets(sur, vmap, k=15, alpha=0.05, flops_per_token=inference_flops_per_token(scfg))
        module = LSAPTrainModule(model, optim, targets=source, lam=1.0 if source else 0.0, **common)
    work = Path(a.work)
    toks = work / "tokens.npy"
    dtype = np.uint32 if a.vocab > 65535 else np.uint16
    n_tok = (a.steps + 1) * a.micro_batch * T + T
    if not toks.exists() or toks.stat().st_size < n_tok * np.dtype(dtype).itemsize:
        np.random.default_rng(0).integers(0, a.vocab, n_tok, dtype=dtype).tofile(toks)
    tok = TokenizerConfig(vocab_size=a.vocab, eos_token_id=0, pad_token_id=1)
    ds = NumpyFSLDatasetConfig(paths=[str(toks)], sequence_length=T, tokenizer=tok, dtype=DType and
                               ("uint32" if dtype == np.uint32 else "uint16"),
                               work_dir=str(work / f"cache-{a.mode}")).build()
    loader = NumpyDataLoaderConfig(global_batch_size=a.micro_batch * T, seed=0, num_workers=0).build(ds)
    times: list[float] = []

    class Timer(Callback):
        def pre_step(self, batch):
            if gpu:
                torch.cuda.synchronize()
            self.t0 = time.perf_counter()

        def post_step(self):
            if gpu:
                torch.cuda.synchronize()
            times.append(time.perf_counter() - self.t0)
            m = self.trainer.get_metric("LSAP aux per token", namespace="train")
            if m is not None:
                n_aux.append(float(m))

    if gpu:
        torch.cuda.reset_peak_memory_stats()
    trainer = TrainerConfig(save_folder=str(work / f"ckpt-{a.mode}"), save_overwrite=True, no_checkpoints=True,
                            metrics_collect_interval=1, max_duration=Duration.steps(a.steps), device=dev.type,
                            callbacks={"timer": Timer()}).build(module, loader)
    trainer.fit()
    kept = times[a.warmup:] or times
    peak = (torch.cuda.max_memory_allocated() if gpu
            else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)
    return {"mode": a.mode, "step_s": statistics.median(kept), "steps_timed": len(kept),
            "tokens_per_s": a.micro_batch * T / statistics.median(kept), "peak_bytes": int(peak),
            "aux_per_token": statistics.mean(n_aux) if n_aux else 0.0}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--base", default="toy", choices=["toy", "olmo2-1b"])
    p.add_argument("--d-model", type=int, default=128)
    p.add_argument("--layers", type=int, default=2)
    p.add_argument("--vocab", type=int, default=8192, help="base vocabulary (olmo2-1b: use 100352)")
    p.add_argument("--surrogate", default="olmo2-tiny", help="lsap.model preset (GPU: qwen3-0.6b)")
    p.add_argument("--surrogate-vocab", type=int, default=8192)
    p.add_argument("--logit-scale", type=float, default=30.0)
    p.add_argument("--seq-len", type=int, default=256)
    p.add_argument("--micro-batch", type=int, default=4)
    p.add_argument("--steps", type=int, default=6)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--device", default="cpu")
    p.add_argument("--modes", nargs="+", default=list(MODES), choices=MODES)
    p.add_argument("--mode", help=argparse.SUPPRESS)
    p.add_argument("--work", help=argparse.SUPPRESS)
    p.add_argument("--json", help="also write the results as JSON")
    a = p.parse_args(argv)
    if a.mode:  # one measurement, in this process
        print("RESULT " + json.dumps(one(a)))
        return
    env = {**os.environ, "PYTHONPATH": f"{ROOT / 'src'}{os.pathsep}{ROOT}"}
    rows = []
    with tempfile.TemporaryDirectory() as work:
        for mode in a.modes:
            r = subprocess.run([sys.executable, __file__, *(argv if argv is not None else sys.argv[1:]), "--mode", mode,
                                "--work", work], env=env, capture_output=True, text=True)
            line = [x for x in r.stdout.splitlines() if x.startswith("RESULT ")]
            if r.returncode != 0 or not line:
                sys.stderr.write(r.stderr[-3000:])
                raise SystemExit(f"mode {mode} failed (exit {r.returncode})")
            rows.append(json.loads(line[0][7:]))
    dev = torch.cuda.get_device_name() if a.device == "cuda" else f"CPU {platform.machine()} ({os.cpu_count()} cores)"
    print(f"device: {dev} | torch {torch.__version__} | base {a.base} (vocab {a.vocab}) | T={a.seq_len} "
          f"micro-batch {a.micro_batch} | surrogate {a.surrogate} | {a.steps} steps, first {a.warmup} dropped\n")
    ce = next((r for r in rows if r["mode"] == "ce"), None)
    print("| mode | step (s, median) | tokens/s | peak memory (MiB) | step / ce | aux targets per token |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        ratio = f"{r['step_s'] / ce['step_s']:.2f}" if ce else "-"
        print(f"| {r['mode']} | {r['step_s']:.3f} | {r['tokens_per_s']:.0f} | {r['peak_bytes'] / 2**20:.0f} | {ratio} "
              f"| {r['aux_per_token']:.2f} |")
    if a.json:
        Path(a.json).write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
