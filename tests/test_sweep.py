"""`lsap sweep`: expansion, a toy 2×2 grid end to end (report + Δ table + figure), and a
sweep killed mid-way that resumes without redoing finished runs."""

from __future__ import annotations

import json

import pytest

from lsap import sweep as sw
from lsap.errors import SweepError

TOY = """
regime: quickstart
regime_settings: {{corpus: pydoc-topics, surrogate_tokenizer_corpus: shakespeare, ce_tokens: 6000,
                  surrogate_multiples: [1, 2], vocab_size: 320, tokenizer_docs: 60, seq_len: 32,
                  batch_size: 8, cache: "{cache}"}}
seeds: [0]
base: ["surrogate.model=@2x", "train.eval_batches=4"]
grid:
  lsap.alpha: [0.01, 0.2]
  lsap.lam: [1.0, 0.3]
store: true
eval: {{tasks: pairs, max_examples: 30, targets: "@2x"}}
"""


def test_expand_grid_extra_and_names(tmp_path):
    p = tmp_path / "s.yaml"
    p.write_text("seeds: [0, 1]\ngrid: {lsap.alpha: [0.01, 0.05], lsap.lam: [1.0]}\n"
                 "extra: [{lsap.lambda_schedule: cosine}]\nbudget_flops: 1e9\n")
    plan = sw.expand(sw.load_spec(p))
    names = [r["name"] for r in plan]
    assert names == ["ce-s0", "lsap-a0.01-lam1.0-s0", "lsap-a0.05-lam1.0-s0", "lsap-schedcosine-s0",
                     "ce-s1", "lsap-a0.01-lam1.0-s1", "lsap-a0.05-lam1.0-s1", "lsap-schedcosine-s1"]
    assert plan[1]["overrides"] == {"lsap.alpha": 0.01, "lsap.lam": 1.0} and plan[0]["loss"] == "ce"


def test_bad_specs_are_refused(tmp_path):
    p = tmp_path / "s.yaml"
    p.write_text("grid: {lsap.alpha: 0.05}\n")
    with pytest.raises(SweepError, match="non-empty lists"):
        sw.load_spec(p)
    p.write_text("grd: {}\n")
    with pytest.raises(SweepError, match="unknown keys"):
        sw.load_spec(p)
    with pytest.raises(SweepError, match="packaged sweeps: .*strength"):
        sw.load_spec(tmp_path / "nope.yaml")
    for name in ("strength", "alpha-lambda", "toy"):  # every shipped spec loads and expands
        assert sw.expand(sw.load_spec(name))


def test_toy_sweep_report_and_resume_after_a_kill(tmp_path, monkeypatch, capsys):
    import lsap.evaluate

    spec = tmp_path / "toy.yaml"
    spec.write_text(TOY.format(cache=tmp_path / "cache"))
    out = tmp_path / "out"
    real = lsap.evaluate.evaluate_run
    calls = []

    def dies_on_third(*a, **k):  # the sweep is "killed" while evaluating its third run
        calls.append(a[0])
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real(*a, **k)

    monkeypatch.setattr(lsap.evaluate, "evaluate_run", dies_on_third)
    with pytest.raises(KeyboardInterrupt):
        sw.run_sweep(spec, out)
    state = json.loads((out / "sweep.json").read_text())
    assert [r.get("status") for r in state["runs"]][:3] == ["done", "done", None]
    finished = [r["out_dir"] for r in state["runs"][:2]]
    stamps = {d: open(f"{d}/DONE").read() for d in finished}
    capsys.readouterr()

    monkeypatch.setattr(lsap.evaluate, "evaluate_run", real)
    sw.run_sweep(spec, out)
    log = capsys.readouterr().out
    assert log.count("finished earlier, reused") >= 3  # the two evaluated runs and the trained third
    assert log.count("checkpoint(s) already evaluated") >= 2  # their eval.json kept (same eval set)
    for d in finished:
        assert open(f"{d}/DONE").read() == stamps[d]  # not retrained
    rep = json.loads((out / "report.json").read_text())
    assert len(rep["rows"]) == 5 and {r["loss"] for r in rep["rows"]} == {"Cross Entropy", "LSAP"}
    assert len(rep["deltas"]) == 4 and all(d["n"] == 1 for d in rep["deltas"])
    assert all(r["pairs_average"] is not None and r["by_m"] for r in rep["rows"])
    for f in ("report.md", "delta_vs_strength.png", "score_vs_flops.png"):
        assert (out / f).is_file()
    assert "LSAP − CE at matched FLOPs" in (out / "report.md").read_text()
    # another spec in the same output directory is refused
    spec.write_text(TOY.format(cache=tmp_path / "cache").replace("0.2]", "0.3]"))
    with pytest.raises(SweepError, match="another sweep"):
        sw.run_sweep(spec, out)
