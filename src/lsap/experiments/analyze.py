"""The paper's Table 1 (METHOD §7): how many vocabulary entries a model puts above α.

For a model, a text dataset and α: the average, over every counted position of n
examples, of |{v : softmax(z)_v > α}| — the number of candidates a surrogate could
propose at that threshold. Rows (model, α), columns datasets, plus AVG.

Example sampling (`sample_windows`), for one (tokenizer, dataset, seed):

1. Read the dataset's documents (`lsap.data.shards.iter_documents`: fixed corpus order; at
   most `max_documents` of them when given).
2. Shuffle the document order with `numpy.random.default_rng(seed)`.
3. Tokenize the documents in that order with the model's own tokenizer
   (`add_special_tokens=False`; text that spells a special token stays plain text)
   and pack them back to back, each followed by the tokenizer's document separator
   (its `<|endoftext|>`-like token, else its eos) — the way pretraining data is packed.
4. Cut the packed stream into consecutive windows of `seq_len` tokens; the first `n`
   windows are the n examples. A document longer than the rest of a window continues
   in the next one; nothing is padded, so every one of the n · seq_len positions is
   counted (the prediction at position t is for token t + 1 of the window).

So a seed fixes the examples exactly, different seeds give different documents, and a
dataset that holds fewer than n · seq_len tokens is an error (`DataTooSmall`) that says
how many windows it does hold. Only as many documents are tokenized as the n windows
need.

The aux variant (`count_aux`, `analyze --base TOK`) counts what LSAP would actually add
(METHOD §3): windows of seq_len + 1 tokens of the *base* tokenization (sampled the same
way), translated with F_b→s so the model sees only Σ∩ tokens (compacted, METHOD §2);
at each of the seq_len positions, `select_aux_targets` with the gold next base token
excluded, non-Σ∩ tokens excluded, top-k, p > α. Positions whose input token is outside
Σ∩ get no targets and count as 0: the mean is auxiliary targets per supervised base token.

Pure tensor functions (`count_above`, `count_aux`) carry the statistic; `analyze()`
runs models over datasets; `lsap.experiments.analyze_output` formats the result.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

STAT_ABOVE = "above_alpha"
STAT_AUX = "aux_targets"


from lsap.utils.errors import AnalyzeError  # noqa: E402,F401  (re-exported)


class DataTooSmall(AnalyzeError):
    """The dataset holds fewer than n windows of seq_len tokens."""


# --------------------------------------------------------------------------- statistic
def _check_alphas(alphas: Iterable[float]) -> list[float]:
    out = [float(a) for a in alphas]
    if not out:
        raise AnalyzeError("give at least one α")
    for a in out:
        if not 0.0 < a < 1.0 or math.isnan(a):
            raise AnalyzeError(f"α must lie in (0, 1), got {a} (the paper uses 0.01 0.05 0.2)")
    return out


def _chunk(V: int, budget: int = 1 << 26) -> int:
    """Rows per float32 [rows, V] buffer of about `budget` elements."""
    return max(1, budget // max(V, 1))


def count_above(
    logits: torch.Tensor,
    mask: torch.Tensor | None,
    alphas: Sequence[float],
    chunk_size: int | None = None,
) -> dict[float, tuple[int, int]]:
    """Per α: (Σ over counted positions of |{v : p_v > α}|, number of counted positions).

    logits: [B, T, V] (any float dtype; softmax is taken in float32 over all V rows).
    mask: bool [B, T], True = count this position (None = all).
    chunk_size: positions per softmax, to bound the [chunk, V] float32 buffer
        (default: `_chunk(V)`, ~2^26 elements = 256 MiB).
    The mean is sum / count.
    """
    alphas = _check_alphas(alphas)
    if logits.dim() != 3:
        raise ValueError(f"logits must be [B, T, V], got shape {tuple(logits.shape)}")
    B, T, V = logits.shape
    chunk_size = chunk_size or _chunk(V)
    flat = logits.reshape(B * T, V)
    if mask is None:
        rows = torch.arange(B * T, device=logits.device)
    else:
        if mask.shape != (B, T):
            raise ValueError(f"mask must be [B, T] = {(B, T)}, got {tuple(mask.shape)}")
        rows = mask.reshape(-1).to(logits.device).bool().nonzero().squeeze(-1)
    thr = torch.tensor(alphas, dtype=torch.float32, device=logits.device)
    sums = torch.zeros(len(alphas), dtype=torch.long, device=logits.device)
    for start in range(0, rows.numel(), chunk_size):
        p = torch.softmax(flat[rows[start : start + chunk_size]].float(), dim=-1)
        for j in range(len(alphas)):
            sums[j] += (p > thr[j]).sum()
    n = int(rows.numel())
    return {a: (int(s), n) for a, s in zip(alphas, sums.tolist())}


def count_aux(
    logits: torch.Tensor,
    next_base_ids: torch.Tensor,
    vmap,
    alphas: Sequence[float],
    k: int = 15,
    valid: torch.Tensor | None = None,
    supervised: torch.Tensor | None = None,
) -> dict[float, tuple[int, int]]:
    """Per α: (Σ |v_i| over supervised positions, number of supervised positions).

    logits: [B, T, V_s] surrogate logits at base positions (scattered back, METHOD §2).
    next_base_ids: [B, T] gold next base ids (negative = no label).
    valid: bool [B, T], the position's own input token is in Σ∩ (else no targets).
    supervised: bool [B, T] positions in the denominator (default: those with a label);
    positions without valid surrogate predictions count as 0 targets.
    |v_i| is what `select_aux_targets` keeps (gold and non-Σ∩ excluded, top-k, p > α).
    """
    from lsap.method.targets import select_aux_targets

    alphas = _check_alphas(alphas)
    if supervised is None:
        supervised = next_base_ids >= 0
    sup = supervised.to(logits.device).bool()
    labels = torch.where(sup, next_base_ids.to(logits.device), -100)
    out = {}
    for a in alphas:
        _, keep = select_aux_targets(
            logits, labels, vmap, k=k, alpha=a, valid=valid, chunk_size=_chunk(logits.shape[-1])
        )
        out[a] = (int(keep.sum()), int(sup.sum()))
    return out


# --------------------------------------------------------------------------- sampling
from lsap.data.tokenizer import document_separator, encode_documents, plain_encoder  # noqa: E402,F401  (one rule, in tokenizer.py)


def read_documents(source: str, max_documents: int | None = None) -> list[str]:
    """The dataset's documents in corpus order (see `lsap.data.shards.iter_documents`)."""
    from lsap.data.shards import iter_documents

    docs = []
    for text in iter_documents(source):
        docs.append(text)
        if max_documents is not None and len(docs) >= max_documents:
            break
    if not docs:
        raise AnalyzeError(f"dataset {source!r} has no documents")
    return docs


def sample_windows(
    docs: Sequence[str],
    tok,
    n: int,
    seq_len: int,
    seed: int,
    batch_docs: int = 64,
    name: str = "dataset",
) -> torch.Tensor:
    """n examples [n, seq_len] (LongTensor) per the module docstring's definition."""
    if n < 1 or seq_len < 1:
        raise AnalyzeError(f"n and seq_len must be ≥ 1, got n={n}, seq_len={seq_len}")
    order = np.random.default_rng(seed).permutation(len(docs))
    need = n * seq_len
    chunks: list[np.ndarray] = []
    have = 0
    for ids in encode_documents((docs[int(i)] for i in order), tok, batch_docs):
        chunks.append(ids)
        have += len(ids)
        if have >= need:
            break
    if have < need:
        raise DataTooSmall(
            f"{name} holds {have:,} tokens with this tokenizer = {have // seq_len} windows of "
            f"seq_len {seq_len}, fewer than n={n}: lower --n (≤ {have // seq_len}) or --seq-len"
        )
    stream = np.concatenate(chunks)[:need]
    return torch.from_numpy(stream.reshape(n, seq_len))


# --------------------------------------------------------------------------- inputs
from lsap.data.corpora import check_dataset_spec  # noqa: E402,F401  (re-exported; lives with the corpora)
from lsap.surrogate.load import MODEL_HELP, check_model_spec, gguf_has_tokenizer  # noqa: E402,F401  (re-exported)


# --------------------------------------------------------------------------- runner
@dataclass
class Row:
    """One table row: (model, statistic, α) → per dataset {mean, positions, sum, seeds}."""

    model: str
    statistic: str
    alpha: float
    datasets: dict[str, dict[str, Any]]

    @property
    def avg(self) -> float:
        vals = [d["mean"] for d in self.datasets.values()]
        return float(sum(vals) / len(vals)) if vals else float("nan")

    def to_dict(self) -> dict:
        return {
            "model": self.model,
            "statistic": self.statistic,
            "alpha": self.alpha,
            "datasets": self.datasets,
            "avg": self.avg,
        }


def rows_from_counts(model: str, statistic: str, counts: dict) -> list[Row]:
    """counts[α][dataset][seed] = (sum, positions) → Rows; a dataset's mean = mean over seeds."""
    rows = []
    for a, per_ds in counts.items():
        ds = {}
        for name, per_seed in per_ds.items():
            seeds = {
                str(s): {"mean": sm / max(c, 1), "positions": c, "sum": sm}
                for s, (sm, c) in per_seed.items()
            }
            ds[name] = {
                "mean": float(np.mean([v["mean"] for v in seeds.values()])),
                "positions": int(sum(v["positions"] for v in seeds.values())),
                "sum": int(sum(v["sum"] for v in seeds.values())),
                "seeds": seeds,
            }
        rows.append(Row(model, statistic, a, ds))
    return rows


def _forward_logits(model, ids: torch.Tensor, attn: torch.Tensor | None = None) -> torch.Tensor:
    kw = {} if attn is None else {"attention_mask": attn}
    return model(input_ids=ids, use_cache=False, **kw).logits


def analyze(
    models: Sequence[str],
    datasets: Sequence[str],
    alphas: Sequence[float] = (0.01, 0.05, 0.2),
    n: int = 5000,
    seeds: Sequence[int] = (21, 42, 67),
    seq_len: int = 1024,
    batch_size: int = 8,
    device: str | None = None,
    base: str | None = None,
    k: int = 15,
    base_vocab_size: int | None = None,
    max_documents: int | None = None,
    progress: bool = True,
    log=print,
) -> dict:
    """Run Table 1; returns {"settings": ..., "rows": [Row.to_dict(), ...]}.

    Everything cheap is validated first (names, GGUF headers, α, and — by sampling
    the examples with the model's tokenizer — that every dataset holds n windows);
    then each model is loaded once and run over all (dataset, seed) examples.
    With `base`, also the aux-target rows for that base tokenizer (see module doc).
    """
    from tqdm.auto import tqdm

    from lsap.data.tokenizer import load_tokenizer
    from lsap.surrogate.load import inference_device_dtype, load_surrogate, load_surrogate_with_map

    alphas = _check_alphas(alphas)
    descriptions = _validate(models, datasets, seeds, n, seq_len, batch_size, base)
    docs = {
        d: read_documents(
            d, max_documents if not d.startswith("hf:") else (max_documents or 50_000)
        )
        for d in datasets
    }
    # Sample every example before loading any weights: a too-small dataset fails fast.
    toks = {m: load_tokenizer(m) for m in models}
    examples = {
        (m, d, s): sample_windows(docs[d], toks[m], n, seq_len, s, name=d)
        for m in models
        for d in datasets
        for s in seeds
    }
    base_tok, base_examples = None, {}
    if base is not None:
        base_tok = load_tokenizer(base)
        base_examples = {
            (d, s): sample_windows(docs[d], base_tok, n, seq_len + 1, s, name=d)
            for d in datasets
            for s in seeds
        }

    dev, dtype = inference_device_dtype(device)
    rows: list[dict] = []
    for m in models:
        log(f"[lsap] loading {m} ({str(dtype).removeprefix('torch.')}, {dev}) ...")
        vmap, pad_id = None, 0
        if base is None:
            model, _ = load_surrogate(m, dtype=dtype, device=dev)
        else:
            sw = load_surrogate_with_map(
                m, base_tok, base_vocab_size, dtype=dtype, device=dev, tokenizer=toks[m]
            )
            model, vmap, pad_id = sw.model, sw.vmap, sw.pad_id
        n_batches = math.ceil(n / batch_size) * len(datasets) * len(seeds) * (2 if base else 1)
        bar = tqdm(
            total=n_batches, desc=f"analyze {m}", unit="batch", disable=not progress, smoothing=0.1
        )
        counts, aux = _count_model(
            model, vmap, pad_id, examples, base_examples, m, datasets, seeds, alphas, k,
            batch_size, dev, bar,
        )  # fmt: skip
        bar.close()
        rows += [r.to_dict() for r in rows_from_counts(m, STAT_ABOVE, counts)]
        if vmap is not None:
            rows += [r.to_dict() for r in rows_from_counts(m, STAT_AUX, aux)]
        del model
    settings = {
        "models": list(models),
        "datasets": list(datasets),
        "dataset_descriptions": descriptions,
        "alphas": alphas,
        "n": n,
        "seeds": list(seeds),
        "seq_len": seq_len,
        "batch_size": batch_size,
        "device": str(dev),
        "dtype": str(dtype).replace("torch.", ""),
        "base": base,
        "k": k,
        "max_documents": max_documents,
        "sampling": SAMPLING,
    }
    return {"settings": settings, "rows": rows}


SAMPLING = (
    "documents shuffled with numpy default_rng(seed), tokenized with the model's "
    "tokenizer, packed with a document separator after each, first n windows of "
    "seq_len tokens; every position counted"
)


def _validate(models, datasets, seeds, n, seq_len, batch_size, base) -> dict:
    """Everything cheap, before any document is read: sizes, names, GGUF headers, the base
    tokenizer. Returns each dataset's description."""
    from lsap.data.tokenizer import load_tokenizer

    if n < 1 or seq_len < 2 or batch_size < 1:
        raise AnalyzeError(
            f"need n ≥ 1, seq_len ≥ 2, batch_size ≥ 1 (got {n}, {seq_len}, {batch_size})"
        )
    if not models or not datasets or not seeds:
        raise AnalyzeError("give at least one model, one dataset and one seed")
    if len(set(seeds)) != len(seeds):
        raise AnalyzeError(f"seeds repeat: {list(seeds)}")
    for m in models:
        check_model_spec(m)
    descriptions = {d: check_dataset_spec(d) for d in datasets}
    if base is not None:
        load_tokenizer(base)  # unknown names fail here, before any model
    return descriptions


def _count_model(
    model,
    vmap,
    pad_id,
    examples,
    base_examples,
    m,
    datasets,
    seeds,
    alphas,
    k,
    batch_size,
    dev,
    bar,
) -> tuple[dict, dict]:
    """One model over every (dataset, seed): tokens above each α, and with a vocabulary map
    the auxiliary targets per base token. Returns ({α: {d: {s: (sum, count)}}}, same for aux)."""
    counts: dict = {a: {d: {} for d in datasets} for a in alphas}
    aux: dict = {a: {d: {} for d in datasets} for a in alphas}

    def above(ids):
        return count_above(_forward_logits(model, ids), None, alphas)

    def targets(ids):
        return _aux_batch(model, ids, vmap, alphas, k, pad_id)

    with torch.inference_mode():
        for d in datasets:
            for s in seeds:
                tot = _accumulate(examples[m, d, s], batch_size, dev, above, bar, f"{d} seed {s}")
                for a in alphas:
                    counts[a][d][s] = tot[a]
                if vmap is None:
                    continue
                tot = _accumulate(
                    base_examples[d, s], batch_size, dev, targets, bar, f"{d} seed {s} aux"
                )
                for a in alphas:
                    aux[a][d][s] = tot[a]
    return counts, aux


def _accumulate(x, batch_size, dev, count, bar, label) -> dict[float, tuple[int, int]]:
    """Sum a per-batch counter {α: (sum, count)} over the windows `x`, batch by batch."""
    tot: dict[float, list[int]] = {}
    for i in range(0, len(x), batch_size):
        for a, (sm, c) in count(x[i : i + batch_size].to(dev)).items():
            t = tot.setdefault(a, [0, 0])
            t[0] += sm
            t[1] += c
        bar.update(1)
        bar.set_postfix_str(label)
    return {a: tuple(t) for a, t in tot.items()}


def _aux_batch(
    model, xb: torch.Tensor, vmap, alphas, k, pad_id: int = 0
) -> dict[float, tuple[int, int]]:
    """One batch of base windows [B, T+1] → aux-target counts (METHOD §2–§3)."""
    from lsap.method.targets import compact_forward, translate_inputs

    inp, labels = xb[:, :-1], xb[:, 1:]
    si = translate_inputs(inp, vmap, pad_id)
    logits = compact_forward(
        lambda ids, cmask: _forward_logits(model, ids, cmask.long()), si, pad_id
    )
    if logits is None:
        return {a: (0, int(labels.numel())) for a in alphas}
    return count_aux(logits, labels, vmap, alphas, k=k, valid=si.attention_mask.bool())
