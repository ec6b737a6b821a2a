"""The LSAP loss (METHOD §4): cross-entropy plus unweighted NLLs of auxiliary targets.

    L_CE_sum  = Σ_i  −log P(x_{i+1} | x_≤i)                 over supervised positions i
    L_aux_sum = Σ_i Σ_{t ∈ v_i} −log P(t | x_≤i)
    L = (L_CE_sum + λ · L_aux_sum + m · Σ_i LSE_i²) / Z,
    Z = N + V ("targets"), N ("tokens") or N + λ·V ("weighted")

The last term is the optional z-loss (PaLM; OLMo2's recipes use m = 1e-5): the squared
log-sum-exp of each supervised position, from the LSE the loss computes anyway.

Pure functions of tensors. Both variants compute one log-sum-exp per position that
serves the gold and all K auxiliary targets (NLL(t) = LSE − z_t) and never build a
dense [N, V] multi-hot target. Their backward writes

    ∂L/∂z = softmax(z) · (valid · (1 + 2m · LSE) + λ · Σ_k w_k)
            − onehot(gold) − λ · Σ_k w_k · onehot(aux_k)

directly. The loss functions return sums and counts only; the caller (the trainer)
owns Z: it reduces N and V over ranks and micro-batches and divides once per optimizer
step by `normalizer(N, V, normalization, λ)`.

Shapes: N positions (any leading dims are flattened), V vocabulary, H hidden, K slots.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F

from lsap.method.choices import NORMALIZATIONS  # the one list of allowed values


class LSAPLossOutput(NamedTuple):
    """The one loss result in lsap: what `lsap_loss` and `lsap_linear_loss` return, what the
    trainer's `LossModule` returns and what OLMo-core's `LSAPLMHead` returns (there `loss` is
    divided by OLMo-core's loss_div_factor; the sums are not). A NamedTuple, so DDP / FSDP2 see
    the tensors inside (pytree).

    loss: what to backprop, ce_sum + λ·aux_sum (a sum: divide by the global Z).
    The rest are detached, for logging and global reduction.

    ce_sum / aux_sum: summed NLLs (aux unscaled by λ); n_labels: N supervised positions;
    n_aux: V auxiliary targets (count, unweighted); z_sum: Σ LSE² over supervised
    positions (unscaled; `loss` holds m · z_sum), zero without z-loss.
    """

    loss: torch.Tensor
    ce_sum: torch.Tensor
    aux_sum: torch.Tensor
    n_labels: torch.Tensor
    n_aux: torch.Tensor
    z_sum: torch.Tensor | None = None


def normalizer(n_labels, n_aux, normalization: str, lam: float = 1.0):
    """Z for a (global) batch (METHOD §4): N + V for "targets" (the default; with λ = 0
    the loss is then CE scaled by N/(N+V)), N for "tokens", N + λ·V for "weighted" (λ = 0
    is CE exactly under any schedule). Tensors or numbers in, the same out."""
    if normalization == "targets":
        return n_labels + n_aux
    if normalization == "tokens":
        return n_labels
    if normalization == "weighted":
        return n_labels + float(lam) * n_aux
    raise ValueError(f"normalization must be one of {NORMALIZATIONS}, got {normalization!r}")


def _prepare(labels, aux_ids, aux_mask, aux_weight, vocab, ignore_index):
    """Flatten and validate; return labels [N], valid [N], aux ids [N,K] (clamped), w [N,K]."""
    labels = labels.reshape(-1)
    N = labels.numel()
    if aux_ids is None:
        aux_ids = labels.new_zeros((N, 0))
        aux_mask = torch.zeros((N, 0), dtype=torch.bool, device=labels.device)
    if aux_ids.shape != aux_mask.shape:
        raise ValueError(
            f"aux_ids {tuple(aux_ids.shape)} and aux_mask {tuple(aux_mask.shape)} differ"
        )
    K = aux_ids.shape[-1]
    if aux_ids.numel() // max(K, 1) != N and not (K == 0 and aux_ids.numel() == 0):
        raise ValueError(
            f"aux_ids {tuple(aux_ids.shape)} do not match labels {tuple(labels.shape)}: "
            "expected [..., K] with the labels' leading shape"
        )
    aux_ids, aux_mask = aux_ids.reshape(N, K), aux_mask.reshape(N, K).bool()
    valid = labels != ignore_index
    if valid.any():
        lv = labels[valid]
        if lv.min() < 0 or lv.max() >= vocab:
            raise ValueError(
                f"labels must lie in [0, {vocab}) or equal ignore_index={ignore_index}"
            )
    # Positions without a label carry no auxiliary targets (METHOD §3).
    aux_mask = aux_mask & valid[:, None]
    if aux_mask.any():
        a = aux_ids[aux_mask]
        if a.min() < 0 or a.max() >= vocab:
            raise ValueError(
                f"selected aux_ids must lie in [0, {vocab}); got [{int(a.min())}, {int(a.max())}] — "
                "were they mapped to the base vocabulary?"
            )
    w = aux_mask.float()
    if aux_weight is not None:
        w = w * aux_weight.reshape(N, K).float()
    safe_ids = torch.where(aux_mask, aux_ids, 0)
    safe_labels = torch.where(valid, labels, 0)
    return safe_labels, valid, safe_ids, aux_mask, w


def _finish(total, ce_sum, aux_sum, valid, aux_mask, z_sum=None):
    z_sum = torch.zeros_like(ce_sum) if z_sum is None else z_sum.detach()
    return LSAPLossOutput(
        total, ce_sum.detach(), aux_sum.detach(), valid.sum(), aux_mask.sum(), z_sum
    )


def _acc(z: torch.Tensor) -> torch.Tensor:
    """Math in fp32 for half types; fp64 stays fp64 (gradcheck)."""
    return z if z.dtype == torch.float64 else z.float()


def _parts(z: torch.Tensor, labels, valid, aux_ids, w):
    """fp32 lse [n], per-row ce [n], per-row aux [n], per-row LSE² [n] (0 where no
    label) for a chunk of logits z [n, V]."""
    z = _acc(z)
    lse = torch.logsumexp(z, dim=-1)
    ce = (lse - z.gather(1, labels[:, None]).squeeze(1)) * valid
    aux = ((lse[:, None] - z.gather(1, aux_ids)) * w).sum(-1)
    return lse, ce, aux, lse.square() * valid


def _grad_logits(
    z, lse, labels, valid, aux_ids, w, lam: float, scale, out=None, zl: float = 0.0
) -> torch.Tensor:
    """∂(ce + λ·aux + zl·LSE²)/∂z for a chunk [n, V] (fp32, fp64 for fp64 input), times `scale`.

    softmax(z)·c is written as exp(z − (lse − log|c|))·sign(c): two passes over [n, V]
    instead of three; rows with c = 0 (no label, no aux) get exp(−inf) = 0. The z-loss
    adds 2·zl·LSE to a supervised row's c (negative only for LSE < −1/(2·zl), hence the
    sign). `out`: an fp32 buffer holding z that may be overwritten (saves one [n, V]
    allocation).
    """
    v = valid.to(lse.dtype)
    c = v + lam * w.sum(-1)
    if zl:
        c = c + (2.0 * zl) * lse * v
    c = c * scale
    shift = (lse - c.abs().log())[:, None]
    g = out.sub_(shift) if out is not None else torch.sub(_acc(z), shift)
    g.exp_()
    if zl:
        g.mul_(c.sign()[:, None])
    elif scale < 0:
        g.neg_()
    g.scatter_add_(1, labels[:, None], (-scale * valid.to(g.dtype))[:, None])
    if aux_ids.shape[1]:
        g.scatter_add_(1, aux_ids, (-lam * scale * w).to(g.dtype))
    return g


class _LSAPLogitsLoss(torch.autograd.Function):
    @staticmethod
    def forward(ctx, logits, labels, valid, aux_ids, w, lam: float, chunk: int, zl: float = 0.0):
        N = logits.shape[0]
        acc = _acc(logits[:0]).dtype
        lse = torch.empty(N, dtype=acc, device=logits.device)
        ce_sum = logits.new_zeros((), dtype=acc)
        aux_sum = logits.new_zeros((), dtype=acc)
        z_sum = logits.new_zeros((), dtype=acc)
        for s in range(0, N, chunk):
            sl = slice(s, s + chunk)
            l, ce, aux, zz = _parts(logits[sl], labels[sl], valid[sl], aux_ids[sl], w[sl])
            lse[sl] = l
            ce_sum += ce.sum()
            aux_sum += aux.sum()
            z_sum += zz.sum()
        ctx.save_for_backward(logits, labels, valid, aux_ids, w, lse)
        ctx.lam, ctx.chunk, ctx.zl = lam, chunk, zl
        ctx.mark_non_differentiable(ce_sum, aux_sum, z_sum)
        return ce_sum + lam * aux_sum + zl * z_sum, ce_sum, aux_sum, z_sum

    @staticmethod
    def backward(ctx, g_total, _g_ce, _g_aux, _g_z):
        logits, labels, valid, aux_ids, w, lse = ctx.saved_tensors
        grad = torch.empty_like(logits)
        for s in range(0, logits.shape[0], ctx.chunk):
            sl = slice(s, s + ctx.chunk)
            grad[sl] = _grad_logits(
                logits[sl],
                lse[sl],
                labels[sl],
                valid[sl],
                aux_ids[sl],
                w[sl],
                ctx.lam,
                g_total,
                zl=ctx.zl,
            )
        return grad, None, None, None, None, None, None, None


def lsap_loss(
    logits: torch.Tensor,
    labels: torch.Tensor,
    aux_ids: torch.Tensor | None = None,
    aux_mask: torch.Tensor | None = None,
    lam: float = 1.0,
    ignore_index: int = -100,
    aux_weight: torch.Tensor | None = None,
    chunk_size: int = 2048,
    z_loss: float = 0.0,
) -> LSAPLossOutput:
    """LSAP loss on full logits.

    logits: [..., V] (any float dtype; math in fp32). labels: [...] next-token ids or
    `ignore_index`. aux_ids / aux_mask: [..., K] base ids and which slots count
    (`select_aux_targets`' output). lam: λ(t), a float. aux_weight: [..., K] — only for
    the explicitly named "weight by surrogate p" ablation (off by default; that leans
    toward KD). z_loss: the z-loss multiplier m (0: off). With λ = 0 and no z-loss this
    is exactly `F.cross_entropy(reduction="sum")`.
    """
    lam, z_loss = float(lam), float(z_loss)
    V = logits.shape[-1]
    if logits.shape[:-1] != labels.shape:
        raise ValueError(f"logits {tuple(logits.shape)} and labels {tuple(labels.shape)} disagree")
    flat = logits.reshape(-1, V)
    labels_, valid, ids, mask, w = _prepare(labels, aux_ids, aux_mask, aux_weight, V, ignore_index)
    if lam == 0.0 and z_loss == 0.0:
        # λ = 0 is plain CE: take torch's kernel so it reproduces a CE run bit for bit.
        ce_sum = F.cross_entropy(
            flat.float(), labels.reshape(-1), ignore_index=ignore_index, reduction="sum"
        )
        return _finish(ce_sum, ce_sum, torch.zeros_like(ce_sum), valid, mask)
    total, ce_sum, aux_sum, z_sum = _LSAPLogitsLoss.apply(
        flat, labels_, valid, ids, w, lam, chunk_size, z_loss
    )
    return _finish(total, ce_sum, aux_sum, valid, mask, z_sum)


def _mm_acc(a: torch.Tensor, b: torch.Tensor, f32_out: bool) -> torch.Tensor:
    """a @ b in a's dtype with an fp32 (fp64 for fp64) result. f32_out: the GEMM writes
    fp32 itself (CUDA `mm(out_dtype=)`), so bf16 logits are never rounded to bf16."""
    if f32_out:
        return torch.mm(a, b, out_dtype=torch.float32)
    return _acc(a @ b)


_F32_OUT: dict = {}


def _f32_out_ok(t: torch.Tensor) -> bool:
    """Whether `torch.mm(..., out_dtype=float32)` runs for half inputs on t's device
    (CUDA builds that have it; probed once per device and dtype)."""
    if not (t.is_cuda and t.dtype in (torch.bfloat16, torch.float16)):
        return False
    key = (t.device, t.dtype)
    if key not in _F32_OUT:
        try:
            torch.mm(t.new_ones(16, 16), t.new_ones(16, 16), out_dtype=torch.float32)
            _F32_OUT[key] = True
        except (RuntimeError, NotImplementedError, TypeError):
            _F32_OUT[key] = False
    return _F32_OUT[key]


def _linear_chunk(
    h,
    w_t,
    labels,
    valid,
    aux_ids,
    w,
    lam: float,
    need_grad: bool,
    f32_out: bool = False,
    zl: float = 0.0,
):
    """One chunk of `lsap_linear_loss`: h [n, H] and w_t [H, V] in the compute dtype.

    The head matmul runs in the compute dtype (bf16 on GPU: tensor cores, fp32
    accumulation inside the GEMM); its [n, V] logits are fp32 (written so by the GEMM
    where `f32_out`, else widened once), and that one fp32 buffer serves the log-sum-exp,
    the k+1 gathers and, overwritten in place, the gradient ∂/∂z.
    Returns (ce_sum, aux_sum, z_sum, g [n, V] in the compute dtype or None).
    """
    z32 = _mm_acc(h, w_t, f32_out)
    lse, ce, aux, zz = _parts(z32, labels, valid, aux_ids, w)
    g = None
    if need_grad:
        g = _grad_logits(z32, lse, labels, valid, aux_ids, w, lam, 1.0, out=z32, zl=zl)
        g = g.to(h.dtype)
    return ce.sum(), aux.sum(), zz.sum(), g


_compiled_chunk = None


def _chunk_fn(impl: str):
    """The eager chunk, or (impl="compile") one `torch.compile`d once per process."""
    global _compiled_chunk
    if impl == "eager":
        return _linear_chunk
    if impl != "compile":
        raise ValueError(f"impl must be 'eager' or 'compile', got {impl!r}")
    if _compiled_chunk is None:
        _compiled_chunk = torch.compile(_linear_chunk, dynamic=None)
    return _compiled_chunk


class _LSAPLinearLoss(torch.autograd.Function):
    """hidden @ weightᵀ → LSAP loss, chunked over N; gradients are computed in forward
    (as Liger-Kernel's fused linear CE does) so no [N, V] tensor outlives a chunk.

    `dtype` is the matmul dtype (hidden and weight are cast per call, as autocast would);
    the LSE, the loss sums and ∂/∂weight are accumulated in fp32, and the gradients are
    returned in hidden's and weight's own dtypes (fp32 master weights get an fp32 grad,
    not a bf16-rounded one)."""

    @staticmethod
    def forward(
        ctx,
        hidden,
        weight,
        labels,
        valid,
        aux_ids,
        w,
        lam: float,
        chunk: int,
        dtype,
        impl: str,
        zl: float = 0.0,
    ):
        N = hidden.shape[0]
        need_grad = ctx.needs_input_grad[0] or ctx.needs_input_grad[1]
        acc = torch.float64 if dtype == torch.float64 else torch.float32
        hc, w_t = hidden.to(dtype), weight.to(dtype).t()
        ce_sum = hidden.new_zeros((), dtype=acc)
        aux_sum = hidden.new_zeros((), dtype=acc)
        z_sum = hidden.new_zeros((), dtype=acc)
        grad_h = torch.empty_like(hidden) if need_grad else None
        grad_w = torch.zeros(weight.shape, dtype=acc, device=weight.device) if need_grad else None
        fn = _chunk_fn(impl)
        f32_out = _f32_out_ok(hc)
        # compiled: λ as a tensor input, so a λ schedule does not recompile every step
        lam_c = torch.tensor(lam, dtype=acc, device=hidden.device) if impl == "compile" else lam
        for s in range(0, N, chunk):
            sl = slice(s, s + chunk)
            ce, aux, zz, g = fn(
                hc[sl],
                w_t,
                labels[sl],
                valid[sl],
                aux_ids[sl],
                w[sl],
                lam_c,
                need_grad,
                f32_out,
                zl,
            )
            ce_sum += ce
            aux_sum += aux
            z_sum += zz
            if need_grad:
                grad_h[sl] = g @ w_t.t()
                # ∂/∂W: one GEMM per chunk in the compute dtype, summed over chunks in fp32.
                grad_w += _mm_acc(g.t(), hc[sl], f32_out)
        ctx.save_for_backward(grad_h, grad_w)
        ctx.weight_dtype = weight.dtype
        ctx.mark_non_differentiable(ce_sum, aux_sum, z_sum)
        return ce_sum + lam * aux_sum + zl * z_sum, ce_sum, aux_sum, z_sum

    @staticmethod
    def backward(ctx, g_total, _g_ce, _g_aux, _g_z):
        grad_h, grad_w = ctx.saved_tensors
        gh = (grad_h * g_total).to(grad_h.dtype) if ctx.needs_input_grad[0] else None
        gw = (grad_w * g_total).to(ctx.weight_dtype) if ctx.needs_input_grad[1] else None
        return gh, gw, None, None, None, None, None, None, None, None, None


def lsap_linear_loss(
    hidden: torch.Tensor,
    weight: torch.Tensor,
    labels: torch.Tensor,
    aux_ids: torch.Tensor | None = None,
    aux_mask: torch.Tensor | None = None,
    lam: float = 1.0,
    ignore_index: int = -100,
    aux_weight: torch.Tensor | None = None,
    chunk_size: int = 1024,
    impl: str = "eager",
    z_loss: float = 0.0,
) -> LSAPLossOutput:
    """LSAP loss from the last hidden states and the output head, never holding [N, V].

    hidden: [..., H]; weight: [V, H] (the lm_head weight); labels: [...];
    aux_ids / aux_mask: [..., K]. Same result as `lsap_loss(hidden @ weight.T, ...)`.

    Precision: the head matmul runs in the autocast dtype when autocast is on for the
    inputs' device (bf16 on GPU, like `nn.Linear` under autocast), else in hidden's
    dtype; per chunk the logits are widened to fp32 for the log-sum-exp, the gathers
    and ∂/∂z, and ∂/∂weight is summed over chunks in fp32. Gradients come back in
    hidden's and weight's own dtypes. impl: "eager" or "compile" (the chunk goes
    through `torch.compile`; same math). z_loss: the z-loss multiplier m (0: off),
    m · Σ LSE² over supervised positions from the chunk's LSE (OLMo-core's definition).
    """
    lam, z_loss = float(lam), float(z_loss)
    H = hidden.shape[-1]
    if weight.dim() != 2 or weight.shape[1] != H:
        raise ValueError(f"weight must be [V, H={H}], got {tuple(weight.shape)}")
    if hidden.shape[:-1] != labels.shape:
        raise ValueError(f"hidden {tuple(hidden.shape)} and labels {tuple(labels.shape)} disagree")
    V = weight.shape[0]
    flat = hidden.reshape(-1, H)
    labels_, valid, ids, mask, w = _prepare(labels, aux_ids, aux_mask, aux_weight, V, ignore_index)
    if chunk_size < 1:
        raise ValueError("chunk_size must be ≥ 1")
    dev = hidden.device.type
    dtype = torch.get_autocast_dtype(dev) if torch.is_autocast_enabled(dev) else hidden.dtype
    if hidden.dtype == torch.float64 and weight.dtype == torch.float64:
        dtype = torch.float64  # gradcheck
    with torch.autocast(dev, enabled=False):
        total, ce_sum, aux_sum, z_sum = _LSAPLinearLoss.apply(
            flat, weight, labels_, valid, ids, w, lam, chunk_size, dtype, impl, z_loss
        )
    return _finish(total, ce_sum, aux_sum, valid, mask, z_sum)
