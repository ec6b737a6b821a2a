"""lsap.eval.stats against hand-computed cases."""

from __future__ import annotations

import math

import numpy as np
import pytest

from lsap.eval import stats


def test_binomial_cdf_and_sign_test_hand_computed():
    assert stats.binom_cdf_half(0, 5) == pytest.approx(1 / 32)
    assert stats.binom_cdf_half(1, 10) == pytest.approx(11 / 1024)
    assert stats.binom_cdf_half(-1, 3) == 0.0 and stats.binom_cdf_half(3, 3) == 1.0
    assert stats.sign_test(0, 5) == pytest.approx(2 / 32)  # 0.0625: five of five is not enough
    assert stats.sign_test(5, 0) == pytest.approx(2 / 32)
    assert stats.sign_test(1, 9) == pytest.approx(22 / 1024)  # 0.0215
    assert stats.sign_test(0, 6) == pytest.approx(2 / 64)  # 0.03125 < 0.05
    assert stats.sign_test(4, 4) == 1.0 and stats.sign_test(0, 0) == 1.0  # capped, no discordance
    # 60 vs 40 discordant: 2 · Σ_{i≤40} C(100, i) / 2^100
    assert stats.sign_test(60, 40) == pytest.approx(
        2 * sum(math.comb(100, i) for i in range(41)) / 2**100
    )
    assert 0.05 < stats.sign_test(60, 40) < 0.06


def test_discordant_pooled_over_seeds():
    ce = [[True, True, False, False, True], [False, False, True]]
    ls = [[True, False, True, True, True], [True, False, False]]
    # seed 0: b = 2 (idx 2, 3), c = 1 (idx 1); seed 1: b = 1 (idx 0), c = 1 (idx 2)
    assert stats.discordant(ce, ls) == (3, 2, 8)
    assert stats.discordant([True, False], [False, True]) == (1, 1, 2)  # a flat list is one seed
    with pytest.raises(ValueError):
        stats.discordant([[True]], [[True, False]])


def test_bootstrap_degenerate_and_seeded():
    same = [True, False, True, True]
    assert stats.bootstrap_delta(same, same, n_boot=50) == (0.0, 0.0)
    assert stats.bootstrap_delta([False] * 7, [True] * 7, n_boot=50) == (1.0, 1.0)  # every pair +1
    rng = np.random.default_rng(3)
    ce = [rng.random(40) < 0.5, rng.random(30) < 0.5]
    ls = [rng.random(40) < 0.6, rng.random(30) < 0.6]
    a = stats.bootstrap_delta(ce, ls, n_boot=300, seed=7)
    assert a == stats.bootstrap_delta(ce, ls, n_boot=300, seed=7)  # seeded
    assert a != stats.bootstrap_delta(ce, ls, n_boot=300, seed=8)


def test_bootstrap_equals_naive_loop():
    """The documented resampling rule, written out naively."""
    rng = np.random.default_rng(0)
    ce = [rng.random(25) < 0.5, rng.random(9) < 0.4]
    ls = [rng.random(25) < 0.6, rng.random(9) < 0.7]
    r = np.random.default_rng(11)
    draws = []
    for _ in range(200):
        tot = 0
        for c, s in zip(ce, ls):
            idx = r.integers(0, len(c), len(c))
            tot += sum(int(s[i]) - int(c[i]) for i in idx)
        draws.append(tot / 34)
    ref = (float(np.quantile(draws, 0.025)), float(np.quantile(draws, 0.975)))
    assert stats.bootstrap_delta(ce, ls, n_boot=200, seed=11) == pytest.approx(ref)


def test_paired_comparison_and_verdict():
    # 10 pairs: 6 LSAP-only right, 0 CE-only right, 4 both right -> Δ = +0.6, p = 2/64
    ce = [False] * 6 + [True] * 4
    ls = [True] * 10
    res = stats.paired_comparison(ce, ls, n_boot=200)
    assert res["delta"] == pytest.approx(0.6) and (res["b"], res["c"], res["n"]) == (6, 0, 10)
    assert res["p"] == pytest.approx(1 / 32) and res["survives"]
    assert res["ci"][0] <= 0.6 <= res["ci"][1]
    line = stats.verdict(res)
    assert "+60.00 pts" in line and "LSAP better (p < 0.05)" in line
    weak = stats.paired_comparison(
        [False] * 5 + [True] * 5, [True] * 10, n_boot=200
    )  # b = 5, c = 0
    assert weak["p"] == pytest.approx(1 / 16) and not weak["survives"]
    assert "inside the noise" in stats.verdict(weak)
    worse = stats.paired_comparison([True] * 8, [False] * 8, n_boot=50)
    assert worse["survives"] and "LSAP worse" in stats.verdict(worse)
    assert stats.survives(0.049) and not stats.survives(0.05) and not stats.survives(None)
    assert stats.verdict(None) == "no paired per-example results"
