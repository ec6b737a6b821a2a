"""argparse types shared by the commands (here, not in `cli.main`, so commands never import the dispatcher
that loads them: no cli → command → cli circle)."""

from __future__ import annotations

import argparse


def positive_float(text: str) -> float:
    """argparse type for budgets and sizes written as '26e9'."""
    try:
        value = float(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from e
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be positive: {text!r}")
    return value
