"""`lsap report`: matched-FLOPs table against the stored eval.json values, bold best, plots, errors.

Uses the two fake runs of `tests/test_evaluate.py` (CE: checkpoints at 1e12, 2e12,
3e12 FLOPs; LSAP: 1.3e12, 2.6e12), evaluated by the real `lsap eval` on the offline
task set. The largest budget both reached is 2.6e12: CE must use step 200 (2e12,
the most FLOPs not above it), LSAP step 200 (2.6e12).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from lsap.cli.main import main
from lsap.experiments.report import ReportError, make_report
from tests.test_evaluate import evaluated, world  # noqa: F401  (session fixtures)


def _eval(run: Path, step: int) -> dict:
    return json.loads((run / "checkpoints" / f"step_{step:08d}" / "eval.json").read_text())


def _rows(md: str) -> dict[str, list[str]]:
    """The rows of the report's first table (the matched-FLOPs table), by run name."""
    out, started = {}, False
    for line in md.splitlines():
        if line.startswith("| Run"):
            started = True
        elif started and line.startswith("| "):
            cells = [c.strip() for c in line.strip("|").split("|")]
            out[cells[0]] = cells
        elif started and not line.startswith("|"):
            break
    return out


def test_report_matches_stored_results(evaluated, tmp_path, capsys):
    runs = evaluated["runs"]
    out = tmp_path / "rep"
    assert main(["report", str(runs["ce"]), str(runs["lsap"]), "--out", str(out)]) == 0
    md = (out / "report.md").read_text()
    data = json.loads((out / "report.json").read_text())
    for png in ("score_vs_flops.png", "val_loss_vs_flops.png", "val_loss_vs_tokens.png"):
        assert (out / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not list(out.glob(".tmp-*"))

    assert data["budget"] == pytest.approx(2.6e12)
    assert "2.600e+12" in md
    picks = {r["run"]: r for r in data["rows"]}
    assert picks["ce"]["checkpoint"] == "step_00000200" and not picks["ce"]["above_budget"]
    assert picks["lsap"]["checkpoint"] == "step_00000200" and picks["lsap"][
        "flops"
    ] == pytest.approx(2.6e12)

    rows = _rows(md)
    tasks = data["tasks"]
    from lsap.eval.tasks import OFFLINE_TASKS

    assert tasks[:2] == ["lsap_lastword", "lsap_nextsent"] and set(tasks) == set(OFFLINE_TASKS)
    stored = {"ce": _eval(runs["ce"], 200), "lsap": _eval(runs["lsap"], 200)}
    for name, e in stored.items():
        cells = rows[name]
        assert cells[1] == {"ce": "Cross Entropy", "lsap": "LSAP"}[name]
        assert cells[2] == {"ce": "0", "lsap": "0.05"}[name]
        assert cells[3] == {"ce": "-", "lsap": "cosine"}[name]
        for j, t in enumerate(tasks):
            assert cells[4 + j].strip("*") == f"{e['tasks'][t]['value'] * 100:.2f}"
        avg = sum(e["tasks"][t]["value"] for t in tasks) / len(tasks)
        assert cells[4 + len(tasks)].strip("*") == f"{avg * 100:.2f}"
        assert cells[5 + len(tasks)].strip("*") == f"{e['val_loss']:.4f}"
        assert "step_00000200" in cells[7 + len(tasks)]
    # bold marks exactly the best value of each column (ties bold both)
    for j, t in enumerate([*tasks, "avg"]):
        vals = {n: rows[n][4 + j] for n in rows}
        nums = {n: float(v.strip("*")) for n, v in vals.items()}
        for n, v in vals.items():
            assert v.startswith("**") == (nums[n] == max(nums.values())), (t, vals)
    # lower is better for the loss column
    losses = {n: float(rows[n][5 + len(tasks)].strip("*")) for n in rows}
    for n in rows:
        assert rows[n][5 + len(tasks)].startswith("**") == (losses[n] == min(losses.values()))


def test_report_explicit_budget_and_above(evaluated, tmp_path):
    runs = evaluated["runs"]
    res = make_report([runs["ce"], runs["lsap"]], tmp_path / "a", flops=1.2e12)
    picks = {r["run"]: r for r in res["table"]["rows"]}
    assert picks["ce"]["checkpoint"] == "step_00000100" and not picks["ce"]["above_budget"]
    # LSAP's first checkpoint (1.3e12) is above 1.2e12: nearest above, flagged
    assert picks["lsap"]["checkpoint"] == "step_00000100" and picks["lsap"]["above_budget"]
    assert "step_00000100 †" in (tmp_path / "a" / "report.md").read_text()
    res = make_report([runs["ce"], runs["lsap"]], tmp_path / "b", flops=1e15)
    assert {r["run"]: r["checkpoint"] for r in res["table"]["rows"]} == {
        "ce": "step_00000300",
        "lsap": "step_00000200",
    }


def _copy(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


def test_error_run_without_checkpoints(evaluated, tmp_path, capsys):
    empty = tmp_path / "empty"
    empty.mkdir()
    out = tmp_path / "rep"
    assert main(["report", str(evaluated["runs"]["ce"]), str(empty), "--out", str(out)]) == 2
    assert "no checkpoints" in capsys.readouterr().err
    assert not out.exists()


def test_error_unevaluated_run(world, tmp_path):
    run = _copy(world["runs"]["ce"], tmp_path / "r")
    for p in run.glob("checkpoints/*/eval.json"):
        p.unlink()
    with pytest.raises(ReportError, match="lsap eval"):
        make_report([run], tmp_path / "rep")


def test_error_mixed_eval_sets(evaluated, tmp_path, capsys):
    other = _copy(evaluated["runs"]["lsap"], tmp_path / "other")
    f = other / "checkpoints" / "step_00000100" / "eval.json"
    e = json.loads(f.read_text())
    e["eval_set_hash"] = "0" * 64
    f.write_text(json.dumps(e))
    out = tmp_path / "rep"
    assert main(["report", str(evaluated["runs"]["ce"]), str(other), "--out", str(out)]) == 2
    assert "different evaluation sets" in capsys.readouterr().err
    assert not out.exists()


def test_error_mixed_tokenizers(evaluated, tmp_path, capsys):
    other = _copy(evaluated["runs"]["lsap"], tmp_path / "other")
    for f in other.glob("checkpoints/*/eval.json"):
        e = json.loads(f.read_text())
        e["tokenizer_hash"] = "f" * 64
        f.write_text(json.dumps(e))
    out = tmp_path / "rep"
    out.mkdir()
    (out / "keep.txt").write_text("x")
    assert main(["report", str(evaluated["runs"]["ce"]), str(other), "--out", str(out)]) == 2
    assert "different base tokenizers" in capsys.readouterr().err
    assert sorted(p.name for p in out.iterdir()) == ["keep.txt"]


def test_plot_failure_leaves_nothing(evaluated, tmp_path, monkeypatch):
    import lsap.experiments.report as rep

    def boom(*a, **k):
        raise ReportError("plot failed")

    monkeypatch.setattr(rep, "write_plots", boom)
    out = tmp_path / "rep"
    with pytest.raises(ReportError):
        make_report([evaluated["runs"]["ce"]], out)
    assert list(out.iterdir()) == []


def test_matched_tokens_view_and_spread(evaluated, tmp_path):
    from lsap.experiments.report import group_spread, load_run

    runs = evaluated["runs"]
    res = make_report([runs["ce"], runs["lsap"]], tmp_path / "t")
    data = json.loads((tmp_path / "t" / "report.json").read_text())
    tok = data["matched_tokens"]
    finals = [load_run(runs[n]).evals[-1]["tokens"] for n in ("ce", "lsap")]
    assert tok["budget"] == min(finals) and tok["axis"] == "tokens"
    for row in tok["rows"]:
        run = load_run(runs[row["run"]])
        ok = [e["tokens"] for e in run.evals if e["tokens"] <= tok["budget"]]
        assert row["tokens"] == max(ok)
    assert "## Matched tokens (biased toward LSAP; not a verdict)" in res["markdown"]
    assert "no seed-to-seed spread" in res["markdown"]
    # spread over a group = mean/min/max of its rows
    table = {
        "rows": [
            {
                "loss": "LSAP",
                "alpha": 0.05,
                "schedule": "constant",
                "run": f"x-s{i}",
                "setting": "x",
                "average": a,
                "val_loss": v,
                "val_bpb": None,
            }
            for i, (a, v) in enumerate([(0.3, 4.0), (0.5, 3.0)])
        ]
    }
    (g,) = group_spread(table)
    assert g["n"] == 2 and g["average"] == {"mean": 0.4, "min": 0.3, "max": 0.5}
    assert g["val_loss"]["mean"] == 3.5 and g["val_bpb"] is None


def test_budget_is_the_runs_common_max_flops():
    """Runs trained to one train.max_flops stop at different fractions of a step below it;
    each must be scored at its own last checkpoint, not at the smallest run's last point
    (regression: CE was scored at its matched-tokens checkpoint, 84% of its compute)."""
    from pathlib import Path

    from lsap.experiments.report import Run, build_table

    def run(name, loss, points):
        evals = [
            {
                "checkpoint": f"step_{s:08d}",
                "step": s,
                "flops": f,
                "tokens": t,
                "tasks": {"x": {"value": v}},
                "eval_set_hash": "h",
                "tokenizer_hash": "t",
            }
            for s, f, t, v in points
        ]
        cfg = {"name": name, "loss": loss, "train": {"max_flops": 5.04e12, "seed": 0}}
        return Run(name=name, dir=Path(name), config=cfg, evals=evals, metrics=[])

    ce = run("ce-s0", "ce", [(163, 4.205e12, 333_824, 0.60), (195, 5.038e12, 399_360, 0.70)])
    ls = run("lsap-s0", "lsap", [(163, 5.026e12, 333_824, 0.65)])
    t = build_table([ce, ls])
    assert t["budget"] == 5.04e12 and t["budget_source"] == "train.max_flops of every run"
    rows = {r["run"]: r for r in t["rows"]}
    assert rows["ce-s0"]["checkpoint"] == "step_00000195" and not rows["ce-s0"]["above_budget"]
    assert rows["lsap-s0"]["checkpoint"] == "step_00000163"
    # different max_flops: the old rule (the largest budget every run reached) applies
    ls.config["train"]["max_flops"] = 6e12
    assert build_table([ce, ls])["budget"] == 5.026e12


def test_a_run_stopped_short_of_the_common_max_flops_is_flagged():
    """A run killed at 44% of the common train.max_flops was compared as matched-FLOPs,
    unflagged; runs stopping less than one step below the budget stay unflagged."""
    from pathlib import Path

    from lsap.experiments.report import Run, build_table, render_markdown

    def run(name, loss, points):
        evals = [
            {"checkpoint": f"step_{s:08d}", "step": s, "flops": f, "tokens": s * 2048,
             "tasks": {"x": {"value": 0.6}}, "eval_set_hash": "h", "tokenizer_hash": "t"}
            for s, f in points
        ]  # fmt: skip
        cfg = {"name": name, "loss": loss, "train": {"max_flops": 5.04e12, "seed": 0}}
        return Run(name=name, dir=Path(name), config=cfg, evals=evals, metrics=[])

    ce = run("ce-s0", "ce", [(195, 5.038e12)])
    ls = run("lsap-s0", "lsap", [(72, 0.44 * 5.04e12)])  # killed at 44%
    t = build_table([ce, ls])
    rows = {r["run"]: r for r in t["rows"]}
    assert rows["lsap-s0"]["short_of_budget"] and not rows["ce-s0"]["short_of_budget"]
    md = render_markdown(t, [ce, ls])
    assert "NOT matched FLOPs**: lsap-s0 stopped short" in md and "‡ 44%" in md
    ls.evals[0].update(step=163, flops=5.026e12)  # finished: a fraction of a step below
    t = build_table([ce, ls])
    assert not any(r["short_of_budget"] for r in t["rows"])
    assert "NOT matched" not in render_markdown(t, [ce, ls])


def test_report_paired_tests_from_per_example_results(evaluated, tmp_path):
    """`lsap report` pairs each example of the LSAP run with the CE run's (matched checkpoints),
    pools the pair tasks, and prints p, the bootstrap interval and which Δ survive."""
    from lsap.eval.stats import paired_comparison
    from lsap.eval.tasks import PAIR_TASKS, unpack_scores
    from lsap.experiments.report import PAIRS_POOLED, REPLACE_EQUAL, pairs_verdict

    runs = evaluated["runs"]
    res = make_report([runs["ce"], runs["lsap"]], tmp_path / "p")
    data = json.loads((tmp_path / "p" / "report.json").read_text())
    (row,) = data["paired"]
    ce, ls = _eval(runs["ce"], 200), _eval(runs["lsap"], 200)  # the matched picks (test above)
    arrays = {
        t: (
            unpack_scores(ce["tasks"][t]["examples"]),
            unpack_scores(ls["tasks"][t]["examples"]),
            ce["tasks"][t]["metric"],
        )
        for t in PAIR_TASKS
    }
    for t, (a, b, m) in arrays.items():
        ref = paired_comparison(a[m], b[m])
        got = row["tests"][t]
        assert (got["b"], got["c"], got["n"]) == (ref["b"], ref["c"], ref["n"]) and got["p"] == ref[
            "p"
        ]
        assert got["ci"] == pytest.approx(ref["ci"])
        assert got["delta"] == pytest.approx(ls["tasks"][t]["value"] - ce["tasks"][t]["value"])
    pooled = paired_comparison(
        [arrays[t][0][arrays[t][2]] for t in PAIR_TASKS],
        [arrays[t][1][arrays[t][2]] for t in PAIR_TASKS],
    )
    assert row["tests"][PAIRS_POOLED]["p"] == pooled["p"] and row["tests"][PAIRS_POOLED]["n"] == 24
    # the seed is the unit: one seed, three pooled tasks → one per-seed Δ (over all 24 items), not three
    import numpy as np

    x = np.concatenate([arrays[t][0][arrays[t][2]] for t in PAIR_TASKS]).astype(float)
    y = np.concatenate([arrays[t][1][arrays[t][2]] for t in PAIR_TASKS]).astype(float)
    assert row["tests"][PAIRS_POOLED]["per_seed"] == pytest.approx([y.mean() - x.mean()])
    assert row["tests"][PAIRS_POOLED]["seed_level"]["n_seeds"] == 1
    a, b, _ = arrays["lsap_pairs_replace"]
    eq = a["same_tokens"] & b["same_tokens"]
    if eq.any():
        assert row["tests"][REPLACE_EQUAL]["n"] == int(eq.sum())
    md = res["markdown"]
    assert "## Paired tests over examples, pooled across seeds" in md and "survives p < 0.05" in md
    line = pairs_verdict(data["paired"])
    assert ("inside the noise" in line) != pooled["survives"] and f"{pooled['n']:,} pairs" in line


def test_report_names_runs_by_directory(evaluated, tmp_path):
    """report.json and report.md name each run by its directory (`ce-s0-<hash>`, as `ls` shows
    it), with the short config name kept as "name" (issue 28); two directories of one name are
    told apart by their paths."""
    ce = _copy(evaluated["runs"]["ce"], tmp_path / "ce-1a2b3c4d")  # config name: "ce"
    ls = _copy(evaluated["runs"]["lsap"], tmp_path / "runs" / "lsap-5e6f7a8b")
    res = make_report([ce, ls], tmp_path / "rep")
    data = json.loads((tmp_path / "rep" / "report.json").read_text())
    assert {r["run"]: r["name"] for r in data["rows"]} == {
        "ce-1a2b3c4d": "ce",
        "lsap-5e6f7a8b": "lsap",
    }
    assert {r["setting"] for r in data["rows"]} == {"ce", "lsap"}
    rows = _rows(res["markdown"])
    assert set(rows) == {"ce-1a2b3c4d", "lsap-5e6f7a8b"}
    # a short name that is not the directory's prefix (a sweep's) is shown next to it
    res = make_report([ce, ls], tmp_path / "rep2", names=["ce-s0", "a0.05-s0"])
    assert set(_rows(res["markdown"])) == {"ce-1a2b3c4d (ce-s0)", "lsap-5e6f7a8b (a0.05-s0)"}
    assert {r["name"] for r in res["table"]["rows"]} == {"ce-s0", "a0.05-s0"}
    # two directories named alike: their paths
    other = _copy(evaluated["runs"]["lsap"], tmp_path / "b" / "ce-1a2b3c4d")
    res = make_report([ce, other], tmp_path / "rep3", names=["ce", "lsap"])
    assert {r["run"] for r in res["table"]["rows"]} == {str(ce), str(other)}
