"""Every `lsap ...`, `python -m lsap ...` and `torchrun ... -m lsap ...` command shown in
README.md and docs/**/*.md parses with the real parser (build_parser + parse_args; nothing
runs). Generic over whatever the docs hold: commands are read from fenced code blocks."""

from __future__ import annotations

import importlib
import re
import shlex
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
cli = importlib.import_module("lsap.cli.main")


def _doc_files() -> list[Path]:
    files = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
    return [f for f in files if f.is_file()]


SEPARATORS = {"|", "&&", ";", "||", "&"}


def _lsap_argvs(line: str) -> list[list[str]]:
    """The lsap argvs of one shell command line (each command of `a && b | c`)."""
    line = re.sub(r"^\s*(\$|>)\s+", "", line)
    try:
        words = shlex.split(line, comments=True)
    except ValueError:
        return []
    segments, cur = [], []
    for w in words:
        if w in SEPARATORS:
            segments.append(cur)
            cur = []
        else:
            cur.append(w)
    segments.append(cur)
    out = []
    for seg in segments:
        kept, skip = [], False
        for w in seg:  # redirections: `> log`, `2>&1`, `>log`
            if skip:
                skip = False
            elif re.fullmatch(r"\d?>>?", w):
                skip = True
            elif not re.fullmatch(r"\d?>>?\S+", w):
                kept.append(w)
        seg = kept
        while seg and re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*=.*", seg[0]):  # VAR=value prefixes
            seg = seg[1:]
        for i, w in enumerate(seg):
            if (w == "lsap" and i == 0) or (w == "lsap" and seg[i - 1] == "-m"):
                out.append(seg[i + 1 :])
                break
    return out


def _lsap_argv(line: str) -> list[str] | None:
    found = _lsap_argvs(line)
    return found[0] if found else None


def _commands() -> list[tuple[str, int, list[str]]]:
    found = []
    for f in _doc_files():
        in_code, pending, start = False, "", 0
        for n, raw in enumerate(f.read_text().splitlines(), 1):
            if raw.lstrip().startswith("```"):
                in_code, pending = not in_code, ""
                continue
            if not in_code:
                continue
            if not pending:
                start = n
            pending += raw.rstrip()
            if pending.endswith("\\"):
                pending = pending[:-1] + " "
                continue
            for j, argv in enumerate(_lsap_argvs(pending)):
                found.append(
                    (f"{f.relative_to(ROOT)}:{start}" + (f"#{j}" if j else ""), start, argv)
                )
            pending = ""
    return found


COMMANDS = _commands()


def test_the_docs_show_lsap_commands():
    if not (ROOT / "README.md").is_file():
        pytest.skip("no README in this tree")
    assert COMMANDS, "no lsap command found in README.md / docs (the extractor broke?)"


def test_extractor_reads_every_form():
    assert _lsap_argv("$ lsap train --config a.yaml") == ["train", "--config", "a.yaml"]
    assert _lsap_argv("torchrun --nproc_per_node 8 -m lsap train x.yaml | tee log")[:2] == [
        "train",
        "x.yaml",
    ]
    assert _lsap_argv("OMP_NUM_THREADS=2 python -m lsap eval runs/x  # comment") == [
        "eval",
        "runs/x",
    ]
    assert _lsap_argv("pip install lsap") is None
    assert _lsap_argvs("bash scripts/install.sh && python -m lsap quickstart --out q > log") == [
        ["quickstart", "--out", "q"]
    ]


@pytest.mark.parametrize("where,_,argv", COMMANDS, ids=[c[0] for c in COMMANDS])
def test_doc_command_parses(where, _, argv, capsys):
    try:
        args = cli.build_parser().parse_args(argv)
    except SystemExit as e:  # --help / --version exit 0; a bad command exits 2
        assert e.code == 0, (
            f"{where}: `lsap {' '.join(argv)}` does not parse: {capsys.readouterr().err}"
        )
        return
    assert args.command, f"{where}: no command in `lsap {' '.join(argv)}`"


def test_a_wrong_doc_command_would_fail(capsys):
    with pytest.raises(SystemExit) as e:
        cli.build_parser().parse_args(_lsap_argv("lsap prepare --out d --max-tokens lots"))
    assert e.value.code == 2
