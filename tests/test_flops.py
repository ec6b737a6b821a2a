"""FLOPs accounting: paper figures from configs alone, ledger, `lsap flops`."""

import json

import pytest

from lsap.cli import main
from lsap.flops import (
    FlopsLedger,
    attention_flops_per_token,
    count_params,
    inference_flops_per_token,
    mfu,
    peak_flops_for_device,
    tokens_at_matched_flops,
    train_flops_per_token,
)
from lsap.model import model_config


def _cli_json(capsys, *argv):
    assert main(["flops", *argv, "--json"]) == 0
    return json.loads(capsys.readouterr().out)


def test_paper_figures_from_cli(capsys):
    r = _cli_json(capsys, "--base", "olmo2-1b", "--surrogate", "qwen3-0.6b", "--tokens", "26e9")
    assert r["base_params"] == pytest.approx(1.485e9, rel=1e-3)
    assert r["surrogate_params"] == pytest.approx(0.75e9, rel=5e-3)
    # the paper's "232 million TFLOPs"
    assert r["ce_flops"] == pytest.approx(2.32e20, rel=5e-3)
    assert r["lsap_token_reduction"] == pytest.approx(0.144, abs=1e-3)
    assert r["lsap_tokens_at_matched_flops"] == pytest.approx(26e9 * (1 - r["lsap_token_reduction"]))
    # matched: the LSAP run spends the CE run's budget
    assert r["lsap_tokens_at_matched_flops"] * r["lsap_flops_per_token"] == pytest.approx(r["ce_flops"])


def test_cli_flops_budget_and_table(capsys):
    r = _cli_json(capsys, "--flops", "2.31647e20")
    assert r["ce_tokens"] == pytest.approx(26e9, rel=1e-5)
    assert r["lsap_token_reduction"] == pytest.approx(0.144, abs=1e-3)
    assert main(["flops", "--base", "olmo2-tiny", "--base-vocab-size", "512", "--surrogate", "none",
                 "--tokens", "1e6"]) == 0
    out = capsys.readouterr().out
    assert "LSAP token reduction" in out and "0.00%" in out


def test_cli_accepts_config_paths(tmp_path, capsys):
    model_config("qwen3-0.6b").save_pretrained(tmp_path / "qwen")
    by_path = _cli_json(capsys, "--surrogate", str(tmp_path / "qwen" / "config.json"))
    by_name = _cli_json(capsys, "--surrogate", "qwen3-0.6b")
    assert by_path["surrogate_params"] == by_name["surrogate_params"]
    small = _cli_json(capsys, "--base", "olmo2-1b", "--base-vocab-size", "50000")
    assert small["base_params"] == by_name["base_params"] - 2 * (100_352 - 50_000) * 2048


def test_tied_head_counted_twice():
    cfg = model_config("qwen3-0.6b")
    head = cfg.vocab_size * cfg.hidden_size
    assert count_params(cfg, untied_head=True) - count_params(cfg, untied_head=False) == head
    untied = model_config("olmo2-1b")
    assert count_params(untied, untied_head=True) == count_params(untied, untied_head=False)


def test_per_token_formulas():
    b, s = model_config("olmo2-tiny", vocab_size=100), model_config("smollm2-135m")
    assert train_flops_per_token(b) == 6 * count_params(b)
    assert inference_flops_per_token(s) == 2 * count_params(s)
    L, H, Q, T = 2, 4, 16, 128
    assert attention_flops_per_token(b, T) == 12 * L * H * Q * T
    assert train_flops_per_token(b, T) == 6 * count_params(b) + 12 * L * H * Q * T
    assert inference_flops_per_token(b, T) == 2 * count_params(b) + 4 * L * H * Q * T
    assert tokens_at_matched_flops(6e9, b) == pytest.approx(6e9 / (6 * count_params(b)))
    ratio = tokens_at_matched_flops(1e18, b, s) / tokens_at_matched_flops(1e18, b)
    assert ratio == pytest.approx(6 * count_params(b) / (6 * count_params(b) + 2 * count_params(s)))


def test_ledger_arithmetic_and_state_round_trip():
    led = FlopsLedger(base_flops_per_token=6.0, surrogate_flops_per_token=2.0)
    led.add(10, 12)
    led.add(5)
    assert (led.tokens, led.surrogate_tokens) == (15, 12)
    assert (led.base_flops, led.surrogate_flops, led.total) == (90.0, 24.0, 114.0)
    state = json.loads(json.dumps(led.state_dict()))
    other = FlopsLedger(base_flops_per_token=0.0)
    other.load_state_dict(state)
    assert other == led
    other.add(1, 1)
    assert other.total == 122.0 and led.total == 114.0
    with pytest.raises(ValueError):
        led.add(-1)
    with pytest.raises(KeyError):
        other.load_state_dict({"bogus": 1})


def test_ledger_from_configs():
    b, s = model_config("olmo2-1b"), model_config("qwen3-0.6b")
    led = FlopsLedger.from_configs(b, s)
    led.add(26_000_000_000, 26_000_000_000)
    assert led.base_flops == pytest.approx(2.3165e20, rel=1e-4)
    assert led.surrogate_flops == pytest.approx(2 * 751_632_384 * 26e9)
    assert FlopsLedger.from_configs(b).surrogate_flops_per_token == 0.0


def test_mfu_helpers():
    assert mfu(494.5e12, 989e12) == pytest.approx(0.5)
    assert mfu(1e12, None) is None
    assert peak_flops_for_device("cpu") is None
