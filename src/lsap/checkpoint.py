"""Checkpoints on disk: list / latest / save / load / prune, and what "finished" means.

Layout of one checkpoint (written by `lsap.train.Trainer.save_checkpoint`)::

    RUN/checkpoints/step_00000100/model/        HF `save_pretrained` weights + tokenizer
    RUN/checkpoints/step_00000100/trainer.pt    optimizer, loader position, FLOPs ledger, RNG, step
    RUN/checkpoints/step_00000100/config.yaml   the resolved run config
    RUN/checkpoints/step_00000100/meta.json     step, tokens, FLOPs (written last)
    RUN/checkpoints/step_00000100/eval.json     added later by `lsap eval`

A checkpoint is **finished** when its directory is named ``step_`` + 8 digits (no
suffix) and holds ``meta.json``. `save` writes everything into ``step_….tmp``, meta.json
last, fsyncs, then renames: a kill at any moment leaves either a finished checkpoint
or a ``.tmp`` directory, which `clean_stale` removes and nothing else ever reads.
Every consumer (trainer, `lsap eval`, `lsap report`, the quickstart) lists checkpoints
with `list_checkpoints`, so they all agree on which exist.
"""

from __future__ import annotations

import errno
import json
import os
import re
import shutil
import sys
from collections.abc import Callable
from pathlib import Path

_NAME = re.compile(r"^step_(\d{8})$")


def root_of(run_or_root: str | os.PathLike) -> Path:
    """RUN/checkpoints for a run directory; the directory itself if it is already that."""
    p = Path(run_or_root)
    return p if p.name == "checkpoints" else p / "checkpoints"


def is_finished(path: str | os.PathLike) -> bool:
    p = Path(path)
    return bool(_NAME.match(p.name)) and (p / "meta.json").is_file()


def step_of(path: str | os.PathLike) -> int:
    m = _NAME.match(Path(path).name)
    if not m:
        raise ValueError(f"{path} is not a checkpoint directory name (step_XXXXXXXX)")
    return int(m.group(1))


def list_checkpoints(run_or_root: str | os.PathLike) -> list[Path]:
    """Finished checkpoints of a run (or of a checkpoints/ directory), in step order."""
    root = root_of(run_or_root)
    if not root.is_dir():
        return []
    return sorted(p for p in root.iterdir() if p.is_dir() and is_finished(p))


def latest(run_or_root: str | os.PathLike) -> Path | None:
    done = list_checkpoints(run_or_root)
    return done[-1] if done else None


def clean_stale(run_or_root: str | os.PathLike) -> list[Path]:
    """Remove ``step_*.tmp`` directories (checkpoints whose writer was killed). Only the
    directory's lock holder may call this: a live writer's .tmp would go too."""
    root = root_of(run_or_root)
    gone = sorted(root.glob("step_*.tmp")) if root.is_dir() else []
    for p in gone:
        shutil.rmtree(p, ignore_errors=True)
    return gone


def _fsync_tree(path: Path) -> None:
    for f in sorted(path.rglob("*")):
        if f.is_file():
            with open(f, "rb") as fh:
                os.fsync(fh.fileno())
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def save(run_or_root: str | os.PathLike, step: int, write: Callable[[Path], None], meta: dict) -> Path:
    """Write checkpoint `step`: `write(tmp_dir)` fills it, then meta.json, fsync, rename."""
    root = root_of(run_or_root)
    final = root / f"step_{step:08d}"
    tmp = final.with_name(final.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        tmp.mkdir(parents=True)
        write(tmp)
        (tmp / "meta.json").write_text(json.dumps(meta, indent=2))
        _fsync_tree(tmp)
        if final.exists():
            shutil.rmtree(final)
        tmp.rename(final)
    except BaseException as e:  # disk full, quota, I/O error, or a kill: no half checkpoint stays behind
        why = _write_error_text(e, tmp) if isinstance(e, Exception) else ""
        shutil.rmtree(tmp, ignore_errors=True)
        if not why:
            raise
        from lsap.errors import TrainingError

        prev = latest(root)
        raise TrainingError(
            f"checkpoint step {step} not saved: {why} (under {root}); the partial copy was removed and "
            + (f"the previous checkpoint {prev.name} is intact: --resume continues from it" if prev else
               "no earlier checkpoint exists") + "; free disk space and run again"
            + (" with --resume" if prev else "")) from e
    return final


_FULL = {errno.ENOSPC: "disk full (No space left on device)", errno.EDQUOT: "disk quota exceeded",
         errno.EFBIG: "a file outgrew the file-size limit (File too large; see `ulimit -f`)"}


def _write_error_text(e: Exception, tmp: Path) -> str:
    """Why a checkpoint write failed, in words. The libraries lose the errno on the way:
    safetensors gives it as text ("os error 28"), torch.save not at all ("unexpected pos
    …"), so a full file system or a file at RLIMIT_FSIZE is also looked for directly."""
    text = str(e)
    code = getattr(e, "errno", None)
    if code not in _FULL:
        code = next((c for c in _FULL if f"os error {c})" in text or os.strerror(c) in text), None)
    if code is None:
        try:
            st = os.statvfs(tmp.parent)
            if st.f_bavail * st.f_frsize < (1 << 20):
                code = errno.ENOSPC
            else:
                import resource

                soft = resource.getrlimit(resource.RLIMIT_FSIZE)[0]
                if soft != resource.RLIM_INFINITY and any(f.is_file() and f.stat().st_size >= soft
                                                          for f in tmp.rglob("*")):
                    code = errno.EFBIG
        except (OSError, ImportError, ValueError):
            pass
    if code in _FULL:
        return _FULL[code]
    return f"{type(e).__name__}: {text.splitlines()[0][:200] if text else ''}"


def prune(run_or_root: str | os.PathLike, keep: int) -> list[Path]:
    """Delete all but the `keep` newest finished checkpoints (keep = 0: keep all)."""
    if keep <= 0:
        return []
    gone = list_checkpoints(run_or_root)[:-keep]
    for p in gone:
        shutil.rmtree(p)
    return gone


def load(path: str | os.PathLike) -> tuple[dict, dict]:
    """(model state dict from model/*.safetensors, trainer state from trainer.pt).

    Raises whatever the readers raise for a damaged checkpoint (see `load_latest`).
    """
    import torch
    from safetensors.torch import load_file

    p = Path(path)
    files = sorted((p / "model").glob("*.safetensors"))
    if not files:
        raise FileNotFoundError(f"{p / 'model'}: no *.safetensors")
    model_sd = {}
    for f in files:
        model_sd.update(load_file(f))
    trainer = torch.load(p / "trainer.pt", weights_only=False, map_location="cpu")
    return model_sd, trainer


def load_latest(run_or_root: str | os.PathLike, warn=lambda m: print(m, file=sys.stderr, flush=True)):
    """(path, model_sd, trainer_state) of the newest finished checkpoint that reads back;
    an unreadable one (truncated file, disk error) is skipped with a warning. None if none."""
    for p in reversed(list_checkpoints(run_or_root)):
        try:
            return (p, *load(p))
        except Exception as e:  # noqa: BLE001 — torch/safetensors raise many types for a torn file
            warn(f"[lsap] warning: checkpoint {p} is unreadable ({type(e).__name__}: {str(e)[:200]}); "
                 "falling back to the previous one")
    return None
