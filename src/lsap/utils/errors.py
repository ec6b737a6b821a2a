"""Every error a user can fix: one base class, `LsapError`, and one subclass per area.

`lsap.cli.main.main` catches `LsapError` (and OSError: disk full, permissions) and prints
`lsap <command>: error: <message>` as one line on stderr with exit status 2, no
traceback (set LSAP_DEBUG=1 to see it). Messages name the problem and the fix.
Each subclass also derives from the builtin its code raised before (ValueError or
RuntimeError), so `except ValueError` in older callers keeps working.
"""

from __future__ import annotations


class LsapError(Exception):
    """A problem the user can fix; the message says how."""


class ConfigError(LsapError, ValueError):
    """A run config key with a bad value, type or name."""


class DataError(LsapError, ValueError):
    """A data problem the user can fix; the message says how."""


class TokenizerError(LsapError, ValueError):
    """A tokenizer that cannot be found, converted or used."""


class VocabError(LsapError, ValueError):
    """A vocabulary map that does not fit its tokenizers or model."""


class SurrogateError(LsapError, ValueError):
    """A surrogate model file that cannot be loaded (missing, truncated, corrupt)."""


class StoreError(LsapError, ValueError):
    """A cache that cannot serve this run; the message says why and how to fix it."""


class EvalError(LsapError, ValueError):
    """An evaluation that cannot run as asked."""


class ReportError(LsapError, ValueError):
    """Runs that cannot be compared as asked."""


class SweepError(LsapError, ValueError):
    """A sweep spec that cannot run as written."""


class AnalyzeError(LsapError, ValueError):
    """A token-distribution analysis that cannot run as asked."""


class TrainingError(LsapError, RuntimeError):
    """A training run that cannot start or continue; the message names the fix."""


class LockError(LsapError, RuntimeError):
    """An output directory that another live process is writing."""


class LoggerError(LsapError, RuntimeError):
    """A tracker in train.loggers that cannot be used (unknown, not installed)."""
