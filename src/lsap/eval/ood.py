"""Out-of-domain minimal pairs (`lsap sweep`'s out-of-domain columns).

- `ood_eval(run, ...)`: minimal pairs from other corpora's held-out documents on a run's final
  checkpoint (RUN/ood.json, per-example results kept).
- `ood_paired(...)`: the pooled sign test of LSAP vs CE on them.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from lsap.eval.tasks import PAIR_TASKS, build_offline_tasks, pack_scores, score_choices


def ood_eval(
    run_dir: str | Path, ood: dict, task_root: Path, max_examples: int, memo: dict, log=print
) -> dict:
    """Minimal pairs built from the held-out documents of other corpora (tokenized with
    the run's base tokenizer), scored on the run's final checkpoint; RUN/ood.json (per task
    the metric and every example's result, `lsap.eval.tasks.pack_scores`, for paired tests),
    reused while the task set and checkpoint are unchanged."""
    from lsap.train.checkpoint import latest
    from lsap.utils.io import atomic_write_json

    run_dir = Path(run_dir)
    path = run_dir / "ood.json"
    known = json.loads(path.read_text()) if path.is_file() else {}
    ck = latest(run_dir)
    model = tok = None
    for corpus, data_dir in ood.items():
        if data_dir not in memo:
            tdir = task_root / hashlib.sha256(data_dir.encode()).hexdigest()[:10]
            memo[data_dir] = (
                tdir,
                build_offline_tasks(data_dir, tdir, max_examples=max_examples)["hash"],
            )
        tdir, h = memo[data_dir]
        k = known.get(corpus, {})
        if k.get("hash") == h and k.get("checkpoint") == ck.name and k.get("examples"):
            continue
        if model is None:
            from transformers import AutoModelForCausalLM, AutoTokenizer

            model = AutoModelForCausalLM.from_pretrained(ck / "model").eval()
            tok = AutoTokenizer.from_pretrained(ck / "model")
        scores, examples = {}, {}
        for t, metric in PAIR_TASKS.items():
            rows = [json.loads(x) for x in (tdir / f"{t}.jsonl").read_text().splitlines() if x]
            sc = score_choices(model, tok, rows)
            scores[t], examples[t] = sc[metric], pack_scores(sc)
        known[corpus] = {
            "hash": h,
            "checkpoint": ck.name,
            "tasks": scores,
            "pairs_average": sum(scores.values()) / len(scores),
            "examples": examples,
        }
        atomic_write_json(path, known)
        log(
            f"[sweep] {run_dir.name} out-of-domain {corpus}: pairs {known[corpus]['pairs_average']:.3f}"
        )
    return known


def ood_paired(ce: dict, ls: dict) -> dict | None:
    """The pooled sign test + bootstrap (`lsap.eval.stats.paired_comparison`'s result) of one setting's runs
    vs the CE runs of the same seeds on one out-of-domain corpus: ce / ls = {seed: ood.json
    entry}; every pair task's examples, one group per seed and task. None unless every seed has
    per-example results (ood.json written before they were kept: rerun the sweep to re-score)."""
    from lsap.eval.stats import paired_comparison
    from lsap.eval.tasks import unpack_scores

    gc, gl = [], []
    if not all(ce[seed].get("examples") and e.get("examples") for seed, e in ls.items()):
        return None
    for seed, e in ls.items():
        a, b = ce[seed]["examples"], e["examples"]
        for t, metric in PAIR_TASKS.items():
            if t in a and t in b and a[t]["n"] == b[t]["n"]:
                gc.append(unpack_scores(a[t])[metric])
                gl.append(unpack_scores(b[t])[metric])
    if not gc or not sum(len(x) for x in gc):
        return None
    return paired_comparison(gc, gl)
