"""Learning-rate and λ(t) schedules: plain functions of the step, no optimizer state."""

from __future__ import annotations

import math
from dataclasses import dataclass

from lsap.method.choices import LAMBDA_SCHEDULES as LAMBDA_KINDS


def cosine(step: int, total: int, start: float, end: float) -> float:
    """Half-cosine from `start` (step 0) to `end` (step ≥ total)."""
    if total <= 0:
        return end
    t = min(max(step, 0), total) / total
    return end + 0.5 * (start - end) * (1.0 + math.cos(math.pi * t))


@dataclass(frozen=True)
class LambdaSchedule:
    """λ(t) for the auxiliary term (METHOD §4).

    constant: λ0 at every step (the paper's best run uses λ0 = 1).
    cosine: λ0 → lam_min over `total_steps` (the paper's "anneal" variant).
    λ = 0 turns LSAP into plain CE.
    """

    kind: str = "constant"
    lam0: float = 1.0
    lam_min: float = 0.0
    total_steps: int = 0

    def __post_init__(self):
        if self.kind not in LAMBDA_KINDS:
            raise ValueError(f"lambda schedule must be one of {LAMBDA_KINDS}, got {self.kind!r}")
        if self.lam0 < 0 or self.lam_min < 0:
            raise ValueError("λ must be ≥ 0")
        if self.kind == "cosine" and self.total_steps <= 0:
            raise ValueError("a cosine λ schedule needs total_steps > 0")

    def __call__(self, step: int) -> float:
        if self.kind == "constant":
            return self.lam0
        return cosine(step, self.total_steps, self.lam0, self.lam_min)


@dataclass(frozen=True)
class LRSchedule:
    """Linear warmup to `peak`, then cosine to `peak · min_ratio` at `total_steps`."""

    peak: float
    warmup_steps: int
    total_steps: int
    min_ratio: float = 0.1

    def __call__(self, step: int) -> float:
        if step < self.warmup_steps:
            return self.peak * (step + 1) / self.warmup_steps
        return cosine(
            step - self.warmup_steps,
            max(self.total_steps - self.warmup_steps, 1),
            self.peak,
            self.peak * self.min_ratio,
        )
