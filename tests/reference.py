"""Naive, obviously correct reference implementations (float64, Python loops).

Every fast path in lsap is compared against these. They follow METHOD §3–§4 literally.
"""

from __future__ import annotations

import torch


def ref_select(logits, next_base_ids, b2s, s2b, k, alpha, valid=None, ignore_index=-100):
    """METHOD §3, position by position. Returns a list (per [b][t]) of base-id lists."""
    B, T, V = logits.shape
    out = []
    for b in range(B):
        row = []
        for t in range(T):
            lab = int(next_base_ids[b, t])
            if lab == ignore_index or lab < 0 or (valid is not None and not bool(valid[b, t])):
                row.append([])
                continue
            p = torch.softmax(logits[b, t].double(), dim=-1)
            gold_s = int(b2s[lab])
            cands = []
            for s in range(V):
                if s >= s2b.numel() or int(s2b[s]) < 0:
                    continue  # outside Σ∩ (or padded row)
                if s == gold_s:
                    continue
                cands.append((float(p[s]), s))
            cands.sort(key=lambda c: (-c[0], c[1]))
            chosen = [int(s2b[s]) for pr, s in cands[:k] if pr > alpha]
            row.append(chosen)
        out.append(row)
    return out


def ref_loss(logits, labels, aux_lists, lam, ignore_index=-100, weights=None):
    """METHOD §4 with float64 log_softmax. aux_lists: per flattened position a list of ids.

    Returns (loss_sum, ce_sum, aux_sum, n_labels, n_aux).
    """
    V = logits.shape[-1]
    z = logits.reshape(-1, V).double()
    labels = labels.reshape(-1)
    logp = torch.log_softmax(z, dim=-1)
    ce = torch.zeros((), dtype=torch.float64)
    aux = torch.zeros((), dtype=torch.float64)
    n_lab = n_aux = 0
    for i in range(z.shape[0]):
        if int(labels[i]) == ignore_index:
            continue
        n_lab += 1
        ce = ce - logp[i, int(labels[i])]
        for j, t in enumerate(aux_lists[i]):
            wt = 1.0 if weights is None else float(weights[i][j])
            aux = aux - wt * logp[i, t]
            n_aux += 1
    return ce + lam * aux, ce, aux, n_lab, n_aux


def lists_from_mask(aux_ids, aux_mask):
    """[..., K] ids + mask → list over flattened positions of id lists."""
    K = aux_ids.shape[-1]
    ids, mask = aux_ids.reshape(-1, K), aux_mask.reshape(-1, K)
    return [[int(x) for x, m in zip(ids[i], mask[i]) if m] for i in range(ids.shape[0])]


def ref_loss_zloss(logits, labels, aux_lists, lam, z_mult, ignore_index=-100):
    """METHOD §4 plus the z-loss, float64: ref_loss's total + z_mult · Σ_i LSE_i² over
    supervised positions i (OLMo-core's `cross_entropy_loss(compute_z_loss=True)`).

    Returns (loss_sum, ce_sum, aux_sum, z_sum) with z_sum unscaled.
    """
    V = logits.shape[-1]
    z = logits.reshape(-1, V).double()
    labels = labels.reshape(-1)
    total, ce, aux, _, _ = ref_loss(logits, labels, aux_lists, lam, ignore_index)
    zs = torch.zeros((), dtype=torch.float64)
    for i in range(z.shape[0]):
        if int(labels[i]) != ignore_index:
            zs = zs + torch.logsumexp(z[i], dim=-1) ** 2
    return total + z_mult * zs, ce, aux, zs
