"""`train.keep_checkpoints`: the default (-1, auto) keeps every checkpoint of a small model
(quickstart/sweep evaluate them all) and only the newest 2 + `ckpt_at` of a large one."""

from __future__ import annotations

from lsap.config import TrainCfg
from lsap.train import checkpoint


def _fake_run(root, steps, nbytes):
    for s in steps:
        d = root / f"step_{s:08d}"
        (d / "model").mkdir(parents=True)
        (d / "model" / "w.safetensors").write_bytes(b"\0" * nbytes)
        (d / "meta.json").write_text("{}")
    return root


def _left(root):
    return [int(p.name.split("_")[1]) for p in checkpoint.list_checkpoints(root)]


def test_default_is_auto():
    assert TrainCfg().keep_checkpoints == -1


def test_auto_keeps_all_small_checkpoints(tmp_path):
    root = _fake_run(tmp_path / "checkpoints", [10, 20, 30, 40], 100)
    size = checkpoint.dir_bytes(root / "step_00000040")
    assert 100 <= size < 200
    assert checkpoint.prune(root, -1, protect=[], ckpt_bytes=size) == []
    assert _left(root) == [10, 20, 30, 40]


def test_auto_keeps_newest_two_and_ckpt_at_of_a_large_model(tmp_path, monkeypatch):
    monkeypatch.setattr(checkpoint, "AUTO_KEEP_ALL_BYTES", 1000)
    root = _fake_run(tmp_path / "checkpoints", [10, 20, 30, 40, 50], 2000)
    size = checkpoint.dir_bytes(root / "step_00000050")
    checkpoint.prune(root, -1, protect=[20], ckpt_bytes=size)
    assert _left(root) == [20, 40, 50]


def test_explicit_keep_and_zero(tmp_path):
    root = _fake_run(tmp_path / "checkpoints", [1, 2, 3, 4], 10)
    checkpoint.prune(root, 0, ckpt_bytes=1 << 40)
    assert _left(root) == [1, 2, 3, 4]
    checkpoint.prune(root, 1, protect=[2])
    assert _left(root) == [2, 4]
