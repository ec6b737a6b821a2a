"""What the surrogate sees and which auxiliary targets it proposes (METHOD §2–§3).

Pure tensor functions (no tokenizer or config objects; the surrogate is any callable
causal LM) and the `AuxTargets` value every target source returns (the sources and
their one factory live in `lsap.surrogate.sources`). Shapes: B batch, T sequence, V_s surrogate
vocabulary (model rows), K = k auxiliary slots.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F

from lsap.method.vocab import ABSENT, VocabMap

IGNORE = -100  # label of a position without a next token (torch's cross-entropy default)


class AuxTargets(NamedTuple):
    """Auxiliary targets of a batch (METHOD §3), whatever produced them.

    ids: int64 [B, T, K] base ids, -1 in unused slots; mask: bool [B, T, K], the
    selected slots (a prefix per position, in decreasing surrogate p); probs: float32
    [B, T, K], the surrogate's unrenormalised p (0 in unused slots; only the
    `aux_weighting: prob` ablation reads them). Unpacks as (ids, mask, probs).
    """

    ids: torch.Tensor
    mask: torch.Tensor
    probs: torch.Tensor

    @property
    def count(self) -> torch.Tensor:
        """V: the number of selected targets (a 0-dim int64 tensor, no host sync)."""
        return self.mask.sum()

    def to(self, device) -> AuxTargets:
        return AuxTargets(*(t.to(device) for t in self))

    @staticmethod
    def cat(parts: list[AuxTargets]) -> AuxTargets:
        """Concatenate along the batch dimension."""
        return AuxTargets(*(torch.cat(p) for p in zip(*parts)))

    def drop_gold_outside(self, labels: torch.Tensor, vmap: VocabMap) -> AuxTargets:
        """The `gold_outside=skip` ablation applied to this value (see `drop_gold_outside`)."""
        mask = drop_gold_outside(self.mask, labels, vmap)
        return AuxTargets(
            torch.where(mask, self.ids, ABSENT), mask, torch.where(mask, self.probs, 0.0)
        )


class SurrogateInputs(NamedTuple):
    """input_ids, attention_mask, position_ids: [B, T] (surrogate ids; 0 where absent)."""

    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    position_ids: torch.Tensor


def translate_inputs(base_ids: torch.Tensor, vmap: VocabMap, pad_id: int = 0) -> SurrogateInputs:
    """Translate base ids [B, T] for the surrogate; tokens outside Σ∩ become invisible.

    Invisible = attention mask 0 *and* position ids that skip them, so the surrogate
    sees exactly the compacted sequence (see `compact` / `scatter_back`).
    """
    if base_ids.dim() != 2:
        raise ValueError(f"base_ids must be [B, T], got shape {tuple(base_ids.shape)}")
    if base_ids.numel() and (base_ids.min() < 0 or base_ids.max() >= vmap.base_vocab_size):
        raise ValueError(
            f"base ids must lie in [0, {vmap.base_vocab_size}) (the map's base vocabulary); "
            f"got [{int(base_ids.min())}, {int(base_ids.max())}]"
        )
    b2s = vmap.base_to_surrogate.to(base_ids.device)
    sid = b2s[base_ids]
    keep = sid != ABSENT
    position_ids = (keep.long().cumsum(-1) - 1).clamp_min(0)
    return SurrogateInputs(torch.where(keep, sid, pad_id), keep.long(), position_ids)


def compact(inputs: SurrogateInputs, pad_id: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Left-align the kept tokens of each row: ids [B, T'] and mask [B, T'] (T' = max kept)."""
    keep = inputs.attention_mask.bool()
    n = keep.sum(-1)
    T2 = int(n.max()) if n.numel() else 0
    ids = torch.full((keep.shape[0], T2), pad_id, dtype=inputs.input_ids.dtype, device=keep.device)
    mask = torch.arange(T2, device=keep.device)[None, :] < n[:, None]
    ids[mask] = inputs.input_ids[keep]
    return ids, mask


def scatter_back(compact_out: torch.Tensor, inputs: SurrogateInputs) -> torch.Tensor:
    """Inverse of `compact` for per-position outputs [B, T', ...] → [B, T, ...] (zeros where absent)."""
    keep = inputs.attention_mask.bool()
    B, T = keep.shape
    out = compact_out.new_zeros((B, T) + tuple(compact_out.shape[2:]))
    T2 = compact_out.shape[1]
    cmask = torch.arange(T2, device=keep.device)[None, :] < keep.sum(-1)[:, None]
    out[keep] = compact_out[cmask]
    return out


def select_aux_targets(
    surrogate_logits: torch.Tensor,
    next_base_ids: torch.Tensor,
    vmap: VocabMap,
    k: int = 15,
    alpha: float = 0.05,
    valid: torch.Tensor | None = None,
    return_probs: bool = False,
    chunk_size: int | None = None,
):
    """Auxiliary targets per METHOD §3.

    surrogate_logits: [B, T, V] with V ≥ the map's surrogate vocabulary rows in use
        (extra rows are padding and never selected; fewer rows is an error). They are
        widened to fp32 per chunk; logits already rounded to bf16 keep that rounding —
        `select_aux_targets_from_hidden` avoids it.
    next_base_ids: [B, T] the gold next base token at each position (labels);
        any negative id (-100) marks positions without a label.
    valid: optional bool [B, T]: the surrogate's own input token at that position was
        in Σ∩ (the `attention_mask` of `translate_inputs`); other positions get none.

    Returns aux_ids [B, T, k] (base ids, -1 in unused slots) and aux_mask [B, T, k]
    (selected slots form a prefix, in decreasing surrogate probability); with
    `return_probs`, also probs [B, T, k] (float32, the surrogate's unrenormalised p).

    p = softmax over the full surrogate vocabulary; exclude the gold F_b→s(x_{i+1}) and
    every token outside Σ∩; keep the k most probable; keep p > alpha; map with F_s→b.
    """
    if surrogate_logits.dim() != 3 or next_base_ids.shape != surrogate_logits.shape[:2]:
        raise ValueError(
            f"expected surrogate_logits [B, T, V] and next_base_ids [B, T]; got "
            f"{tuple(surrogate_logits.shape)} and {tuple(next_base_ids.shape)}"
        )
    B, T, V = surrogate_logits.shape
    flat = surrogate_logits.reshape(B * T, V)
    return _select(
        lambda r: flat[r].float(),
        (B, T, V),
        surrogate_logits.device,
        next_base_ids,
        vmap,
        k,
        alpha,
        valid,
        return_probs,
        chunk_size,
    )


def select_aux_targets_from_hidden(
    hidden: torch.Tensor,
    head_weight: torch.Tensor,
    next_base_ids: torch.Tensor,
    vmap: VocabMap,
    k: int = 15,
    alpha: float = 0.05,
    valid: torch.Tensor | None = None,
    return_probs: bool = False,
    chunk_size: int | None = None,
    head_bias: torch.Tensor | None = None,
):
    """`select_aux_targets(hidden @ head_weightᵀ, ...)` with the head matmul in fp32, per chunk.

    hidden: [B, T, H] the surrogate's last hidden states (any dtype, e.g. bf16);
    head_weight: [V, H] its output head. The logits that feed softmax / top-k / p > α
    are computed in fp32 from the (bf16) hidden states and weights: bf16 logits of
    magnitude 16–32 are 0.125 apart, enough to flip p > α near the threshold between
    runs and batch sizes (METHOD §2). bf16 values are exact in fp32 and in TF32, so
    with TF32 on this is still an exact-product GEMM with fp32 accumulation. The
    [B, T, V] logits are never materialised (chunks of rows only).
    """
    if hidden.dim() != 3 or head_weight.dim() != 2 or head_weight.shape[1] != hidden.shape[-1]:
        raise ValueError(
            f"expected hidden [B, T, H] and head_weight [V, H]; got {tuple(hidden.shape)} "
            f"and {tuple(head_weight.shape)}"
        )
    B, T, H = hidden.shape
    V = head_weight.shape[0]
    flat = hidden.reshape(B * T, H)
    w32 = head_weight.float()
    b32 = None if head_bias is None else head_bias.float()
    return _select(
        lambda r: F.linear(flat[r].float(), w32, b32),
        (B, T, V),
        hidden.device,
        next_base_ids,
        vmap,
        k,
        alpha,
        valid,
        return_probs,
        chunk_size,
    )


def _select(
    rows_logits, shape, dev, next_base_ids, vmap, k, alpha, valid, return_probs, chunk_size
):
    """The chunked selection behind both entry points; rows_logits(r) → fresh fp32 [len(r), V]."""
    B, T, V = shape
    if next_base_ids.shape != (B, T):
        raise ValueError(
            f"expected surrogate outputs [B, T, ...] and next_base_ids [B, T]; got {tuple(shape)} "
            f"and {tuple(next_base_ids.shape)}"
        )
    if k < 1:
        raise ValueError(f"k must be ≥ 1, got {k}")
    if not 0.0 <= alpha < 1.0:
        raise ValueError(f"alpha must lie in [0, 1), got {alpha}")
    Vs = vmap.surrogate_vocab_size
    if V < Vs:
        raise ValueError(
            f"surrogate logits have {V} vocabulary rows but the map covers {Vs} surrogate ids: "
            "the surrogate model does not match the map (rebuild it with the surrogate's tokenizer)"
        )
    if V < k:
        raise ValueError(f"k={k} exceeds the surrogate vocabulary ({V})")
    if valid is not None and valid.shape != (B, T):
        raise ValueError(f"valid must be [B, T] = {(B, T)}, got {tuple(valid.shape)}")
    labels = next_base_ids.to(dev)
    has_label = labels >= 0
    if has_label.any() and labels[has_label].max() >= vmap.base_vocab_size:
        raise ValueError(
            f"next_base_ids contain ids ≥ the map's base vocabulary ({vmap.base_vocab_size})"
        )
    ok = has_label if valid is None else has_label & valid.to(dev).bool()

    s_in = torch.zeros(V, dtype=torch.bool, device=dev)
    s_in[:Vs] = vmap.surrogate_in.to(dev)
    # Additive mask: 0 for Σ∩ columns, -inf elsewhere (padded rows included).
    col_bias = torch.where(s_in, 0.0, float("-inf"))
    s2b = vmap.surrogate_to_base.to(dev)
    gold_s = torch.where(has_label, vmap.base_to_surrogate.to(dev)[labels.clamp_min(0)], ABSENT)

    flat_gold, flat_ok = gold_s.reshape(-1), ok.reshape(-1)
    ids_out = torch.full((B * T, k), ABSENT, dtype=torch.long, device=dev)
    mask_out = torch.zeros((B * T, k), dtype=torch.bool, device=dev)
    probs_out = torch.zeros((B * T, k), dtype=torch.float32, device=dev)
    rows = flat_ok.nonzero().squeeze(-1)
    # Rows per fp32 working copy: on a CPU small chunks stay in cache (256 rows: 3x faster
    # than 4096 measured here); on a GPU large chunks amortise kernel launches.
    chunk_size = chunk_size or (4096 if dev.type == "cuda" else 256)
    for start in range(0, rows.numel(), chunk_size):
        r = rows[start : start + chunk_size]
        z = rows_logits(r)  # a fresh fp32 tensor: safe to modify in place
        lse = torch.logsumexp(z, dim=-1, keepdim=True)
        z.add_(col_bias)
        g = flat_gold[r]
        has_g = g != ABSENT
        z[has_g.nonzero().squeeze(-1), g[has_g]] = float("-inf")
        top_z, top_i = z.topk(k, dim=-1)
        p = (top_z - lse).exp()
        keep = p > alpha  # -inf logits give p = 0, never kept
        ids_out[r] = torch.where(keep, s2b[top_i], ABSENT)
        mask_out[r] = keep
        probs_out[r] = torch.where(keep, p, 0.0)
    out = (ids_out.view(B, T, k), mask_out.view(B, T, k))
    if return_probs:
        out = out + (probs_out.view(B, T, k),)
    return out


# HF families whose logits are exactly lm_head(last_hidden_state): no soft-capping or
# logit scaling after the head (those would need the model's own forward).
_PLAIN_HEAD_FAMILIES = (
    "llama",
    "mistral",
    "qwen2",
    "qwen3",
    "olmo",
    "olmo2",
    "olmo3",
    "smollm3",
    "phi3",
)


def surrogate_body_and_head(surrogate):
    """(body, head) of an HF causal LM whose logits are `head(body(...).last_hidden_state)`,
    or None when lsap cannot split it (then its own logits are used)."""
    cfg = getattr(surrogate, "config", None)
    if getattr(cfg, "model_type", None) not in _PLAIN_HEAD_FAMILIES:
        return None
    try:
        body, head = surrogate.get_decoder(), surrogate.get_output_embeddings()
    except (AttributeError, NotImplementedError):
        return None
    if body is None or body is surrogate or not isinstance(head, torch.nn.Linear):
        return None
    return body, head


def _surrogate_select(surrogate, labels, vmap, k, alpha, valid, **inputs):
    """Run S and select: body, then the head in fp32 per chunk when S can be split."""
    split = surrogate_body_and_head(surrogate)
    if split is None:
        logits = surrogate(**inputs).logits
        return select_aux_targets(logits, labels, vmap, k, alpha, valid=valid, return_probs=True)
    body, head = split
    hidden = body(**inputs).last_hidden_state
    return select_aux_targets_from_hidden(
        hidden,
        head.weight,
        labels,
        vmap,
        k,
        alpha,
        valid=valid,
        return_probs=True,
        head_bias=head.bias,
    )


def drop_gold_outside(aux_mask: torch.Tensor, labels: torch.Tensor, vmap: VocabMap) -> torch.Tensor:
    """METHOD §3 `gold_outside=skip`: no auxiliary targets where the gold next token is
    outside Σ∩ (there the surrogate often proposes a prefix of it: Qwen3 splits digits,
    gold '199' → candidate '1'). aux_mask [B, T, K], labels [B, T] → a new mask."""
    b2s = vmap.base_to_surrogate.to(labels.device)
    inside = (labels >= 0) & (b2s[labels.clamp_min(0)] != ABSENT)
    return aux_mask & inside.unsqueeze(-1).to(aux_mask.device)


def compact_forward(fn, inputs: SurrogateInputs, pad_id: int = 0):
    """The surrogate's view, computed compactly (METHOD §2): pack each row's Σ∩ tokens to
    the left (`compact`), call `fn(ids [B, T'], cmask [B, T'])`, and scatter each
    per-position output [B, T', ...] back to the base positions [B, T, ...] (zeros where
    a token is absent; `scatter_back`). fn may return a tensor or a tuple of tensors.
    Padding sits at the end of each row, where causal attention makes it harmless.
    Returns None when no row keeps a token (T' = 0).
    """
    ids, cmask = compact(inputs, pad_id)
    if ids.shape[1] == 0:
        return None
    out = fn(ids, cmask)
    if isinstance(out, tuple):
        return tuple(scatter_back(o, inputs) for o in out)
    return scatter_back(out, inputs)


@torch.no_grad()
def propose_targets(
    surrogate,
    base_ids: torch.Tensor,
    labels: torch.Tensor,
    vmap: VocabMap,
    k: int = 15,
    alpha: float = 0.05,
    mode: str = "compact",
    pad_id: int = 0,
) -> AuxTargets:
    """Run the frozen surrogate on base inputs [B, T] and select auxiliary targets.

    surrogate: a causal LM (anything called as `surrogate(input_ids=, attention_mask=,
    [position_ids=]).logits`). For HF families with a plain head (`surrogate_body_and_head`)
    the body runs in the model's dtype (bf16 on GPU) and the head in fp32, so the
    logits that decide p > α are not bf16-rounded (METHOD §2). mode "compact" runs S on each row's Σ∩ tokens packed to
    the left (no wasted compute on masked tokens) and scatters the selection back;
    "mask" runs the full-length rows with holes masked and positions skipping them.
    Both are the same computation (tests/test_targets.py). labels: [B, T], negative
    where a position has none.
    """
    inp = translate_inputs(base_ids, vmap, pad_id)
    keep = inp.attention_mask.bool()
    if mode == "mask":
        return AuxTargets(
            *_surrogate_select(
                surrogate,
                labels,
                vmap,
                k,
                alpha,
                keep,
                input_ids=inp.input_ids,
                attention_mask=inp.attention_mask,
                position_ids=inp.position_ids,
            )
        )
    if mode != "compact":
        raise ValueError(f"mode must be 'compact' or 'mask', got {mode!r}")

    def select(ids, cmask):
        clabels = torch.full(cmask.shape, IGNORE, dtype=labels.dtype, device=labels.device)
        clabels[cmask] = labels[keep]
        return _surrogate_select(
            surrogate, clabels, vmap, k, alpha, cmask, input_ids=ids, attention_mask=cmask.long()
        )

    out = compact_forward(select, inp, pad_id)
    if out is None:
        z = torch.zeros(base_ids.shape + (k,), device=base_ids.device)
        return AuxTargets(z.long() - 1, z.bool(), z.float())
    cid, m, cp = out
    return AuxTargets(torch.where(m, cid, ABSENT), m, cp)
