"""One writer per output directory: `lsap train`, `lsap prepare` and `lsap store build`.

The lock is an exclusive `flock` on ``DIR/.lsap.utils.lock``; the file names its holder
(PID, host, command, start time) for the refusal message. The kernel drops a flock
when its process dies, so a lock left by a killed process (`kill -9`, OOM, power) is
stale by construction: the next writer takes it over and says whose it was. A clean
exit removes the file. (flock is per host on some network filesystems; the holder's
host in the file tells a user which machine to look at.)
"""

from __future__ import annotations

import fcntl
import functools
import inspect
import json
import os
import socket
import time
from pathlib import Path

from lsap.utils.errors import LockError
from lsap.utils.logging import get_logger

log = get_logger(__name__)

LOCK_NAME = ".lsap.utils.lock"


def _describe(info: dict) -> str:
    if not info:
        return "an unknown process"
    return (
        f"pid {info.get('pid')} on host {info.get('host')} ({info.get('command')}, "
        f"since {info.get('started')})"
    )


def _read(fd: int) -> dict:
    os.lseek(fd, 0, os.SEEK_SET)
    raw = os.read(fd, 65536)
    try:
        return json.loads(raw.decode()) if raw.strip() else {}
    except (ValueError, UnicodeDecodeError):
        return {}


class DirLock:
    """`with DirLock(out_dir, "lsap train"):` — raises LockError while another live process holds it."""

    def __init__(self, directory: str | os.PathLike, command: str):
        self.dir = Path(directory)
        self.path = self.dir / LOCK_NAME
        self.command = command
        self.fd: int | None = None
        self.created_dir = False

    def acquire(self) -> DirLock:
        if self.fd is not None:
            return self
        if not self.dir.exists():
            self.dir.mkdir(parents=True, exist_ok=True)
            self.created_dir = True
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = _read(fd)
                os.close(fd)
                raise LockError(
                    f"{self.dir} is being written by {_describe(holder)}; wait for it to end or "
                    "use another output directory"
                ) from None
            # The previous holder may have removed the file between our open and flock:
            # then we hold a lock on a dead inode and must retry on the new file.
            try:
                same = os.stat(self.path).st_ino == os.fstat(fd).st_ino
            except FileNotFoundError:
                same = False
            if same:
                break
            os.close(fd)
        previous = _read(fd)
        if previous and previous.get("pid") != os.getpid():
            log.warning(
                f"{self.dir}: taking over a stale lock of {_describe(previous)} (no longer running)"
            )
        info = {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "command": self.command,
            "started": time.strftime("%Y-%m-%d %H:%M:%S"),
        }
        os.ftruncate(fd, 0)
        os.lseek(fd, 0, os.SEEK_SET)
        os.write(fd, (json.dumps(info) + "\n").encode())
        self.fd = fd
        return self

    def release(self) -> None:
        if self.fd is None:
            return
        try:
            os.unlink(self.path)
        except FileNotFoundError:
            pass
        os.close(self.fd)
        self.fd = None
        if self.created_dir:
            try:
                self.dir.rmdir()  # only if it stayed empty (the command failed before writing)
            except OSError:
                pass

    def __enter__(self) -> DirLock:
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()

    def __del__(self):
        try:
            self.release()
        except Exception:  # noqa: BLE001 — interpreter shutdown
            pass


def holds_lock(arg: str, command: str):
    """Decorator: hold `DirLock(<the call's `arg` argument>, command)` while the function runs."""

    def wrap(fn):
        sig = inspect.signature(fn)

        @functools.wraps(fn)
        def inner(*args, **kwargs):
            directory = sig.bind(*args, **kwargs).arguments[arg]
            with DirLock(directory, command):
                return fn(*args, **kwargs)

        return inner

    return wrap
