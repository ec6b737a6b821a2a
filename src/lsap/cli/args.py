"""argparse types shared by every `lsap` command.

Counts (tokens, windows, batch sizes, k, seeds) accept scientific notation as the cluster
recipes write them (`--max-tokens 27e9`) but must be finite whole numbers in range; a bad
value is a usage error (argparse prints one line and exits 2).

Here, not in `cli.main`, so commands never import the dispatcher that loads them
(no cli -> command -> cli circle).
"""

from __future__ import annotations

import argparse
import math


def default_text(value) -> str:
    """A default as `--help` shows it: lists space-separated as typed, floats in %g form."""
    if isinstance(value, (list, tuple)):
        return " ".join(default_text(v) for v in value)
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def shows_default(action: argparse.Action) -> bool:
    """Whether `--help` appends `(default: X)` to this action: an option (or an optional
    positional) whose default says something (not None, False, '' or [])."""
    d = action.default
    if d is None or d is False or d is argparse.SUPPRESS or (isinstance(d, (str, list)) and not d):
        return False
    return bool(action.option_strings) or action.nargs in ("?", "*")


class HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """`--help` of every lsap command: each option's default as `(default: X)` unless the help
    text places `%(default)s` itself; descriptions and epilogs keep their line breaks."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if "%(default)" in text or not shows_default(action):
            return text
        return f"{text} (default: {default_text(action.default).replace('%', '%%')})"


# α: `--alpha A` is one threshold (a setting of the runs); `--alphas A [A ...]` is the
# thresholds a report counts at (analyze, preflight, store info). The old plural-less
# spelling of the list stays a hidden alias where it existed.
ALPHA_HELP = "threshold α in (0, 1): one value"
ALPHAS_HELP = "thresholds α in (0, 1) to count at: one or more values"


def add_alphas(parser: argparse.ArgumentParser, default, help: str, *, old_alias: bool) -> None:
    """`--alphas A [A ...]`; with old_alias also the hidden `--alpha A [A ...]` (same list)."""
    parser.add_argument(
        "--alphas",
        type=probability,
        nargs="+",
        default=default,
        metavar="ALPHA",
        help=f"{ALPHAS_HELP}; {help}",
    )
    if old_alias:
        parser.add_argument(
            "--alpha",
            dest="alphas",
            type=probability,
            nargs="+",
            default=argparse.SUPPRESS,
            help=argparse.SUPPRESS,
        )


NO_PROGRESS_HELP = "no progress bar (log lines and results are still printed)"


def add_no_progress(parser: argparse.ArgumentParser) -> None:
    """`--no-progress`, the one name for "no progress bar" in every command that has one."""
    parser.add_argument("--no-progress", action="store_true", help=NO_PROGRESS_HELP)


def progress_off(args: argparse.Namespace):
    """A context in which no `lsap.utils.progress.Progress` bar is shown when the command got
    `--no-progress` (the bars of train, quickstart and sweep sit deep inside their pipelines)."""
    from contextlib import nullcontext

    from lsap.utils.progress import disabled

    return disabled() if getattr(args, "no_progress", False) else nullcontext()


def _whole(text: str) -> int:
    try:
        return int(text.replace("_", ""))
    except ValueError:
        pass
    try:
        value = float(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from e
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"must be finite: {text!r}")
    if not value.is_integer():
        raise argparse.ArgumentTypeError(f"must be a whole number: {text!r}")
    if abs(value) >= 2**63:
        raise argparse.ArgumentTypeError(f"too large: {text!r}")
    return int(value)


def positive_int(text: str) -> int:
    """A count ≥ 1: tokens, windows, batch sizes, k, sequence lengths. Accepts '27e9'."""
    value = _whole(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1: {text!r}")
    return value


def nonnegative_int(text: str) -> int:
    """A count or seed ≥ 0. Accepts '1e3'."""
    value = _whole(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be at least 0: {text!r}")
    return value


def positive_float(text: str) -> float:
    """Budgets and sizes written as '26e9': finite and > 0."""
    try:
        value = float(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from e
    if not math.isfinite(value) or value <= 0:
        raise argparse.ArgumentTypeError(f"must be a finite positive number: {text!r}")
    return value


def probability(text: str) -> float:
    """A threshold α: finite, 0 < α < 1 (checked at parse time, before any expensive work)."""
    try:
        value = float(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from e
    if not math.isfinite(value) or not 0.0 < value < 1.0:
        raise argparse.ArgumentTypeError(f"α must lie in (0, 1): {text!r}")
    return value


def device(text: str) -> str:
    """`--device`: auto | cpu | cuda | cuda:N | mps, refused at parse time when torch lacks it."""
    import torch  # lazy: parsing `--help` should not need torch

    name = text.strip().lower()
    if name in ("auto", "cpu"):
        return name
    kind, _, index = name.partition(":")
    if kind == "cuda":
        if not torch.cuda.is_available():
            raise argparse.ArgumentTypeError(
                f"{text}: torch sees no CUDA device (torch.cuda.is_available() is False); "
                "use --device cpu"
            )
        if index:
            if not index.isdigit():
                raise argparse.ArgumentTypeError(f"{text}: not a CUDA device index")
            count = torch.cuda.device_count()
            if int(index) >= count:
                raise argparse.ArgumentTypeError(
                    f"{text}: torch sees {count} CUDA device(s) (cuda:0..cuda:{count - 1})"
                )
        return name
    if name == "mps" and not index:
        mps = getattr(torch.backends, "mps", None)
        if mps is None or not mps.is_available():
            raise argparse.ArgumentTypeError(f"{text}: torch sees no MPS device; use --device cpu")
        return name
    raise argparse.ArgumentTypeError(f"{text}: unknown device (auto | cpu | cuda[:N] | mps)")
