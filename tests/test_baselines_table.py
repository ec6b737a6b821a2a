"""The baselines table's seed-level statistics against slow references."""

import math

import pytest

from lsap.experiments.baselines import compare, holm, paired_t_p, render


def test_paired_t_matches_scipy_and_holm_by_hand():
    from scipy import stats

    d = [1.0, 2.0, 0.5, 1.5, 0.7]
    assert paired_t_p(d) == pytest.approx(stats.ttest_1samp(d, 0.0).pvalue, rel=1e-9)
    ps = [0.01, 0.04, 0.03, None]
    # by hand: sorted 0.01 (×3), 0.03 (×2), 0.04 (×1), running max
    assert holm(ps) == [pytest.approx(0.03), pytest.approx(0.06), pytest.approx(0.06), None]


def _summary(deltas):
    runs = []
    for s, dd in enumerate(deltas):
        runs.append({"arm": "ce", "seed": s, "scores": {"x": 50.0 + s}})
        runs.append({"arm": "lsap", "seed": s, "scores": {"x": 50.0 + s + dd}})
    return {"columns": ["x"], "runs": runs}


def test_opposite_seeds_inconclusive_consistent_seeds_better():
    assert compare(_summary([3.0, -3.0, 2.0, -2.0, 0.1]))["lsap"]["x"]["verdict"] == "inconclusive"
    r = compare(_summary([1.0, 1.1, 0.9, 1.2, 1.05]))["lsap"]["x"]
    assert r["verdict"] == "better" and r["d_lo"] > 0
    assert compare(_summary([-1.0, -1.1, -0.9, -1.2, -1.05]))["lsap"]["x"]["verdict"] == "worse"
    assert compare(_summary([5.0, 5.0]))["lsap"]["x"]["verdict"] == "inconclusive"  # < 3 seeds


def test_interval_covers_like_a_slow_t():
    from scipy import stats

    d = [1.0, 1.1, 0.9, 1.2, 1.05]
    r = compare(_summary(d))["lsap"]["x"]
    m = sum(d) / 5
    sd = math.sqrt(sum((x - m) ** 2 for x in d) / 4)
    lo, hi = stats.t.interval(0.95, 4, loc=m, scale=sd / math.sqrt(5))
    assert (r["d_lo"], r["d_hi"]) == (pytest.approx(lo), pytest.approx(hi))
    row = render(_summary(d)).splitlines()[-1]
    assert row.startswith("| lsap | 5 |") and row.endswith(": better |")


def test_collect_reads_last_checkpoint(tmp_path):
    import json

    from lsap.experiments.baselines import collect

    runs = []
    for i, (setting, seed) in enumerate([("ce", 0), ("lsap-a0.05-lam1.0", 0), ("ce", 1)]):
        d = tmp_path / f"r{i}"
        for step, v in (("step_00000010", 0.1), ("step_00000020", 0.5 + i / 100)):
            (d / "checkpoints" / step).mkdir(parents=True)
            ev = {"tasks": {"zorro": {"value": v}}}
            (d / "checkpoints" / step / "eval.json").write_text(json.dumps(ev))
        (d / "checkpoints" / "step_00000020" / "benchmarks.json").write_text(
            json.dumps({"tasks": {"piqa": {"acc": 0.25, "p_gold": 0.5, "gold_bpb": 3.0}}})
        )
        runs.append(
            {
                "setting": setting,
                "seed": seed,
                "status": "done" if i < 2 else "running",
                "out_dir": str(d),
            }
        )
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "sweep.json").write_text(json.dumps({"runs": runs}))
    s = collect([str(tmp_path / "out")], {"a": "b"})
    assert s["columns"] == ["zorro", "piqa acc", "piqa p_gold"]
    assert len(s["runs"]) == 2  # the unfinished run is left out
    assert s["runs"][1] == {
        "arm": "LSAP α0.05 λ1",
        "seed": 0,
        "checkpoint": "step_00000020",
        "scores": {"zorro": pytest.approx(51.0), "piqa acc": 25.0, "piqa p_gold": 50.0},
    }


def test_bpb_columns_improve_downwards_and_the_delta_view_leads():
    runs = []
    for s, d in enumerate([0.10, 0.11, 0.09, 0.12, 0.105]):
        runs.append({"arm": "ce", "seed": s, "scores": {"held-out bpb": 2.0 + s / 10}})
        runs.append({"arm": "lsap", "seed": s, "scores": {"held-out bpb": 2.0 + s / 10 + d}})
    summary = {"columns": ["held-out bpb"], "runs": runs}
    assert compare(summary)["lsap"]["held-out bpb"]["verdict"] == "worse"  # higher bpb is worse
    md = render(summary)
    view = md.index("| held-out bpb ↓ | +0.1")
    assert view < md.index("| arm | seeds |")  # the Δ view comes before the full table


def test_collect_finds_runs_recorded_relative_to_where_the_sweep_ran(tmp_path, monkeypatch):
    import json

    from lsap.experiments.baselines import collect

    ck = tmp_path / "out" / "runs" / "ce-1" / "checkpoints" / "step_00000010"
    ck.mkdir(parents=True)
    (ck / "eval.json").write_text(json.dumps({"tasks": {"t": {"value": 0.5}}, "val_bpb": 2.5}))
    sweep = tmp_path / "out" / "seed0"
    sweep.mkdir()
    run = {"setting": "ce", "seed": 0, "status": "done", "out_dir": "out/runs/ce-1"}
    (sweep / "sweep.json").write_text(json.dumps({"runs": [run]}))
    monkeypatch.chdir(tmp_path.parent)  # not the directory the sweep ran from
    s = collect([str(sweep)], {})
    assert s["runs"][0]["scores"] == {"t": 50.0, "held-out bpb": 2.5}
