"""One progress line for every stage that can take more than ~30 s.

On a terminal: a tqdm bar that updates in place (step/total, rate, ETA). Into a log
file or pipe: one plain line every `every` of the total (default 10%), so logs stay
readable and still show the job is alive. Rank 0 only; other ranks get a no-op.

    with Progress(total=n_tokens, desc="store build", unit="tok") as bar:
        for chunk in ...:
            bar.update(len(chunk))
"""

from __future__ import annotations

import sys
import time
from contextlib import contextmanager
from typing import TextIO

__all__ = ["Progress", "disabled"]

_DISABLED = 0  # > 0 inside `disabled()`


@contextmanager
def disabled():
    """No progress bar or progress line from any `Progress` created inside (`--no-progress`)."""
    global _DISABLED
    _DISABLED += 1
    try:
        yield
    finally:
        _DISABLED -= 1


def _fmt_time(s: float) -> str:
    s = int(max(s, 0))
    h, rem = divmod(s, 3600)
    m, sec = divmod(rem, 60)
    return f"{h}:{m:02d}:{sec:02d}" if h else f"{m:02d}:{sec:02d}"


def _fmt_num(x: float) -> str:
    for unit, scale in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(x) >= scale:
            return f"{x / scale:.2f}{unit}"
    return f"{x:.0f}" if float(x).is_integer() else f"{x:.1f}"


class Progress:
    """`update(n)` adds n units; `set_postfix(text)` appends a short status (e.g. a loss).

    tty=None decides from the stream (`isatty`); `enabled=False` (non-zero ranks,
    quiet mode) makes every call a no-op."""

    def __init__(
        self,
        total: float,
        desc: str,
        unit: str = "it",
        *,
        initial: float = 0,
        every: float = 0.10,
        stream: TextIO | None = None,
        tty: bool | None = None,
        enabled: bool = True,
    ):
        self.total, self.desc, self.unit = float(total), desc, unit
        self.n, self.initial, self.every = float(initial), float(initial), every
        self.stream = stream if stream is not None else sys.stderr
        self.enabled = enabled and total > 0 and not _DISABLED
        self.postfix = ""
        self._t0 = time.monotonic()
        self._next_mark = self._mark_after(self.n)
        tty = getattr(self.stream, "isatty", lambda: False)() if tty is None else tty
        self._bar = None
        if self.enabled and tty:
            from tqdm.auto import tqdm

            self._bar = tqdm(
                total=total,
                initial=initial,
                desc=desc,
                unit=unit,
                unit_scale=True,
                file=self.stream,
                dynamic_ncols=True,
                smoothing=0.1,
            )

    def _mark_after(self, n: float) -> float:
        step = max(self.every * self.total, 1e-12)
        return (int(n / step) + 1) * step

    def line(self) -> str:
        """The plain progress line (what a log file gets)."""
        el = time.monotonic() - self._t0
        rate = (self.n - self.initial) / el if el > 0 else 0.0
        eta = (self.total - self.n) / rate if rate > 0 else float("nan")
        pct = 100.0 * self.n / self.total if self.total else 100.0
        eta_s = _fmt_time(eta) if eta == eta else "?"
        tail = f" | {self.postfix}" if self.postfix else ""
        return (
            f"{self.desc}: {_fmt_num(self.n)}/{_fmt_num(self.total)} {self.unit} ({pct:.0f}%)"
            f" | {_fmt_num(rate)} {self.unit}/s | elapsed {_fmt_time(el)} | eta {eta_s}{tail}"
        )

    def set_postfix(self, text: str) -> None:
        if not self.enabled:
            return
        self.postfix = text
        if self._bar is not None:
            self._bar.set_postfix_str(text, refresh=False)

    def update(self, n: float = 1) -> None:
        if not self.enabled:
            return
        self.n += n
        if self._bar is not None:
            self._bar.update(n)
        elif self.n >= self._next_mark or self.n >= self.total:
            if self.n < self.total or self._next_mark <= self.total + 1e-9:
                print(self.line(), file=self.stream, flush=True)
            self._next_mark = self._mark_after(self.n) if self.n < self.total else float("inf")

    def write(self, msg: str) -> None:
        """Print a message without breaking the bar."""
        if self._bar is not None:
            self._bar.write(msg, file=self.stream)
        else:
            print(msg, file=self.stream, flush=True)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
