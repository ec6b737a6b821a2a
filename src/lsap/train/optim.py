"""The optimizer of `lsap train` and its weight-decay rule (one place: the OLMo-core example
uses `decays` too).

Parameters with dim < 2 (every norm's weight, any bias) get no weight decay; matrices (the
embeddings and the head included) keep `optim.weight_decay`.
"""

from __future__ import annotations

import torch


def decays(p: torch.Tensor) -> bool:
    """Whether `optim.weight_decay` applies to parameter `p` (a matrix or higher)."""
    return p.dim() >= 2


def build_optimizer(module: torch.nn.Module, o, device: torch.device) -> torch.optim.AdamW:
    """AdamW over `module`'s parameters from an `OptimCfg` `o`, two groups by `decays`;
    fused (one kernel for all tensors) on CUDA, foreach (batched ops) elsewhere."""
    decay = [p for p in module.parameters() if decays(p)]
    no_decay = [p for p in module.parameters() if not decays(p)]
    fused = device.type == "cuda"
    return torch.optim.AdamW(
        [
            {"params": decay, "weight_decay": o.weight_decay},
            {"params": no_decay, "weight_decay": 0.0},
        ],
        lr=o.lr,
        betas=tuple(o.betas),
        eps=o.eps,
        fused=fused,
        foreach=None if fused else True,
    )
