"""Paired statistics for CE vs LSAP on the same examples: pure functions, no model, no I/O.

Inputs are per-example correctness (bool) of two models on the *same* examples in the same
order — one array per seed, the CE run and the LSAP run of that seed — pooled across seeds:

- `sign_test(b, c)`: exact two-sided sign test (= exact McNemar) on the discordant examples:
  b = CE wrong & LSAP right, c = CE right & LSAP wrong; p = min(1, 2·P(X ≤ min(b, c))),
  X ~ Binomial(b + c, ½); p = 1 when no example is discordant.
- `bootstrap_delta(ce, lsap, ...)`: percentile interval of Δ accuracy (LSAP − CE) from a
  paired bootstrap that resamples examples with replacement within each seed (so every seed
  keeps its weight), seeded (`numpy.random.default_rng(seed)`).
- `paired_comparison(ce, lsap)`: both, plus Δ and whether it survives p < `significance` (the significance level; `alpha` in lsap is only LSAP's threshold);
  `verdict(result)`: the one line the report and the quickstart print.
"""

from __future__ import annotations

import math

SIGNIFICANCE = 0.05


def binom_cdf_half(k: int, n: int) -> float:
    """P(X ≤ k) for X ~ Binomial(n, ½), exactly (integer sums)."""
    if k < 0:
        return 0.0
    if k >= n:
        return 1.0
    return sum(math.comb(n, i) for i in range(k + 1)) / 2**n


def sign_test(b: int, c: int) -> float:
    """Exact two-sided sign test / exact McNemar p-value for b vs c discordant pairs."""
    n = int(b) + int(c)
    if n == 0:
        return 1.0
    return min(1.0, 2.0 * binom_cdf_half(min(int(b), int(c)), n))


def _as_groups(x) -> list:
    """One bool array per seed: a flat sequence of bools is one group."""
    import numpy as np

    if len(x) and not isinstance(x[0], (bool, int, np.bool_, np.integer)):
        return [np.asarray(g, dtype=bool) for g in x]
    return [np.asarray(x, dtype=bool)]


def discordant(ce, lsap) -> tuple[int, int, int]:
    """(b, c, n): b = CE wrong & LSAP right, c = CE right & LSAP wrong, n = examples, pooled over groups."""
    b = c = n = 0
    for g_ce, g_ls in zip(_as_groups(ce), _as_groups(lsap), strict=True):
        if g_ce.shape != g_ls.shape:
            raise ValueError(f"paired arrays differ in length: {g_ce.shape} vs {g_ls.shape}")
        b += int((~g_ce & g_ls).sum())
        c += int((g_ce & ~g_ls).sum())
        n += len(g_ce)
    return b, c, n


def bootstrap_delta(
    ce, lsap, *, n_boot: int = 10_000, seed: int = 0, level: float = 0.95
) -> tuple[float, float]:
    """Percentile interval (level) of Δ = mean(LSAP correct) − mean(CE correct), pooled over groups.

    Per draw, for each group (seed) in order, `rng.integers(0, n_g, n_g)` picks n_g examples with
    replacement; Δ of the draw = Σ over groups of Σ (lsap − ce) at the picks / Σ n_g. Returns the
    (1 − level)/2 and (1 + level)/2 quantiles (numpy's linear interpolation)."""
    import numpy as np

    diffs = [
        g_ls.astype(np.int64) - g_ce.astype(np.int64)
        for g_ce, g_ls in zip(_as_groups(ce), _as_groups(lsap), strict=True)
    ]
    total = sum(len(d) for d in diffs)
    if total == 0:
        raise ValueError("bootstrap_delta: no examples")
    rng = np.random.default_rng(seed)
    draws = np.zeros(n_boot)
    for i in range(n_boot):
        draws[i] = (
            sum(int(d[rng.integers(0, len(d), len(d))].sum()) for d in diffs if len(d)) / total
        )
    lo, hi = np.quantile(draws, [(1 - level) / 2, (1 + level) / 2])
    return float(lo), float(hi)


def paired_comparison(
    ce, lsap, *, significance: float = SIGNIFICANCE, n_boot: int = 10_000, seed: int = 0
) -> dict:
    """{"delta", "n", "b", "c", "p", "ci": [lo, hi], "survives"}: Δ accuracy (LSAP − CE) over the
    pooled examples, the exact sign test on the discordant ones, the seeded paired bootstrap
    interval, and whether Δ survives p < significance (`survives`)."""
    b, c, n = discordant(ce, lsap)
    if n == 0:
        raise ValueError("paired_comparison: no examples")
    p = sign_test(b, c)
    lo, hi = bootstrap_delta(ce, lsap, n_boot=n_boot, seed=seed)
    return {
        "delta": (b - c) / n,
        "n": n,
        "b": b,
        "c": c,
        "p": p,
        "ci": [lo, hi],
        "level": 0.95,
        "survives": survives(p, significance),
        "significance": significance,
    }


def survives(p: float | None, significance: float = SIGNIFICANCE) -> bool:
    """Whether a difference with two-sided p-value `p` is significant (p < significance)."""
    return p is not None and p < significance


def verdict(res: dict | None, scale: float = 100.0, unit: str = "pts") -> str:
    """One line for a `paired_comparison` result, e.g.
    "Δ +1.07 pts, 95% CI [+0.31, +1.84], sign test p = 0.006 (1,842 pairs): LSAP better (p < 0.05)"
    or "... : inside the noise (p ≥ 0.05)"."""
    if not res:
        return "no paired per-example results"
    d, (lo, hi) = res["delta"] * scale, (x * scale for x in res["ci"])
    head = (
        f"Δ {d:+.2f} {unit}, {res.get('level', 0.95):.0%} CI [{lo:+.2f}, {hi:+.2f}], sign test "
        f"p = {res['p']:.3g} ({res['n']:,} pairs, {res['b']} vs {res['c']} discordant)"
    )
    a = res.get("significance", SIGNIFICANCE)
    if not res["survives"]:
        return f"{head}: inside the noise (p ≥ {a:g})"
    return f"{head}: LSAP {'better' if res['delta'] > 0 else 'worse'} (p < {a:g})"
