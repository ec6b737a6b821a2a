"""Shared argparse conventions: counts like 27e9, --version, Ctrl-C → exit 130."""

import argparse
import importlib

import pytest

from lsap.cli.args import nonnegative_int, positive_float, positive_int

cli = importlib.import_module("lsap.cli.main")


@pytest.mark.parametrize("text,value", [("27e9", 27_000_000_000), ("1_000", 1000), ("512", 512), ("1e0", 1)])
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


@pytest.mark.parametrize("argv", [
    ["store", "build", "--seq-len", "-5"], ["eval", "x", "--max-examples", "0"],
    ["preflight", "--batch-size", "-1"], ["preflight", "--batch-size", "0"],
    ["store", "build", "--seq-len", "8", "--max-windows", "-1"],
])
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
