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
    with pytest.raises(SystemExit, match="divisor of 8"):
        example.batch_arithmetic(512, 16, 1024, 64)
    with pytest.raises(SystemExit, match="multiple of 48"):
        example.batch_arithmetic(512, 8, 1024, 48)
