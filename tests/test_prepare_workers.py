"""`lsap prepare --workers N`: byte-identical to one worker, and resumable after a kill."""

from __future__ import annotations

from pathlib import Path

import pytest

from lsap.cli.main import main as cli
from lsap.data.shards import prepare


def files(d: Path) -> dict:
    return {str(p.relative_to(d)): p.read_bytes() for p in sorted(d.rglob("*")) if p.is_file()}


ARGS = dict(val_fraction=0.2, shard_tokens=3000, batch_docs=8, progress=False)


@pytest.fixture(scope="module")
def one_worker(tiny_world, tmp_path_factory):
    out = tmp_path_factory.mktemp("prep") / "w1"
    prepare(tiny_world["base_tok"], "pydoc-topics", out, **ARGS)
    ref = files(out)
    assert sum(f.startswith("train/") for f in ref) >= 4 and any(f.startswith("val/") for f in ref)
    return ref


def test_two_workers_write_the_same_bytes(tiny_world, one_worker, tmp_path):
    prepare(tiny_world["base_tok"], "pydoc-topics", tmp_path / "w2", workers=2, **ARGS)
    assert files(tmp_path / "w2") == one_worker
    # through the CLI, with max_tokens (stops in the middle of the block stream)
    assert (
        cli(
            [
                "prepare",
                "--tokenizer",
                tiny_world["base_tok"],
                "--source",
                "pydoc-topics",
                "--out",
                str(tmp_path / "m2"),
                "--workers",
                "2",
                "--max-tokens",
                "9000",
                "--shard-tokens",
                "3000",
                "--val-fraction",
                "0.2",
                "--quiet",
            ]
        )
        == 0
    )
    prepare(
        tiny_world["base_tok"],
        "pydoc-topics",
        tmp_path / "m1",
        val_fraction=0.2,
        max_tokens=9000,
        shard_tokens=3000,
        progress=False,
    )
    assert files(tmp_path / "m2") == files(tmp_path / "m1")


def test_killed_multi_worker_prepare_resumes_byte_identical(tiny_world, one_worker, tmp_path):
    seen = []

    def kill():
        seen.append(1)
        if len(seen) == 3:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        prepare(
            tiny_world["base_tok"],
            "pydoc-topics",
            tmp_path / "k",
            workers=2,
            on_shard=kill,
            **ARGS,
        )
    assert len(seen) == 3
    prepare(tiny_world["base_tok"], "pydoc-topics", tmp_path / "k", workers=2, **ARGS)  # resume
    assert files(tmp_path / "k") == one_worker


def test_bad_worker_count_is_one_line(tiny_world, tmp_path, capsys):
    # the shared count type (lsap.cli.args.positive_int) refuses it while parsing: usage error, exit 2
    argv = ["prepare", "--tokenizer", tiny_world["base_tok"], "--source", "pydoc-topics"]
    argv += ["--out", str(tmp_path / "x"), "--workers", "0", "--quiet"]
    with pytest.raises(SystemExit) as e:
        cli(argv)
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert "argument --workers: must be at least 1: '0'" in err
    assert not (tmp_path / "x").exists()
