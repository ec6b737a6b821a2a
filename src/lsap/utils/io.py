"""Atomic writes, fsync and sha256: the one implementation every writer in lsap uses.

A file under its final name is always complete: writers fill a temporary sibling
(named per process, so concurrent writers never share one), fsync it, then
`os.replace` it over the target. A kill at any moment leaves either the old file or
the new one, plus at worst a ``.tmp-*`` sibling that nothing reads.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

__all__ = [
    "sha256_file",
    "fsync_path",
    "fsync_tree",
    "atomic_write_bytes",
    "atomic_write_text",
    "atomic_write_json",
    "atomic_write_with",
    "atomic_dir",
]


def sha256_file(path: str | os.PathLike, block: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(block), b""):
            h.update(chunk)
    return h.hexdigest()


def fsync_path(path: str | os.PathLike) -> None:
    """fsync a file or a directory (a directory's fsync makes a rename inside it durable)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_tree(path: str | os.PathLike) -> None:
    """fsync every file under `path`, then `path` itself."""
    path = Path(path)
    for f in sorted(path.rglob("*")):
        if f.is_file():
            fsync_path(f)
    fsync_path(path)


def _tmp_sibling(path: Path) -> Path:
    return path.with_name(f".tmp-{os.getpid()}-{path.name}")


def atomic_write_with(
    path: str | os.PathLike, write: Callable[[Path], Any], *, fsync: bool = True
) -> Path:
    """`write(tmp_path)` fills a temporary sibling of `path`, which then replaces `path`.
    On any error the temporary file is removed and the old `path` (if any) is untouched;
    an OSError that names no file (disk full during write) is raised naming `path`."""
    path = Path(path)
    tmp = _tmp_sibling(path)
    try:
        write(tmp)
        if fsync:
            fsync_path(tmp)
        os.replace(tmp, path)
    except BaseException as e:
        tmp.unlink(missing_ok=True)
        if (
            isinstance(e, OSError) and not e.filename
        ):  # ENOSPC from write() names no file: name the target
            raise OSError(e.errno, e.strerror, str(path)) from e
        raise
    return path


def atomic_write_bytes(path: str | os.PathLike, data: bytes, *, fsync: bool = True) -> Path:
    return atomic_write_with(path, lambda p: p.write_bytes(data), fsync=fsync)


def atomic_write_text(path: str | os.PathLike, text: str, *, fsync: bool = True) -> Path:
    return atomic_write_with(path, lambda p: p.write_text(text, encoding="utf-8"), fsync=fsync)


def atomic_write_json(path: str | os.PathLike, obj: Any, *, fsync: bool = True) -> Path:
    """JSON with sorted keys and a trailing newline (stable bytes for identical objects)."""
    return atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True) + "\n", fsync=fsync)


def atomic_dir(
    target: str | os.PathLike,
    fill: Callable[[Path], Any],
    *,
    fsync: bool = True,
    replace: bool = True,
) -> Path:
    """Build a directory in a temporary sibling with `fill(tmp_dir)`, then rename it to
    `target`. If `target` exists it is replaced (`replace=True`) or kept, and the new
    one dropped (`replace=False`: another process finished first; its result stands)."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".tmp-{target.name}-"))
    try:
        fill(tmp)
        if fsync:
            fsync_tree(tmp)
        if target.exists():
            if not replace:
                shutil.rmtree(tmp, ignore_errors=True)
                return target
            shutil.rmtree(target)
        os.replace(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return target
