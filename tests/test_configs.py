"""Every shipped config loads, validates, and the paper presets share one FLOPs budget."""

import pytest

from lsap.config import ConfigError, load_config, packaged_configs
from lsap.flops import FlopsLedger
from lsap.model import model_config
from lsap.train import plan_budget

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

    from lsap import config, loss, schedules

    assert loss.NORMALIZATIONS == get_args(config.Normalization) == ("targets", "tokens", "weighted")
    assert schedules.LAMBDA_KINDS == get_args(config.LambdaScheduleKind)
    with pytest.raises(ConfigError, match=r"lsap.normalization='avg' is not one of \('targets', 'tokens', 'weighted'\)"):
        load_config(None, ["data.dir=x", "train.max_steps=1", "lsap.normalization=avg"])
    with pytest.raises(ConfigError, match="train.precision"):
        load_config(None, ["data.dir=x", "train.max_steps=1", "train.precision=fp16"])
    assert load_config(None, ["data.dir=x", "train.max_steps=1", "lsap.normalization=weighted"]).lsap.normalization == "weighted"
