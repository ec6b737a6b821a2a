"""Held-out metrics: loss, bits per byte, next-token accuracy, split by auxiliary targets.

What the trainer needs (`val_loss_bpb`, over `heldout_nll`) and what `lsap eval` reports
(`heldout_metrics`), plus `bpb_on_documents`: bits per byte of any model on given complete
documents with its own tokenizer, the one cross-tokenizer comparison (METHOD §5b).

Bits per byte = Σ NLL (nats) of the tokens scored / (ln 2 · Σ UTF-8 bytes of exactly those
tokens). Token bytes come from the tokenizer's canonical vocabulary (`lsap.method.token_table`);
control tokens (the document-separator EOS) have none.
"""

from __future__ import annotations

import math
import os
from typing import Any

from lsap.utils.errors import EvalError


# --------------------------------------------------------------------------- bits per byte
def bits_per_byte(nll_nats: float, n_bytes: float) -> float:
    """Bits per UTF-8 byte: Σ NLL (nats) of the tokens scored / (ln 2 · Σ bytes of exactly those
    tokens). Both sums are over the same tokens; a ratio of the two means (loss / bytes per token)
    is the same number only when both come from the same tokens."""
    if not n_bytes or n_bytes <= 0:
        raise EvalError(f"bits per byte needs the scored tokens' bytes > 0, got {n_bytes!r}")
    return float(nll_nats) / math.log(2) / float(n_bytes)


_BYTE_LENGTHS: dict[
    int, tuple
] = {}  # id(tokenizer) -> (tokenizer, lengths): one table per tokenizer object


def token_byte_lengths(tokenizer, size: int | None = None):
    """int64 numpy [max(size, tokenizer ids)]: the UTF-8 bytes each token id stands for (its
    canonical bytes, `lsap.method.token_table`); 0 for control tokens (the document separator)
    and for ids the tokenizer does not define (padded embedding rows)."""
    import numpy as np

    hit = _BYTE_LENGTHS.get(id(tokenizer))
    if hit is None or hit[0] is not tokenizer:
        from lsap.method.token_table import token_table

        t = token_table(tokenizer)
        arr = np.zeros(t.size, dtype=np.int64)
        for i, b in t.strings.items():
            arr[i] = len(b)
        hit = _BYTE_LENGTHS[id(tokenizer)] = (tokenizer, arr)
    arr = hit[1]
    return np.pad(arr, (0, size - len(arr))) if size is not None and size > len(arr) else arr


# --------------------------------------------------------------------------- held-out loss
def heldout_nll(
    shards, seq_len: int, batch_size: int, max_batches: int | None, nll_fn
) -> tuple[float, float]:
    """The one held-out loss loop (the trainer's `val_loss` and `heldout_metrics`):
    Σ NLL and the number of scored positions over `shards.iter_eval_batches(...)`.

    `nll_fn(input_ids, labels) -> (nll_sum, count)` scores one batch (CPU tensors in;
    any device out); sums are accumulated in float64. Loss = Σ NLL / count, divided once.
    """
    import torch

    tot = None
    for inp, lab in shards.iter_eval_batches(seq_len, batch_size, max_batches):
        nll_sum, count = nll_fn(inp, lab)
        part = torch.stack([torch.as_tensor(nll_sum).double(), torch.as_tensor(count).double()])
        tot = part if tot is None else tot + part
    return (0.0, 0.0) if tot is None else (float(tot[0]), float(tot[1]))


def val_loss_bpb(
    shards, seq_len: int, batch_size: int, max_batches: int | None, nll_fn, tokenizer
) -> dict:
    """The trainer's periodic held-out numbers: {"val_loss", "val_bpb"} over `heldout_nll`'s
    windows in one pass, bpb dividing by the UTF-8 bytes of exactly the labels scored (not the
    split's average bytes per token: the first windows need not hold the split's average text);
    {} when nothing was scored."""
    import torch

    lengths = torch.from_numpy(token_byte_lengths(tokenizer, shards.vocab_size))
    n_bytes = 0

    def score(inp, lab):
        nonlocal n_bytes
        n_bytes += int(lengths[lab].sum())
        return nll_fn(inp, lab)

    nll_sum, count = heldout_nll(shards, seq_len, batch_size, max_batches, score)
    if count == 0:
        return {}
    out = {"val_loss": nll_sum / count}
    if n_bytes:
        out["val_bpb"] = bits_per_byte(nll_sum, n_bytes)
    return out


def heldout_loss(
    model,
    data_dir: str | os.PathLike,
    *,
    seq_len: int = 1024,
    batch_size: int = 8,
    max_batches: int | None = None,
    tokenizer=None,
) -> dict[str, Any]:
    """Mean CE (nats/token) and bits per byte on the validation split of `data_dir`.

    Windows: consecutive (T+1)-token windows from the start of the split
    (`TokenShards.iter_eval_batches`), every position of every window counted once;
    loss = Σ NLL / #positions (sum-reduced, divided once). With `tokenizer`, checks
    that the shards were made with it, and bpb divides by the bytes of exactly the labels
    scored (without it, val_bpb is None). Returns {"val_loss", "val_bpb", "val_tokens"}
    (the first keys of `heldout_metrics`, which also gives accuracies).
    """
    m = heldout_metrics(
        model,
        data_dir,
        seq_len=seq_len,
        batch_size=batch_size,
        max_batches=max_batches,
        tokenizer=tokenizer,
    )
    return {k: m[k] for k in ("val_loss", "val_bpb", "val_tokens", "val_bytes")}


M_BUCKETS = ("0", "1", "2+")  # positions by the number of auxiliary targets they would receive


def _bucket(m):
    """Number of auxiliary targets per position → bucket index 0, 1, 2 (m ≥ 2)."""
    return m.clamp(max=2)


def heldout_metrics(
    model,
    data_dir: str | os.PathLike,
    *,
    seq_len: int = 1024,
    batch_size: int = 8,
    max_batches: int | None = None,
    tokenizer=None,
    targets=None,
) -> dict[str, Any]:
    """Held-out loss, bits per byte, next-token top-1 / top-5 accuracy and — given `targets` —
    the same split by the number m of auxiliary targets each position would receive.

    Windows as in `heldout_loss`. `targets(input_ids, labels) -> (aux_ids, aux_mask)`
    (e.g. `source_targets(...)`) gives each position's auxiliary targets; then the
    result also holds ``by_m`` = {"0" | "1" | "2+": {"share", "loss", "top1"}} and
    ``target_mass`` = the mean, over positions with m ≥ 1, of the probability the model
    puts on those targets together (METHOD §5b: LSAP moves mass there by construction).
    top-k accuracy counts ties against the gold (strictly greater logits rank above it).
    """
    import torch

    from lsap.data.shards import TokenShards

    shards = TokenShards(data_dir, "val")
    if tokenizer is not None:
        shards.check_tokenizer(tokenizer)
    shards.check_vocab(model.get_input_embeddings().weight.shape[0])
    seq_len = min(seq_len, max(1, len(shards) - 1))
    batch_size = max(1, min(batch_size, shards.n_windows(seq_len)))
    device = next(model.parameters()).device
    tot = torch.zeros(2, dtype=torch.float64)  # top1, top5
    by_m = torch.zeros(3, 3, dtype=torch.float64)  # bucket × (count, nll, top1)
    mass = torch.zeros(2, dtype=torch.float64)  # Σ target mass, positions with m ≥ 1
    lengths = (
        torch.from_numpy(token_byte_lengths(tokenizer, shards.vocab_size))
        if tokenizer is not None
        else None
    )
    n_bytes = 0

    def score(inp, lab):
        nonlocal tot, by_m, mass, n_bytes
        if lengths is not None:
            n_bytes += int(lengths[lab].sum())
        inp, lab = inp.to(device), lab.to(device)
        logits = model(input_ids=inp).logits.float()
        logp = torch.log_softmax(logits, dim=-1)
        gold = logp.gather(-1, lab.unsqueeze(-1)).squeeze(-1)  # [B, T]
        rank = (logp > gold.unsqueeze(-1)).sum(-1)  # how many tokens beat the gold
        nll = -gold
        tot += torch.stack([(rank < 1).sum(), (rank < 5).sum()]).double().cpu()
        if targets is not None:
            ids, mask = targets(inp, lab)
            ids, mask = ids.to(device), mask.to(device)
            m = mask.sum(-1)
            b = _bucket(m)
            for j in range(3):
                sel = b == j
                by_m[j] += (
                    torch.stack([sel.sum(), nll[sel].sum(), (rank[sel] < 1).sum()]).double().cpu()
                )
            p_aux = (logp.gather(-1, ids.clamp_min(0)).exp() * mask).sum(-1)
            has = m > 0
            mass += torch.stack([p_aux[has].sum(), has.sum()]).double().cpu()
        return nll.sum().cpu(), lab.numel()

    was_training = model.training
    model.eval()
    with torch.inference_mode():
        nll_sum, n = heldout_nll(shards, seq_len, batch_size, max_batches, score)
    model.train(was_training)
    count = int(n)
    if count == 0:
        raise EvalError(
            f"{data_dir}: the val split ({len(shards)} tokens) is too short for one window"
        )
    loss = nll_sum / count
    out = {
        "val_loss": loss,
        "val_bpb": bits_per_byte(nll_sum, n_bytes) if n_bytes else None,
        "val_tokens": count,
        "val_bytes": n_bytes,
        "val_top1": float(tot[0]) / count,
        "val_top5": float(tot[1]) / count,
    }
    if targets is not None:
        out["by_m"] = {
            name: {
                "share": float(by_m[j, 0]) / count,
                "loss": float(by_m[j, 1] / by_m[j, 0]) if by_m[j, 0] else None,
                "top1": float(by_m[j, 2] / by_m[j, 0]) if by_m[j, 0] else None,
            }
            for j, name in enumerate(M_BUCKETS)
        }
        out["target_mass"] = float(mass[0] / mass[1]) if mass[1] else None
    return out


def source_targets(source):
    """`targets` for `heldout_metrics` from a `TargetSource` (what the trainer uses: k, α,
    gold_outside and the map applied as in training): targets(inp, lab) -> (ids, mask)."""
    import torch

    from lsap.data.shards import Batch

    def fn(inp, lab):
        t = source(Batch(inp, lab, torch.zeros(inp.shape[0], dtype=torch.long)))
        return t.ids, t.mask

    return fn


# --------------------------------------------------------------------------- same text, two tokenizers
STRENGTH_BYTES = 300_000  # the held-out text both models of a strength ratio are scored on


def strength_documents(
    data_dir: str | os.PathLike, max_bytes: int = STRENGTH_BYTES, *, seed: int = 0
) -> list[str]:
    """Held-out documents of `data_dir` whose UTF-8 bytes together stay within `max_bytes`: the
    whole held-out split when it fits, else complete documents drawn at random across the split
    (a seeded permutation, `random.Random(seed)`; documents that would overflow are skipped, at
    least one is kept), returned in corpus order. The text a surrogate's and a base's bits per
    byte are compared on: it depends only on the corpus, its seed and val_fraction, and `seed`, so
    a surrogate's data directory and the base's (one corpus, two tokenizers) give the same. (Round
    3 took the first documents in corpus order: one stretch of one manual, not representative.)"""
    import random

    from lsap.eval.tasks import heldout_documents

    docs, _ = heldout_documents(data_dir)
    sizes = [len(d.encode("utf-8")) for d in docs]
    if sum(sizes) <= max_bytes:
        return list(docs)
    order = list(range(len(docs)))
    random.Random(seed).shuffle(order)
    keep, total = [], 0
    for i in order:
        if keep and total + sizes[i] > max_bytes:
            continue
        keep.append(i)
        total += sizes[i]
    return [docs[i] for i in sorted(keep)]


def bpb_on_documents(
    model,
    tokenizer,
    docs: list[str],
    *,
    seq_len: int = 1024,
    batch_size: int | None = None,
    per_document: bool = False,
) -> dict:
    """Bits per byte of `model` on the complete documents `docs`, with its own `tokenizer`.

    The documents are encoded as `lsap prepare` encodes them (`encode_documents`: each
    followed by the document separator) behind one leading separator, so every token of
    every document is scored, packed and cut into windows of `seq_len` labels (window j
    reads tokens [j·T, j·T + T + 1); the last one shorter); every label is scored once.
    bpb = Σ NLL / (ln 2 · Σ UTF-8 bytes of the documents): the separators carry no bytes.
    `batch_size` windows per forward (None: as many as keep the fp32 logits near 256 MiB, ≤ 64).
    Returns {"bpb", "nll", "bytes", "tokens", "documents"}; with `per_document`, also
    "doc_nll" (per document: the NLL of its tokens and of the separator after it, which sum
    to "nll") and "doc_bytes", for `lsap.eval.strength.strength_interval`.
    """
    import numpy as np
    import torch

    from lsap.data.tokenizer import document_separator, encode_documents

    if not docs:
        raise EvalError("bpb_on_documents: no documents")
    encoded = list(encode_documents(docs, tokenizer))
    ids = np.concatenate([[document_separator(tokenizer)], *encoded])
    # label j (token j + 1) belongs to the document whose tokens (and separator) hold token j + 1
    owner = torch.from_numpy(np.repeat(np.arange(len(docs)), [len(e) for e in encoded]))
    doc_nll = torch.zeros(len(docs), dtype=torch.float64)
    stream = torch.from_numpy(ids.astype(np.int64))
    n_labels = len(stream) - 1
    starts = list(range(0, n_labels, seq_len))
    if batch_size is None:
        vocab = (
            int(model.get_output_embeddings().weight.shape[0])
            if model.get_output_embeddings() is not None
            else len(tokenizer)
        )
        batch_size = max(1, min(64, (256 << 20) // (seq_len * vocab * 4)))
    device = next(model.parameters()).device
    nll = torch.zeros((), dtype=torch.float64)
    was_training = model.training
    model.eval()
    with torch.inference_mode():
        for b in range(0, len(starts), batch_size):
            rows = [stream[s : s + seq_len + 1] for s in starts[b : b + batch_size]]
            width = max(len(r) for r in rows) - 1
            inp = torch.zeros(len(rows), width, dtype=torch.long)
            lab = torch.full((len(rows), width), -100, dtype=torch.long)
            for i, r in enumerate(rows):  # right padding: earlier causal positions are unaffected
                inp[i, : len(r) - 1], lab[i, : len(r) - 1] = r[:-1], r[1:]
            logits = model(input_ids=inp.to(device)).logits.float()
            tok_nll = (
                torch.nn.functional.cross_entropy(
                    logits.flatten(0, 1),
                    lab.to(device).flatten(),
                    ignore_index=-100,
                    reduction="none",
                )
                .double()
                .cpu()
                .view(len(rows), width)
            )
            nll += tok_nll.sum()
            if per_document:
                for i, s0 in enumerate(starts[b : b + batch_size]):
                    n = len(rows[i]) - 1
                    doc_nll.index_add_(0, owner[s0 : s0 + n], tok_nll[i, :n])
    model.train(was_training)
    n_bytes = sum(len(d.encode("utf-8")) for d in docs)
    out = {
        "bpb": bits_per_byte(float(nll), n_bytes),
        "nll": float(nll),
        "bytes": n_bytes,
        "tokens": n_labels,
        "documents": len(docs),
    }
    if per_document:
        out["doc_nll"] = doc_nll.tolist()
        out["doc_bytes"] = [len(d.encode("utf-8")) for d in docs]
    return out


def document_fields(model, tokenizer, docs: list[str], *, seq_len: int) -> dict:
    """An eval.json's held-out-document entries: "doc_bpb", and per document "doc_nll" (nats,
    rounded to 1e-4) and "doc_bytes", from which `lsap.eval.strength.documents_strength` gives
    a surrogate's strength with its document-bootstrap interval."""
    r = bpb_on_documents(model, tokenizer, docs, seq_len=seq_len, per_document=True)
    return {
        "doc_bpb": r["bpb"],
        "doc_nll": [round(x, 4) for x in r["doc_nll"]],
        "doc_bytes": r["doc_bytes"],
    }
