"""surrogate.dtype / `lsap store build --dtype` bfloat16: body in bf16, LM head in fp32."""

import json

import pytest
import torch
import torch.nn.functional as F

from lsap.method.targets import surrogate_body_and_head
from lsap.surrogate.load import load_surrogate
from lsap.surrogate.store import StoreError
from lsap.surrogate.store_build import build_store

BF16_EPS = torch.finfo(torch.bfloat16).eps  # 2^-7: one bf16 rounding is ≤ eps/2 relative


def _x(model, n=2, t=24):
    g = torch.Generator().manual_seed(0)
    return torch.randint(0, model.config.vocab_size, (n, t), generator=g)


def test_bf16_runs_the_body_in_bf16_and_keeps_the_head_fp32(tiny_world):
    m32, _ = load_surrogate(tiny_world["surrogate"])
    m16, _ = load_surrogate(tiny_world["surrogate"], dtype=torch.bfloat16)
    body, head = surrogate_body_and_head(m16)
    assert head.weight.dtype == torch.float32  # today's code loaded the head in bf16 too
    assert m16.get_input_embeddings().weight.dtype == torch.bfloat16
    assert m32.get_output_embeddings().weight is m32.get_input_embeddings().weight  # tied
    assert head.weight is not m16.get_input_embeddings().weight  # untied, own fp32 copy
    assert not head.weight.requires_grad and not m16.training
    # the fp32 head holds the fp32 checkpoint's weights, not their bf16 rounding
    assert torch.equal(head.weight, m32.get_output_embeddings().weight)
    x = _x(m16)
    with torch.no_grad():
        h16 = body(input_ids=x).last_hidden_state
        h32 = surrogate_body_and_head(m32)[0](input_ids=x).last_hidden_state
        z16, z32 = m16(input_ids=x).logits, m32(input_ids=x).logits  # full forward still works
    assert h16.dtype == torch.bfloat16 and z16.dtype == torch.float32
    torch.testing.assert_close(z16, F.linear(h16.float(), head.weight), rtol=0, atol=1e-5)
    # bf16 body vs fp32: the hidden state carries a few bf16 roundings per op (1 layer,
    # ~10 ops), so |Δh| ≤ 16·eps·|h| per row; the fp32 head adds none, so
    # |Δz_v| ≤ |Δh|·|w_v| (Cauchy-Schwarz), bounded by 16·eps·|h|·|w_v|.
    dh = (h16.float() - h32).norm(dim=-1)
    assert (dh <= 16 * BF16_EPS * h32.norm(dim=-1)).all(), float((dh / h32.norm(dim=-1)).max())
    bound = 16 * BF16_EPS * h32.norm(dim=-1, keepdim=True) * head.weight.norm(dim=-1)
    assert ((z16 - z32).abs() <= bound).all()
    assert (z16 - z32).abs().max() > 0  # bf16 did happen
    # a bf16 softmax's log-probs move by ≤ 2·max|Δz|
    lp16, lp32 = z16.log_softmax(-1), z32.log_softmax(-1)
    assert ((lp16 - lp32).abs() <= 2 * (z16 - z32).abs().amax(-1, keepdim=True) + 1e-5).all()


def test_fp32_is_unchanged_and_tied(tiny_world):
    m32, _ = load_surrogate(tiny_world["surrogate"], dtype=torch.float32)
    assert all(p.dtype == torch.float32 for p in m32.parameters())
    assert m32.get_output_embeddings().weight is m32.get_input_embeddings().weight


def _build(tw, out, dtype):
    return build_store(
        tw["surrogate"], tw["data"], 32, out, k=4, min_alpha=0.01, batch_size=4,
        dtype=dtype, chunk_windows=8, max_windows=16, progress=False,
    )  # fmt: skip


def test_store_records_the_precision_and_refuses_another(tiny_world, tmp_path):
    m = _build(tiny_world, tmp_path / "b", "bfloat16")
    s = m["surrogate"]
    assert (s["dtype"], s["head_dtype"], s["logits_dtype"]) == ("bfloat16", "float32", "float32")
    with pytest.raises(
        StoreError, match="--dtype: the store was built with bfloat16, this command"
    ):
        _build(tiny_world, tmp_path / "b", "float32")  # not resumed with another precision
    assert _build(tiny_world, tmp_path / "b", "bfloat16")["complete"]  # same precision: resumes
    m = _build(tiny_world, tmp_path / "f", "float32")
    assert (m["surrogate"]["dtype"], m["surrogate"]["head_dtype"]) == ("float32", "float32")


def test_store_of_an_older_build_counts_its_head_in_the_body_dtype(tiny_world, tmp_path):
    """Manifests before head_dtype: fp32 stores resume; bf16 ones (bf16 head) are refused."""
    for dtype, ok in (("float32", True), ("bfloat16", False)):
        out = tmp_path / dtype
        _build(tiny_world, out, dtype)
        p = out / "manifest.json"
        m = json.loads(p.read_text())
        del m["surrogate"]["head_dtype"]
        p.write_text(json.dumps(m))
        if ok:
            assert _build(tiny_world, out, dtype)["complete"]  # resumed, not refused
        else:
            with pytest.raises(StoreError, match="head's dtype .* built with bfloat16"):
                _build(tiny_world, out, dtype)
