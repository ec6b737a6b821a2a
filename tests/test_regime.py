"""The regime module: shared by quickstart and sweep, no import circle, run dirs keyed by config."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "lsap"


def _imports(path: Path) -> set[str]:
    """lsap modules a file imports (anywhere in it, lazily or not)."""
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("lsap"):
            out.add(node.module)
            out.update(
                f"{node.module}.{a.name}" for a in node.names
            )  # `from lsap.pkg import module`
        elif isinstance(node, ast.Import):
            out.update(a.name for a in node.names if a.name.startswith("lsap"))
    return out


def _graph() -> dict[str, set[str]]:
    mods = {
        "lsap." + ".".join(p.relative_to(SRC).with_suffix("").parts): p
        for p in SRC.rglob("*.py")
        if p.stem != "__init__"
    }
    return {m: {i for i in _imports(p) if i in mods and i != m} for m, p in mods.items()}


def _reaches(g: dict, a: str, b: str) -> bool:
    seen, todo = set(), [a]
    while todo:
        x = todo.pop()
        if x == b:
            return True
        if x not in seen:
            seen.add(x)
            todo.extend(g.get(x, ()))
    return False


def test_no_circle_through_quickstart_report_sweep_regime():
    g = _graph()
    assert "lsap.experiments.sweep" not in g["lsap.experiments.report"], (
        "report must not import sweep (strength_rows lives in report)"
    )
    for m in (
        "lsap.experiments.quickstart",
        "lsap.experiments.sweep",
        "lsap.experiments.regime",
        "lsap.experiments.report",
        "lsap.experiments.preflight",
    ):
        if m not in g:
            continue
        for dep in g[m]:
            assert not _reaches(g, dep, m), f"import circle: {m} → {dep} → … → {m}"


def test_strength_rows_lives_in_report():
    from lsap.experiments import report

    assert callable(report.strength_rows)
    import lsap.experiments.sweep

    assert not hasattr(lsap.experiments.sweep, "strength_rows")


def test_config_hash_ignores_name_and_dir_but_not_settings():
    from lsap.config import load_config
    from lsap.experiments.regime import config_hash

    a = load_config(None, ["data.dir=d", "train.max_steps=5", "lsap.alpha=0.05"])
    b = load_config(
        None, ["data.dir=d", "train.max_steps=5", "lsap.alpha=0.05", "name=x", "out_dir=/tmp/y"]
    )
    c = load_config(None, ["data.dir=d", "train.max_steps=5", "lsap.alpha=0.2"])
    assert config_hash(a) == config_hash(b) != config_hash(c)


def test_quickstart_run_dirs_are_keyed_by_settings(tmp_path):
    """A rerun with another --alpha / --k / --ce-tokens into the same --out must not
    reuse the old runs: the directory names differ."""
    from lsap.experiments.quickstart import Settings, _base_cfg

    s = Settings(out=str(tmp_path))
    d = {}
    for name, extra in {
        "a": ["lsap.alpha=0.05"],
        "b": ["lsap.alpha=0.2"],
        "c": ["lsap.k=5"],
        "d": ["train.max_flops=1e12"],
        "e": ["surrogate.model=other"],
    }.items():
        d[name] = _base_cfg(
            "lsap-s0",
            tmp_path,
            s,
            ["data.dir=d", "loss=lsap", "surrogate.model=s", "train.max_flops=1e13", *extra],
        ).out_dir
    assert len(set(d.values())) == len(d)
    again = _base_cfg(
        "lsap-s0",
        tmp_path,
        s,
        ["data.dir=d", "loss=lsap", "surrogate.model=s", "train.max_flops=1e13", "lsap.alpha=0.05"],
    ).out_dir
    assert again == d["a"] and Path(again).name.startswith("lsap-s0-")
    other_shape = Settings(out=str(tmp_path), base_shape={**s.base_shape, "num_hidden_layers": 2})
    assert (
        _base_cfg("ce-s0", tmp_path, other_shape, ["data.dir=d", "train.max_flops=1e13"]).out_dir
        != _base_cfg("ce-s0", tmp_path, s, ["data.dir=d", "train.max_flops=1e13"]).out_dir
    )


def test_unknown_data_is_refused_before_anything_runs(tmp_path):
    from lsap.experiments.regime import Settings, build_regime
    from lsap.utils.errors import LsapError

    with pytest.raises(LsapError, match="unknown dataset"):
        build_regime(Settings(cache=str(tmp_path), corpus=str(tmp_path / "nope.txt")))


def test_quickstart_data_option_reaches_the_regime_and_bad_data_exits_2(
    tmp_path, monkeypatch, capsys
):
    import lsap.experiments.quickstart as qs
    from lsap.cli.main import main

    seen = {}

    def fake_run(s):
        seen["s"] = s
        return tmp_path

    monkeypatch.setattr(qs, "run", fake_run)
    mine = tmp_path / "mine.txt"
    mine.write_text("my text\n\n\nmore of my text\n")
    assert (
        main(["quickstart", "--out", str(tmp_path / "o"), "--data", str(mine), "--alpha", "0.2"])
        == 0
    )
    assert seen["s"].corpus == str(mine) and seen["s"].alpha == 0.2
    monkeypatch.undo()
    rc = main(
        [
            "quickstart",
            "--out",
            str(tmp_path / "o2"),
            "--cache",
            str(tmp_path / "c"),
            "--data",
            str(tmp_path / "missing.txt"),
        ]
    )
    assert rc == 2 and "unknown dataset" in capsys.readouterr().err


def test_regime_train_shows_a_progress_line_while_quiet(tiny_world, tmp_path, capsys):
    """The surrogate pretraining (quiet: the trainer's output goes to train.log) moves a
    progress line on the terminal: step / total."""
    from lsap.config import load_config
    from lsap.experiments.regime import train

    cfg = load_config(
        None,
        [
            "name=sur",
            f"out_dir={tmp_path / 'sur'}",
            f"data.dir={tiny_world['data']}",
            "data.seq_len=32",
            "model.preset=olmo2-tiny",
            "model.overrides.hidden_size=32",
            "model.overrides.intermediate_size=64",
            "model.overrides.num_hidden_layers=1",
            "train.max_steps=4",
            "train.batch_size=4",
            "train.micro_batch_size=4",
            "train.eval_every=0",
            "train.log_every=1",
        ],
    )
    train(cfg, progress_desc="  surrogate pretraining")
    err = capsys.readouterr().err
    assert "train sur: 4/4 step" in err and (tmp_path / "sur" / "DONE").is_file()


def test_quickstart_seeds_default_and_the_checkpoints_it_evaluates(tmp_path):
    """Default seeds: as many as the seed-level verdict needs (SEED_POWER > 1/2 in both readings);
    seeds past the plots' curves evaluate only what the verdict and the tables read."""
    from lsap.experiments import quickstart as Q
    from lsap.experiments.regime import Settings

    n = len(Settings().seeds)
    assert n == 5 and min(Q.SEED_POWER[n]) > 0.5 and max(Q.SEED_POWER[n - 2]) <= 0.53
    ce, ls = tmp_path / "ce", tmp_path / "lsap"
    for run, steps in ((ce, (65, 130, 163, 195)), (ls, (65, 130, 163))):
        for st in steps:
            d = run / "checkpoints" / f"step_{st:08d}"
            (d / "model").mkdir(parents=True)
            (d / "meta.json").write_text("{}")
    assert Q._checkpoints_used(ce, 0, 163) == Q._checkpoints_used(ls, 1, 163) == "all"
    assert Q._checkpoints_used(ce, 2, 163) == "step_00000163,step_00000195"
    assert Q._checkpoints_used(ls, 4, 163) == "step_00000163"
    from lsap.eval.checkpoints import find_checkpoints

    got = [m.parent.name for m, _, _ in find_checkpoints(ce, Q._checkpoints_used(ce, 3, 163))]
    assert got == ["step_00000163", "step_00000195"]
