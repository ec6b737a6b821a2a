"""z-loss in lsap's losses (OLMo2's recipes use it): values and gradients vs the naive
float64 reference, OLMo-core's own definition, and the λ = 0 / z = 0 invariants."""

import pytest
import torch
import torch.nn.functional as F

from lsap.method.loss import lsap_linear_loss, lsap_loss
from tests.reference import lists_from_mask, ref_loss_zloss


def _case(N=47, V=31, H=13, K=3, seed=0, all_masked_row=True):
    g = torch.Generator().manual_seed(seed)
    hidden = torch.randn(N, H, generator=g, dtype=torch.float64)
    weight = torch.randn(V, H, generator=g, dtype=torch.float64) * 0.7
    labels = torch.randint(0, V, (N,), generator=g)
    labels[::5] = -100
    ids = torch.randint(0, V, (N, K), generator=g)
    mask = torch.rand(N, K, generator=g) < 0.5
    if all_masked_row:
        labels[-1] = -100
        mask[-1] = True  # masked row: its aux targets must not count either
    return hidden, weight, labels, ids, mask


def _ref_grads(hidden, weight, labels, ids, mask, lam, m):
    h = hidden.clone().requires_grad_(True)
    w = weight.clone().requires_grad_(True)
    lists = lists_from_mask(ids, mask & (labels != -100)[:, None])
    total, ce, aux, zs = ref_loss_zloss(h @ w.T, labels, lists, lam, m)
    total.backward()
    return total.detach(), ce.detach(), aux.detach(), zs.detach(), h.grad, w.grad


@pytest.mark.parametrize("lam,m", [(0.0, 1e-4), (1.0, 1e-4), (0.5, 0.3), (1.0, 0.0)])
@pytest.mark.parametrize("chunk", [7, 1024])
def test_linear_zloss_matches_reference(lam, m, chunk):
    hidden, weight, labels, ids, mask = _case()
    t, ce, aux, zs, gh, gw = _ref_grads(hidden, weight, labels, ids, mask, lam, m)
    h = hidden.clone().requires_grad_(True)
    w = weight.clone().requires_grad_(True)
    out = lsap_linear_loss(h, w, labels, ids, mask, lam=lam, z_loss=m, chunk_size=chunk)
    out.loss.backward()
    torch.testing.assert_close(out.loss.detach(), t, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(out.ce_sum, ce, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(out.aux_sum, aux, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(out.z_sum, zs, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(h.grad, gh, rtol=1e-9, atol=1e-10)
    torch.testing.assert_close(w.grad, gw, rtol=1e-9, atol=1e-10)


@pytest.mark.parametrize("lam,m", [(0.0, 1e-4), (1.0, 0.3)])
def test_logits_zloss_matches_reference(lam, m):
    hidden, weight, labels, ids, mask = _case(N=23, V=17, seed=3)
    logits = (hidden @ weight.T).detach()
    z = logits.clone().requires_grad_(True)
    out = lsap_loss(z, labels, ids, mask, lam=lam, z_loss=m, chunk_size=5)
    out.loss.backward()
    zr = logits.clone().requires_grad_(True)
    lists = lists_from_mask(ids, mask & (labels != -100)[:, None])
    t, ce, aux, zs = ref_loss_zloss(zr, labels, lists, lam, m)
    t.backward()
    torch.testing.assert_close(out.loss.detach(), t.detach(), rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(out.z_sum, zs.detach(), rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(z.grad, zr.grad, rtol=1e-9, atol=1e-10)


def test_negative_lse_rows_keep_the_right_sign():
    """A large multiplier and very negative logits make 1 + 2m·LSE < 0 on some rows:
    the gradient's softmax term changes sign there (the sign path in `_grad_logits`)."""
    hidden, weight, labels, ids, mask = _case(N=9, V=11, H=5, seed=7)
    bias_shift = -40.0  # every logit ≈ −40: LSE ≈ −37.6, 1 + 2·0.05·LSE < 0
    logits = (hidden @ (weight * 0.01).T + bias_shift).detach()
    z = logits.clone().requires_grad_(True)
    o2 = lsap_loss(z, labels, ids, mask, lam=1.0, z_loss=0.05, chunk_size=4)
    o2.loss.backward()
    zr = logits.clone().requires_grad_(True)
    lists = lists_from_mask(ids, mask & (labels != -100)[:, None])
    ref_loss_zloss(zr, labels, lists, 1.0, 0.05)[0].backward()
    assert (1 + 2 * 0.05 * torch.logsumexp(logits, -1) < 0).any()
    torch.testing.assert_close(z.grad, zr.grad, rtol=1e-9, atol=1e-10)


def test_lambda0_zloss_is_olmo_core_cross_entropy_loss():
    """λ = 0 with z-loss = OLMo-core's `cross_entropy_loss(reduction="sum", compute_z_loss=True)`."""
    fn = pytest.importorskip("olmo_core.nn.functional").cross_entropy_loss
    hidden, weight, labels, ids, mask = _case(N=40, V=29, seed=1)
    logits = (hidden @ weight.T).float()
    ce, zl = fn(logits, labels, reduction="sum", compute_z_loss=True, z_loss_multiplier=1e-4)
    out = lsap_linear_loss(hidden.float(), weight.float(), labels, ids, mask, lam=0.0, z_loss=1e-4)
    torch.testing.assert_close(out.ce_sum, ce, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(1e-4 * out.z_sum, zl, rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(out.loss, ce + zl, rtol=1e-5, atol=1e-5)


def test_no_zloss_keeps_exact_cross_entropy():
    hidden, weight, labels, _, _ = _case(N=30, V=19, seed=2)
    logits = (hidden @ weight.T).float()
    out = lsap_loss(logits, labels, lam=0.0)
    assert torch.equal(out.loss, F.cross_entropy(logits, labels, reduction="sum"))
    assert float(out.z_sum) == 0.0


def test_bf16_zloss_error_within_native_reference():
    """bf16 inputs: the error vs float64 is no larger than that of the float64 reference
    evaluated on the same bf16-rounded inputs + a small tolerance."""
    hidden, weight, labels, ids, mask = _case(N=64, V=37, H=16, seed=5)
    hb, wb = hidden.bfloat16(), weight.bfloat16()
    exact = _ref_grads(hidden, weight, labels, ids, mask, 1.0, 1e-3)[0]
    native = _ref_grads(hb.double(), wb.double(), labels, ids, mask, 1.0, 1e-3)[0]
    out = lsap_linear_loss(hb, wb, labels, ids, mask, lam=1.0, z_loss=1e-3)
    assert abs(float(out.loss) - float(exact)) <= abs(float(native) - float(exact)) + 1e-2 * abs(
        float(exact)
    )
