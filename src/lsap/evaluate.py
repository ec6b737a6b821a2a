"""Evaluation: held-out loss / bits per byte, offline zero-shot tasks, lm-evaluation-harness.

Three pieces, all usable from Python (the `lsap eval` command wires them together):

- `heldout_loss(model, data_dir)`: mean next-token cross-entropy (nats per token) over
  the first windows of the prepared *validation* split, and bits per byte
  (`bits_per_byte`).
- `build_offline_tasks(data_dir, out)`: two zero-shot tasks built deterministically
  from the held-out documents of the corpus a data directory was prepared from,
  written as jsonl + lm-eval YAML configs (`lsap_lastword`, `lsap_nextsent`).
- `run_lm_eval(model, tokenizer, tasks, ...)`: lm-evaluation-harness on an
  already-loaded model (`HFLM(pretrained=model)`), zero-shot; lm-eval is imported
  lazily (``pip install lsap[eval]``).

Held-out documents are exactly the documents `lsap prepare` sent to the ``val`` split:
the manifest records the source, seed and val_fraction, and `lsap.data.is_val` decides
per document index. A document that went to ``train`` is never read for a task.
"""

from __future__ import annotations

import difflib
import hashlib
import json
import math
import os
import random
import re
from pathlib import Path
from typing import Any

# The paper's benchmarks (Table 2) as lm-eval task names, with the metric reported
# per task. The paper does not say which accuracy it reports; we follow the OLMo /
# lm-eval convention: length-normalised accuracy for the multiple-choice tasks whose
# choices differ in length, plain accuracy for LAMBADA, WinoGrande and TruthfulQA-MC2.
PAPER_TASKS: dict[str, str] = {
    "hellaswag": "acc_norm",
    "piqa": "acc_norm",
    "lambada_openai": "acc",
    "arc_easy": "acc_norm",
    "arc_challenge": "acc_norm",
    "winogrande": "acc",
    "openbookqa": "acc_norm",
    "truthfulqa_mc2": "acc",
}
# Minimal pairs (BLiMP-style, `minimal_pair_examples`): informative for small models.
# Swap/replace keep the length, so plain accuracy; the next-sentence pair compares two
# different sentences, so per-byte normalised accuracy.
PAIR_TASKS: dict[str, str] = {"lsap_pairs_swap": "acc", "lsap_pairs_replace": "acc", "lsap_pairs_nextsent": "acc_norm"}
OFFLINE_TASKS: dict[str, str] = {"lsap_lastword": "acc", "lsap_nextsent": "acc_norm", **PAIR_TASKS}
TASK_SETS: dict[str, dict[str, str]] = {"paper": PAPER_TASKS, "offline": OFFLINE_TASKS, "pairs": PAIR_TASKS}

# Bump when the construction of the offline tasks changes (part of their hash).
OFFLINE_BUILD_VERSION = 2


from lsap.errors import EvalError  # noqa: E402,F401  (re-exported)


# --------------------------------------------------------------------------- held-out loss
def bits_per_byte(loss_nats: float, bytes_per_token: float) -> float:
    """Bits per UTF-8 byte from a mean loss in nats per token.

    total bits / total bytes = (N_tok · loss / ln 2) / (N_tok · bytes_per_token), so
    bpb = loss / ln 2 / bytes_per_token. `bytes_per_token` is the split's UTF-8 bytes
    of document text divided by its tokens (document-separator EOS tokens included,
    as in the loss), from the data manifest. Unlike the loss it does not depend on
    the tokenizer, so runs with different tokenizers can be compared on it.
    """
    if not bytes_per_token or bytes_per_token <= 0:
        raise EvalError(f"bytes_per_token must be > 0, got {bytes_per_token!r}")
    return float(loss_nats) / math.log(2) / float(bytes_per_token)


def heldout_nll(shards, seq_len: int, batch_size: int, max_batches: int | None, nll_fn) -> tuple[float, float]:
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


def heldout_loss(model, data_dir: str | os.PathLike, *, seq_len: int = 1024, batch_size: int = 8,
                 max_batches: int | None = None, tokenizer=None) -> dict[str, Any]:
    """Mean CE (nats/token) and bits per byte on the validation split of `data_dir`.

    Windows: consecutive (T+1)-token windows from the start of the split
    (`TokenShards.iter_eval_batches`), every position of every window counted once;
    loss = Σ NLL / #positions (sum-reduced, divided once). With `tokenizer`, checks
    that the shards were made with it. Returns {"val_loss", "val_bpb", "val_tokens"}
    (the first keys of `heldout_metrics`, which also gives accuracies).
    """
    m = heldout_metrics(model, data_dir, seq_len=seq_len, batch_size=batch_size, max_batches=max_batches,
                        tokenizer=tokenizer)
    return {k: m[k] for k in ("val_loss", "val_bpb", "val_tokens")}


M_BUCKETS = ("0", "1", "2+")  # positions by the number of auxiliary targets they would receive


def _bucket(m):
    """Number of auxiliary targets per position → bucket index 0, 1, 2 (m ≥ 2)."""
    return m.clamp(max=2)


def heldout_metrics(model, data_dir: str | os.PathLike, *, seq_len: int = 1024, batch_size: int = 8,
                    max_batches: int | None = None, tokenizer=None, targets=None) -> dict[str, Any]:
    """Held-out loss, bits per byte, next-token top-1 / top-5 accuracy and — given `targets` —
    the same split by the number m of auxiliary targets each position would receive.

    Windows as in `heldout_loss`. `targets(input_ids, labels) -> (aux_ids, aux_mask)`
    (e.g. `surrogate_targets(...)`) gives each position's auxiliary targets; then the
    result also holds ``by_m`` = {"0" | "1" | "2+": {"share", "loss", "top1"}} and
    ``target_mass`` = the mean, over positions with m ≥ 1, of the probability the model
    puts on those targets together (METHOD §5b: LSAP moves mass there by construction).
    top-k accuracy counts ties against the gold (strictly greater logits rank above it).
    """
    import torch

    from lsap.data import TokenShards

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

    def score(inp, lab):
        nonlocal tot, by_m, mass
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
                by_m[j] += torch.stack([sel.sum(), nll[sel].sum(), (rank[sel] < 1).sum()]).double().cpu()
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
        raise EvalError(f"{data_dir}: the val split ({len(shards)} tokens) is too short for one window")
    loss = nll_sum / count
    bpt = shards.bytes_per_token
    out = {"val_loss": loss, "val_bpb": bits_per_byte(loss, bpt) if bpt else None, "val_tokens": count,
           "val_top1": float(tot[0]) / count, "val_top5": float(tot[1]) / count}
    if targets is not None:
        out["by_m"] = {name: {"share": float(by_m[j, 0]) / count,
                              "loss": float(by_m[j, 1] / by_m[j, 0]) if by_m[j, 0] else None,
                              "top1": float(by_m[j, 2] / by_m[j, 0]) if by_m[j, 0] else None}
                       for j, name in enumerate(M_BUCKETS)}
        out["target_mass"] = float(mass[0] / mass[1]) if mass[1] else None
    return out


def surrogate_targets(surrogate, vmap, *, k: int = 15, alpha: float = 0.05, pad_id: int = 0):
    """`targets` for `heldout_metrics`: the auxiliary targets LSAP would give each held-out
    position (`lsap.targets.propose_targets`, METHOD §3)."""
    from lsap.targets import propose_targets

    dev = next(surrogate.parameters()).device

    def fn(inp, lab):
        ids, mask, _ = propose_targets(surrogate, inp.to(dev), lab.to(dev), vmap.to(dev), k, alpha, pad_id=pad_id)
        return ids, mask

    return fn


# --------------------------------------------------------------------------- held-out documents
def heldout_documents(data_dir: str | os.PathLike) -> tuple[list[str], dict]:
    """The validation documents of a prepared data directory, in corpus order.

    Re-reads the source named in the manifest and keeps the documents that
    `lsap.data.is_val(index, seed, val_fraction)` sent to ``val`` — never a training
    document. Returns (documents, identity) where identity = {source, seed,
    val_fraction} names the held-out set independently of the tokenizer.
    """
    from lsap.data import DataError, is_val, iter_documents

    mpath = Path(data_dir) / "manifest.json"
    if not mpath.is_file():
        raise EvalError(f"{data_dir}: no manifest.json (a data directory from `lsap prepare` is needed)")
    args = json.loads(mpath.read_text())["args"]
    seed, vf, source = int(args["seed"]), float(args["val_fraction"]), args["source"]
    if vf <= 0:
        raise EvalError(f"{data_dir} was prepared with val_fraction=0: there are no held-out documents")
    try:
        docs = [d for i, d in enumerate(iter_documents(source)) if is_val(i, seed, vf)]
    except DataError as e:
        raise EvalError(f"cannot re-read the corpus of {data_dir}: {e}") from e
    if not docs:
        raise EvalError(f"{data_dir}: no held-out documents (source {source!r}, val_fraction {vf}); "
                        "prepare with a larger --val-fraction")
    return docs, {"source": source, "seed": seed, "val_fraction": vf}


# --------------------------------------------------------------------------- offline tasks
_WORD_END = re.compile(r"^(?P<core>[A-Za-z][A-Za-z'\-]*[A-Za-z])[.,;:!?\"')\]]*$")
_SENT_SPLIT = re.compile(r"(?:(?<=[.!?])|(?<=[.!?][\"')\]]))\s+(?=[\"'(\[]?[A-Z])")


def _normalise(doc: str) -> str:
    return " ".join(doc.split())


def lastword_examples(docs: list[str], *, passage_words: int = 64, min_context_words: int = 16) -> list[dict]:
    """LAMBADA-style examples: {"context", "target"}, in document order.

    Each document's whitespace is collapsed to single spaces and its words cut into
    consecutive non-overlapping windows of `passage_words` words. In a window the
    target is the *last* word that is a plain word (letters, inner ' or -, at least
    2 letters, optionally followed by closing punctuation, which is dropped) and has
    at least `min_context_words` words before it inside the window; the context is
    those preceding words of the window. Windows without such a word are skipped.
    The model is scored by whether the target (after one space) is its greedy
    continuation (lm-eval `loglikelihood`, metric `acc` = is_greedy).
    """
    out = []
    for doc in docs:
        words = _normalise(doc).split(" ")
        for s in range(0, len(words) - min_context_words, passage_words):
            window = words[s:s + passage_words]
            for e in range(len(window) - 1, min_context_words - 1, -1):
                m = _WORD_END.match(window[e])
                if m:
                    out.append({"context": " ".join(window[:e]), "target": m.group("core")})
                    break
    return out


def _sentences(doc: str, min_words: int, max_words: int, max_chars: int) -> list[str | None]:
    """Sentences of a normalised document; unusable ones (word / character bounds) become None."""
    sents = _SENT_SPLIT.split(doc)
    return [s if min_words <= len(s.split(" ")) <= max_words and len(s) <= max_chars else None for s in sents]


def nextsent_examples(docs: list[str], *, seed: int = 1234, context_sentences: int = 2, min_words: int = 4,
                      max_words: int = 40, max_chars: int = 300, n_choices: int = 4) -> list[dict]:
    """Multiple-choice next-sentence examples: {"context", "choices", "label"}.

    Documents (whitespace collapsed) are split into sentences at whitespace that
    follows ., ! or ? (optionally plus one closing quote/bracket) and precedes a
    capital letter (optionally behind an opening quote/bracket); a sentence is usable
    when it has `min_words`..`max_words` words and at most `max_chars` characters
    (code blocks collapsed into one "sentence" are left out). Walking each document, position i is
    an example when sentences i-c+1..i+1 (c = `context_sentences`) are all usable;
    the context is sentences i-c+1..i, the answer sentence i+1, and the walk then
    jumps past the answer (examples do not overlap). The `n_choices - 1` distractors
    are usable sentences drawn uniformly, with one `random.Random(seed)` consumed in
    example order, from the *other* held-out documents (from the same document at
    least 20 sentences away when there is only one), distinct, never equal to the
    answer and (with several documents) neither text found in the example's own
    document nor drawn from a document that repeats the example's passage; the
    answer's position among the choices is drawn from the same generator.
    Metrics: acc and acc_norm (log-likelihood per byte of each choice).
    """
    rng = random.Random(seed)
    norm = [_normalise(d) for d in docs]
    per_doc = [_sentences(d, min_words, max_words, max_chars) for d in norm]
    pool = [(di, si, s) for di, sents in enumerate(per_doc) for si, s in enumerate(sents) if s is not None]
    single = len({di for di, _, _ in pool}) < 2
    out = []
    for di, sents in enumerate(per_doc):
        i = context_sentences - 1
        while i + 1 < len(sents):
            window = sents[i - context_sentences + 1:i + 2]
            if any(s is None for s in window):
                i += 1
                continue
            answer = window[-1]
            passage = " ".join(window)
            distractors: list[str] = []
            for _ in range(1000):
                if len(distractors) == n_choices - 1:
                    break
                dj, sj, s = pool[rng.randrange(len(pool))]
                if single:
                    ok = abs(sj - (i + 1)) >= 20
                else:  # not from a document that repeats this passage or holds the sentence
                    ok = dj != di and s not in norm[di] and passage not in norm[dj]
                if ok and s != answer and s not in distractors:
                    distractors.append(s)
            if len(distractors) == n_choices - 1:
                label = rng.randrange(n_choices)
                choices = distractors[:label] + [answer] + distractors[label:]
                out.append({"context": " ".join(window[:-1]), "choices": choices, "label": label})
            i += context_sentences + 1
    return out


_PLAIN_WORD = re.compile(r"^[A-Za-z]+$")


def _pair_sentences(docs: list[str], min_words: int, max_words: int, max_chars: int) -> list[list[str]]:
    """Per document, its prose sentences: usable length and ≥ 80% plain words (no code)."""
    out = []
    for d in docs:
        sents = []
        for sent in _sentences(_normalise(d), min_words, max_words, max_chars):
            if sent is None:
                continue
            words = sent.split(" ")
            if sum(bool(_PLAIN_WORD.match(w.strip(".,;:!?\"'()"))) for w in words) >= 0.8 * len(words):
                sents.append(sent)
        out.append(sents)
    return out


def minimal_pair_examples(docs: list[str], *, seed: int = 1234, min_words: int = 6, max_words: int = 30,
                          max_chars: int = 220, band: int = 10) -> dict[str, list[dict]]:
    """BLiMP-style minimal pairs from held-out documents: {task: [{"context", "choices", "label"}]}.

    Each example's choices are [original, corrupted] (label 0); a model scores a point when
    it gives the original the higher log-likelihood. Sentences are the prose sentences of
    the documents (split as in `nextsent_examples`; `min_words`..`max_words` words, at
    most `max_chars` characters, ≥ 80% plain alphabetic words, so code lines are left out).
    One `random.Random(seed)` is consumed in sentence order; per sentence:

    - ``lsap_pairs_swap``: two adjacent plain words (different, not the first word) swapped;
    - ``lsap_pairs_replace``: one plain word (not the first) replaced by a word of about the
      same frequency: drawn from the `band` words on either side of it in the frequency
      ranking of the held-out plain words (lower-cased), capitalisation kept;
    - ``lsap_pairs_nextsent``: context = a sentence, choices = [the next sentence of its
      document, a sentence drawn from another document] (`nextsent_examples` with one
      context sentence and two choices, the original placed first).
    """
    from collections import Counter

    rng = random.Random(seed)
    per_doc = _pair_sentences(docs, min_words, max_words, max_chars)
    freq = Counter(w.lower() for sents in per_doc for sent in sents for w in sent.split(" ") if _PLAIN_WORD.match(w))
    ranked = [w for w, _ in sorted(freq.items(), key=lambda kv: (-kv[1], kv[0]))]
    rank = {w: i for i, w in enumerate(ranked)}
    swap, replace = [], []
    for sents in per_doc:
        for sent in sents:
            words = sent.split(" ")
            cand = [i for i in range(1, len(words) - 1) if _PLAIN_WORD.match(words[i])
                    and _PLAIN_WORD.match(words[i + 1]) and words[i].lower() != words[i + 1].lower()]
            if cand:
                i = cand[rng.randrange(len(cand))]
                bad = words[:i] + [words[i + 1], words[i]] + words[i + 2:]
                swap.append({"context": "", "choices": [sent, " ".join(bad)], "label": 0})
            cand = [i for i in range(1, len(words)) if _PLAIN_WORD.match(words[i])]
            if cand:
                i = cand[rng.randrange(len(cand))]
                w = words[i]
                r = rank[w.lower()]
                pool = [x for x in ranked[max(0, r - band):r + band + 1] if x != w.lower()]
                new = pool[rng.randrange(len(pool))]
                new = new.capitalize() if w[0].isupper() else new
                bad = words[:i] + [new] + words[i + 1:]
                replace.append({"context": "", "choices": [sent, " ".join(bad)], "label": 0})
    nxt = []
    for ex in nextsent_examples(docs, seed=seed, context_sentences=1, min_words=min_words, max_words=max_words,
                                max_chars=max_chars, n_choices=2):
        good = ex["choices"][ex["label"]]
        nxt.append({"context": ex["context"], "choices": [good, ex["choices"][1 - ex["label"]]], "label": 0})
    return {"lsap_pairs_swap": swap, "lsap_pairs_replace": replace, "lsap_pairs_nextsent": nxt}


def score_choices(model, tokenizer, examples: list[dict], *, batch_size: int = 64,
                  delimiter: str = " ") -> dict[str, float]:
    """Zero-shot multiple choice scored as lm-evaluation-harness scores `multiple_choice`
    tasks, natively (lm-eval takes minutes per checkpoint on these tiny models; this takes
    seconds, and tests/test_metrics.py checks it gives lm-eval's numbers).

    Per example {"context", "choices", "label"} and choice c: continuation = `delimiter` + c;
    a non-empty context is encoded as encode(context + continuation) split after
    encode(context) (trailing context spaces move to the continuation); an empty context
    is the tokenizer's bos (else eos) token. ll(c) = Σ log p(continuation tokens).
    acc = [argmax ll = label]; acc_norm = [argmax ll / len(c) (characters) = label]
    (numpy argmax: the first maximum wins ties). Returns {"acc", "acc_norm", "n"}.
    """
    import numpy as np
    import torch

    prefix = tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.eos_token_id

    def enc(text):
        return tokenizer(text, add_special_tokens=False)["input_ids"]

    reqs = []  # (example index, choice index, context ids, continuation ids)
    for i, ex in enumerate(examples):
        for j, c in enumerate(ex["choices"]):
            ctx, cont = ex["context"], delimiter + c
            if ctx == "":
                ce = enc(cont)
                ctx_ids, cont_ids = ([prefix], ce) if ce[0] != prefix else (ce[:1], ce[1:])
            else:
                n = len(ctx) - len(ctx.rstrip())
                if n:
                    ctx, cont = ctx[:-n], ctx[-n:] + cont
                whole, ctx_ids = enc(ctx + cont), enc(ctx)
                cont_ids = whole[len(ctx_ids):]
            reqs.append((i, j, ctx_ids, cont_ids))
    max_len = int(getattr(model.config, "max_position_embeddings", 0) or 2048)
    device = next(model.parameters()).device
    lls = np.zeros(len(reqs))
    order = sorted(range(len(reqs)), key=lambda r: -(len(reqs[r][2]) + len(reqs[r][3])))
    was_training = model.training
    model.eval()
    with torch.inference_mode():
        for s0 in range(0, len(order), batch_size):
            idx = order[s0:s0 + batch_size]
            seqs = [(reqs[r][2] + reqs[r][3])[-(max_len + 1):][:-1] for r in idx]
            L = max(len(x) for x in seqs)
            inp = torch.zeros(len(idx), L, dtype=torch.long)
            for b, x in enumerate(seqs):  # right padding: causal positions before it are unaffected
                inp[b, :len(x)] = torch.tensor(x)
            logp = torch.log_softmax(model(input_ids=inp.to(device)).logits.float(), dim=-1).cpu()
            for b, r in enumerate(idx):
                full = (reqs[r][2] + reqs[r][3])[-(max_len + 1):]
                n_cont = len(reqs[r][3])
                tgt = torch.tensor(full[-n_cont:])
                pos = torch.arange(len(full) - 1 - n_cont, len(full) - 1)
                lls[r] = float(logp[b, pos, tgt].double().sum())
    model.train(was_training)
    acc = acc_norm = 0.0
    k = 0
    for i, ex in enumerate(examples):
        n = len(ex["choices"])
        ll = lls[k:k + n]
        k += n
        acc += float(np.argmax(ll) == ex["label"])
        acc_norm += float(np.argmax(ll / np.array([float(len(c)) for c in ex["choices"]])) == ex["label"])
    n = max(len(examples), 1)
    return {"acc": acc / n, "acc_norm": acc_norm / n, "n": len(examples)}


def _task_configs() -> dict[str, dict]:
    """lm-eval task configs of the offline tasks, without their data paths."""
    common = {"output_type": None, "test_split": "test", "num_fewshot": 0, "target_delimiter": " ",
              "metadata": {"version": OFFLINE_BUILD_VERSION}}
    return {
        "lsap_lastword": {**common, "task": "lsap_lastword", "output_type": "loglikelihood",
                          "doc_to_text": "{{context}}", "doc_to_target": "{{target}}",
                          "metric_list": [{"metric": "acc", "aggregation": "mean", "higher_is_better": True}]},
        "lsap_nextsent": {**common, "task": "lsap_nextsent", "output_type": "multiple_choice",
                          "doc_to_text": "{{context}}", "doc_to_choice": "{{choices}}", "doc_to_target": "{{label}}",
                          "metric_list": [{"metric": "acc", "aggregation": "mean", "higher_is_better": True},
                                          {"metric": "acc_norm", "aggregation": "mean", "higher_is_better": True}]},
        **{name: {**common, "task": name, "output_type": "multiple_choice", "doc_to_text": "{{context}}",
                  "doc_to_choice": "{{choices}}", "doc_to_target": "{{label}}",
                  "metric_list": [{"metric": "acc", "aggregation": "mean", "higher_is_better": True},
                                  {"metric": "acc_norm", "aggregation": "mean", "higher_is_better": True}]}
           for name in PAIR_TASKS},
    }


def _atomic_write(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".tmp-{os.getpid()}-{path.name}")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def build_offline_tasks(data_dir: str | os.PathLike, out: str | os.PathLike, *, max_examples: int = 1000,
                        seed: int = 1234) -> dict[str, Any]:
    """Write the offline tasks of `data_dir`'s held-out documents into `out`.

    Files: ``lsap_lastword.jsonl``, ``lsap_nextsent.jsonl`` (one example per line,
    keys sorted) and one lm-eval YAML config per task (``dataset_path: json`` reading
    the jsonl by absolute path), plus ``tasks.json`` describing the build. Examples of
    each task are shuffled with `random.Random(seed)` and cut to `max_examples`, so
    that lm-eval's ``--limit N`` (the first N) is a spread sample of documents.

    Returns {"dir", "tasks", "hash", "counts", "heldout"}. `hash` (the eval set's
    identity) is sha256 over the jsonl bytes and the task configs without their paths,
    so the same inputs give the same hash wherever the files are written.
    """
    import yaml

    docs, ident = heldout_documents(data_dir)
    examples = {"lsap_lastword": lastword_examples(docs), "lsap_nextsent": nextsent_examples(docs, seed=seed),
                **minimal_pair_examples(docs, seed=seed)}
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    h = hashlib.sha256()
    build = {"version": OFFLINE_BUILD_VERSION, "heldout": ident, "max_examples": max_examples, "seed": seed}
    h.update(json.dumps(build, sort_keys=True).encode())
    counts = {}
    configs = _task_configs()
    for name, rows in examples.items():
        if not rows:
            raise EvalError(f"{data_dir}: the held-out documents give no {name} examples "
                            f"({len(docs)} documents); prepare with a larger --val-fraction")
        random.Random(seed).shuffle(rows)
        rows = rows[:max_examples]
        counts[name] = len(rows)
        data = "".join(json.dumps(r, sort_keys=True, ensure_ascii=False) + "\n" for r in rows).encode("utf-8")
        jpath = out / f"{name}.jsonl"
        _atomic_write(jpath, data)
        cfg = configs[name]
        h.update(name.encode() + b"\0" + data + b"\0" + json.dumps(cfg, sort_keys=True).encode())
        full = {**cfg, "dataset_path": "json", "dataset_kwargs": {"data_files": {"test": str(jpath.resolve())}}}
        _atomic_write(out / f"{name}.yaml", yaml.safe_dump(full, sort_keys=True, allow_unicode=True).encode())
    digest = h.hexdigest()
    info = {**build, "counts": counts, "hash": digest}
    _atomic_write(out / "tasks.json", (json.dumps(info, indent=2, sort_keys=True) + "\n").encode())
    return {"dir": str(out), "tasks": list(examples), "hash": digest, "counts": counts, "heldout": ident}


# --------------------------------------------------------------------------- lm-eval
def _import_lm_eval():
    try:
        import lm_eval  # noqa: F401
        from lm_eval.tasks import TaskManager  # noqa: F401
    except ImportError as e:
        raise EvalError("lm-evaluation-harness is not installed: pip install 'lsap[eval]' "
                        "(lm-eval==0.4.13)") from e
    return lm_eval


def resolve_tasks(spec: str, offline_dir: str | None = None) -> dict[str, str]:
    """Task set spec → {task: primary metric}.

    `spec` is ``offline``, ``paper`` or comma-separated lm-eval task names (the
    offline task names among them). Unknown names raise EvalError listing close
    matches (checked against lm-eval's task index, plus the offline tasks).
    """
    if spec in TASK_SETS:
        return dict(TASK_SETS[spec])
    names = [t.strip() for t in spec.split(",") if t.strip()]
    if not names:
        raise EvalError(f"empty task list; use offline, paper or t1,t2 ({', '.join(TASK_SETS)})")
    out = {}
    unknown = [n for n in names if n not in OFFLINE_TASKS and n not in PAPER_TASKS]
    known: list[str] = list(OFFLINE_TASKS) + list(PAPER_TASKS)
    if unknown:
        _import_lm_eval()
        from lm_eval.tasks import TaskManager

        tm = TaskManager(include_path=offline_dir) if offline_dir else TaskManager()
        known = sorted(set(known) | set(tm.all_tasks))
    for n in names:
        if n not in known:
            close = difflib.get_close_matches(n, known, n=5, cutoff=0.6)
            hint = f"; did you mean {', '.join(close)}?" if close else ""
            raise EvalError(f"unknown task {n!r} (lm-eval {_lm_eval_version()} does not know it){hint}")
        out[n] = OFFLINE_TASKS.get(n) or PAPER_TASKS.get(n) or "acc"
    return out


class _quiet:
    """Route stdout, stderr (progress bars) and lm-eval's / datasets' loggers to a file."""

    def __init__(self, log_file):
        self.path = log_file

    def __enter__(self):
        import contextlib
        import logging
        import warnings

        if self.path is None:
            self._stack = None
            return self
        self._stack = contextlib.ExitStack()
        f = self._stack.enter_context(open(self.path, "a"))
        self._stack.enter_context(contextlib.redirect_stdout(f))
        self._stack.enter_context(contextlib.redirect_stderr(f))
        self._stack.enter_context(warnings.catch_warnings())
        warnings.simplefilter("ignore")
        handler = logging.StreamHandler(f)
        self._loggers = []
        for name in ("lm-eval", "lm_eval", "datasets", "transformers", "evaluate"):
            lg = logging.getLogger(name)
            self._loggers.append((lg, lg.handlers[:], lg.propagate))
            lg.handlers = [handler]
            lg.propagate = False
        return self

    def __exit__(self, *exc):
        if self._stack is not None:
            for lg, handlers, prop in self._loggers:
                lg.handlers, lg.propagate = handlers, prop
            self._stack.close()
        return False


def _lm_eval_version() -> str:
    try:
        from importlib.metadata import version

        return version("lm-eval")
    except Exception:  # noqa: BLE001
        return "?"


def run_lm_eval(model, tokenizer, tasks: dict[str, str], *, include_path: str | None = None,
                limit: int | None = None, batch_size: int = 8, max_length: int | None = None,
                bootstrap_iters: int = 1000, log_file: str | os.PathLike | None = None) -> dict[str, dict]:
    """Zero-shot lm-eval on an already-loaded HF model.

    lm-eval's own log lines, warnings and progress bars go to `log_file` (appended) when
    given, so a terminal sees one result line per checkpoint.

    Returns {task: {"metric", "value", "stderr", "metrics": {name: value}}}, where
    `metric` is the task's primary metric (`tasks[task]`), falling back to acc.
    """
    lm_eval = _import_lm_eval()
    from lm_eval.models.huggingface import HFLM
    from lm_eval.tasks import TaskManager

    if max_length is None:
        max_length = int(getattr(model.config, "max_position_embeddings", 2048))
    with _quiet(log_file):
        lm = HFLM(pretrained=model, tokenizer=tokenizer, batch_size=batch_size, max_length=max_length)
        tm = TaskManager(include_path=include_path, include_defaults=bool(set(tasks) - set(OFFLINE_TASKS)))
        res = lm_eval.simple_evaluate(model=lm, tasks=list(tasks), num_fewshot=0, limit=limit, task_manager=tm,
                                      bootstrap_iters=bootstrap_iters, log_samples=False, random_seed=0,
                                      numpy_random_seed=0, torch_random_seed=0, fewshot_random_seed=0)
    out = {}
    for task, metric in tasks.items():
        r = res["results"].get(task)
        if r is None:
            raise EvalError(f"lm-eval returned no result for {task!r}")
        metrics = {k.split(",")[0]: v for k, v in r.items()
                   if "," in k and not k.split(",")[0].endswith("_stderr") and isinstance(v, (int, float))}
        m = metric if metric in metrics else ("acc" if "acc" in metrics else sorted(metrics)[0])
        stderr = r.get(f"{m}_stderr,none")
        out[task] = {"metric": m, "value": float(metrics[m]),
                     "stderr": float(stderr) if isinstance(stderr, (int, float)) else None,
                     "metrics": {k: float(v) for k, v in sorted(metrics.items())}}
    return out


# --------------------------------------------------------------------------- a run's checkpoints
META_KEYS = ("step", "tokens", "flops_base", "flops_surrogate", "flops")


def _cfg_get(cfg: dict, dotted: str, default=None):
    cur = cfg
    for k in dotted.split("."):
        if not isinstance(cur, dict) or k not in cur:
            return default
        cur = cur[k]
    return cur if cur not in (None, "") else default


def find_checkpoints(target: Path, which: str = "all") -> list[tuple[Path, Path, dict]]:
    """(model_dir, eval_json_path, meta) per selected checkpoint, in step order.

    `which`: all | last | step_00000100[,step_...]. A bare HF model directory (config.json,
    no checkpoints/) is one "checkpoint" whose result goes to DIR/eval.json."""
    target = Path(target)
    if (target / "config.json").is_file() and not (target / "checkpoints").is_dir():
        return [(target, target / "eval.json", {})]
    from lsap.checkpoint import list_checkpoints

    root = target / "checkpoints"
    cks = [p for p in list_checkpoints(root) if (p / "model").is_dir()]  # finished ones (lsap.checkpoint)
    if not cks:
        raise EvalError(f"{target}: no checkpoints (expected {root}/step_*/model/ or a HF model directory "
                        "with config.json)")
    names = [p.name for p in cks]
    if which == "last":
        cks = cks[-1:]
    elif which != "all":
        wanted = [w.strip() for w in which.split(",") if w.strip()]
        for w in wanted:
            if w not in names:
                close = difflib.get_close_matches(w, names, n=3)
                raise EvalError(f"{target}: no checkpoint {w!r}"
                                + (f"; close: {', '.join(close)}" if close else f"; have {', '.join(names)}"))
        cks = [p for p in cks if p.name in wanted]
    out = []
    for p in cks:
        meta = json.loads((p / "meta.json").read_text()) if (p / "meta.json").is_file() else {}
        out.append((p / "model", p / "eval.json", meta))
    return out


def reference_targets(cfg: dict, run_dir: Path) -> dict | None:
    """The auxiliary-target spec a run's own config implies (LSAP runs with an online
    surrogate): {"surrogate", "vocab_map", "k", "alpha"}; None for CE runs."""
    if str(_cfg_get(cfg, "loss", "ce")) != "lsap" or not _cfg_get(cfg, "surrogate.model"):
        return None
    vmap = _cfg_get(cfg, "surrogate.vocab_map") or (str(run_dir / "vocab_map")
                                                    if (run_dir / "vocab_map").is_dir() else None)
    return {"surrogate": _cfg_get(cfg, "surrogate.model"), "vocab_map": vmap,
            "k": int(_cfg_get(cfg, "lsap.k", 15)), "alpha": float(_cfg_get(cfg, "lsap.alpha", 0.05))}


def _load_targets(spec: dict, base_tok, device):
    from lsap.surrogate import load_surrogate_with_map
    from lsap.tokenizer import padded_vocab_size

    sw = load_surrogate_with_map(spec["surrogate"], base_tok, padded_vocab_size(base_tok),
                                 vocab_map=spec.get("vocab_map") or None, device=device)
    return surrogate_targets(sw.model, sw.vmap, k=int(spec.get("k", 15)), alpha=float(spec.get("alpha", 0.05)),
                             pad_id=sw.pad_id)


def evaluate_run(target: str | os.PathLike, *, tasks: str = "offline", checkpoints: str = "all",
                 limit: int | None = None, batch_size: int | None = None, data: str | None = None,
                 seq_len: int | None = None, val_batches: int | None = None, loss: bool = True,
                 task_dir: str | None = None, max_examples: int = 1000, device: str = "auto",
                 force: bool = False, targets: dict | None | str = "auto", log=print) -> list[dict]:
    """Evaluate a run's checkpoints (or one HF model directory); writes eval.json per checkpoint.

    Per checkpoint: held-out loss, bits per byte, top-1/top-5 accuracy (`heldout_metrics`)
    on the validation split of the run's data (``data.dir`` of RUN/config.yaml, or `data`),
    the same split by the number of auxiliary targets per position when `targets` is a
    spec {"surrogate", "vocab_map", "k", "alpha"} ("auto": the run's own, for LSAP runs
    with an online surrogate; None: no split), and zero-shot tasks through
    lm-evaluation-harness (`tasks`: offline | pairs | paper | names). Checkpoints whose
    eval.json has the same ``eval_set_hash`` are kept unless `force`. Held-out windows
    default to the run's own validation windows (data.seq_len, train.micro_batch_size ×
    train.eval_batches), so the trainer's curves and this table agree.
    """
    import tempfile

    import yaml

    target = Path(target)
    if not target.is_dir():
        raise EvalError(f"{target}: not a directory")
    cfg = {}
    if (target / "config.yaml").is_file():
        cfg = yaml.safe_load((target / "config.yaml").read_text()) or {}
    cks = find_checkpoints(target, checkpoints)

    data_dir = data or _cfg_get(cfg, "data.dir")
    if data_dir and not Path(data_dir).is_dir() and (target / data_dir).is_dir():
        data_dir = str(target / data_dir)
    if data_dir and not (Path(data_dir) / "manifest.json").is_file():
        raise EvalError(f"data directory {data_dir}: no manifest.json (pass --data DIR from `lsap prepare`)")
    if targets == "auto":
        targets = reference_targets(cfg, target)

    tmp = None
    offline = None
    try:
        task_map = resolve_tasks(tasks)
        if set(task_map) & set(OFFLINE_TASKS):
            if not data_dir:
                raise EvalError("the offline tasks are built from the held-out documents of a prepared data "
                                "directory: pass --data DIR (or evaluate a run whose config has data.dir)")
            if task_dir is None:
                tmp = tempfile.TemporaryDirectory(prefix="lsap-tasks-")
                task_dir = tmp.name
            offline = build_offline_tasks(data_dir, task_dir, max_examples=max_examples)
        seq_len = seq_len or int(_cfg_get(cfg, "data.seq_len", 1024))
        batch_size = batch_size or int(_cfg_get(cfg, "train.micro_batch_size", 8))
        val_batches = val_batches or int(_cfg_get(cfg, "train.eval_batches", 20))
        do_loss = bool(data_dir) and loss
        task_set = tasks if tasks in TASK_SETS else ",".join(task_map)
        eval_set = {
            "tasks": task_map, "limit": limit, "num_fewshot": 0,
            "offline_hash": offline["hash"] if offline else None,
            "heldout": offline["heldout"] if offline else None,
            "loss": {"seq_len": seq_len, "batches": val_batches, "batch_size": batch_size} if do_loss else None,
            "targets": targets if do_loss else None,
        }
        if do_loss and offline is None:
            eval_set["heldout"] = json.loads((Path(data_dir) / "manifest.json").read_text())["args"]
        eval_set_hash = hashlib.sha256(json.dumps(eval_set, sort_keys=True).encode()).hexdigest()

        results, target_fn, kept = [], None, []
        for model_dir, out_path, meta in cks:
            if out_path.is_file() and not force:
                old = json.loads(out_path.read_text())
                if old.get("eval_set_hash") == eval_set_hash:
                    kept.append(out_path.parent.name)
                    results.append(old)
                    continue
            if do_loss and targets and target_fn is None:
                from transformers import AutoTokenizer

                from lsap.surrogate import inference_device_dtype

                target_fn = _load_targets(targets, AutoTokenizer.from_pretrained(model_dir),
                                          inference_device_dtype(device)[0])
            results.append(_evaluate_one(model_dir, out_path, meta, task_map, limit, batch_size, device,
                                         data_dir if do_loss else None, seq_len, val_batches,
                                         task_dir if offline else None, task_set, eval_set_hash, target_fn,
                                         targets, log))
        if kept:
            log(f"[lsap] {target.name}: {len(kept)} checkpoint(s) already evaluated on this evaluation set "
                f"({eval_set_hash[:12]}: {kept[0]}{' … ' + kept[-1] if len(kept) > 1 else ''}); --force to redo")
        return results
    finally:
        if tmp is not None:
            tmp.cleanup()


def _evaluate_one(model_dir, out_path, meta, tasks, limit, batch_size, device, data_dir, seq_len, val_batches,
                  task_dir, task_set, eval_set_hash, target_fn, targets, log) -> dict:
    import time

    from transformers import AutoModelForCausalLM, AutoTokenizer

    from lsap.io import atomic_write_json
    from lsap.surrogate import inference_device_dtype
    from lsap.tokenizer import tokenizer_hash

    t0 = time.perf_counter()
    dev, dtype = inference_device_dtype(device)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=dtype).to(dev).eval()
    tok = AutoTokenizer.from_pretrained(model_dir)
    result = {k: meta.get(k) for k in META_KEYS}
    result.update(task_set=task_set, eval_set_hash=eval_set_hash, limit=limit, tokenizer_hash=tokenizer_hash(tok),
                  model_dir=str(model_dir), val_loss=None, val_bpb=None, targets=targets)
    if data_dir:
        result.update(heldout_metrics(model, data_dir, seq_len=seq_len, batch_size=batch_size,
                                      max_batches=val_batches, tokenizer=tok, targets=target_fn))
    # lm-eval truncates contexts from the left to this many tokens; RoPE models can
    # read past their training seq_len, and a choice longer than seq_len must still fit.
    max_len = int(getattr(model.config, "max_position_embeddings", 0) or 2048)
    native = {t: m for t, m in tasks.items() if t in PAIR_TASKS and task_dir}
    rest = {t: m for t, m in tasks.items() if t not in native}
    result["tasks"] = {}
    for t, metric in native.items():  # the minimal pairs: lm-eval's scoring, natively (seconds, not minutes)
        rows = [json.loads(line) for line in (Path(task_dir) / f"{t}.jsonl").read_text().splitlines() if line]
        sc = score_choices(model, tok, rows[:limit] if limit else rows)
        v = sc[metric]
        result["tasks"][t] = {"metric": metric, "value": v, "stderr": math.sqrt(v * (1 - v) / max(sc["n"], 1)),
                              "metrics": {"acc": sc["acc"], "acc_norm": sc["acc_norm"]}, "n": sc["n"],
                              "engine": "lsap.evaluate.score_choices"}
    if rest:
        result["tasks"].update(run_lm_eval(model, tok, rest, include_path=task_dir, limit=limit,
                                           batch_size=max(batch_size, 32), max_length=max_len,
                                           log_file=Path(out_path).with_name("lm_eval.log")))
    result["tasks"] = {t: result["tasks"][t] for t in tasks}
    scores = [t["value"] for t in result["tasks"].values()]
    result["average"] = sum(scores) / len(scores) if scores else None
    pairs = [result["tasks"][t]["value"] for t in PAIR_TASKS if t in result["tasks"]]
    result["pairs_average"] = sum(pairs) / len(pairs) if len(pairs) == len(PAIR_TASKS) else None
    result["lm_eval_version"] = _lm_eval_version()
    result["wall_s"] = round(time.perf_counter() - t0, 3)
    atomic_write_json(out_path, result)
    shown = ", ".join(f"{k.removeprefix('lsap_')} {v['value']:.3f}" for k, v in result["tasks"].items())
    loss = (f"val loss {result['val_loss']:.4f} bpb {result['val_bpb']:.4f} top1 {result['val_top1']:.3f}; "
            if result["val_loss"] is not None else "")
    log(f"[lsap] {out_path.parent.name}: {loss}{shown} ({result['wall_s']:.1f}s)")
    return result
