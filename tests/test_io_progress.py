"""lsap.utils.io (atomic writes) and lsap.utils.progress (one progress line) — the shared leaves."""

import io
import json
import os

import pytest

from lsap.utils.io import atomic_dir, atomic_write_bytes, atomic_write_json, sha256_file
from lsap.utils.progress import Progress


def test_atomic_write_json_stable_bytes_and_no_tmp(tmp_path):
    p = tmp_path / "m.json"
    atomic_write_json(p, {"b": 1, "a": [1, 2]})
    first = p.read_bytes()
    atomic_write_json(p, {"a": [1, 2], "b": 1})
    assert p.read_bytes() == first and json.loads(first) == {"a": [1, 2], "b": 1}
    assert sorted(os.listdir(tmp_path)) == ["m.json"]


def test_atomic_write_failure_keeps_old_file(tmp_path):
    p = tmp_path / "x.bin"
    atomic_write_bytes(p, b"old")

    class Boom(Exception):
        pass

    def bad(_):
        raise Boom

    from lsap.utils.io import atomic_write_with

    with pytest.raises(Boom):
        atomic_write_with(p, bad)
    assert p.read_bytes() == b"old" and sorted(os.listdir(tmp_path)) == ["x.bin"]


def test_atomic_dir_replace_and_keep(tmp_path):
    t = tmp_path / "d"
    atomic_dir(t, lambda d: (d / "f").write_text("1"))
    atomic_dir(t, lambda d: (d / "f").write_text("2"), replace=False)
    assert (t / "f").read_text() == "1"
    atomic_dir(t, lambda d: (d / "f").write_text("3"))
    assert (t / "f").read_text() == "3" and sorted(os.listdir(tmp_path)) == ["d"]


def test_sha256_file(tmp_path):
    import hashlib

    p = tmp_path / "a"
    p.write_bytes(b"abc" * 1000)
    assert sha256_file(p, block=7) == hashlib.sha256(b"abc" * 1000).hexdigest()


def test_progress_log_lines_every_tenth():
    s = io.StringIO()
    with Progress(200, "build", "tok", stream=s, tty=False) as bar:
        for _ in range(100):
            bar.update(2)
    lines = s.getvalue().splitlines()
    assert len(lines) == 10
    assert lines[0].startswith("build: 20/200 tok (10%)") and "eta" in lines[0]
    assert lines[-1].startswith("build: 200/200 tok (100%)")


def test_progress_disabled_and_resumed():
    s = io.StringIO()
    Progress(10, "x", stream=s, tty=False, enabled=False).update(10)
    assert s.getvalue() == ""
    with Progress(100, "r", stream=s, tty=False, initial=50, every=0.25) as bar:
        for _ in range(10):
            bar.update(5)
    assert [ln.split(" ")[1] for ln in s.getvalue().splitlines()] == ["75/100", "100/100"]
