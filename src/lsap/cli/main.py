"""`lsap <command> ...` — one entry point; each command lives in `lsap.cli.<name>`.

Command modules are imported lazily so `lsap --help` stays fast and heavy optional
dependencies (lm-eval, matplotlib, gguf) load only for the command that needs them.
Each module defines `add_arguments(parser)` and `run(args) -> int | None`.

Errors: a command raises `lsap.LsapError` (or hits an OSError such as a full disk) and
`main` prints it as one line, `lsap <command>: error: <message>`, on stderr and returns
2 — no traceback (LSAP_DEBUG=1 shows it). Commands never print their own errors.

Exit codes (`EXIT_CODES`, the epilog of `lsap --help`): 0 success; 2 usage and input errors
(argparse's bad flags, no command, and LsapError: a setting, file or folder that the user must
change); 1 a failure during the work itself
(an unexpected exception, shown as a traceback); 130 interrupted (Ctrl-C) — state is as
after SIGTERM and rerunning the same command resumes.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from pathlib import Path

from lsap.cli.args import (
    HelpFormatter,
    positive_float,  # noqa: F401  (re-exported for commands)
)
from lsap.utils.errors import LsapError

COMMANDS: dict[str, str] = {
    "vocab": "Build, report and save the cross-tokenizer vocabulary map (Σ∩)",
    "prepare": "Tokenize text into train/validation token shards",
    "train": "Pretrain a base model with CE or LSAP",
    "flops": "FLOPs of a run from model configs alone; tokens at matched FLOPs",
    "store": "Offline surrogate-target store: build / info",
    "analyze": "The paper's Table 1: tokens above α per position, per model and dataset",
    "eval": "Evaluate checkpoints: held-out loss, bits per byte, lm-evaluation-harness",
    "report": "Compare runs at matched FLOPs: markdown table and plots",
    "sweep": "A grid of LSAP settings + CE at one FLOPs budget, trained, evaluated and reported",
    "quickstart": "The whole method end to end on one CPU, offline",
    "preflight": "Should I use LSAP with this surrogate on my text? Σ∩, strength, targets, FLOPs price",
}


EXIT_CODES = """\
exit codes: 0 done; 2 a usage or input error: a bad flag or value, or a setting, file or folder
  to change (one line on stderr; also `lsap` without a command); 1 a failure during the work
  itself (a traceback); 130 interrupted by Ctrl-C (rerun the same command to resume)"""


def _load(name: str):
    return importlib.import_module(f"lsap.cli.{name}")


def _version() -> str:
    try:
        from importlib.metadata import version

        return version("lsap")
    except Exception:  # not installed (a bare checkout on PYTHONPATH)
        import lsap

        return getattr(lsap, "__version__", "unknown")


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="lsap",
        description="lsap — surrogate-assisted language-model pretraining",
        epilog=EXIT_CODES,
        formatter_class=HelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"lsap {_version()}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, help_ in COMMANDS.items():
        p = sub.add_parser(name, help=help_, description=help_, formatter_class=HelpFormatter)
        if only is None or name == only:
            _load(name).add_arguments(p)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    command = argv[0] if argv and argv[0] in COMMANDS else None
    parser = build_parser(only=command or "")
    args = parser.parse_args(argv)
    if args.command is None:  # a usage error like a bad flag: the help, exit 2
        parser.print_help()
        return 2
    try:
        rc = _load(args.command).run(args)
    except KeyboardInterrupt:
        if os.environ.get("LSAP_DEBUG"):
            raise
        print(
            f"lsap {args.command}: interrupted; rerun the same command to resume", file=sys.stderr
        )
        return 130
    except Exception as e:
        if os.environ.get("LSAP_DEBUG") or not user_facing(e):
            raise
        print(f"lsap {args.command}: error: {one_line(e)}", file=sys.stderr)
        return 2
    return int(rc or 0)


def user_facing(e: BaseException) -> bool:
    """Errors a user fixes, printed as one line: `LsapError`, and what libraries raise
    for the user's files and machine after the model is built: OSError (disk full,
    permissions), safetensors' SafetensorError (a damaged weights file), ImportError (an
    optional package not installed, also as the cause of a library's own error)."""
    return (
        isinstance(e, (LsapError, OSError, ImportError))
        or type(e).__name__ == "SafetensorError"
        or isinstance(e.__cause__, ImportError)
    )


def one_line(e: BaseException) -> str:
    """The error as one line: multi-line fix-it text joined with '; '."""
    import errno

    text = (
        str(e)
        if not isinstance(e, OSError) or not e.filename
        else f"{e.strerror or e}: {e.filename}"
    )
    if isinstance(e, OSError) and e.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
        where = f" writing under {os.path.dirname(e.filename) or '.'}" if e.filename else ""
        text = (
            f"disk full ({e.strerror}){where}; finished work is kept: free space (or raise `ulimit -f`) and "
            "run the same command again (lsap train: with --resume)"
        )
    if isinstance(e, OSError) and e.errno in (errno.EROFS, errno.EACCES) and e.filename:
        from lsap.data.tokenizer import cache_root

        root = cache_root().absolute()
        if Path(os.fspath(e.filename)).absolute().is_relative_to(root):
            text += (
                f"; that is lsap's cache ({root}: $LSAP_CACHE, else $XDG_CACHE_HOME/lsap, "
                "else ~/.cache/lsap): set LSAP_CACHE to a writable directory"
            )
    if type(e).__name__ == "SafetensorError":
        text = f"a damaged or truncated .safetensors file ({text})"
    elif isinstance(e, ImportError) and not isinstance(e, LsapError):
        text = f"a package this needs is not installed ({text}); scripts/install.sh installs every extra"
    parts = [p.strip() for p in text.splitlines() if p.strip()]
    return "; ".join(parts) or type(e).__name__


if __name__ == "__main__":
    sys.exit(main())
