"""Process-group setup and parallel wrapping, applied from outside the model.

One entry point for one CPU and for `torchrun`: `init()` reads torchrun's environment
(gloo on CPU, nccl on GPU); without it the run is a single process. Model and loss code
never ask whether they are distributed.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import timedelta

import torch
import torch.distributed as dist


@dataclass
class Dist:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    def all_reduce_sum(self, t: torch.Tensor) -> torch.Tensor:
        if self.enabled:
            dist.all_reduce(t, op=dist.ReduceOp.SUM)
        return t

    def barrier(self) -> None:
        if self.enabled:
            dist.barrier()


def init(device: str = "auto", timeout_s: float = 600.0) -> Dist:
    """Start the process group if launched by torchrun; pick the device.

    timeout_s: how long a collective may wait for the other ranks (gloo's default is 30
    minutes); past it the waiting ranks raise, so a stalled rank ends the job.
    """
    use_cuda = torch.cuda.is_available() if device == "auto" else device == "cuda"
    if device == "cuda" and not torch.cuda.is_available():
        from lsap.utils.errors import TrainingError

        raise TrainingError(
            "train.device=cuda but no CUDA device is visible; use train.device=auto or cpu"
        )
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local = int(os.environ.get("LOCAL_RANK", "0"))
    if use_cuda:
        torch.cuda.set_device(local)
        dev = torch.device("cuda", local)
    else:
        dev = torch.device("cpu")
    if world > 1 and not dist.is_initialized():
        dist.init_process_group(
            backend="nccl" if use_cuda else "gloo", timeout=timedelta(seconds=timeout_s)
        )
    return Dist(rank, world, local, dev)


def rank_from_env() -> int:
    return int(os.environ.get("RANK", "0"))


def is_timeout(e: BaseException) -> bool:
    """Whether a backend error is a collective timeout (gloo: "Timed out", nccl: "Watchdog caught ... timeout")."""
    text = str(e).lower()
    return "timed out" in text or "timeout" in text


def shutdown() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


MIXED_PRECISION = ("none", "bf16")


def wrap(
    module: torch.nn.Module, d: Dist, strategy: str, layers=None, mixed_precision: str = "none"
) -> torch.nn.Module:
    """DDP, or FSDP2 (`fully_shard` on each decoder layer, then the root).

    mixed_precision (FSDP2 only): "bf16" = `MixedPrecisionPolicy(param_dtype=bf16,
    reduce_dtype=fp32)`: blocks compute on bf16 copies of the fp32 shards, gradients are
    reduce-scattered in fp32 and the optimizer keeps fp32 master weights.

    The root (embedding, final norm, head, loss) is sharded with
    `reshard_after_forward=False`: the chunked head loss reads `lm_head.weight` inside
    the root's forward and computes its gradient there, and the unsharded head must stay
    the one autograd delivers that gradient to — resharding it between forward and
    backward would only re-gather V×H values the backward never reads.
    """
    if not d.enabled:
        return module
    if strategy == "ddp":
        from torch.nn.parallel import DistributedDataParallel as DDP

        return DDP(module, device_ids=[d.local_rank] if d.device.type == "cuda" else None)
    if strategy == "fsdp":
        from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

        if mixed_precision not in MIXED_PRECISION:
            raise ValueError(
                f"mixed_precision must be one of {MIXED_PRECISION}, got {mixed_precision!r}"
            )
        mp = {}
        if mixed_precision == "bf16":
            mp = {
                "mp_policy": MixedPrecisionPolicy(
                    param_dtype=torch.bfloat16, reduce_dtype=torch.float32
                )
            }
        for layer in layers or []:
            fully_shard(layer, **mp)
        if mp:  # the root's float inputs (aux weights: surrogate p) stay fp32
            mp = {
                "mp_policy": MixedPrecisionPolicy(
                    param_dtype=torch.bfloat16,
                    reduce_dtype=torch.float32,
                    cast_forward_inputs=False,
                )
            }
        fully_shard(module, reshard_after_forward=False, **mp)
        return module
    raise ValueError(f"unknown distributed strategy {strategy!r} (ddp | fsdp)")


def grad_sync(wrapped: torch.nn.Module, d: Dist, strategy: str, sync: bool):
    """Context for one micro-batch's backward: gradients are reduced over ranks only when
    `sync` (the step's last micro-batch). FSDP2: `set_requires_gradient_sync`; DDP:
    `no_sync()`; one process: nothing to skip."""
    from contextlib import nullcontext

    if not d.enabled:
        return nullcontext()
    if strategy == "fsdp":
        wrapped.set_requires_gradient_sync(sync)
        return nullcontext()
    return nullcontext() if sync else wrapped.no_sync()


def checkpoint_blocks(layers) -> None:
    """Per-block activation checkpointing: each block's forward runs under
    `torch.utils.checkpoint` (non-reentrant), so only block inputs are kept and the
    block is recomputed in backward (~1/3 more compute for much less activation memory).
    Parameter names and state dicts are unchanged."""
    from torch.utils.checkpoint import checkpoint

    for layer in layers:
        if getattr(layer, "_lsap_checkpointed", False):
            continue

        def run(*args, _forward=layer.forward, **kwargs):
            return checkpoint(_forward, *args, use_reentrant=False, **kwargs)

        layer.forward = run
        layer._lsap_checkpointed = True


def compile_blocks(layers) -> None:
    """`torch.compile` each block in place (`Module.compile`: names and state dicts
    unchanged); identical blocks share one compiled graph."""
    for layer in layers:
        layer.compile()


def enable_tf32() -> None:
    """fp32 matmuls and convolutions on tensor cores (TF32) on CUDA; a no-op elsewhere."""
    if torch.cuda.is_available():
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
