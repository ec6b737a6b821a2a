"""Verdicts with the seed as the unit, and Holm's correction: pure functions, no I/O.

The headline test treats seeds as replicates: one Δ per seed (LSAP − CE of the same seed on
the same items), a two-sided one-sample t-test of mean Δ = 0 over the seeds (df = n − 1) and
its t interval. Item-pooled tests (`lsap.eval.stats.paired_comparison`) are within-seed detail:
they ignore seed-to-seed variance, usually the larger one. A verdict is "inconclusive" when
there are fewer than two seeds, the seeds disagree in the sign of Δ, the interval covers 0,
or p ≥ α. Where several p-values are read together (task columns, sweep tables) apply `holm`.
"""

from __future__ import annotations

import math

SIGNIFICANCE = 0.05


def _t_pdf(x: float, df: int) -> float:
    c = math.lgamma((df + 1) / 2) - math.lgamma(df / 2) - 0.5 * math.log(df * math.pi)
    return math.exp(c - (df + 1) / 2 * math.log1p(x * x / df))


def t_sf2(t: float, df: int, steps: int = 4000) -> float:
    """Two-sided p = P(|T| ≥ |t|), T ~ Student t(df): Simpson on x = tan θ over [atan|t|, π/2)."""
    a, b = math.atan(abs(t)), math.pi / 2
    h = (b - a) / steps
    f = [
        _t_pdf(math.tan(a + i * h), df) / math.cos(a + i * h) ** 2
        if i < steps
        else (1 / math.pi if df == 1 else 0.0)
        for i in range(steps + 1)
    ]
    s = f[0] + f[-1] + 4 * sum(f[1:-1:2]) + 2 * sum(f[2:-1:2])
    return min(1.0, 2 * s * h / 3)


def t_quantile(level: float, df: int) -> float:
    """q with P(|T| ≤ q) = level (bisection on `t_sf2`)."""
    lo, hi = 0.0, 1000.0
    for _ in range(80):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if t_sf2(mid, df) > 1 - level else (lo, mid)
    return (lo + hi) / 2


def seed_level_test(deltas, *, significance: float = SIGNIFICANCE, level: float = 0.95) -> dict:
    """{"n_seeds", "delta", "per_seed", "sd", "p", "ci", "agree", "verdict"} over per-seed Δs."""
    d = [float(x) for x in deltas]
    n = len(d)
    out = {
        "n_seeds": n,
        "per_seed": d,
        "delta": sum(d) / n if n else None,
        "significance": significance,
        "level": level,
        "p": None,
        "ci": None,
        "sd": None,
        "agree": n > 0 and (all(x > 0 for x in d) or all(x < 0 for x in d)),
    }
    if n >= 2:
        m = out["delta"]
        sd = math.sqrt(sum((x - m) ** 2 for x in d) / (n - 1))
        se = sd / math.sqrt(n)
        out["sd"] = sd
        if se == 0:
            out["p"], out["ci"] = (1.0 if m == 0 else 0.0), [m, m]
        else:
            out["p"] = t_sf2(m / se, n - 1)
            q = t_quantile(level, n - 1)
            out["ci"] = [m - q * se, m + q * se]
    out["verdict"] = _verdict(out)
    return out


def _verdict(r: dict) -> str:
    if r["n_seeds"] < 2:
        return "inconclusive (one seed)"
    if not r["agree"]:
        return "inconclusive (seeds disagree)"
    lo, hi = r["ci"]
    if lo <= 0 <= hi or r["p"] >= r["significance"]:
        return f"inconclusive (interval covers 0 or p ≥ {r['significance']:g})"
    return f"LSAP {'better' if r['delta'] > 0 else 'worse'} (p < {r['significance']:g}, seed-level)"


def seed_line(r: dict | None, scale: float = 100.0, unit: str = "pts") -> str:
    """e.g. "Δ +1.33 pts over 2 seeds (per seed +2.1, +0.6), t-test over seeds p = 0.19,
    95% CI [−8.2, +10.9]: inconclusive (interval covers 0 ...)"."""
    if not r or not r["n_seeds"]:
        return "no per-seed results"
    per = ", ".join(f"{x * scale:+.2f}" for x in r["per_seed"])
    head = f"Δ {r['delta'] * scale:+.2f} {unit} over {r['n_seeds']} seed(s) (per seed {per})"
    if r["p"] is not None:
        lo, hi = (x * scale for x in r["ci"])
        head += f", t-test over seeds p = {r['p']:.3g}, {r['level']:.0%} CI [{lo:+.2f}, {hi:+.2f}]"
    return f"{head}: {r['verdict']}"


def holm(pvals: list[float | None]) -> list[float | None]:
    """Holm–Bonferroni adjusted p-values (same order; None stays None)."""
    idx = sorted((i for i, p in enumerate(pvals) if p is not None), key=lambda i: pvals[i])
    m, out, run = len(idx), list(pvals), 0.0
    for rank, i in enumerate(idx):
        run = max(run, min(1.0, (m - rank) * pvals[i]))
        out[i] = run
    return out


def seed_deltas(gc: list, gl: list, seeds: list) -> list[float]:
    """One Δ per seed (LSAP − CE accuracy, mean over that seed's items): a seed's groups (one per
    pair task when tasks are pooled) are concatenated first, so three tasks × five seeds give
    five replicates, not fifteen (the seed is the unit; tasks of one seed share its runs)."""
    import numpy as np

    out = []
    for s in dict.fromkeys(seeds):
        x = np.concatenate([np.asarray(c, float) for c, t in zip(gc, seeds) if t == s])
        y = np.concatenate([np.asarray(v, float) for v, t in zip(gl, seeds) if t == s])
        if len(x):
            out.append(float(y.mean() - x.mean()))
    return out


PAIRS_POOLED = "minimal pairs (all tasks)"  # the pooled pair tasks' key in report.json


def pairs_verdict(paired: list[dict] | None, setting: str | None = None) -> str:
    """The verdict line for the pooled minimal pairs of one LSAP setting (the first, or `setting`):
    the seed-level test first (`lsap.eval.seeds.seed_line`: "LSAP better/worse (p < 0.05,
    seed-level)" or "inconclusive (...)"), then the item-pooled sign test as within-seed detail.
    The quickstart's verdict line calls this with report.json's "paired"."""
    from lsap.eval.stats import verdict

    for row in paired or []:
        if setting in (None, row["setting"]):
            t = row["tests"].get(PAIRS_POOLED)
            if not t:
                return verdict(None)
            sl = t.get("seed_level")
            if sl is None and row.get("seeds") == 2:  # older report.json: min and max are the two Δ
                sl = seed_level_test([t["per_seed_min"], t["per_seed_max"]])
            if sl is None:
                return (
                    "seed-level test unavailable (this report.json predates per-seed Δ: rerun "
                    f"`lsap report` on its runs); within-seed detail (items pooled): {verdict(t)}"
                )
            return f"{seed_line(sl)}; within-seed detail (items pooled): {verdict(t)}"
    return verdict(None)
