"""One tiny OLMo-core training run for tests/test_olmo_core.py (single process or under torchrun).

    python tests/olmo_core_worker.py --data DIR --out metrics.jsonl --module lsap --lam 1.0 --steps 4
    torchrun --nproc_per_node=2 tests/olmo_core_worker.py ... --fsdp

A 2-layer d=64 OLMo2-style model (reordered norm, QK-norm) on a uint16 token file, a
2-layer random Llama surrogate with a random Σ∩ map (seeded identically on every rank).
--module ce: OLMo-core's own `TransformerTrainModule`; lsap: `LSAPTrainModule`.
Rank 0 appends one JSON line per step to --out (step, metrics): the file survives a kill.
--kill-at K: SIGKILL this process right after step K's checkpoint (the fault test).
--label-mask: OLMo-core's label mask from DATA/label_mask.npy (`write_label_mask`); every rank
appends its step's label count to --out.labels.rank<R>.
--compile: `Transformer.apply_compile` (inductor) after the LSAP head swap, which OLMo-core's
compile_model does only on CUDA; rank 0 writes dynamo's graph / graph-break counts beside --out.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import torch  # noqa: E402

V_BASE, V_SURR, N_COMMON = 96, 80, 64
TOKEN_DTYPE = np.uint16  # what `write_tokens` writes; OLMo-core would guess uint8 from V_BASE


def write_tokens(path: str | os.PathLike, n_tokens: int = 40_000, seed: int = 0) -> str:
    """A uint16 token file with some structure (a noisy bigram chain), as OLMo-core reads."""
    rng = np.random.default_rng(seed)
    nxt = rng.integers(0, V_BASE, size=(V_BASE, 3))
    toks = np.empty(n_tokens, dtype=TOKEN_DTYPE)
    toks[0] = 1
    choice = rng.integers(0, 3, size=n_tokens)
    noise = rng.random(n_tokens) < 0.1
    rand = rng.integers(0, V_BASE, size=n_tokens)
    for i in range(1, n_tokens):
        toks[i] = rand[i] if noise[i] else nxt[toks[i - 1], choice[i]]
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    toks.tofile(path)
    return str(path)


def write_label_mask(data: str | os.PathLike, seq_len: int = 32, seed: int = 3) -> str:
    """`label_mask.npy` beside `tokens.npy` (OLMo-core's `label_mask_paths`, one bool per
    token): about half the instances keep only their last 3 labels (a masked "prompt"), the
    rest keep all, so ranks hold very different label counts in a step."""
    n = os.path.getsize(os.path.join(data, "tokens.npy")) // np.dtype(TOKEN_DTYPE).itemsize
    mask = np.ones(n, dtype=np.bool_)
    short = np.random.default_rng(seed).random(n // seq_len) < 0.5
    for i in np.flatnonzero(short):
        mask[i * seq_len : (i + 1) * seq_len - 3] = False
    path = os.path.join(data, "label_mask.npy")
    mask.tofile(path)
    return path


def tiny_model_config(vocab_size: int = V_BASE):
    from olmo_core.nn.transformer import TransformerBlockType, TransformerConfig

    return TransformerConfig.llama_like(
        d_model=64,
        vocab_size=vocab_size,
        n_layers=2,
        n_heads=4,
        block_name=TransformerBlockType.reordered_norm,
        qk_norm=True,
        layer_norm_eps=1e-6,
        hidden_size_multiple_of=64,
    )


def tiny_source():
    """OnlineTargets over a seeded random surrogate and map (the same on every rank)."""
    from lsap.method.flops import inference_flops_per_token
    from lsap.surrogate.sources import OnlineTargets
    from tests.helpers import random_vmap, tiny_llama

    surrogate = tiny_llama(V_SURR, seed=1)
    with torch.no_grad():  # peaked outputs, so α = 0.05 selects targets
        surrogate.lm_head.weight.mul_(8.0)
    vmap = random_vmap(V_BASE, V_SURR, N_COMMON, seed=2)
    return OnlineTargets(
        surrogate,
        vmap,
        k=4,
        alpha=0.05,
        flops_per_token=inference_flops_per_token(surrogate.config),
    )


class Recorder:
    """Callback: rank 0 appends {step, metrics} per step; optional SIGKILL after a step;
    optional snapshot of (model state, batch) before each step (single process)."""

    def __new__(cls, out, kill_at=0, snapshots=None, count_labels=False):
        from olmo_core.data.utils import get_labels
        from olmo_core.distributed.utils import get_rank
        from olmo_core.train.callbacks import Callback

        class _Recorder(Callback):
            priority = -100  # after the checkpointer

            def pre_step(self, batch):
                if count_labels:  # this rank's labels in the step (every rank, its own file)
                    n = int((get_labels(batch) != -100).sum())
                    with open(f"{out}.labels.rank{get_rank()}", "a") as f:
                        f.write(f"{n}\n")
                if snapshots is not None:
                    sd = {
                        k: v.detach().clone()
                        for k, v in self.trainer.train_module.model.state_dict().items()
                    }
                    snapshots.append(
                        (sd, {k: v.clone() for k, v in batch.items() if torch.is_tensor(v)})
                    )

            def log_metrics(self, step, metrics):
                if get_rank() == 0:
                    with open(out, "a") as f:
                        f.write(
                            json.dumps(
                                {"step": step, "metrics": {k: float(v) for k, v in metrics.items()}}
                            )
                            + "\n"
                        )

            def post_step(self):
                if kill_at and self.step == kill_at:
                    os.kill(os.getpid(), signal.SIGKILL)

        return _Recorder()


def build_dataset(a, paths=None, vocab_size: int = V_BASE):
    """OLMo-core's `NumpyFSLDataset` over the token file(s). Our own file is read as
    TOKEN_DTYPE, never OLMo-core's guess from the vocabulary (uint8 for 96 ids, which would
    read each uint16 token as two); `paths` (lsap's prepared arrays) keep OLMo-core's guess."""
    from olmo_core.data import NumpyDatasetDType, NumpyFSLDatasetConfig, TokenizerConfig

    tok = TokenizerConfig(vocab_size=vocab_size, eos_token_id=0, pad_token_id=vocab_size - 1)
    dtype = None if paths else NumpyDatasetDType(np.dtype(TOKEN_DTYPE).name)
    masks = [os.path.join(a.data, "label_mask.npy")] if a.label_mask else None
    return NumpyFSLDatasetConfig(
        paths=paths or [os.path.join(a.data, "tokens.npy")],
        label_mask_paths=masks,
        sequence_length=a.seq_len,
        tokenizer=tok,
        dtype=dtype,
        work_dir=os.path.join(a.save_folder, "dataset-cache"),
    ).build()


def build_and_fit(a, snapshots=None, source=None, paths=None, vocab_size: int = V_BASE):
    """Train per `a` (see `parse`); source / paths / vocab_size replace the tiny world's
    surrogate, token file and vocabulary (the store test)."""
    from olmo_core.data import NumpyDataLoaderConfig
    from olmo_core.distributed.parallel import DataParallelType
    from olmo_core.distributed.utils import (
        get_rank,
        get_world_size,
        init_distributed,
        is_distributed,
    )
    from olmo_core.optim import AdamWConfig, CosWithWarmup
    from olmo_core.train import Duration, TrainerConfig
    from olmo_core.train.callbacks import CheckpointerCallback
    from olmo_core.train.train_module import TransformerDataParallelConfig, TransformerTrainModule
    from olmo_core.utils import seed_all

    from lsap.integrations.olmo_core import LSAPTrainModule
    from lsap.method.schedules import LambdaSchedule

    if "RANK" in os.environ and not is_distributed():
        init_distributed(backend="gloo")
    torch.set_num_threads(1)
    seed_all(a.seed)
    T = a.seq_len
    ds = build_dataset(a, paths, vocab_size)
    model = tiny_model_config(vocab_size).build(init_device="cpu")
    if a.compile:  # what compile_model=True does on a GPU (OLMo-core skips it on a CPU), in
        # LSAPTrainModule's order: the LSAP head first, then torch.compile per block and head
        from lsap.integrations.olmo_core import use_lsap_head

        if a.module == "lsap":
            use_lsap_head(model)
        model.apply_compile()
    optim = AdamWConfig(lr=a.lr, betas=(0.9, 0.95), weight_decay=0.1)
    common = dict(
        rank_microbatch_size=a.micro * T,
        max_sequence_length=T,
        max_grad_norm=1.0,
        z_loss_multiplier=a.zloss or None,
        scheduler=CosWithWarmup(warmup=1),
        dp_config=(
            TransformerDataParallelConfig(name=DataParallelType.hsdp, shard_degree=a.hsdp)
            if a.hsdp
            else TransformerDataParallelConfig(name=DataParallelType.fsdp)
            if a.fsdp
            else None
        ),
        device=torch.device("cpu"),
    )
    if a.module == "ce":
        module = TransformerTrainModule(model, optim, **common)
    else:
        lam = (
            LambdaSchedule("cosine", a.lam, 0.0, a.steps)
            if a.anneal
            else LambdaSchedule("constant", a.lam)
        )
        source = source or (tiny_source() if a.lam or a.targets else None)
        module = LSAPTrainModule(
            model,
            optim,
            targets=source,
            lam=lam,
            normalization=a.normalization,
            chunk_size=a.chunk,
            aux_weighting=a.aux_weighting,
            **common,
        )
    w = next(module.model.parameters())
    if a.hsdp and get_rank() == 0:  # the mesh the parameters live on (the HSDP test checks it)
        mesh = {"shape": list(w.device_mesh.shape), "placements": [str(x) for x in w.placements]}
        Path(a.out + ".mesh.json").write_text(json.dumps(mesh))
    loader = NumpyDataLoaderConfig(global_batch_size=a.batch * T, seed=a.seed, num_workers=0).build(
        ds, dp_process_group=module.dp_process_group
    )
    trainer = TrainerConfig(
        save_folder=a.save_folder,
        save_overwrite=True,
        metrics_collect_interval=1,
        cancel_check_interval=1,
        max_duration=Duration.steps(a.steps),
        device="cpu",
        callbacks={
            "checkpointer": CheckpointerCallback(
                save_interval=a.save_interval or 10_000,
                ephemeral_save_interval=None,
                save_async=False,
            ),
            "recorder": Recorder(a.out, a.kill_at, snapshots, count_labels=a.label_mask),
        },
    ).build(module, loader)
    trainer.fit()
    if a.compile and get_rank() == 0:  # proof that dynamo compiled (the compile test checks it)
        from torch._dynamo.utils import counters

        rec = {
            "unique_graphs": int(counters["stats"]["unique_graphs"]),
            "graph_breaks": int(sum(counters["graph_break"].values())),
            "break_reasons": sorted(counters["graph_break"]),
        }
        Path(a.out + ".compile.json").write_text(json.dumps(rec))
    return trainer, get_world_size()


def parse(argv=None):
    p = argparse.ArgumentParser()
    p.add_argument("--data", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--save-folder", required=True)
    p.add_argument("--module", choices=["ce", "lsap"], default="lsap")
    p.add_argument("--lam", type=float, default=1.0)
    p.add_argument("--anneal", action="store_true")
    p.add_argument("--targets", action="store_true", help="compute targets even at λ = 0")
    p.add_argument("--normalization", default="targets")
    p.add_argument("--aux-weighting", default="none", choices=["none", "prob"])
    p.add_argument("--zloss", type=float, default=0.0)
    p.add_argument("--steps", type=int, default=4)
    p.add_argument("--seq-len", type=int, default=32)
    p.add_argument("--batch", type=int, default=4, help="global sequences per step")
    p.add_argument("--micro", type=int, default=1, help="sequences per rank micro-batch")
    p.add_argument("--lr", type=float, default=3e-3)
    p.add_argument("--chunk", type=int, default=1024)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--fsdp", action="store_true")
    p.add_argument("--hsdp", type=int, default=0, help="HSDP with this shard degree")
    p.add_argument("--compile", action="store_true", help="Transformer.apply_compile (inductor)")
    p.add_argument(
        "--label-mask", action="store_true", help="DATA/label_mask.npy (write_label_mask)"
    )
    p.add_argument("--save-interval", type=int, default=0)
    p.add_argument("--kill-at", type=int, default=0)
    return p.parse_args(argv)


if __name__ == "__main__":
    build_and_fit(parse())
    from olmo_core.distributed.utils import is_distributed

    if is_distributed():
        import torch.distributed as dist

        dist.barrier()
        dist.destroy_process_group()
