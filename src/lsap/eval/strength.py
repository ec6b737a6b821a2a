"""Surrogate strength with a bootstrap interval over documents.

strength = bpb(surrogate) / bpb(base) on the same complete held-out documents
(`lsap.eval.metrics.strength_documents`); both bpb share the byte count, so
strength = Σ_d nll_s(d) / Σ_d nll_b(d). The interval resamples documents with replacement
(the same draw for both models: they were scored on the same text) and takes percentiles of
the resampled ratio. Per-document NLLs come from `bpb_on_documents(..., per_document=True)`.
"""

from __future__ import annotations

import math

from lsap.utils.errors import LsapError


class StrengthError(LsapError):
    pass


def strength_interval(
    sur_doc_nll: list[float],
    base_doc_nll: list[float],
    doc_bytes: list[int],
    *,
    n_boot: int = 2000,
    level: float = 0.95,
    seed: int = 0,
) -> dict:
    """{"strength", "ci": (lo, hi), "surrogate_bpb", "base_bpb", "documents", "n_boot", "level"}."""
    import numpy as np

    s, b = np.asarray(sur_doc_nll, float), np.asarray(base_doc_nll, float)
    nb = np.asarray(doc_bytes, float)
    if not (len(s) == len(b) == len(nb)) or len(s) == 0:
        raise StrengthError(
            "strength_interval: need per-document NLLs of both models on the same "
            "non-empty documents (bpb_on_documents(..., per_document=True))"
        )
    if b.sum() <= 0:
        raise StrengthError("strength_interval: base NLL is 0; check the base model")
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(s), size=(n_boot, len(s)))
    ratios = s[idx].sum(1) / b[idx].sum(1)
    a = (1 - level) / 2
    lo, hi = np.quantile(ratios, [a, 1 - a])
    ln2_bytes = math.log(2) * nb.sum()
    return {
        "strength": float(s.sum() / b.sum()),
        "ci": (float(lo), float(hi)),
        "surrogate_bpb": float(s.sum() / ln2_bytes),
        "base_bpb": float(b.sum() / ln2_bytes),
        "documents": len(s),
        "n_boot": n_boot,
        "level": level,
    }


def strength_line(res: dict) -> str:
    lo, hi = res["ci"]
    return (
        f"strength {res['strength']:.3f} [{lo:.3f}, {hi:.3f}] ({res['level']:.0%} bootstrap "
        f"over {res['documents']} documents; surrogate {res['surrogate_bpb']:.3f} / base "
        f"{res['base_bpb']:.3f} bpb)"
    )
