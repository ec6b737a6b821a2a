"""FLOPs accounting: paper figures from configs alone, ledger, `lsap flops`."""

import json

import pytest

from lsap.cli.main import main
from lsap.method.flops import (
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
    # By hand: OLMo2-1B d=2048, f=8192, 16 layers, V=100,352, untied head:
    # 16·(4d² + 3df + 4d) + 2·V·d + d; Qwen3-0.6B's 751,632,384 counts its tied head twice.
    n_b = 16 * (4 * 2048**2 + 3 * 2048 * 8192 + 4 * 2048) + 2 * 100_352 * 2048 + 2048
    assert r["base_params"] == n_b == 1_484_916_736
    assert r["surrogate_params"] == 751_632_384
    assert r["ce_flops"] == 6 * n_b * 26e9
    assert r["lsap_flops_per_token"] == 6 * n_b + 2 * 751_632_384
    assert r["lsap_tokens_at_matched_flops"] == pytest.approx(
        6 * n_b * 26e9 / (6 * n_b + 2 * 751_632_384), rel=1e-12
    )
    assert r["lsap_token_reduction"] == pytest.approx(
        2 * 751_632_384 / (6 * n_b + 2 * 751_632_384), rel=1e-12
    )


def test_cli_flops_budget_and_table(capsys):
    r = _cli_json(capsys, "--flops", "2.31647e20")
    assert r["ce_tokens"] == pytest.approx(26e9, rel=1e-5)
    assert r["lsap_token_reduction"] == pytest.approx(0.144, abs=1e-3)
    assert (
        main(
            [
                "flops",
                "--base",
                "olmo2-tiny",
                "--base-vocab-size",
                "512",
                "--surrogate",
                "none",
                "--tokens",
                "1e6",
            ]
        )
        == 0
    )
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
    # Independent arithmetic, not the formulas restated. olmo2-tiny (V=100): d=64, f=256,
    # 2 layers of 4d² + 3df + 4d, embedding + untied head 2·V·d, final norm d.
    b, s = model_config("olmo2-tiny", vocab_size=100), model_config("smollm2-135m")
    n_b = 2 * (4 * 64 * 64 + 3 * 64 * 256 + 4 * 64) + 2 * 100 * 64 + 64
    assert n_b == 144_448
    assert train_flops_per_token(b) == 866_688  # 6 · 144,448
    # SmolLM2-135M: d=576, 9 query / 3 kv heads of 64, f=1536, 30 layers, V=49,152, tied head
    # (stored 134,515,008 parameters; the head's 28,311,552 are counted again as a matmul).
    layer = 576 * 576 * 2 + 576 * 192 * 2 + 3 * 576 * 1536 + 2 * 576
    assert count_params(s, untied_head=False) == 30 * layer + 49_152 * 576 + 576 == 134_515_008
    assert inference_flops_per_token(s) == 2 * (134_515_008 + 28_311_552)
    # attention at T=128 (L=2, H=4, Q=16): training 12·L·H·Q·T = 196,608, inference a third
    assert attention_flops_per_token(b, 128) == 196_608
    assert attention_flops_per_token(b, 128, training=False) == 65_536
    assert train_flops_per_token(b, 128) == 866_688 + 196_608
    assert inference_flops_per_token(b, 128) == 288_896 + 65_536
    assert tokens_at_matched_flops(6e9, b) == pytest.approx(6e9 / 866_688, rel=1e-12)
    assert tokens_at_matched_flops(1e18, b, s) == pytest.approx(
        1e18 / (866_688 + 325_653_120), rel=1e-12
    )
    half = tokens_at_matched_flops(1e18, b, s, surrogate_tokens_per_base_token=0.5)
    assert half == pytest.approx(1e18 / (866_688 + 0.5 * 325_653_120), rel=1e-12)


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
