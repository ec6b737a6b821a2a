"""Store verification at scale (issue 29 item 5): a chunk is hashed once per node (a record
beside the store, `lsap.surrogate.verified`), never once per rank; the end of a build
hashes only what this process did not write or hash itself, each rank its own share."""

from __future__ import annotations

import hashlib
import os
import shutil
import types

import numpy as np
import pytest

from lsap.data.shards import prepare
from lsap.surrogate import store as store_mod
from lsap.surrogate import store_build
from lsap.surrogate.store import StoreError, TargetStore
from lsap.surrogate.store_build import build_store

T, CW, NW = 16, 8, 40  # 5 chunks of 8 windows


def _build(tiny_world, data, out, **kw):
    return build_store(
        tiny_world["surrogate"],
        data,
        T,
        out,
        k=4,
        min_alpha=0.01,
        batch_size=4,
        chunk_windows=CW,
        max_windows=NW,
        progress=False,
        **kw,
    )


@pytest.fixture(scope="module")
def data(tiny_world, tmp_path_factory):
    root = tmp_path_factory.mktemp("verify")
    prepare(
        tiny_world["base_tok"],
        "pydoc-topics",
        root / "data",
        val_fraction=0.1,
        max_tokens=2000,
        progress=False,
    )
    return str(root / "data")


@pytest.fixture(scope="module")
def built(tiny_world, data, tmp_path_factory):
    out = tmp_path_factory.mktemp("verify-store") / "s"
    _build(tiny_world, data, out)
    return out


def _count_hashes(monkeypatch, module, name):
    calls = []
    real = getattr(module, name)

    def counting(*a, **kw):
        calls.append(a[0] if a else None)
        return real(*a, **kw)

    monkeypatch.setattr(module, name, counting)
    return calls


def test_build_hashes_only_what_it_did_not_write(tiny_world, data, tmp_path, monkeypatch):
    """A fresh build re-reads none of its own chunks at the end (it hashed them in memory);
    a resumed one hashes each kept chunk once, not again at the end (before: every chunk
    re-hashed by rank 0 at the end)."""
    calls = _count_hashes(monkeypatch, store_build, "sha256_file")
    _build(tiny_world, data, tmp_path / "a")
    assert calls == []

    class Killed(Exception):
        pass

    def kill_after(c):
        if c == 1:
            raise Killed

    with pytest.raises(Killed):
        _build(tiny_world, data, tmp_path / "b", on_chunk=kill_after)
    m = _build(tiny_world, data, tmp_path / "b")
    assert m["complete"] and len(m["chunks"]) == NW // CW
    assert sorted(os.path.basename(str(p)) for p in calls) == ["000000.bin", "000001.bin"]
    a = TargetStore(tmp_path / "a", verify=True, record=False)
    b = TargetStore(tmp_path / "b", verify=True, record=False)
    assert a.manifest["chunks"] == b.manifest["chunks"]  # resume still byte-identical


def _lookup_all(st):
    return st.lookup(np.arange(st.n_windows))


def test_a_chunk_is_hashed_once_per_node(built, tmp_path, monkeypatch):
    d = tmp_path / "s"
    shutil.copytree(built, d)
    for f in d.glob("verified-*.jsonl"):
        f.unlink()
    calls = []

    def sha256(buf):
        calls.append(1)
        return hashlib.sha256(buf)

    monkeypatch.setattr(store_mod, "hashlib", types.SimpleNamespace(sha256=sha256))
    first = _lookup_all(TargetStore(d))
    assert len(calls) == NW // CW  # the first process checks every chunk it reads
    (rec,) = d.glob("verified-*.jsonl")
    assert len(rec.read_text().splitlines()) == NW // CW
    st2 = TargetStore(d)  # another rank on the node, or the next run
    again = _lookup_all(st2)
    assert len(calls) == NW // CW and all(st2._verified)  # trusted, not read again
    assert np.array_equal(first.ids.numpy(), again.ids.numpy())
    TargetStore(d, record=False).lookup([0])  # opt out: once per process, as before
    assert len(calls) == NW // CW + 1


def test_a_changed_or_copied_chunk_is_checked_again(built, tmp_path):
    """The record cannot vouch for a file it did not see: a chunk replaced by a corrupt one
    with the same size and mtime (new inode), or a store copied with its record and mtimes
    (cp -a, rsync -a) and damaged, is refused as before."""
    d = tmp_path / "s"
    shutil.copytree(built, d)
    _lookup_all(TargetStore(d))  # record every chunk on this node
    copy = tmp_path / "copy"
    shutil.copytree(d, copy)  # copy2: mtimes and the record come along
    for root in (d, copy):
        p = root / "chunks/000002.bin"
        st = p.stat()
        b = bytearray(p.read_bytes())
        b[-1] ^= 0x40
        tmp = p.with_suffix(".new")
        tmp.write_bytes(bytes(b))
        os.utime(tmp, ns=(st.st_atime_ns, st.st_mtime_ns))
        if root == d:
            os.replace(tmp, p)  # same size, same mtime, another inode
        else:
            tmp.unlink()
            with open(p, "r+b") as f:  # in place in the copy: its inode is not the recorded one
                f.write(bytes(b))
            os.utime(p, ns=(st.st_atime_ns, st.st_mtime_ns))
        st_ = TargetStore(root)
        st_.lookup([0])  # chunk 0 is trusted and fine
        with pytest.raises(StoreError, match="sha256 mismatch"):
            st_.lookup([2 * CW])
