"""Shared argparse conventions: counts like 27e9, --version, Ctrl-C → exit 130."""

import argparse
import importlib

import pytest

from lsap.cli.args import nonnegative_int, positive_float, positive_int

cli = importlib.import_module("lsap.cli.main")


@pytest.mark.parametrize(
    "text,value", [("27e9", 27_000_000_000), ("1_000", 1000), ("512", 512), ("1e0", 1)]
)
def test_counts_accept_scientific_notation(text, value):
    assert positive_int(text) == value and isinstance(positive_int(text), int)


@pytest.mark.parametrize("text", ["0", "-1", "-5", "1.5", "inf", "nan", "lots", "1e30"])
def test_bad_counts_refused(text):
    with pytest.raises(argparse.ArgumentTypeError):
        positive_int(text)


def test_nonnegative_and_float():
    assert nonnegative_int("0") == 0
    with pytest.raises(argparse.ArgumentTypeError):
        nonnegative_int("-1")
    for bad in ("inf", "nan", "0", "-2"):
        with pytest.raises(argparse.ArgumentTypeError):
            positive_float(bad)


def test_prepare_max_tokens_27e9_parses():
    args = cli.build_parser().parse_args(["prepare", "--out", "o", "--max-tokens", "27e9"])
    assert args.max_tokens == 27_000_000_000


@pytest.mark.parametrize(
    "argv",
    [
        ["store", "build", "--seq-len", "-5"],
        ["eval", "x", "--max-examples", "0"],
        ["preflight", "--batch-size", "-1"],
        ["preflight", "--batch-size", "0"],
        ["store", "build", "--seq-len", "8", "--max-windows", "-1"],
    ],
)
def test_bad_counts_are_usage_errors(argv, capsys):
    with pytest.raises(SystemExit) as e:
        cli.main(argv)
    assert e.value.code == 2
    assert "must be at least 1" in capsys.readouterr().err


def test_version(capsys):
    with pytest.raises(SystemExit) as e:
        cli.main(["--version"])
    assert e.value.code == 0 and capsys.readouterr().out.startswith("lsap ")


def test_ctrl_c_is_one_line_exit_130(monkeypatch, capsys):
    import lsap.cli.flops as mod

    def boom(args):
        raise KeyboardInterrupt

    monkeypatch.setattr(mod, "run", boom)
    monkeypatch.delenv("LSAP_DEBUG", raising=False)
    assert cli.main(["flops"]) == 130
    err = capsys.readouterr().err
    assert err.strip().splitlines() == ["lsap flops: interrupted; rerun the same command to resume"]


@pytest.mark.parametrize("exc", [KeyboardInterrupt, lambda: OSError(28, "No space left")])
def test_an_open_progress_bar_is_ended_before_the_one_line(monkeypatch, capsys, exc):
    """`lsap prepare` Ctrl-C'd mid-bar printed '…1.37Mtok/s]lsap prepare: interrupted…' on one
    line, then the bar once more after it."""
    import sys

    from tqdm import tqdm

    import lsap.cli.flops as mod

    def work(args):
        bar = tqdm(total=100, file=sys.stderr, desc="xyzbar")
        bar.update(5)
        raise exc()

    monkeypatch.setattr(mod, "run", work)
    monkeypatch.delenv("LSAP_DEBUG", raising=False)
    assert cli.main(["flops"]) in (2, 130)
    err = capsys.readouterr().err
    assert err.endswith("\n") and err.splitlines()[-1].startswith("lsap flops: "), repr(err)
    assert "xyzbar" not in err.splitlines()[-1], repr(err)


@pytest.mark.parametrize(
    "argv",
    [
        ["quickstart", "--alpha", "1.5"],
        ["preflight", "--alphas", "nan"],
        ["store", "info", "x", "--alpha", "0"],
    ],
)
def test_alpha_refused_at_parse_time(argv, capsys):
    with pytest.raises(SystemExit) as e:
        cli.main(argv)  # quickstart: before the surrogate pretraining, not after it
    assert e.value.code == 2 and "must lie in (0, 1)" in capsys.readouterr().err


@pytest.mark.parametrize(
    "kw,word",
    [
        (dict(lam=-1), "lam"),
        (dict(lam=float("nan")), "lam"),
        (dict(alpha=1.5), "alpha"),
        (dict(alpha=float("inf")), "alpha"),
        (dict(k=0), "k must"),
        (dict(keep_fraction=0.0), "keep_fraction"),
    ],
)
def test_method_numbers_refused(kw, word):
    from lsap.surrogate.sources import check_method_numbers
    from lsap.utils.errors import ConfigError

    with pytest.raises(ConfigError, match=word):
        check_method_numbers(**kw)
    check_method_numbers(k=15, alpha=0.05, keep_fraction=1.0, lam=0.0)


def test_lsap_trainer_lam_schedule_refuses_negative_and_nan():
    from lsap.integrations.transformers import _lam_schedule
    from lsap.utils.errors import ConfigError

    for bad in (-1, float("nan"), ("cosine", 1.0, -0.5)):
        with pytest.raises(ConfigError):
            _lam_schedule(bad)
    with pytest.raises(ConfigError):
        _lam_schedule(lambda step: -1.0)(0, 10)
    assert _lam_schedule(0.5)(3, 10) == 0.5


def test_target_spec_refuses_alpha_above_one():
    from lsap.surrogate.sources import TargetSpec
    from lsap.utils.errors import ConfigError

    with pytest.raises(ConfigError, match="alpha"):
        TargetSpec(k=15, alpha=1.5, store="/nonexistent")
    with pytest.raises(ConfigError, match="keep_fraction"):
        TargetSpec(k=15, alpha=0.05, surrogate="x", keep_fraction=0.0)
    with pytest.raises(ConfigError, match="k must"):
        TargetSpec(k=0, alpha=0.05, surrogate="x")
    with pytest.raises(ValueError, match="exactly one"):
        TargetSpec(k=15, alpha=0.05)


def test_second_sweep_on_one_out_refused(tmp_path, capsys):
    """The lock is taken before the spec is read: a second sweep fails at once, naming the holder."""
    from lsap.experiments.sweep import run_sweep
    from lsap.utils.errors import LockError
    from lsap.utils.lock import DirLock

    out = tmp_path / "sweep"
    with DirLock(out, "lsap sweep"):
        with pytest.raises(LockError, match="is being written by pid"):
            run_sweep(tmp_path / "missing.yaml", out)
        assert (
            cli.main(["sweep", str(tmp_path / "missing.yaml"), "--out", str(out), "--report-only"])
            == 2
        )
    assert "is being written by" in capsys.readouterr().err


def test_provenance_record():
    from lsap.utils.provenance import provenance

    p = provenance("cpu")
    assert p["lsap_version"] and p["torch"] and p["cpu"] and p["device"] == "cpu"
    assert "transformers" in p and "python" in p
    assert provenance() == {k: v for k, v in p.items() if k != "device"}  # no timestamps


def test_quickstart_ce_tokens_zero_refused_before_work(capsys):
    with pytest.raises(SystemExit) as e:
        cli.main(["quickstart", "--ce-tokens", "0"])
    assert e.value.code == 2 and "--ce-tokens" in capsys.readouterr().err


def test_preflight_json_is_a_flag_and_json_out_a_path():
    """One name per concept: `--json` prints JSON to stdout in every command; a file is `--json-out`."""
    from lsap.cli.main import build_parser

    base = ["preflight", "--surrogate", "s", "--data", "d"]
    args = build_parser().parse_args([*base, "--json", "--json-out", "p.json"])
    assert args.json is True and args.json_out == "p.json"
    assert build_parser().parse_args(base).json is False
