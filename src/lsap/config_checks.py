"""The deep checks of `lsap.config.validate(deep=True)`: input paths exist, out_dir is
writable, and `model.overrides` keys are fields of the preset's transformers config (these
import lsap.model, so they live outside the dataclass module)."""

from __future__ import annotations

import difflib
from pathlib import Path

from lsap.utils.errors import ConfigError


def check_model_overrides(preset: str, overrides: dict) -> None:
    """Refuse override keys the preset's transformers config class does not have (with a suggestion)."""
    from lsap.model import PRESETS, _config_class

    if preset not in PRESETS:
        close = difflib.get_close_matches(preset, list(PRESETS), n=1)
        raise ConfigError(
            f"model.preset={preset!r} is unknown"
            + (f"; did you mean {close[0]!r}?" if close else f"; presets: {', '.join(PRESETS)}")
        )
    if not overrides:
        return
    cls = _config_class(PRESETS[preset][0])
    known = set(cls().to_dict())
    for key in overrides:
        if key not in known:
            close = difflib.get_close_matches(key, sorted(known), n=1)
            raise ConfigError(
                f"model.overrides.{key} is not a field of {cls.__name__}"
                + (f"; did you mean 'model.overrides.{close[0]}'?" if close else "")
            )


def _check_paths(cfg) -> None:
    """Inputs exist and out_dir can be written, before anything is built."""
    import os

    def need(key: str, value: str, what: str) -> None:
        if value and not Path(value).expanduser().exists():
            raise ConfigError(f"{key}={value!r}: no such {what}")

    need("data.dir", cfg.data.dir, "directory (run `lsap prepare --out DIR` first)")
    s = cfg.surrogate
    if cfg.loss == "lsap":
        m = s.model
        if m and (m.startswith((".", "/", "~")) or m.endswith(".gguf")):
            need("surrogate.model", m, "file or directory")
        if s.source == "store":
            need(
                "surrogate.store_dir",
                s.store_dir,
                "directory (run `lsap store build --out DIR` first)",
            )
        need("surrogate.vocab_map", s.vocab_map, "directory (run `lsap vocab --out DIR` first)")
    out = Path(cfg.out_dir).expanduser().absolute()
    probe = out
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    if not probe.is_dir() or not os.access(probe, os.W_OK | os.X_OK):
        raise ConfigError(
            f"out_dir={cfg.out_dir!r} is not writable ({probe} is "
            f"{'not a directory' if not probe.is_dir() else 'read-only for this user'})"
        )
