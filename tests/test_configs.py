"""Every shipped config loads, validates, and the paper presets share one FLOPs budget."""

import pytest

from lsap.config import ConfigError, load_config, packaged_configs
from lsap.method.flops import FlopsLedger
from lsap.model import model_config
from lsap.train.loop import plan_budget

SURROGATE_PRESET = {"Qwen/Qwen3-0.6B": "qwen3-0.6b"}


@pytest.mark.parametrize("name", packaged_configs())
def test_shipped_config_loads_and_round_trips(name, tmp_path):
    cfg = load_config(name)
    assert cfg.name == name
    # the resolved YAML written to every run directory loads back to the same config
    (tmp_path / "resolved.yaml").write_text(cfg.to_yaml())
    again = load_config(tmp_path / "resolved.yaml")
    assert again == cfg and again.to_yaml() == cfg.to_yaml()


def test_paper_runs_are_flops_matched():
    base = model_config("olmo2-1b")
    tokens = {}
    for name in [n for n in packaged_configs() if n.startswith("paper-")]:
        cfg = load_config(name)
        sur = model_config(SURROGATE_PRESET[cfg.surrogate.model]) if cfg.loss == "lsap" else None
        ledger = FlopsLedger.from_configs(base, sur)
        b = plan_budget(cfg, ledger)
        tokens[name] = b.total_steps * b.tokens_per_step
        assert b.limited_by == "max_flops"
    ce = tokens["paper-ce"]
    assert ce == pytest.approx(26e9, rel=2e-3)
    for name, t in tokens.items():
        if name != "paper-ce":  # the paper: ≈ 14.4% fewer tokens at matched FLOPs
            assert 1 - t / ce == pytest.approx(0.144, abs=0.002)


def test_unknown_config_name_suggests():
    with pytest.raises(ConfigError, match="paper-lsap-a0.05"):
        load_config("paper-lsap-a0.5")


def test_public_api_importable_from_lsap():
    import importlib

    import lsap

    for name in lsap._EXPORTS:
        obj = getattr(lsap, name)
        assert obj is getattr(importlib.import_module(obj.__module__), name), name
    from lsap import AuxTargets, VocabMap, lsap_loss  # noqa: F401  (the README's spelling)


def test_allowed_values_have_one_source():
    """Validation, the loss and the λ schedule read the same Literal annotations."""
    from typing import get_args

    from lsap import config
    from lsap.method import loss, schedules

    assert (
        loss.NORMALIZATIONS == get_args(config.Normalization) == ("targets", "tokens", "weighted")
    )
    assert schedules.LAMBDA_KINDS == get_args(config.LambdaScheduleKind)
    with pytest.raises(
        ConfigError,
        match=r"lsap.normalization='avg' is not one of \('targets', 'tokens', 'weighted'\)",
    ):
        load_config(None, ["data.dir=x", "train.max_steps=1", "lsap.normalization=avg"])
    with pytest.raises(ConfigError, match="train.precision"):
        load_config(None, ["data.dir=x", "train.max_steps=1", "train.precision=fp16"])
    assert (
        load_config(
            None, ["data.dir=x", "train.max_steps=1", "lsap.normalization=weighted"]
        ).lsap.normalization
        == "weighted"
    )


_SCALAR_KEYS_GIVEN_CONTAINERS = [
    ("lsap.alpha=[1,2]", "lsap.alpha", "a number"),
    ("lsap.k=[3]", "lsap.k", "an integer"),
    ("train.batch_size={a: 1}", "train.batch_size", "an integer"),
    ("data.dir=[1]", "data.dir", "text"),
    ("loss=[ce]", "loss", "one of ('ce', 'lsap')"),
    ("lsap.alpha=null", "lsap.alpha", "a number"),
    ("lsap.k=true", "lsap.k", "an integer"),
    ("train.loggers={a: 1}", "train.loggers", "a list"),
    ("model.overrides=[1]", "model.overrides", "a mapping"),
]


@pytest.mark.parametrize("bad,key,want", _SCALAR_KEYS_GIVEN_CONTAINERS)
def test_wrong_type_is_a_config_error_naming_key_and_type(bad, key, want, tmp_path):
    import yaml

    with pytest.raises(ConfigError) as e:
        load_config(None, ["data.dir=x", "train.max_steps=1", bad])
    assert key in str(e.value) and want in str(e.value)
    # the same value in a YAML file
    section, _, name = key.rpartition(".")
    value = yaml.safe_load(bad.split("=", 1)[1])
    doc = {"data": {"dir": "x"}, "train": {"max_steps": 1}}
    (doc.setdefault(section, {}) if section else doc)[name] = value
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(doc))
    with pytest.raises(ConfigError) as e:
        load_config(tmp_path / "c.yaml")
    assert f"{key}=" in str(e.value) and want in str(e.value)


def test_wrong_type_through_the_cli_is_one_line(tmp_path):
    """Each case in a real `lsap train` process: exit 2, one stderr line naming key and
    type, no traceback (was TypeError: '<=' not supported ... at validation)."""
    import os
    import subprocess
    import sys

    import lsap

    src = str(__import__("pathlib").Path(lsap.__file__).resolve().parents[1])
    env = {**os.environ, "PYTHONPATH": src + os.pathsep + os.environ.get("PYTHONPATH", "")}
    code = (
        "import sys\nfrom lsap.cli.main import main\n"
        "for a in sys.argv[1:]:\n"
        "    print(main(['train', f'data.dir={sys.argv[0]}', 'train.max_steps=1', a, '--dry-run']), flush=True)\n"
    )
    bad = [b for b, *_ in _SCALAR_KEYS_GIVEN_CONTAINERS]
    r = subprocess.run(
        [sys.executable, "-c", code, *bad], capture_output=True, text=True, env=env, timeout=120
    )
    assert r.stdout.split() == ["2"] * len(bad), (r.stdout, r.stderr[-3000:])
    err = r.stderr.strip().splitlines()
    assert "Traceback" not in r.stderr and len(err) == len(bad), r.stderr[-3000:]
    for line, (_, key, want) in zip(err, _SCALAR_KEYS_GIVEN_CONTAINERS):
        assert line.startswith("lsap train: error: ") and key in line and want in line, line
    # and one real `lsap train` process per se: the console script's path
    r = subprocess.run(
        [sys.executable, "-m", "lsap", "train", "data.dir=x", "train.max_steps=1", "lsap.k=[3]"],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert (
        r.returncode == 2 and r.stderr.strip().count("\n") == 0 and "Traceback" not in r.stderr
    ), r.stderr
    assert "lsap.k=[3] is a list; lsap.k takes an integer" in r.stderr
