import pytest
import torch

from lsap.method.targets import compact, scatter_back, select_aux_targets, translate_inputs
from tests.helpers import random_vmap, tiny_llama
from tests.reference import ref_select


def _check_against_reference(logits, labels, vmap, k, alpha, valid=None, chunk=3):
    ids, mask, probs = select_aux_targets(
        logits, labels, vmap, k=k, alpha=alpha, valid=valid, return_probs=True, chunk_size=chunk
    )
    ref = ref_select(
        logits, labels, vmap.base_to_surrogate, vmap.surrogate_to_base, k, alpha, valid
    )
    B, T, _ = logits.shape
    n = 0
    for b in range(B):
        for t in range(T):
            got = [int(x) for x, m in zip(ids[b, t], mask[b, t]) if m]
            assert got == ref[b][t], (b, t)
            # selected slots are a prefix; unused slots hold -1 and p = 0
            m = mask[b, t]
            assert torch.equal(m, torch.arange(k) < int(m.sum()))
            assert (ids[b, t][~m] == -1).all() and (probs[b, t][~m] == 0).all()
            assert (probs[b, t][m] > alpha).all()
            n += len(got)
    return n


@pytest.mark.parametrize(
    "B,T,vb,vs,common,k,alpha",
    [
        (2, 7, 40, 53, 30, 5, 0.02),
        (1, 1, 5, 9, 4, 1, 0.0),
        (3, 4, 31, 47, 20, 15, 0.0),
        (2, 5, 60, 37, 37, 3, 0.1),
    ],
)
def test_select_matches_reference(B, T, vb, vs, common, k, alpha):
    vmap = random_vmap(vb, vs, common, seed=B * T + k, pad_s=4)
    g = torch.Generator().manual_seed(k)
    logits = torch.randn(B, T, vs + 4, generator=g) * 2.5
    labels = torch.randint(0, vb, (B, T), generator=g)
    labels[0, 0] = -100
    # make the gold the argmax somewhere, so exclusion matters
    in_common = vmap.base_in.nonzero().squeeze(-1)
    labels[-1, -1] = in_common[0]
    logits[-1, -1, vmap.base_to_surrogate[in_common[0]]] = 20.0
    n = _check_against_reference(logits, labels, vmap, k, alpha)
    if alpha == 0.0:
        assert n > 0


def test_select_valid_mask_alpha_extremes_and_padded_rows():
    vmap = random_vmap(30, 40, 25, pad_s=5)
    logits = torch.randn(2, 6, 45) * 3
    logits[..., 40:] = 50.0  # padded rows dominate the softmax but are never selected
    labels = torch.randint(0, 30, (2, 6))
    valid = torch.rand(2, 6) < 0.5
    _check_against_reference(logits, labels, vmap, 4, 0.0, valid=valid)
    ids, mask = select_aux_targets(logits, labels, vmap, k=4, alpha=0.0, valid=valid)
    assert not mask[~valid].any()
    assert not set(ids[mask].tolist()) - set(vmap.base_in.nonzero().squeeze(-1).tolist())
    # α ≥ max p → nothing
    ids, mask = select_aux_targets(torch.randn(2, 6, 45), labels, vmap, k=4, alpha=0.999)
    assert not mask.any()


def test_select_never_returns_gold():
    vmap = random_vmap(20, 20, 20)
    logits = torch.randn(4, 8, 20)
    labels = torch.randint(0, 20, (4, 8))
    ids, mask = select_aux_targets(logits, labels, vmap, k=19, alpha=0.0)
    assert not (ids == labels[..., None]).any()
    assert (mask.sum(-1) == 19).all()  # every other Σ∩ token survives at α = 0


def test_select_bad_inputs():
    vmap = random_vmap(20, 30, 10)
    labels = torch.zeros(2, 3, dtype=torch.long)
    with pytest.raises(ValueError, match="does not match the map"):
        select_aux_targets(torch.randn(2, 3, 29), labels, vmap)
    with pytest.raises(ValueError, match="expected surrogate_logits"):
        select_aux_targets(torch.randn(2, 3, 30), labels[:1], vmap)
    with pytest.raises(ValueError, match="alpha"):
        select_aux_targets(torch.randn(2, 3, 30), labels, vmap, alpha=1.0)
    with pytest.raises(ValueError, match="base vocabulary"):
        select_aux_targets(torch.randn(2, 3, 30), labels + 25, vmap)


def test_translate_inputs_positions_skip_absent():
    vmap = random_vmap(10, 12, 6, seed=3)
    base = torch.arange(10).repeat(2, 1)
    inp = translate_inputs(base, vmap)
    keep = vmap.base_in[base]
    assert torch.equal(inp.attention_mask.bool(), keep)
    assert torch.equal(inp.input_ids[keep], vmap.base_to_surrogate[base][keep])
    # kept tokens get consecutive positions 0, 1, 2, ...
    assert torch.equal(inp.position_ids[keep].view(2, -1), torch.arange(6).repeat(2, 1))
    ids, m = compact(inp)
    assert ids.shape == (2, 6) and m.all()
    back = scatter_back(ids[..., None].float(), inp)[..., 0]
    assert torch.equal(back[keep].long(), inp.input_ids[keep])
    with pytest.raises(ValueError, match="must lie in"):
        translate_inputs(base + 5, vmap)


def test_masked_equals_compacted_on_a_real_causal_lm():
    """METHOD §2: running the surrogate with mask+skipped positions equals running it
    on the compacted sequence, at every kept position."""
    model = tiny_llama()
    vmap = random_vmap(40, 48, 28, seed=1)
    g = torch.Generator().manual_seed(2)
    base = torch.randint(0, 40, (3, 17), generator=g)
    in_ids = vmap.base_in.nonzero().squeeze(-1)
    base[:, 0] = in_ids[0]  # first token kept, so every kept query sees ≥ 1 key
    inp = translate_inputs(base, vmap)
    with torch.inference_mode():
        masked = model(
            input_ids=inp.input_ids,
            attention_mask=inp.attention_mask,
            position_ids=inp.position_ids,
        ).logits
        ids, m = compact(inp)
        comp = model(input_ids=ids, attention_mask=m.long()).logits
    keep = inp.attention_mask.bool()
    assert keep.sum() < keep.numel()  # the case is not trivial
    torch.testing.assert_close(masked[keep], scatter_back(comp, inp)[keep], rtol=1e-4, atol=1e-4)


def test_propose_targets_compact_equals_mask_mode():
    from lsap.method.targets import propose_targets

    model = tiny_llama()
    vmap = random_vmap(40, 48, 30, seed=4)
    g = torch.Generator().manual_seed(5)
    x = torch.randint(0, 40, (3, 19), generator=g)
    x[:, 0] = vmap.base_in.nonzero()[0, 0]
    y = torch.randint(0, 40, (3, 19), generator=g)
    y[1, 3] = -100
    a = propose_targets(model, x, y, vmap, k=6, alpha=0.01, mode="compact")
    b = propose_targets(model, x, y, vmap, k=6, alpha=0.01, mode="mask")
    assert torch.equal(a[1], b[1]) and torch.equal(a[0], b[0])
    torch.testing.assert_close(a[2], b[2], rtol=1e-4, atol=1e-6)
    assert a[1].any()
    assert not a[1][~vmap.base_in[x]].any() and not a[1][1, 3].any()


def test_drop_gold_outside_matches_naive_loop():
    """gold_outside=skip: a position keeps its targets iff its gold label is inside Σ∩."""
    from lsap.method.targets import drop_gold_outside

    vmap = random_vmap(30, 41, 18, seed=5, pad_s=2)
    g = torch.Generator().manual_seed(3)
    labels = torch.randint(0, 30, (3, 9), generator=g)
    labels[0, 2] = -100
    mask = torch.rand(3, 9, 4, generator=g) > 0.4
    got = drop_gold_outside(mask, labels, vmap)
    b2s = vmap.base_to_surrogate.tolist()
    n_dropped = 0
    for b in range(3):
        for t in range(9):
            lab = int(labels[b, t])
            inside = lab >= 0 and b2s[lab] != -1
            want = mask[b, t] if inside else torch.zeros(4, dtype=torch.bool)
            assert torch.equal(got[b, t], want), (b, t)
            n_dropped += int(not inside and mask[b, t].any())
    assert n_dropped > 0  # the case is exercised


def test_bf16_surrogate_selects_from_fp32_head_logits():
    """A bf16 surrogate: the body runs in bf16, the logits that decide p > α come from an
    fp32 head (METHOD §2) — the same selection as the fp64 reference on those hidden
    states, where bf16-rounded logits would flip candidates near α."""
    from lsap.method.targets import (
        propose_targets,
        select_aux_targets_from_hidden,
        surrogate_body_and_head,
    )

    model = tiny_llama(vocab_size=300).to(torch.bfloat16)
    with torch.no_grad():
        model.lm_head.weight.mul_(40)  # peaked outputs with logits of magnitude ~10-30
    vmap = random_vmap(250, 300, 240, seed=1)
    g = torch.Generator().manual_seed(2)
    x = torch.randint(0, 250, (2, 40), generator=g)
    x[:, 0] = vmap.base_in.nonzero()[0, 0]
    x[:, 1:] = torch.where(vmap.base_in[x[:, 1:]], x[:, 1:], x[:, :1])  # every input visible
    y = torch.randint(0, 250, (2, 40), generator=g)
    k, alpha = 8, 0.01
    ids, mask, probs = propose_targets(model, x, y, vmap, k, alpha, mode="mask")
    body, head = surrogate_body_and_head(model)
    from lsap.method.targets import translate_inputs

    inp = translate_inputs(x, vmap)
    with torch.no_grad():
        hidden = body(
            input_ids=inp.input_ids,
            attention_mask=inp.attention_mask,
            position_ids=inp.position_ids,
        ).last_hidden_state
    assert hidden.dtype == torch.bfloat16 and probs.dtype == torch.float32
    z64 = hidden.double() @ head.weight.double().t()
    ref = ref_select(z64, y, vmap.base_to_surrogate, vmap.surrogate_to_base, k, alpha)
    got = [
        [[int(i) for i, m in zip(ids[b, t], mask[b, t]) if m] for t in range(40)] for b in range(2)
    ]
    assert got == ref and mask.sum() > 20
    p64 = torch.softmax(z64, -1)
    s2b_ids = torch.where(mask, vmap.base_to_surrogate[ids.clamp_min(0)], 0)
    torch.testing.assert_close(
        probs[mask].double(), p64.gather(-1, s2b_ids)[mask], rtol=1e-5, atol=1e-7
    )
    # the same call on chunks of any size gives the same selection
    again = select_aux_targets_from_hidden(hidden, head.weight, y, vmap, k, alpha, chunk_size=7)
    assert torch.equal(again[0], ids) and torch.equal(again[1], mask)
