"""Which chunks of a store this node has already checked (sha256): verify once per node.

Every training rank reads chunks from all over the store, so checking each chunk once per
*process* reads the whole store once per rank (~77 TB at 64 GPUs for the paper's ~1.2 TB
store). Instead the first process on a node that checks a chunk appends a line to
``DIR/verified-<hostname>.jsonl``; every later process on that node (the other local ranks,
the next run) trusts a chunk whose record still matches the file it is about to read:

    {"path": "chunks/000012.bin", "key": [sha256, size, mtime_ns, inode]}

Any change to the file (rewritten, truncated, replaced, or a copy of the store, even one
that keeps mtimes: the inode differs) breaks the key and the chunk is checked again. The
record file is append-only (one ``write`` of one short line with O_APPEND, so concurrent
ranks on a node never interleave within a line); lines that do not parse are ignored. A
store directory nobody can write to falls back to checking once per process. Only
deliberate tampering that restores size, mtime and inode escapes it, which no checksum
kept beside the data could catch either.
"""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path

from lsap.utils.logging import get_logger

log = get_logger(__name__)

__all__ = ["VerifiedRecord"]


class VerifiedRecord:
    """The node's record of checked chunks of the store in `directory`."""

    def __init__(self, directory: str | os.PathLike, host: str | None = None):
        self.dir = Path(directory)
        self.path = self.dir / f"verified-{host or socket.gethostname()}.jsonl"
        self._trusted: dict[str, list] = {}
        self._pos = 0
        self._writable = True

    def _key(self, rel: str, sha256: str) -> list:
        st = os.stat(self.dir / rel)
        return [sha256, st.st_size, st.st_mtime_ns, st.st_ino]

    def _refresh(self) -> None:
        """Read the lines other processes appended since the last look (one stat if none)."""
        try:
            size = os.stat(self.path).st_size
        except OSError:
            return
        if size < self._pos:  # replaced or truncated: start over
            self._pos, self._trusted = 0, {}
        if size == self._pos:
            return
        with open(self.path, "rb") as f:
            f.seek(self._pos)
            data = f.read(size - self._pos)
        end = data.rfind(b"\n") + 1  # a line still being written is read next time
        self._pos += end
        for line in data[:end].splitlines():
            try:
                rec = json.loads(line)
                self._trusted[str(rec["path"])] = list(rec["key"])
            except (ValueError, KeyError, TypeError):
                continue

    def key(self, rel: str, sha256: str) -> list | None:
        """The file's key now (None if it cannot be stat'ed); take it before hashing."""
        try:
            return self._key(rel, sha256)
        except OSError:
            return None

    def trusted(self, rel: str, sha256: str) -> bool:
        """True when this node checked `rel` against `sha256` and the file is unchanged."""
        self._refresh()
        want = self._trusted.get(rel)
        return want is not None and want == self.key(rel, sha256)

    def add(self, rel: str, sha256: str, key_before: list | None) -> None:
        """Record that `rel` matched `sha256` (key_before: `key` taken before hashing; the
        chunk is recorded only if the file did not change while it was hashed)."""
        key = self.key(rel, sha256)
        if key is None or key != key_before:
            return
        self._trusted[rel] = key
        if not self._writable:
            return
        line = (json.dumps({"path": rel, "key": key}, separators=(",", ":")) + "\n").encode()
        try:
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
            try:
                os.write(fd, line)
            finally:
                os.close(fd)
        except OSError as e:
            self._writable = False
            log.info(
                f"store: cannot write {self.path} ({e.strerror}); each process checks the "
                "chunks it reads itself"
            )
