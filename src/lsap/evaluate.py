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
OFFLINE_TASKS: dict[str, str] = {"lsap_lastword": "acc", "lsap_nextsent": "acc_norm"}
TASK_SETS: dict[str, dict[str, str]] = {"paper": PAPER_TASKS, "offline": OFFLINE_TASKS}

# Bump when the construction of the offline tasks changes (part of their hash).
OFFLINE_BUILD_VERSION = 1


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


def heldout_loss(model, data_dir: str | os.PathLike, *, seq_len: int = 1024, batch_size: int = 8,
                 max_batches: int | None = None, tokenizer=None) -> dict[str, Any]:
    """Mean CE (nats/token) and bits per byte on the validation split of `data_dir`.

    Windows: consecutive (T+1)-token windows from the start of the split
    (`TokenShards.iter_eval_batches`), every position of every window counted once;
    loss = Σ NLL / #positions (sum-reduced, divided once). With `tokenizer`, checks
    that the shards were made with it. Returns {"val_loss", "val_bpb", "val_tokens"}.
    """
    import torch

    from lsap.data import TokenShards

    shards = TokenShards(data_dir, "val")
    if tokenizer is not None:
        shards.check_tokenizer(tokenizer)
    shards.check_vocab(model.get_input_embeddings().weight.shape[0])
    seq_len = min(seq_len, max(1, len(shards) - 1))
    batch_size = max(1, min(batch_size, (len(shards) - 1) // seq_len))
    device = next(model.parameters()).device
    total, count = 0.0, 0
    was_training = model.training
    model.eval()
    with torch.inference_mode():
        for inp, lab in shards.iter_eval_batches(seq_len, batch_size, max_batches):
            logits = model(input_ids=inp.to(device)).logits.float()
            nll = torch.nn.functional.cross_entropy(logits.flatten(0, 1), lab.to(device).flatten(), reduction="sum")
            total += float(nll)
            count += lab.numel()
    model.train(was_training)
    if count == 0:
        raise EvalError(f"{data_dir}: the val split ({len(shards)} tokens) is too short for one window")
    loss = total / count
    bpt = shards.bytes_per_token
    return {"val_loss": loss, "val_bpb": bits_per_byte(loss, bpt) if bpt else None, "val_tokens": count}


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
    examples = {"lsap_lastword": lastword_examples(docs), "lsap_nextsent": nextsent_examples(docs, seed=seed)}
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


def _lm_eval_version() -> str:
    try:
        from importlib.metadata import version

        return version("lm-eval")
    except Exception:  # noqa: BLE001
        return "?"


def run_lm_eval(model, tokenizer, tasks: dict[str, str], *, include_path: str | None = None,
                limit: int | None = None, batch_size: int = 8, max_length: int | None = None,
                bootstrap_iters: int = 1000) -> dict[str, dict]:
    """Zero-shot lm-eval on an already-loaded HF model.

    Returns {task: {"metric", "value", "stderr", "metrics": {name: value}}}, where
    `metric` is the task's primary metric (`tasks[task]`), falling back to acc.
    """
    lm_eval = _import_lm_eval()
    from lm_eval.models.huggingface import HFLM
    from lm_eval.tasks import TaskManager

    if max_length is None:
        max_length = int(getattr(model.config, "max_position_embeddings", 2048))
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
