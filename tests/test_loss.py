import pytest
import torch
import torch.nn.functional as F

from lsap.method.loss import lsap_linear_loss, lsap_loss, normalizer
from tests.reference import lists_from_mask, ref_loss


def make_case(N=47, V=123, K=5, H=31, seed=0, p_ignore=0.2, p_aux=0.5, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    logits = (torch.randn(N, V, generator=g) * 3).to(dtype)
    labels = torch.randint(0, V, (N,), generator=g)
    labels[torch.rand(N, generator=g) < p_ignore] = -100
    aux_ids = torch.randint(0, V, (N, K), generator=g)
    aux_mask = torch.rand(N, K, generator=g) < p_aux
    aux_ids[~aux_mask] = -1  # unused slots carry -1, as select_aux_targets returns
    hidden = torch.randn(N, H, generator=g).to(dtype)
    weight = (torch.randn(V, H, generator=g) / H**0.5).to(dtype)
    return logits, labels, aux_ids, aux_mask, hidden, weight


def ref_for(logits, labels, aux_ids, aux_mask, lam, weights=None):
    lists = lists_from_mask(aux_ids, aux_mask & (labels != -100)[:, None])
    return ref_loss(logits, labels, lists, lam, weights=weights)


@pytest.mark.parametrize("N,V,K", [(47, 123, 5), (3, 31, 1), (64, 7, 15), (1, 2, 3)])
@pytest.mark.parametrize("lam", [1.0, 0.3])
def test_lsap_loss_matches_reference_values_and_grads(N, V, K, lam):
    logits, labels, aux_ids, aux_mask, *_ = make_case(N, V, K, seed=N + V + K)
    x = logits.clone().requires_grad_(True)
    out = lsap_loss(x, labels, aux_ids, aux_mask, lam=lam, chunk_size=16)
    out.loss.backward()
    xr = logits.double().clone().requires_grad_(True)
    tot, ce, aux, n_lab, n_aux = ref_for(xr, labels, aux_ids, aux_mask, lam)
    tot.backward()
    torch.testing.assert_close(out.loss.double(), tot, rtol=1e-5, atol=1e-4)
    torch.testing.assert_close(out.ce_sum.double(), ce, rtol=1e-5, atol=1e-4)
    torch.testing.assert_close(out.aux_sum.double(), aux, rtol=1e-5, atol=1e-4)
    assert int(out.n_labels) == n_lab and int(out.n_aux) == n_aux
    torch.testing.assert_close(x.grad.double(), xr.grad, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize(
    "N,V,K,H,chunk", [(47, 123, 5, 31, 8), (3, 31, 1, 7, 1), (50, 64, 15, 16, 64), (1, 5, 2, 3, 4)]
)
def test_linear_loss_matches_logits_loss(N, V, K, H, chunk):
    _, labels, aux_ids, aux_mask, hidden, weight = make_case(N, V, K, H, seed=7 * N + K)
    h1, w1 = hidden.clone().requires_grad_(True), weight.clone().requires_grad_(True)
    out = lsap_linear_loss(h1, w1, labels, aux_ids, aux_mask, lam=0.7, chunk_size=chunk)
    (2.5 * out.loss).backward()
    h2, w2 = (
        hidden.double().clone().requires_grad_(True),
        weight.double().clone().requires_grad_(True),
    )
    tot, ce, aux, *_ = ref_for(h2 @ w2.t(), labels, aux_ids, aux_mask, 0.7)
    (2.5 * tot).backward()
    torch.testing.assert_close(out.loss.double(), tot, rtol=1e-5, atol=1e-4)
    torch.testing.assert_close(out.ce_sum.double(), ce, rtol=1e-5, atol=1e-4)
    torch.testing.assert_close(h1.grad.double(), h2.grad, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(w1.grad.double(), w2.grad, rtol=1e-4, atol=1e-5)


def test_lambda_zero_is_plain_cross_entropy_exactly():
    logits, labels, aux_ids, aux_mask, *_ = make_case(33, 50, 4)
    x = logits.clone().requires_grad_(True)
    out = lsap_loss(x, labels, aux_ids, aux_mask, lam=0.0)
    y = logits.clone().requires_grad_(True)
    ref = F.cross_entropy(y, labels, reduction="sum")
    assert torch.equal(out.loss, ref)
    out.loss.backward()
    ref.backward()
    assert torch.equal(x.grad, y.grad)


def test_gradcheck_float64():
    logits, labels, aux_ids, aux_mask, hidden, weight = make_case(6, 9, 3, 4)
    x = logits.double().requires_grad_(True)
    assert torch.autograd.gradcheck(
        lambda z: lsap_loss(z, labels, aux_ids, aux_mask, lam=0.6, chunk_size=4).loss, (x,)
    )
    h, w = hidden.double().requires_grad_(True), weight.double().requires_grad_(True)
    assert torch.autograd.gradcheck(
        lambda a, b: lsap_linear_loss(a, b, labels, aux_ids, aux_mask, lam=0.6, chunk_size=4).loss,
        (h, w),
    )


def test_no_aux_and_all_masked_rows_and_empty():
    logits, labels, aux_ids, aux_mask, hidden, weight = make_case(10, 20, 3)
    none = torch.zeros_like(aux_mask)
    a = lsap_loss(logits, labels, aux_ids, none, lam=1.0)
    ce = F.cross_entropy(logits, labels, reduction="sum")
    torch.testing.assert_close(a.loss, ce)
    assert int(a.n_aux) == 0 and float(a.aux_sum) == 0.0
    # All labels ignored: zero loss, zero counts, and aux targets there are dropped.
    ign = torch.full_like(labels, -100)
    b = lsap_loss(logits.requires_grad_(True), ign, aux_ids, aux_mask, lam=1.0)
    assert float(b.loss) == 0.0 and int(b.n_labels) == 0 and int(b.n_aux) == 0
    b.loss.backward()
    assert torch.count_nonzero(logits.grad) == 0
    # Empty batch
    e = lsap_linear_loss(hidden[:0], weight, labels[:0], aux_ids[:0], aux_mask[:0])
    assert float(e.loss) == 0.0 and int(e.n_labels) == 0
    # No aux tensors at all
    c = lsap_loss(logits.detach(), labels)
    torch.testing.assert_close(c.loss, ce)


def test_batched_shapes_and_normalization():
    logits, labels, aux_ids, aux_mask, *_ = make_case(24, 30, 4)
    flat = lsap_loss(logits, labels, aux_ids, aux_mask, lam=1.0)
    shaped = lsap_loss(
        logits.view(4, 6, 30), labels.view(4, 6), aux_ids.view(4, 6, 4), aux_mask.view(4, 6, 4)
    )
    torch.testing.assert_close(flat.loss, shaped.loss)
    # counts by hand: labels that are not -100; aux slots selected at labelled positions
    n = int((labels != -100).sum())
    v = int((aux_mask & (labels != -100)[:, None]).sum())
    assert (int(flat.n_labels), int(flat.n_aux)) == (n, v) and 0 < v
    assert normalizer(n, v, "targets") == n + v
    assert normalizer(n, v, "tokens") == n
    assert normalizer(n, v, "weighted", lam=0.25) == n + 0.25 * v
    assert normalizer(n, v, "weighted", lam=0.0) == n
    assert int(normalizer(flat.n_labels, flat.n_aux, "targets")) == n + v  # tensors work too
    with pytest.raises(ValueError, match="normalization"):
        normalizer(n, v, "avg")


def test_sum_reduction_splits_across_microbatches():
    # Sum-reduced parts add up across micro-batches: one global division is exact.
    logits, labels, aux_ids, aux_mask, *_ = make_case(40, 30, 4)
    whole = lsap_loss(logits, labels, aux_ids, aux_mask)
    parts = [
        lsap_loss(logits[s : s + 13], labels[s : s + 13], aux_ids[s : s + 13], aux_mask[s : s + 13])
        for s in range(0, 40, 13)
    ]
    torch.testing.assert_close(sum(p.loss for p in parts), whole.loss)
    assert sum(int(p.n_aux) for p in parts) == int(whole.n_aux)


def test_probability_weighting_ablation():
    logits, labels, aux_ids, aux_mask, *_ = make_case(20, 25, 3)
    wts = torch.rand(20, 3)
    out = lsap_loss(logits, labels, aux_ids, aux_mask, lam=1.0, aux_weight=wts)
    valid = labels != -100
    lists = lists_from_mask(aux_ids, aux_mask & valid[:, None])
    wl = [[float(wts[i, j]) for j in range(3) if aux_mask[i, j] and valid[i]] for i in range(20)]
    tot, *_ = ref_loss(logits, labels, lists, 1.0, weights=wl)
    torch.testing.assert_close(out.loss.double(), tot, rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize("fn", ["logits", "linear"])
def test_bf16_error_within_native_error(fn):
    # bf16 inputs: our error vs the fp64 truth must not exceed the error of a native
    # bf16 torch computation (log_softmax in bf16 then gather) by more than a tolerance.
    logits, labels, aux_ids, aux_mask, hidden, weight = make_case(
        64, 200, 6, 32, dtype=torch.float32
    )
    labels[labels == -100] = 0
    hb, wb = hidden.bfloat16(), weight.bfloat16()
    z64 = hb.double() @ wb.double().t()
    truth = ref_for(z64, labels, aux_ids, aux_mask, 1.0)[0]
    if fn == "logits":
        ours = lsap_loss(z64.bfloat16(), labels, aux_ids, aux_mask).loss.double()
    else:
        ours = lsap_linear_loss(hb, wb, labels, aux_ids, aux_mask).loss.double()
    zb = hb @ wb.t()
    lp = torch.log_softmax(zb, -1)
    native = -(
        lp.gather(1, labels[:, None]).sum() + (lp.gather(1, aux_ids.clamp_min(0)) * aux_mask).sum()
    ).double()
    assert abs(ours - truth) <= abs(native - truth) + 1e-3 * abs(truth)


def test_bad_inputs_raise_clear_errors():
    logits, labels, aux_ids, aux_mask, hidden, weight = make_case(10, 20, 3)
    bad = aux_ids.clone()
    bad[aux_mask] = 20
    with pytest.raises(ValueError, match="aux_ids must lie in"):
        lsap_loss(logits, labels, bad, aux_mask)
    with pytest.raises(ValueError, match="disagree"):
        lsap_loss(logits, labels[:5], aux_ids, aux_mask)
    with pytest.raises(ValueError, match="differ"):
        lsap_loss(logits, labels, aux_ids, aux_mask[:, :2])
    with pytest.raises(ValueError, match="labels must lie"):
        lsap_loss(logits, torch.full_like(labels, 99), aux_ids, aux_mask)
    with pytest.raises(ValueError, match=r"weight must be \[V, H"):
        lsap_linear_loss(hidden, weight.t(), labels, aux_ids, aux_mask)


def _native_bf16(hb, wb, labels, aux_ids, aux_mask):
    """What plain torch does with bf16 logits: F.cross_entropy + log_softmax gathers, in bf16."""
    h, w = hb.clone().requires_grad_(True), wb.clone().requires_grad_(True)
    z = h @ w.t()
    valid = labels != -100
    m = aux_mask & valid[:, None]
    aux = -(torch.log_softmax(z, -1).gather(1, aux_ids.clamp_min(0)) * m).sum()
    loss = F.cross_entropy(z, labels, reduction="sum") + aux
    loss.backward()
    return loss.detach().double(), h.grad.double(), w.grad.double()


@pytest.mark.parametrize(
    "N,V,K,H,chunk", [(47, 123, 5, 31, 16), (130, 257, 3, 64, 64), (3, 1000, 1, 7, 2)]
)
@pytest.mark.parametrize("autocast", [False, True])
def test_linear_loss_bf16_head_within_native_error(N, V, K, H, chunk, autocast):
    # bf16 matmul, fp32 LSE and gradients: values and gradients vs the fp64 truth must be
    # no worse than F.cross_entropy on the same bf16 logits (+ a small tolerance).
    _, labels, aux_ids, aux_mask, hidden, weight = make_case(N, V, K, H, seed=N + V, p_ignore=0.2)
    hidden = hidden * 4  # logits of magnitude ~10-20, where bf16 spacing matters
    hb, wb = hidden.bfloat16(), weight.bfloat16()
    h64, w64 = hb.double().requires_grad_(True), wb.double().requires_grad_(True)
    truth = ref_for(h64 @ w64.t(), labels, aux_ids, aux_mask, 1.0)[0]
    truth.backward()
    nat, nat_gh, nat_gw = _native_bf16(hb, wb, labels, aux_ids, aux_mask)
    if autocast:  # fp32 master tensors under autocast: bf16 matmul, fp32 gradients back
        h, w = hb.float().requires_grad_(True), wb.float().requires_grad_(True)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = lsap_linear_loss(h, w, labels, aux_ids, aux_mask, chunk_size=chunk)
        assert out.loss.dtype == torch.float32
    else:
        h, w = hb.clone().requires_grad_(True), wb.clone().requires_grad_(True)
        out = lsap_linear_loss(h, w, labels, aux_ids, aux_mask, chunk_size=chunk)
    out.loss.backward()
    assert h.grad.dtype == h.dtype and w.grad.dtype == w.dtype

    def err(a, b):
        return float((a.double() - b).norm())

    t = truth.detach()
    assert err(out.loss, t) <= err(nat, t) + 1e-4 * abs(float(t))
    assert err(h.grad, h64.grad) <= err(nat_gh, h64.grad) + 1e-3 * float(h64.grad.norm())
    assert err(w.grad, w64.grad) <= err(nat_gw, w64.grad) + 1e-3 * float(w64.grad.norm())
    # what is left is the bf16 rounding of the logits: ≤ 2**-9 relative per gathered logit
    n_terms = int(out.n_labels + out.n_aux)
    zmax = float((h64 @ w64.t()).abs().max())
    assert err(out.loss, t) <= 2 * n_terms * zmax * 2**-9


def test_linear_loss_bf16_empty_and_all_ignored():
    _, labels, aux_ids, aux_mask, hidden, weight = make_case(5, 17, 3, 8)
    for n, lab in ((0, labels[:0]), (5, torch.full_like(labels, -100))):
        h = hidden[:n].bfloat16().requires_grad_(True)
        w = weight.bfloat16().requires_grad_(True)
        out = lsap_linear_loss(h, w, lab, aux_ids[:n], aux_mask[:n], chunk_size=2)
        out.loss.backward()
        assert float(out.loss) == 0.0 and int(out.n_labels) == 0 and int(out.n_aux) == 0
        assert h.grad.shape == h.shape and not h.grad.any() and not w.grad.any()


def test_linear_loss_autocast_matches_explicit_bf16_inputs():
    # Under autocast the loss casts hidden and weight to bf16 itself: same value as
    # passing bf16 tensors, gradients in fp32 equal to the bf16 ones up to bf16 rounding.
    _, labels, aux_ids, aux_mask, hidden, weight = make_case(40, 90, 4, 24)
    h, w = hidden.clone().requires_grad_(True), weight.clone().requires_grad_(True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        a = lsap_linear_loss(h, w, labels, aux_ids, aux_mask, chunk_size=8)
    a.loss.backward()
    hb, wb = hidden.bfloat16().requires_grad_(True), weight.bfloat16().requires_grad_(True)
    b = lsap_linear_loss(hb, wb, labels, aux_ids, aux_mask, chunk_size=8)
    b.loss.backward()
    assert float(a.loss) == float(b.loss)
    torch.testing.assert_close(h.grad, hb.grad.float(), rtol=1e-2, atol=1e-3)
    torch.testing.assert_close(w.grad, wb.grad.float(), rtol=1e-2, atol=1e-3)


def test_compiled_chunk_equals_eager():
    # impl="compile" (train.compile) runs the same chunk through torch.compile (inductor on CPU)
    _, labels, aux_ids, aux_mask, hidden, weight = make_case(48, 123, 5, 31)
    res = []
    for impl in ("eager", "compile"):
        h, w = hidden.clone().requires_grad_(True), weight.clone().requires_grad_(True)
        out = lsap_linear_loss(h, w, labels, aux_ids, aux_mask, lam=0.6, chunk_size=16, impl=impl)
        out.loss.backward()
        res.append((out.loss.detach(), out.ce_sum, h.grad, w.grad))
    for a, b in zip(*res):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="impl"):
        lsap_linear_loss(hidden, weight, labels, aux_ids, aux_mask, impl="triton")


# --------------------------------------------------------------------------- aux_weight (prob weighting): gradients
def _weighted_case(N, V, K, H, seed):
    logits, labels, aux_ids, aux_mask, hidden, weight = make_case(N, V, K, H, seed=seed)
    g = torch.Generator().manual_seed(seed + 1)
    wts = torch.rand(N, K, generator=g) * 0.9 + 0.05  # surrogate probabilities, all distinct from 1
    valid = labels != -100
    lists = lists_from_mask(aux_ids, aux_mask & valid[:, None])
    wl = [[float(wts[i, j]) for j in range(K) if aux_mask[i, j] and valid[i]] for i in range(N)]
    return logits, labels, aux_ids, aux_mask, hidden, weight, wts, lists, wl


@pytest.mark.parametrize("N,V,K", [(47, 123, 5), (3, 31, 1), (64, 7, 15)])
@pytest.mark.parametrize("lam", [1.0, 0.3])
def test_aux_weight_logits_loss_values_and_grads_match_reference(N, V, K, lam):
    logits, labels, aux_ids, aux_mask, _, _, wts, lists, wl = _weighted_case(
        N, V, K, 8, seed=3 * N + K
    )
    x = logits.clone().requires_grad_(True)
    out = lsap_loss(x, labels, aux_ids, aux_mask, lam=lam, aux_weight=wts, chunk_size=16)
    (1.7 * out.loss).backward()
    xr = logits.double().clone().requires_grad_(True)
    tot, ce, aux, *_ = ref_loss(xr, labels, lists, lam, weights=wl)
    (1.7 * tot).backward()
    torch.testing.assert_close(out.loss.double(), tot, rtol=1e-5, atol=1e-4)
    torch.testing.assert_close(out.aux_sum.double(), aux, rtol=1e-5, atol=1e-4)
    torch.testing.assert_close(x.grad.double(), xr.grad, rtol=1e-4, atol=1e-5)
    # the weights matter: unweighted gradients differ wherever an aux target exists
    x2 = logits.clone().requires_grad_(True)
    (1.7 * lsap_loss(x2, labels, aux_ids, aux_mask, lam=lam, chunk_size=16).loss).backward()
    if any(lists):
        assert not torch.allclose(x2.grad, x.grad, rtol=1e-3, atol=1e-5)


@pytest.mark.parametrize(
    "N,V,K,H,chunk", [(47, 123, 5, 31, 8), (3, 31, 1, 7, 1), (50, 64, 15, 16, 64)]
)
def test_aux_weight_linear_loss_values_and_grads_match_reference(N, V, K, H, chunk):
    """`lsap_linear_loss` is the path that uses aux_weight in training (loss_impl=linear)."""
    _, labels, aux_ids, aux_mask, hidden, weight, wts, lists, wl = _weighted_case(
        N, V, K, H, seed=5 * N + K
    )
    h1, w1 = hidden.clone().requires_grad_(True), weight.clone().requires_grad_(True)
    out = lsap_linear_loss(
        h1, w1, labels, aux_ids, aux_mask, lam=0.7, aux_weight=wts, chunk_size=chunk
    )
    (2.5 * out.loss).backward()
    h2, w2 = (
        hidden.double().clone().requires_grad_(True),
        weight.double().clone().requires_grad_(True),
    )
    tot, ce, aux, *_ = ref_loss(h2 @ w2.t(), labels, lists, 0.7, weights=wl)
    (2.5 * tot).backward()
    torch.testing.assert_close(out.loss.double(), tot, rtol=1e-5, atol=1e-4)
    torch.testing.assert_close(out.aux_sum.double(), aux, rtol=1e-5, atol=1e-4)
    torch.testing.assert_close(h1.grad.double(), h2.grad, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(w1.grad.double(), w2.grad, rtol=1e-4, atol=1e-5)
    # the same weights through the logits path: one weighting rule for both
    x = (hidden @ weight.t()).requires_grad_(True)
    ref = lsap_loss(x, labels, aux_ids, aux_mask, lam=0.7, aux_weight=wts)
    torch.testing.assert_close(out.loss, ref.loss, rtol=1e-5, atol=1e-4)


def test_aux_weight_gradcheck_float64():
    _, labels, aux_ids, aux_mask, hidden, weight, wts, *_ = _weighted_case(9, 13, 3, 5, seed=11)
    h, w = hidden.double().requires_grad_(True), weight.double().requires_grad_(True)
    torch.autograd.gradcheck(
        lambda h, w: (
            lsap_linear_loss(
                h, w, labels, aux_ids, aux_mask, lam=0.6, aux_weight=wts.double(), chunk_size=4
            ).loss
        ),
        (h, w),
    )
    x = (hidden @ weight.t()).double().requires_grad_(True)
    torch.autograd.gradcheck(
        lambda x: (
            lsap_loss(
                x, labels, aux_ids, aux_mask, lam=0.6, aux_weight=wts.double(), chunk_size=4
            ).loss
        ),
        (x,),
    )
