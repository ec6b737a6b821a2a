"""lsap's logger: stdlib `logging`, one line per message, timestamped, rank 0 only for info.

    from lsap.utils.logging import get_logger
    log = get_logger(__name__)
    log.info("wrote %s", path)        # stdout, rank 0 only:   "12:03:04 lsap: wrote …"
    log.warning("val split is empty")  # stderr, every rank:    "12:03:04 lsap: warning: …"

Info goes to stdout and warnings/errors to stderr, the streams the messages used before
(tests and users read them there). The stream is looked up at each message, not when the
handler is made, so pytest's capture and redirected `sys.stdout` see the lines. The rank is
read from the environment (`RANK`, set by torchrun), so the logger needs no `Dist` handle.
A command's own result (a table, JSON on stdout) is not a log line: commands print it.
"""

from __future__ import annotations

import logging
import os
import re
import sys

_ROOT = "lsap"
_TAG = re.compile(r"^\[lsap[^\]]*\] ")


def _rank() -> int:
    return int(os.environ.get("RANK", "0") or 0)


class _Rank0(logging.Filter):
    """Below WARNING only rank 0 emits (one line per step, not one per process)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno >= logging.WARNING or _rank() == 0


class _StdStreams(logging.Handler):
    """INFO and below to the current `sys.stdout`, WARNING and above to the current `sys.stderr`."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            stream = sys.stderr if record.levelno >= logging.WARNING else sys.stdout
            stream.write(self.format(record) + "\n")
            stream.flush()
        except Exception:  # noqa: BLE001 - logging must never kill a run
            self.handleError(record)


class _Format(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        msg = _TAG.sub("", record.getMessage(), count=1)  # "[lsap] …" tags of old call sites
        if record.levelno >= logging.WARNING and not msg.lower().startswith(("warning", "error")):
            msg = f"{record.levelname.lower()}: {msg}"
        return f"{self.formatTime(record, '%H:%M:%S')} lsap: {msg}"


def _configure() -> logging.Logger:
    root = logging.getLogger(_ROOT)
    if not any(isinstance(h, _StdStreams) for h in root.handlers):
        h = _StdStreams()
        h.setFormatter(_Format())
        h.addFilter(_Rank0())
        root.addHandler(h)
        root.setLevel(os.environ.get("LSAP_LOG_LEVEL", "INFO").upper())
        root.propagate = False
    return root


def get_logger(name: str = _ROOT) -> logging.Logger:
    """The `lsap` logger (or a child, e.g. `get_logger(__name__)`), configured on first use."""
    root = _configure()
    return (
        root
        if name == _ROOT
        else logging.getLogger(name if name.startswith(_ROOT) else f"{_ROOT}.{name}")
    )
