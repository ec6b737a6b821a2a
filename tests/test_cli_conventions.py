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


def _actions():
    for name, p in PARSERS.items():
        for a in p._actions:
            if isinstance(a, (argparse._HelpAction, argparse._VersionAction)):
                continue
            if isinstance(a, argparse._SubParsersAction):
                continue  # its choices are PARSERS entries of their own, each with a help line
            yield name, p, a


ACTIONS = list(_actions())
IDS = [f"{n}:{'/'.join(a.option_strings) or a.dest}" for n, _, a in ACTIONS]


@pytest.mark.parametrize("command,parser,action", ACTIONS, ids=IDS)
def test_every_option_has_help_and_shows_its_default(command, parser, action):
    from lsap.cli.args import default_text, shows_default

    what = f"lsap {command} {'/'.join(action.option_strings) or action.dest}"
    assert action.help, f"{what} has no help string"
    if action.help == argparse.SUPPRESS:
        return  # a hidden alias (prepare --quiet)
    text = " ".join(parser.format_help().split())  # undo the line wrapping
    if shows_default(action):
        shown = f"(default: {default_text(action.default)})"
        assert shown in text, f"{what}: --help does not show {shown}"
        # the formatter adds it; no second, hand-written one in the help text itself
        assert "default" not in action.help.lower().replace("the default is", ""), (
            f"{what}: hand-written default in {action.help!r}"
        )
    else:
        assert "(default: None)" not in text and "(default: False)" not in text


def test_the_top_level_parser_shows_defaults_too():
    assert all(p.formatter_class.__name__ == "HelpFormatter" for p in PARSERS.values())
    assert cli.build_parser().formatter_class.__name__ == "HelpFormatter"


def test_vocab_max_tokens_zero_means_all_as_its_help_says():
    """Its help said `0 = all` while the flag refused 0; now 0 parses (counted: all)."""
    args = cli.build_parser().parse_args(
        ["vocab", "--base", "b", "--surrogate", "s", "--max-tokens", "0"]
    )
    assert args.max_tokens == 0
    assert "0: all" in " ".join(PARSERS["vocab"].format_help().split())


def test_alpha_is_one_value_and_alphas_a_list_in_every_command():
    """`--alpha` (one α, a setting) vs `--alphas` (the α a report counts at): the list has one
    name in analyze, preflight and store info; analyze's and store info's old `--alpha` still parse."""
    for name, p in PARSERS.items():
        opts = _options(p)
        if "--alphas" in opts:
            assert opts["--alphas"].nargs == "+", f"lsap {name} --alphas takes one value"
            assert opts["--alphas"].help.startswith(
                "thresholds α in (0, 1) to count at: one or more"
            )
        alpha = opts.get("--alpha")
        if alpha is not None and alpha.help != argparse.SUPPRESS:  # visible: a single value
            assert alpha.nargs is None and alpha.dest == "alpha", f"lsap {name} --alpha is a list"
            assert "one value" in alpha.help
    for name in ("analyze", "preflight", "store info"):
        assert "--alphas" in _options(PARSERS[name]), name
    parse = cli.build_parser().parse_args
    a = ["analyze", "--model", "m", "--data", "d"]
    assert parse([*a, "--alphas", "0.1", "0.2"]).alphas == [0.1, 0.2]
    assert parse([*a, "--alpha", "0.1", "0.2"]).alphas == [0.1, 0.2]  # the old spelling
    assert parse(a).alphas == [0.01, 0.05, 0.2]
    assert "--alpha " not in PARSERS["analyze"].format_help()
    s = ["store", "info", "DIR"]
    assert parse([*s, "--alpha", "0.07", "--alpha", "0.1"]).alphas == [0.07, 0.1]
    assert parse([*s, "--alphas", "0.07", "0.1"]).alphas == [0.07, 0.1]
    assert parse(s).alphas is None
    assert parse(["quickstart", "--alpha", "0.2"]).alpha == 0.2


@pytest.mark.parametrize(
    "argv",
    [
        ["analyze", "--model", "m", "--data", "d", "--alphas", "1.5"],
        ["eval", "RUN", "--targets-alpha", "nan"],
        ["store", "info", "DIR", "--alphas", "0"],
    ],
)
def test_every_alpha_is_checked_at_parse_time(argv, capsys):
    with pytest.raises(SystemExit) as e:
        cli.main(argv)
    assert e.value.code == 2 and "α must lie in (0, 1)" in capsys.readouterr().err


def test_lsap_help_states_the_exit_codes(capsys):
    with pytest.raises(SystemExit) as e:
        cli.main(["--help"])
    assert e.value.code == 0
    text = " ".join(capsys.readouterr().out.split())
    for code, meaning in [
        ("0", "done"),
        ("2", "a usage or input error"),
        ("1", "a failure during the work itself"),
        ("130", "interrupted by Ctrl-C"),
    ]:
        assert f"{code} {meaning}" in text, f"`lsap --help` does not say: {code} {meaning}"


def test_exit_2_for_usage_and_input_errors(monkeypatch, capsys):
    from lsap.utils.errors import LsapError

    with pytest.raises(SystemExit) as e:  # a bad flag: argparse
        cli.main(["flops", "--nope"])
    assert e.value.code == 2
    assert cli.main([]) == 2  # no command: the help, as for a bad flag
    capsys.readouterr()
    assert cli.main(["train", "--config", "/nonexistent/x.yaml"]) == 2  # an input error
    (line,) = capsys.readouterr().err.strip().splitlines()  # one line, no traceback
    assert line.startswith("lsap train: error: config file /nonexistent/x.yaml not found")
    import lsap.cli.flops as mod

    monkeypatch.delenv("LSAP_DEBUG", raising=False)
    for err in (LsapError("a setting to change"), OSError(28, "No space left on device", "f")):
        monkeypatch.setattr(mod, "run", lambda args, err=err: (_ for _ in ()).throw(err))
        assert cli.main(["flops"]) == 2
        assert len(capsys.readouterr().err.strip().splitlines()) == 1


def test_exit_1_for_a_failure_during_the_work(tmp_path):
    """An unexpected exception is not hidden: the process shows its traceback and exits 1."""
    import os
    import subprocess
    import sys

    code = (
        "import sys, lsap.cli.flops as m\n"
        "def boom(args): raise RuntimeError('boom inside the work')\n"
        "m.run = boom\n"
        "from lsap.cli.main import main\n"
        "sys.exit(main(['flops']))\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "LSAP_DEBUG"}
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert p.returncode == 1
    assert p.stderr.startswith("Traceback") and "RuntimeError: boom inside the work" in p.stderr
    # exit 130 (Ctrl-C): tests/test_cli_args.py::test_ctrl_c_is_one_line_exit_130
