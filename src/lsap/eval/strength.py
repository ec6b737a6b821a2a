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


def documents_strength(surrogate, bases: list, **kw) -> dict | None:
    """`strength_interval` of a surrogate against CE bases (one per seed) scored on the same
    documents: `surrogate` and each base carry "doc_nll" and "doc_bytes" (per document, from
    `bpb_on_documents(..., per_document=True)` or an eval.json entry); the base's per-document NLL
    is the mean over `bases`, so the point estimate is surrogate bpb / mean base bpb. None when
    any of them lacks per-document values or they were scored on different documents (older
    eval.json files hold only doc_bpb: re-evaluate with --force for the interval)."""
    have = [b for b in bases if b and b.get("doc_nll") is not None]
    if not surrogate or surrogate.get("doc_nll") is None or not have or len(have) < len(bases):
        return None
    nb = list(surrogate["doc_bytes"])
    if any(list(b.get("doc_bytes") or []) != nb for b in have):
        return None
    base = [sum(col) / len(have) for col in zip(*(b["doc_nll"] for b in have))]
    return strength_interval(surrogate["doc_nll"], base, nb, **kw)


def ci_text(ci) -> str:
    """ " [lo, hi]" of an interval (a `strength_interval` result's "ci"), "" without one."""
    return f" [{ci[0]:.3f}, {ci[1]:.3f}]" if ci else ""
