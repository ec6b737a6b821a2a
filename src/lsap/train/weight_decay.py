"""The weight-decay rule, in one place for `lsap train` and the OLMo-core example.

Parameters with dim < 2 (every norm's weight, any bias) get no weight decay; matrices (the
embeddings and the head included) keep `optim.weight_decay`.
"""

from __future__ import annotations

import torch


def decays(p: torch.Tensor) -> bool:
    """Whether `optim.weight_decay` applies to parameter `p` (a matrix or higher)."""
    return p.dim() >= 2
