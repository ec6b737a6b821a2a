"""examples/olmo_core/train.py: `lsap train`'s weight-decay rule and the batch arithmetic."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

pytest.importorskip("olmo_core")

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "examples" / "olmo_core"))
import train as example  # noqa: E402

from tests import olmo_core_worker as W  # noqa: E402


def test_no_weight_decay_on_norms_as_lsap_train():
    from olmo_core.optim import AdamWConfig

    model = W.tiny_model_config().build(init_device="meta")
    groups = AdamWConfig(
        lr=1e-3, weight_decay=0.1, group_overrides=example.no_decay_overrides(model)
    ).build_groups(model)
    wd = {id(p): g.get("weight_decay", 0.1) for g in groups for p in g["params"]}
    params = dict(model.named_parameters())
    assert len(wd) == len(params)
    for n, p in params.items():  # lsap.train.loop: decay iff dim >= 2
        assert wd[id(p)] == (0.1 if p.dim() >= 2 else 0.0), n
    assert any(p.dim() < 2 for p in params.values()) and any("norm" in n for n in params)


def test_batch_arithmetic_paper_batch_at_64_gpus():
    b = example.batch_arithmetic(512, 8, 1024, 64)
    assert b["global_batch_tokens"] == 524_288 and b["grad_accum"] == 1
    assert "524,288 tokens = micro-batch 8 x seq 1024 x 64 ranks x grad-accum 1" in b["text"]
    assert example.batch_arithmetic(512, 4, 1024, 8)["grad_accum"] == 16
    with pytest.raises(example.Refusal, match="divisor of 8"):
        example.batch_arithmetic(512, 16, 1024, 64)
    with pytest.raises(example.Refusal, match="multiple of 48"):
        example.batch_arithmetic(512, 8, 1024, 48)


# ------------------------------------------------------------------ refusals before any work
CFG = str(ROOT / "configs" / "paper-lsap-a0.05.yaml")


def _refused(capsys, argv) -> str:
    """The example exits 2 with one line (train.py: error: ...) and no traceback."""
    with pytest.raises(SystemExit) as e:
        example.main(["--config", CFG, "--tiny", *argv])
    err = capsys.readouterr().err.strip().splitlines()
    assert e.value.code == 2, err
    assert len(err) == 1 and err[0].startswith("train.py: error: "), err
    return err[0]


def _ov(tiny_world, tmp_path, *extra):
    return [
        f"data.dir={tiny_world['data']}",
        "data.seq_len=32",
        f"surrogate.model={tiny_world['surrogate']}",
        f"out_dir={tmp_path / 'run'}",
        *extra,
    ]


def test_model_vocab_smaller_than_the_tokenizer_is_refused(tiny_world, tmp_path, capsys):
    msg = _refused(capsys, _ov(tiny_world, tmp_path, "model.vocab_size=512"))
    assert "model.vocab_size=512 is smaller than the tokenizer's" in msg and "640" in msg


def test_data_made_with_another_tokenizer_is_refused(tiny_world, tmp_path, capsys):
    msg = _refused(
        capsys,
        [
            *_ov(tiny_world, tmp_path, "model.vocab_size=768"),
            "--tokenizer",
            tiny_world["surrogate"],
        ],
    )
    assert "re-run `lsap prepare`" in msg


def _token_file(tiny_world, tmp_path, name="a.npy"):
    import numpy as np

    from lsap.data.shards import TokenShards

    sh = TokenShards(tiny_world["data"], "train")
    p = tmp_path / name
    np.asarray(sh.tokens(0, 4000), dtype=np.uint16).tofile(p)
    return p


def test_token_files_of_another_dtype_are_refused(tiny_world, tmp_path, capsys):
    """uint16 files read as uint32 would pair tokens into ids past the vocabulary (before:
    OLMo-core trained on them or failed deep inside with a traceback)."""
    p = _token_file(tiny_world, tmp_path)
    ov = _ov(tiny_world, tmp_path, "model.vocab_size=640")
    msg = _refused(capsys, [*ov, "--paths", str(p), "--dtype", "uint32"])
    assert ">= model vocab 640" in msg and "--dtype" in msg
    odd = tmp_path / "odd.npy"
    odd.write_bytes(p.read_bytes()[:-1])
    msg = _refused(capsys, [*ov, "--paths", str(odd), "--dtype", "uint16"])
    assert "not a whole number of 2-byte tokens" in msg


def test_store_over_other_files_than_paths_is_refused(tiny_world, tmp_path, capsys):
    p = _token_file(tiny_world, tmp_path)
    ov = _ov(
        tiny_world,
        tmp_path,
        "model.vocab_size=640",
        "surrogate.source=store",
        f"surrogate.store_dir={tmp_path / 'store'}",
    )
    msg = _refused(capsys, [*ov, "--paths", str(p), "--dtype", "uint16"])
    assert "are not the files the store's data.dir" in msg


def test_uint16_cannot_hold_a_100k_vocabulary(tiny_world, tmp_path):
    class Big:
        def __len__(self):
            return 100_278

    import argparse

    from lsap.config import load_config

    cfg = load_config(CFG, [f"data.dir={tiny_world['data']}"])
    args = argparse.Namespace(paths=["x"], dtype="uint16")
    with pytest.raises(example.Refusal, match="--dtype uint32"):
        example.check_inputs(cfg, args, Big(), 100_352, [], "uint16")


def test_hsdp_shard_degree_and_precision_flags(monkeypatch):
    import torch
    from olmo_core.distributed.parallel import DataParallelType

    dp = example.dp_config("hsdp", torch.device("cpu"), 16, 8)
    assert dp.name == DataParallelType.hsdp and (dp.num_replicas, dp.shard_degree) == (2, 8)
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "4")
    assert example.dp_config("hsdp", torch.device("cpu"), 8, None).shard_degree == 4
    with pytest.raises(example.Refusal, match="must divide the 8 ranks"):
        example.dp_config("hsdp", torch.device("cpu"), 8, 3)
    assert example.dp_config("fsdp", torch.device("cpu"), 8, None).name == DataParallelType.fsdp
    before = torch.backends.cuda.matmul.allow_tf32, torch.get_float32_matmul_precision()
    try:
        example.apply_precision(True)
        assert torch.backends.cuda.matmul.allow_tf32 and torch.backends.cudnn.allow_tf32
        example.apply_precision(False)
        assert not torch.backends.cuda.matmul.allow_tf32
    finally:
        torch.backends.cuda.matmul.allow_tf32 = before[0]
        torch.set_float32_matmul_precision(before[1])
