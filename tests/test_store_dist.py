"""A target store built by many ranks (torchrun, gloo): byte-identical for 1, 2 and 3
processes and for two "nodes" on loopback; a killed rank resumes to the same bytes; a
rank that sees another surrogate stops every rank with one named error."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest

import lsap
from lsap.data.shards import prepare

SRC = str(Path(lsap.__file__).resolve().parents[1])
WORKER = str(Path(__file__).with_name("store_dist_worker.py"))
ENV = {
    **os.environ,
    "OMP_NUM_THREADS": "1",
    "PYTHONPATH": SRC + os.pathsep + os.environ.get("PYTHONPATH", ""),
}
T = 32


@pytest.fixture(scope="module")
def corpus(tiny_world, tmp_path_factory):
    root = tmp_path_factory.mktemp("dist")
    prepare(
        tiny_world["base_tok"],
        "pydoc-topics",
        root / "data",
        val_fraction=0.1,
        max_tokens=2500,
        progress=False,
    )
    return root / "data"


def build_args(world, data, out, *extra):
    return [
        "store",
        "build",
        "--surrogate",
        world["surrogate"],
        "--data",
        str(data),
        "--seq-len",
        str(T),
        "--k",
        "4",
        "--min-alpha",
        "0.01",
        "--out",
        str(out),
        "--batch-size",
        "4",
        "--chunk-windows",
        "8",
        "--no-progress",
        *extra,
    ]


def run(nproc, argv, env=None, timeout=300):
    if nproc == 1:
        cmd = [sys.executable, WORKER, *argv]
    else:
        cmd = [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            f"--nproc_per_node={nproc}",
            WORKER,
            *argv,
        ]
    return subprocess.run(
        cmd, capture_output=True, text=True, env={**ENV, **(env or {})}, timeout=timeout
    )


def files(d: Path) -> dict:
    """Every file of a store (relative path → bytes) but build_stats.json (timings)."""
    return {
        str(p.relative_to(d)): p.read_bytes()
        for p in sorted(d.rglob("*"))
        if p.is_file() and p.name != "build_stats.json"
    }


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def reference(tiny_world, corpus, tmp_path_factory):
    out = tmp_path_factory.mktemp("ref") / "store"
    r = run(1, build_args(tiny_world, corpus, out))
    assert r.returncode == 0, r.stderr[-3000:]
    ref = files(out)
    assert (
        "manifest.json" in ref and sum(f.endswith(".bin") for f in ref) >= 5
    )  # several chunks per rank
    return out, ref


@pytest.mark.slow
@pytest.mark.parametrize("nproc", [2, 3])
def test_world_sizes_build_the_same_bytes(tiny_world, corpus, reference, tmp_path, nproc):
    r = run(nproc, build_args(tiny_world, corpus, tmp_path / "s"))
    assert r.returncode == 0, r.stderr[-3000:]
    assert files(tmp_path / "s") == reference[1]
    import json

    stats = json.loads((tmp_path / "s" / "build_stats.json").read_text())
    assert stats["world_size"] == nproc and all(n > 0 for n in stats["tokens_computed_per_rank"])


@pytest.mark.slow
def test_two_nodes_on_loopback_equal_one_process(tiny_world, corpus, reference, tmp_path):
    port = free_port()
    procs = [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "torch.distributed.run",
                "--nnodes=2",
                "--nproc_per_node=1",
                f"--node_rank={i}",
                "--rdzv-backend=c10d",
                f"--rdzv-endpoint=127.0.0.1:{port}",
                "--rdzv-id=store-test",
                WORKER,
                *build_args(tiny_world, corpus, tmp_path / "s"),
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=ENV,
        )
        for i in (0, 1)
    ]
    for p in procs:
        _, err = p.communicate(timeout=300)
        assert p.returncode == 0, err[-3000:]
    assert files(tmp_path / "s") == reference[1]


@pytest.mark.slow
def test_kill_one_rank_mid_chunk_then_resume(tiny_world, corpus, reference, tmp_path):
    import json

    out = tmp_path / "s"
    # rank 1 dies in its second chunk (batch 3 of 2 per chunk); torchrun stops rank 0
    r = run(2, build_args(tiny_world, corpus, out), env={"KILL_RANK": "1", "KILL_AT_CALL": "3"})
    assert r.returncode != 0
    assert not json.loads((out / "manifest.json").read_text())["complete"]
    # finished chunks only: a dying rank's `.tmp-*` file may still be removed by its own cleanup
    done_before = {p.name for p in (out / "chunks").glob("[0-9]*.json")}
    assert "000001.json" in done_before  # rank 1 finished its first chunk before dying
    before = {n: (out / "chunks" / n).stat().st_mtime_ns for n in done_before}
    r = run(3, build_args(tiny_world, corpus, out))  # resume with another world size
    assert r.returncode == 0, r.stderr[-3000:]
    assert files(out) == reference[1]
    assert all(
        (out / "chunks" / n).stat().st_mtime_ns == t for n, t in before.items()
    )  # verified, not redone
    stats = json.loads((out / "build_stats.json").read_text())
    total = json.loads((out / "manifest.json").read_text())["positions"]
    assert 0 < stats["tokens_computed"] < total


@pytest.mark.slow
def test_a_rank_seeing_another_surrogate_stops_every_rank(tiny_world, corpus, tmp_path):
    import torch

    from lsap.surrogate.load import load_surrogate

    for i in (0, 1):  # the same relative path names other weights on "node" 1
        (tmp_path / f"n{i}").mkdir()
        shutil.copytree(tiny_world["surrogate"], tmp_path / f"n{i}" / "surr")
    model, _ = load_surrogate(tmp_path / "n1" / "surr")
    with torch.no_grad():
        next(model.parameters()).add_(1.0)
    model.save_pretrained(tmp_path / "n1" / "surr")
    argv = build_args({"surrogate": "surr"}, corpus, tmp_path / "s")
    r = run(
        2,
        argv,
        env={"CHDIR_RANK0": str(tmp_path / "n0"), "CHDIR_RANK1": str(tmp_path / "n1")},
        timeout=240,
    )
    assert r.returncode != 0
    lines = [ln for ln in r.stderr.splitlines() if "lsap store: error:" in ln]
    # one line from each rank (torchrun may stop the slower one before it prints), exit 2, no hang
    assert 1 <= len(lines) <= 2 and "exitcode  : 2" in r.stderr, r.stderr[-3000:]
    for ln in lines:
        assert "ranks disagree" in ln and "rank 1 of 2" in ln and "surrogate.weights_sha256" in ln
    assert "Traceback" not in "\n".join(ln for ln in r.stderr.splitlines() if "lsap store" in ln)
    assert not (
        tmp_path / "s" / "manifest.json"
    ).exists()  # nothing was written before the ranks agreed


@pytest.mark.slow
@pytest.mark.parametrize("case", ["other_tokenizer", "missing_data"])
def test_a_rank_with_other_or_missing_data_stops_every_rank(tiny_world, corpus, tmp_path, case):
    """The same relative --data names other files on "node" 1: shards of another base
    tokenizer (the ranks disagree, named) or nothing (rank 1's error, named on every rank)."""
    from lsap.data.tokenizer import train_bpe

    (tmp_path / "n0").mkdir()
    (tmp_path / "n1").mkdir()
    shutil.copytree(corpus, tmp_path / "n0" / "data")
    if case == "other_tokenizer":
        from pydoc_data.topics import topics

        train_bpe([t.upper() for t in topics.values()], 600, tmp_path / "tok2")
        prepare(
            str(tmp_path / "tok2"),
            "pydoc-topics",
            tmp_path / "n1" / "data",
            val_fraction=0.1,
            max_tokens=2500,
            progress=False,
        )
    argv = build_args(tiny_world, "data", tmp_path / "s")
    r = run(
        2,
        argv,
        env={"CHDIR_RANK0": str(tmp_path / "n0"), "CHDIR_RANK1": str(tmp_path / "n1")},
        timeout=240,
    )
    assert r.returncode != 0 and "exitcode  : 2" in r.stderr, r.stderr[-3000:]
    lines = [ln for ln in r.stderr.splitlines() if "lsap store: error:" in ln]
    assert 1 <= len(lines) <= 2, r.stderr[-3000:]
    want = (
        ("ranks disagree", "data.tokenizer")
        if case == "other_tokenizer"
        else ("rank 1 of 2", "no manifest.json")
    )
    for ln in lines:
        assert all(w in ln for w in want), ln
    assert not (tmp_path / "s" / "manifest.json").exists()
