"""Offline zero-shot tasks: built deterministically from held-out documents, scored natively.

- `heldout_documents(data_dir)`: the validation documents of a prepared data directory.
- builders: `lastword_examples`, `nextsent_examples`, `minimal_pair_examples` (pure data code,
  testable without a model), `build_offline_tasks(data_dir, out)` (jsonl + lm-eval YAML).
- `score_choices(model, tokenizer, examples)`: lm-eval's multiple-choice scoring, natively.

Held-out documents are exactly the documents `lsap prepare` sent to the ``val`` split:
the manifest records the source, seed and val_fraction, and `lsap.data.shards.is_val` decides
per document index. A document that went to ``train`` is never read for a task.
"""

from __future__ import annotations

import glob
import hashlib
import json
import os
import random
import re
from pathlib import Path
from typing import Any

from lsap.utils.errors import EvalError

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
PAIR_TASKS: dict[str, str] = {
    "lsap_pairs_swap": "acc",
    "lsap_pairs_replace": "acc",
    "lsap_pairs_nextsent": "acc_norm",
}
OFFLINE_TASKS: dict[str, str] = {"lsap_lastword": "acc", "lsap_nextsent": "acc_norm", **PAIR_TASKS}
TASK_SETS: dict[str, dict[str, str]] = {
    "paper": PAPER_TASKS,
    "offline": OFFLINE_TASKS,
    "pairs": PAIR_TASKS,
}

# Bump when the construction of the offline tasks changes (part of their hash).
OFFLINE_BUILD_VERSION = 3  # 3: examples whose text occurs in a training document are dropped


# --------------------------------------------------------------------------- held-out documents
def _corpus_split(data_dir: str | os.PathLike, held_out: bool) -> tuple[list[str], dict]:
    """The documents of the corpus `data_dir` was prepared from that `lsap.data.shards.is_val` sends to
    ``val`` (held_out) or to ``train`` (not held_out), in corpus order, and {source, seed, val_fraction}."""
    from lsap.data.shards import DataError, is_val, iter_documents

    mpath = Path(data_dir) / "manifest.json"
    if not mpath.is_file():
        raise EvalError(
            f"{data_dir}: no manifest.json (a data directory from `lsap prepare` is needed)"
        )
    args = json.loads(mpath.read_text())["args"]
    seed, vf, source = int(args["seed"]), float(args["val_fraction"]), args["source"]
    if held_out and vf <= 0:
        raise EvalError(
            f"{data_dir} was prepared with val_fraction=0: there are no held-out documents"
        )
    try:
        docs = [d for i, d in enumerate(iter_documents(source)) if is_val(i, seed, vf) == held_out]
    except DataError as e:
        raise EvalError(f"cannot re-read the corpus of {data_dir}: {e}") from e
    return docs, {"source": source, "seed": seed, "val_fraction": vf}


def heldout_documents(data_dir: str | os.PathLike) -> tuple[list[str], dict]:
    """The validation documents of a prepared data directory, in corpus order.

    Re-reads the source named in the manifest and keeps the documents that
    `lsap.data.shards.is_val(index, seed, val_fraction)` sent to ``val`` — never a training
    document. Returns (documents, identity) where identity = {source, seed,
    val_fraction} names the held-out set independently of the tokenizer.
    """
    docs, ident = _corpus_split(data_dir, True)
    if not docs:
        raise EvalError(
            f"{data_dir}: no held-out documents (source {ident['source']!r}, val_fraction "
            f"{ident['val_fraction']}); prepare with a larger --val-fraction"
        )
    return docs, ident


def training_documents(data_dir: str | os.PathLike) -> list[str]:
    """Every training document of the corpus `data_dir` was prepared from: all that `is_val` sent
    to ``train``, whichever part of them (`lsap.data.shards.in_part`) fed the base or the surrogate."""
    return _corpus_split(data_dir, False)[0]


# --------------------------------------------------------------------------- contamination
def occurs_in(texts: list[str], docs: list[str], key_words: int = 4) -> set[int]:
    """Indices of `texts` that occur verbatim (as substrings, whitespace collapsed on both sides)
    in some document of `docs`.

    Exact and fast: a text of ≥ key_words + 2 words can only occur where its words 2..key_words+1
    (whole words, bounded by spaces inside the text) occur as consecutive words of the document,
    so only documents holding that key are searched for the full text. Shorter texts are
    searched for in every document.
    """
    norm = [_normalise(t) for t in texts]
    keyed: dict[tuple, list[int]] = {}
    short = []
    for i, t in enumerate(norm):
        w = t.split(" ")
        if len(w) >= key_words + 2:
            keyed.setdefault(tuple(w[1 : 1 + key_words]), []).append(i)
        else:
            short.append(i)
    found: set[int] = set()
    for doc in docs:
        d = _normalise(doc)
        words = d.split(" ")
        hits = {k for k in zip(*(words[j:] for j in range(key_words))) if k in keyed}
        for k in hits:
            found.update(i for i in keyed[k] if i not in found and norm[i] in d)
        found.update(i for i in short if i not in found and norm[i] in d)
    return found


def _example_text(ex: dict) -> str:
    """The text of an example that must not occur in training: the original (or context + answer)."""
    answer = ex["target"] if "target" in ex else ex["choices"][ex["label"]]
    return f"{ex['context']} {answer}" if ex["context"] else answer


def drop_seen(
    examples: dict[str, list[dict]], train_docs: list[str]
) -> tuple[dict[str, list[dict]], dict[str, int]]:
    """`examples` without those whose original text (or context + answer) occurs verbatim in a
    training document (METHOD §5b), and {task: number dropped}."""
    names = list(examples)
    flat = [(n, ex) for n in names for ex in examples[n]]
    seen = occurs_in([_example_text(ex) for _, ex in flat], train_docs)
    kept: dict[str, list[dict]] = {n: [] for n in names}
    removed = dict.fromkeys(names, 0)
    for i, (n, ex) in enumerate(flat):
        if i in seen:
            removed[n] += 1
        else:
            kept[n].append(ex)
    return kept, removed


# --------------------------------------------------------------------------- offline tasks
_WORD_END = re.compile(r"^(?P<core>[A-Za-z][A-Za-z'\-]*[A-Za-z])[.,;:!?\"')\]]*$")
_SENT_SPLIT = re.compile(r"(?:(?<=[.!?])|(?<=[.!?][\"')\]]))\s+(?=[\"'(\[]?[A-Z])")


def _normalise(doc: str) -> str:
    return " ".join(doc.split())


def lastword_examples(
    docs: list[str], *, passage_words: int = 64, min_context_words: int = 16
) -> list[dict]:
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
            window = words[s : s + passage_words]
            for e in range(len(window) - 1, min_context_words - 1, -1):
                m = _WORD_END.match(window[e])
                if m:
                    out.append({"context": " ".join(window[:e]), "target": m.group("core")})
                    break
    return out


def _sentences(doc: str, min_words: int, max_words: int, max_chars: int) -> list[str | None]:
    """Sentences of a normalised document; unusable ones (word / character bounds) become None."""
    sents = _SENT_SPLIT.split(doc)
    return [
        s if min_words <= len(s.split(" ")) <= max_words and len(s) <= max_chars else None
        for s in sents
    ]


def nextsent_examples(
    docs: list[str],
    *,
    seed: int = 1234,
    context_sentences: int = 2,
    min_words: int = 4,
    max_words: int = 40,
    max_chars: int = 300,
    n_choices: int = 4,
) -> list[dict]:
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
    answer and (with several documents) neither found in a document that holds the example's
    passage nor drawn from one; the
    answer's position among the choices is drawn from the same generator.
    Metrics: acc and acc_norm (log-likelihood per byte of each choice).
    """
    rng = random.Random(seed)
    norm = [_normalise(d) for d in docs]
    per_doc = [_sentences(d, min_words, max_words, max_chars) for d in norm]
    pool = [
        (di, si, s)
        for di, sents in enumerate(per_doc)
        for si, s in enumerate(sents)
        if s is not None
    ]
    single = len({di for di, _, _ in pool}) < 2
    out = []
    for di, sents in enumerate(per_doc):
        i = context_sentences - 1
        while i + 1 < len(sents):
            window = sents[i - context_sentences + 1 : i + 2]
            if any(s is None for s in window):
                i += 1
                continue
            answer = window[-1]
            passage = " ".join(window)
            homes = (
                [norm[di]] if single else [d for d in norm if passage in d]
            )  # documents holding the passage
            distractors: list[str] = []
            for _ in range(1000):
                if len(distractors) == n_choices - 1:
                    break
                dj, sj, s = pool[rng.randrange(len(pool))]
                if single:
                    ok = abs(sj - (i + 1)) >= 20
                else:  # not from a document that repeats this passage or holds the sentence
                    ok = dj != di and passage not in norm[dj] and not any(s in h for h in homes)
                if ok and s != answer and s not in distractors:
                    distractors.append(s)
            if len(distractors) == n_choices - 1:
                label = rng.randrange(n_choices)
                choices = distractors[:label] + [answer] + distractors[label:]
                out.append({"context": " ".join(window[:-1]), "choices": choices, "label": label})
            i += context_sentences + 1
    return out


_PLAIN_WORD = re.compile(r"^[A-Za-z]+$")


def _pair_sentences(
    docs: list[str], min_words: int, max_words: int, max_chars: int
) -> list[list[str]]:
    """Per document, its prose sentences: usable length and ≥ 80% plain words (no code)."""
    out = []
    for d in docs:
        sents = []
        for sent in _sentences(_normalise(d), min_words, max_words, max_chars):
            if sent is None:
                continue
            words = sent.split(" ")
            if sum(bool(_PLAIN_WORD.match(w.strip(".,;:!?\"'()"))) for w in words) >= 0.8 * len(
                words
            ):
                sents.append(sent)
        out.append(sents)
    return out


def minimal_pair_examples(
    docs: list[str],
    *,
    seed: int = 1234,
    min_words: int = 6,
    max_words: int = 30,
    max_chars: int = 220,
    band: int = 10,
) -> dict[str, list[dict]]:
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
    freq = Counter(
        w.lower()
        for sents in per_doc
        for sent in sents
        for w in sent.split(" ")
        if _PLAIN_WORD.match(w)
    )
    ranked = [w for w, _ in sorted(freq.items(), key=lambda kv: (-kv[1], kv[0]))]
    rank = {w: i for i, w in enumerate(ranked)}
    swap, replace = [], []
    for sents in per_doc:
        for sent in sents:
            words = sent.split(" ")
            cand = [
                i
                for i in range(1, len(words) - 1)
                if _PLAIN_WORD.match(words[i])
                and _PLAIN_WORD.match(words[i + 1])
                and words[i].lower() != words[i + 1].lower()
            ]
            if cand:
                i = cand[rng.randrange(len(cand))]
                bad = words[:i] + [words[i + 1], words[i]] + words[i + 2 :]
                swap.append({"context": "", "choices": [sent, " ".join(bad)], "label": 0})
            cand = [i for i in range(1, len(words)) if _PLAIN_WORD.match(words[i])]
            if cand:
                i = cand[rng.randrange(len(cand))]
                w = words[i]
                r = rank[w.lower()]
                pool = [x for x in ranked[max(0, r - band) : r + band + 1] if x != w.lower()]
                new = pool[rng.randrange(len(pool))]
                new = new.capitalize() if w[0].isupper() else new
                bad = words[:i] + [new] + words[i + 1 :]
                replace.append({"context": "", "choices": [sent, " ".join(bad)], "label": 0})
    nxt = []
    for ex in nextsent_examples(
        docs,
        seed=seed,
        context_sentences=1,
        min_words=min_words,
        max_words=max_words,
        max_chars=max_chars,
        n_choices=2,
    ):
        good = ex["choices"][ex["label"]]
        nxt.append(
            {
                "context": ex["context"],
                "choices": [good, ex["choices"][1 - ex["label"]]],
                "label": 0,
            }
        )
    return {"lsap_pairs_swap": swap, "lsap_pairs_replace": replace, "lsap_pairs_nextsent": nxt}


def score_choices(
    model, tokenizer, examples: list[dict], *, batch_size: int = 64, delimiter: str = " "
) -> dict[str, float]:
    """Zero-shot multiple choice scored as lm-evaluation-harness scores `multiple_choice`
    tasks, natively (lm-eval takes minutes per checkpoint on these tiny models; this takes
    seconds, and tests/test_metrics.py checks it gives lm-eval's numbers).

    Per example {"context", "choices", "label"} and choice c: continuation = `delimiter` + c;
    a non-empty context is encoded as encode(context + continuation) split after
    encode(context) (trailing context spaces move to the continuation); an empty context
    is the tokenizer's bos (else eos) token. ll(c) = Σ log p(continuation tokens).
    acc = [argmax ll = label]; acc_norm = [argmax ll / len(c) (characters) = label]
    (numpy argmax: the first maximum wins ties). Returns {"acc", "acc_norm", "n",
    "equal_length": {"acc", "n"}} — acc on the examples whose choices have the same number of
    continuation tokens (a corrupted choice of another token length tilts raw log-prob sums) —
    and per example: "ll" (each choice's log-likelihood), "correct", "correct_norm", "same_tokens".
    """
    import numpy as np
    import torch

    prefix = (
        tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.eos_token_id
    )

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
                cont_ids = whole[len(ctx_ids) :]
            reqs.append((i, j, ctx_ids, cont_ids))
    max_len = int(getattr(model.config, "max_position_embeddings", 0) or 2048)
    device = next(model.parameters()).device
    lls = np.zeros(len(reqs))
    order = sorted(range(len(reqs)), key=lambda r: -(len(reqs[r][2]) + len(reqs[r][3])))
    was_training = model.training
    model.eval()
    with torch.inference_mode():
        for s0 in range(0, len(order), batch_size):
            idx = order[s0 : s0 + batch_size]
            seqs = [(reqs[r][2] + reqs[r][3])[-(max_len + 1) :][:-1] for r in idx]
            L = max(len(x) for x in seqs)
            inp = torch.zeros(len(idx), L, dtype=torch.long)
            for b, x in enumerate(seqs):  # right padding: causal positions before it are unaffected
                inp[b, : len(x)] = torch.tensor(x)
            logp = torch.log_softmax(model(input_ids=inp.to(device)).logits.float(), dim=-1).cpu()
            for b, r in enumerate(idx):
                full = (reqs[r][2] + reqs[r][3])[-(max_len + 1) :]
                n_cont = len(reqs[r][3])
                tgt = torch.tensor(full[-n_cont:])
                pos = torch.arange(len(full) - 1 - n_cont, len(full) - 1)
                lls[r] = float(logp[b, pos, tgt].double().sum())
    model.train(was_training)
    correct, correct_norm, equal, per_ex = [], [], [], []
    k = 0
    for ex in examples:
        n = len(ex["choices"])
        ll = lls[k : k + n]
        equal.append(len({len(reqs[r][3]) for r in range(k, k + n)}) == 1)
        k += n
        per_ex.append([float(x) for x in ll])
        correct.append(bool(np.argmax(ll) == ex["label"]))
        correct_norm.append(
            bool(np.argmax(ll / np.array([float(len(c)) for c in ex["choices"]])) == ex["label"])
        )
    n = max(len(examples), 1)
    n_eq = sum(equal)
    return {
        "acc": sum(correct) / n,
        "acc_norm": sum(correct_norm) / n,
        "n": len(examples),
        "equal_length": {
            "acc": sum(c for c, e in zip(correct, equal) if e) / n_eq if n_eq else None,
            "n": n_eq,
        },
        "ll": per_ex,
        "correct": correct,
        "correct_norm": correct_norm,
        "same_tokens": equal,
    }


def pack_scores(sc: dict) -> dict:
    """`score_choices`'s per-example results, compactly for eval.json: each choice's log-likelihood
    as base64 little-endian float32 [n, choices], and one bit per example (base64 of
    numpy.packbits) for "acc", "acc_norm" and "same_tokens". `unpack_scores` reads it back."""
    import base64

    import numpy as np

    def bits(v):
        return base64.b64encode(np.packbits(np.asarray(v, dtype=bool)).tobytes()).decode()

    ll = np.asarray(sc["ll"], dtype="<f4")
    return {
        "n": len(sc["correct"]),
        "ll_f32": base64.b64encode(ll.tobytes()).decode(),
        "shape": list(ll.shape),
        "acc": bits(sc["correct"]),
        "acc_norm": bits(sc["correct_norm"]),
        "same_tokens": bits(sc["same_tokens"]),
    }


def unpack_scores(packed: dict) -> dict:
    """`pack_scores` inverted: {"ll": float32 [n, choices], "acc" | "acc_norm" | "same_tokens": bool [n]}."""
    import base64

    import numpy as np

    n = int(packed["n"])
    out = {
        "ll": np.frombuffer(base64.b64decode(packed["ll_f32"]), dtype="<f4").reshape(
            packed["shape"]
        )
    }
    for k in ("acc", "acc_norm", "same_tokens"):
        out[k] = np.unpackbits(np.frombuffer(base64.b64decode(packed[k]), dtype=np.uint8))[
            :n
        ].astype(bool)
    return out


def _task_configs() -> dict[str, dict]:
    """lm-eval task configs of the offline tasks, without their data paths."""
    common = {
        "output_type": None,
        "test_split": "test",
        "num_fewshot": 0,
        "target_delimiter": " ",
        "metadata": {"version": OFFLINE_BUILD_VERSION},
    }
    return {
        "lsap_lastword": {
            **common,
            "task": "lsap_lastword",
            "output_type": "loglikelihood",
            "doc_to_text": "{{context}}",
            "doc_to_target": "{{target}}",
            "metric_list": [{"metric": "acc", "aggregation": "mean", "higher_is_better": True}],
        },
        "lsap_nextsent": {
            **common,
            "task": "lsap_nextsent",
            "output_type": "multiple_choice",
            "doc_to_text": "{{context}}",
            "doc_to_choice": "{{choices}}",
            "doc_to_target": "{{label}}",
            "metric_list": [
                {"metric": "acc", "aggregation": "mean", "higher_is_better": True},
                {"metric": "acc_norm", "aggregation": "mean", "higher_is_better": True},
            ],
        },
        **{
            name: {
                **common,
                "task": name,
                "output_type": "multiple_choice",
                "doc_to_text": "{{context}}",
                "doc_to_choice": "{{choices}}",
                "doc_to_target": "{{label}}",
                "metric_list": [
                    {"metric": "acc", "aggregation": "mean", "higher_is_better": True},
                    {"metric": "acc_norm", "aggregation": "mean", "higher_is_better": True},
                ],
            }
            for name in PAIR_TASKS
        },
    }


def build_offline_tasks(
    data_dir: str | os.PathLike,
    out: str | os.PathLike,
    *,
    max_examples: int = 1000,
    seed: int = 1234,
) -> dict[str, Any]:
    """Write the offline tasks of `data_dir`'s held-out documents into `out`.

    Files: ``lsap_lastword.jsonl``, ``lsap_nextsent.jsonl`` (one example per line, keys sorted)
    and one lm-eval YAML config per task (``dataset_path: json`` reading the jsonl by absolute
    path, glob-escaped as datasets reads a pattern: `out` may hold `[`), plus ``tasks.json``
    describing the build. Examples of each task are shuffled with `random.Random(seed)` and cut
    to `max_examples`, so lm-eval's ``--limit N`` (the first N) is a spread sample of documents.

    Examples whose original text (or context + answer) occurs verbatim in any training document
    of the corpus — the base's part or the surrogate's (`drop_seen`) — are dropped first; their
    number per task is ``removed_in_training``.

    Returns {"dir", "tasks", "hash", "counts", "heldout", "removed_in_training"}. `hash` (the eval set's
    identity) is sha256 over the jsonl bytes and the task configs without their paths,
    so the same inputs give the same hash wherever the files are written.
    """
    import yaml

    from lsap.utils.io import atomic_write_bytes

    docs, ident = heldout_documents(data_dir)
    examples = {
        "lsap_lastword": lastword_examples(docs),
        "lsap_nextsent": nextsent_examples(docs, seed=seed),
        **minimal_pair_examples(docs, seed=seed),
    }
    examples, removed = drop_seen(examples, training_documents(data_dir))
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    h = hashlib.sha256()
    build = {
        "version": OFFLINE_BUILD_VERSION,
        "heldout": ident,
        "max_examples": max_examples,
        "seed": seed,
    }
    h.update(json.dumps(build, sort_keys=True).encode())
    counts = {}
    configs = _task_configs()
    for name, rows in examples.items():
        if not rows:
            raise EvalError(
                f"{data_dir}: the held-out documents give no {name} examples "
                f"({len(docs)} documents); prepare with a larger --val-fraction"
            )
        random.Random(seed).shuffle(rows)
        rows = rows[:max_examples]
        counts[name] = len(rows)
        data = "".join(
            json.dumps(r, sort_keys=True, ensure_ascii=False) + "\n" for r in rows
        ).encode("utf-8")
        jpath = out / f"{name}.jsonl"
        atomic_write_bytes(jpath, data)
        cfg = configs[name]
        h.update(name.encode() + b"\0" + data + b"\0" + json.dumps(cfg, sort_keys=True).encode())
        full = {
            **cfg,
            "dataset_path": "json",
            "dataset_kwargs": {"data_files": {"test": glob.escape(str(jpath.resolve()))}},
        }
        atomic_write_bytes(
            out / f"{name}.yaml", yaml.safe_dump(full, sort_keys=True, allow_unicode=True).encode()
        )
    digest = h.hexdigest()
    info = {**build, "counts": counts, "removed_in_training": removed, "hash": digest}
    atomic_write_bytes(
        out / "tasks.json", (json.dumps(info, indent=2, sort_keys=True) + "\n").encode()
    )
    rest = {"hash": digest, "counts": counts, "heldout": ident, "removed_in_training": removed}
    return {"dir": str(out), "tasks": list(examples), **rest}
