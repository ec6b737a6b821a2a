"""Issue 28 item 6, CLI conventions, checked on the real parser (`lsap.cli.main.build_parser`):
one name per concept, defaults and help in every `--help`, documented exit codes."""

from __future__ import annotations

import argparse
import importlib

import pytest

cli = importlib.import_module("lsap.cli.main")

# every command whose work shows a progress bar or progress line on the terminal
PROGRESS_COMMANDS = ["prepare", "train", "store build", "analyze", "quickstart", "sweep"]


def _subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    """'cmd' / 'cmd sub' -> parser, for every (nested) subcommand of the real parser."""
    out = {}
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, p in action.choices.items():
                out[name] = p
                out.update({f"{name} {k}": v for k, v in _subparsers(p).items()})
    return out


PARSERS = _subparsers(cli.build_parser())


def _options(p: argparse.ArgumentParser) -> dict[str, argparse.Action]:
    return {s: a for a in p._actions for s in a.option_strings}


@pytest.mark.parametrize("command", PROGRESS_COMMANDS)
def test_every_command_with_a_progress_bar_takes_no_progress(command):
    opts = _options(PARSERS[command])
    assert "--no-progress" in opts, f"lsap {command} has no --no-progress"
    assert opts["--no-progress"].dest == "no_progress"
    assert opts["--no-progress"].help and opts["--no-progress"].help != argparse.SUPPRESS


def test_no_visible_quiet_anywhere():
    for name, p in PARSERS.items():
        quiet = _options(p).get("--quiet")
        assert quiet is None or quiet.help == argparse.SUPPRESS, f"lsap {name} shows --quiet"


def test_prepare_quiet_is_a_hidden_alias_of_no_progress():
    parse = cli.build_parser().parse_args
    assert parse(["prepare", "--out", "o", "--quiet"]).no_progress is True
    assert parse(["prepare", "--out", "o", "--no-progress"]).no_progress is True
    assert parse(["prepare", "--out", "o"]).no_progress is False
    assert "--quiet" not in PARSERS["prepare"].format_help()


def test_no_progress_silences_the_bar_deep_in_a_pipeline(monkeypatch, capsys):
    """`lsap train --no-progress`: the trainer's Progress line is not printed, other lines are."""
    import lsap.config
    import lsap.train.loop
    from lsap.utils.progress import Progress

    def fake_train(cfg, resume=False):
        bar = Progress(10, "train x", unit="step", tty=False)
        bar.update(10)
        bar.write("step line")
        return "runs/x"

    monkeypatch.setattr(lsap.config, "load_config", lambda path, overrides: object())
    monkeypatch.setattr(lsap.config, "validate", lambda cfg, deep=False: cfg)
    monkeypatch.setattr(lsap.train.loop, "train", fake_train)
    assert cli.main(["train", "--no-progress"]) == 0
    err_out = capsys.readouterr()
    assert "train x:" not in err_out.err + err_out.out
    assert "step line" in err_out.err + err_out.out
    assert cli.main(["train"]) == 0  # without the flag the progress line is back
    assert "train x: 10/10 step" in capsys.readouterr().err
