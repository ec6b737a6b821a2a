"""Seed-level verdicts (lsap.eval.seeds) against slow references."""

import itertools
import math

import pytest

from lsap.eval import seeds as S


@pytest.mark.parametrize("n_items", [100, 100_000])
def test_opposite_seeds_inconclusive_whatever_the_items(n_items):
    # item counts do not enter: a pooled test over 2 × n_items items could be "significant"
    r = S.seed_level_test([+0.02, -0.01])
    assert r["verdict"].startswith("inconclusive") and not r["agree"]
    assert "inconclusive" in S.seed_line(r)


def test_one_seed_and_agreeing_seeds():
    assert S.seed_level_test([0.05])["verdict"] == "inconclusive (one seed)"
    r = S.seed_level_test([0.010, 0.012, 0.011, 0.009, 0.0105])
    assert r["verdict"].startswith("LSAP better") and r["ci"][0] > 0
    assert S.seed_level_test([0.01, 0.0101, 0.3])["verdict"].startswith("inconclusive")


def _slow_t_p(t, df, n=200_000):
    # midpoint rule on the pdf over [0, |t|], p = 1 − 2 ∫
    c = math.gamma((df + 1) / 2) / (math.sqrt(df * math.pi) * math.gamma(df / 2))
    h = abs(t) / n
    s = sum(c * (1 + ((i + 0.5) * h) ** 2 / df) ** (-(df + 1) / 2) for i in range(n)) * h
    return 1 - 2 * s


@pytest.mark.parametrize("t,df", [(0.3, 1), (2.0, 1), (1.5, 4), (3.1, 2), (2.57, 5), (0.0, 3)])
def test_t_pvalue_against_slow_reference(t, df):
    assert S.t_sf2(t, df) == pytest.approx(_slow_t_p(t, df), abs=1e-6)


def test_t_quantile_table():
    for df, q in [(1, 12.706), (2, 4.303), (4, 2.776), (9, 2.262), (29, 2.045)]:
        assert S.t_quantile(0.95, df) == pytest.approx(q, abs=2e-3)


def test_interval_and_p_against_direct():
    d = [0.02, 0.005, 0.013, -0.001]
    r = S.seed_level_test(d)
    m = sum(d) / 4
    sd = math.sqrt(sum((x - m) ** 2 for x in d) / 3)
    assert r["delta"] == pytest.approx(m) and r["sd"] == pytest.approx(sd)
    assert r["ci"][0] == pytest.approx(m - 3.182 * sd / 2, abs=1e-4)
    assert r["p"] == pytest.approx(_slow_t_p(m / (sd / 2), 3), abs=1e-6)
    assert r["verdict"] == "inconclusive (seeds disagree)"


def test_holm_against_brute_force():
    ps = [0.01, 0.04, None, 0.03, 0.2]
    got = S.holm(ps)
    vals = [p for p in ps if p is not None]
    m = len(vals)
    for i, p in enumerate(ps):
        if p is None:
            assert got[i] is None
            continue
        # Holm: adj(p_(k)) = max_{j ≤ k} min(1, (m − j + 1) p_(j))
        srt = sorted(vals)
        k = srt.index(p)
        assert got[i] == pytest.approx(max(min(1, (m - j) * srt[j]) for j in range(k + 1)))
    assert list(itertools.accumulate(sorted(x for x in got if x is not None), max)) == sorted(
        x for x in got if x is not None
    )


def test_seed_deltas_pool_a_seeds_tasks_before_the_seed_level_test():
    """Three pair tasks × five seeds are five replicates: each seed's tasks are concatenated and
    give one Δ (a slow loop over items is the reference); the verdict line's seed count says 5."""
    import random

    from lsap.eval.seeds import seed_deltas, seed_level_test
    from lsap.experiments.report import PAIRS_POOLED, pairs_verdict

    rng = random.Random(0)
    gc, gl, gs = [], [], []
    for s in range(5):
        for n in (7, 11, 3):  # tasks of different sizes: a mean of task means would differ
            gc.append([rng.random() < 0.5 for _ in range(n)])
            gl.append([rng.random() < 0.6 for _ in range(n)])
            gs.append(s)
    got = seed_deltas(gc, gl, gs)
    ref = []
    for s in range(5):
        c = [v for g, t in zip(gc, gs) if t == s for v in g]
        l_ = [v for g, t in zip(gl, gs) if t == s for v in g]
        ref.append(sum(l_) / len(l_) - sum(c) / len(c))
    assert got == pytest.approx(ref) and len(got) == 5
    sl = seed_level_test(got)
    t = {"delta": 0.1, "ci": [0.0, 0.2], "p": 0.5, "n": 105, "b": 3, "c": 4, "survives": False}
    line = pairs_verdict(
        [{"setting": "x", "seeds": 5, "tests": {PAIRS_POOLED: {**t, "seed_level": sl}}}]
    )
    assert "over 5 seed(s)" in line
    # an older report.json with 5 seeds and only min/max kept: no seed-level test can be rebuilt
    old = {**t, "per_seed_min": min(got), "per_seed_max": max(got)}
    line = pairs_verdict([{"setting": "x", "seeds": 5, "tests": {PAIRS_POOLED: old}}])
    assert line.startswith("seed-level test unavailable") and "rerun `lsap report`" in line


def test_report_delta_table_verdict_is_the_seed_level_test():
    """The Δ table's verdict column read the pooled-items test first (items of every seed as
    independent): a tiny pooled p printed 'LSAP better' while the seeds disagreed."""
    from lsap.experiments.report_tables import delta_lines

    per_seed = [0.04, -0.01]
    row = {
        "setting": "lsap-a0.05",
        "n": 2,
        "pairs_average": {"mean": 0.015, "min": -0.01, "max": 0.04},
        "strength": None,
    }
    pooled = {  # "significant" over 20,000 pooled items
        "delta": 0.015, "p": 1e-9, "ci": [0.01, 0.02], "survives": True, "significance": 0.05,
        "seed_level": S.seed_level_test(per_seed),
    }  # fmt: skip
    paired = [{"setting": "lsap-a0.05", "tests": {S.PAIRS_POOLED: pooled}}]
    line = next(ln for ln in delta_lines([row], paired) if ln.startswith("| lsap-a0.05"))
    verdict = line.rstrip(" |").rsplit("|", 1)[1]
    assert "inconclusive (seeds disagree)" in verdict and "LSAP better" not in verdict, line
    assert "1e-09" in line  # the pooled p stays, as detail
    agree = {**pooled, "seed_level": S.seed_level_test([0.010, 0.012, 0.011, 0.009, 0.0105])}
    line = delta_lines(
        [{**row, "n": 5}], [{"setting": "lsap-a0.05", "tests": {S.PAIRS_POOLED: agree}}]
    )
    assert any("LSAP better (p < 0.05, seed-level)" in ln for ln in line)
