"""`lsap eval` — evaluate a run's checkpoints (or one HF model directory).

    lsap eval runs/ce --tasks offline --checkpoints all --limit 200
    lsap eval runs/lsap-0.05 --tasks paper            # needs network (lm-eval datasets)
    lsap eval path/to/hf_model --data data/shakespeare --tasks lsap_lastword,piqa

For each checkpoint ``RUN/checkpoints/step_XXXXXXXX/`` it loads ``model/`` with
transformers, computes held-out loss and bits per byte on the validation split of the
run's data directory (``data.dir`` in ``RUN/config.yaml``, or ``--data``), runs
lm-evaluation-harness zero-shot on the chosen tasks, and writes ``eval.json`` next to
the checkpoint with the tokens and FLOPs from its ``meta.json``. Checkpoints whose
``eval.json`` has the same ``eval_set_hash`` are skipped unless ``--force``. For a
bare HF model directory the result goes to ``DIR/eval.json`` (no tokens / FLOPs).

Task sets: ``offline`` (built from the held-out documents of the run's corpus, see
`lsap.evaluate.build_offline_tasks`), ``paper`` (the paper's eight benchmarks), or a
comma-separated list of lm-eval task names.
"""

from __future__ import annotations

import argparse
import difflib
import hashlib
import json
import tempfile
import time
from pathlib import Path

META_KEYS = ("step", "tokens", "flops_base", "flops_surrogate", "flops")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("target", help="run directory (with checkpoints/) or a HF model directory")
    parser.add_argument("--tasks", default="offline",
                        help="offline | paper | comma-separated lm-eval task names (default: offline)")
    parser.add_argument("--checkpoints", default="all",
                        help="all | last | step_00000100[,step_...] (default: all)")
    parser.add_argument("--limit", type=int, default=None, help="at most N examples per task (lm-eval --limit)")
    parser.add_argument("--batch-size", type=int, default=8, help="sequences per forward (default: 8)")
    parser.add_argument("--data", default=None,
                        help="prepared data directory for held-out loss and the offline tasks "
                             "(default: data.dir of RUN/config.yaml)")
    parser.add_argument("--seq-len", type=int, default=None,
                        help="held-out loss window (default: data.seq_len of the run, else 1024)")
    parser.add_argument("--val-batches", type=int, default=None,
                        help="held-out loss batches (default: train.eval_batches of the run, else 20)")
    parser.add_argument("--no-loss", action="store_true", help="skip held-out loss / bits per byte")
    parser.add_argument("--task-dir", default=None,
                        help="write the offline task files here (default: a temporary directory)")
    parser.add_argument("--max-examples", type=int, default=1000,
                        help="examples per offline task when building them (default: 1000)")
    parser.add_argument("--device", default="auto", help="auto | cpu | cuda (default: auto)")
    parser.add_argument("--force", action="store_true", help="re-evaluate checkpoints that already have results")


def _cfg_get(cfg: dict, dotted: str, default=None):
    cur = cfg
    for k in dotted.split("."):
        if not isinstance(cur, dict) or k not in cur:
            return default
        cur = cur[k]
    return cur if cur not in (None, "") else default


def find_checkpoints(target: Path, which: str = "all") -> list[tuple[Path, Path, dict]]:
    """(model_dir, eval_json_path, meta) per selected checkpoint, in step order."""
    from lsap.checkpoint import list_checkpoints
    from lsap.evaluate import EvalError

    if (target / "config.json").is_file() and not (target / "checkpoints").is_dir():
        return [(target, target / "eval.json", {})]
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


def evaluate_target(args) -> list[dict]:
    """The body of `lsap eval`; returns the eval.json dicts written (or kept)."""
    import yaml

    from lsap import evaluate as ev

    target = Path(args.target)
    if not target.is_dir():
        raise ev.EvalError(f"{target}: not a directory")
    cfg = {}
    if (target / "config.yaml").is_file():
        cfg = yaml.safe_load((target / "config.yaml").read_text()) or {}
    checkpoints = find_checkpoints(target, args.checkpoints)

    data_dir = args.data or _cfg_get(cfg, "data.dir")
    if data_dir and not Path(data_dir).is_dir() and (target / data_dir).is_dir():
        data_dir = str(target / data_dir)
    if data_dir and not (Path(data_dir) / "manifest.json").is_file():
        raise ev.EvalError(f"data directory {data_dir}: no manifest.json (pass --data DIR from `lsap prepare`)")

    tmp = None
    task_dir = args.task_dir
    offline = None
    try:
        tasks = ev.resolve_tasks(args.tasks)
        if set(tasks) & set(ev.OFFLINE_TASKS):
            if not data_dir:
                raise ev.EvalError("the offline tasks are built from the held-out documents of a prepared data "
                                   "directory: pass --data DIR (or evaluate a run whose config has data.dir)")
            if task_dir is None:
                tmp = tempfile.TemporaryDirectory(prefix="lsap-tasks-")
                task_dir = tmp.name
            offline = ev.build_offline_tasks(data_dir, task_dir, max_examples=args.max_examples)
        seq_len = args.seq_len or int(_cfg_get(cfg, "data.seq_len", 1024))
        val_batches = args.val_batches or int(_cfg_get(cfg, "train.eval_batches", 20))
        do_loss = bool(data_dir) and not args.no_loss
        task_set = args.tasks if args.tasks in ev.TASK_SETS else ",".join(tasks)
        eval_set = {
            "tasks": tasks, "limit": args.limit, "num_fewshot": 0,
            "offline_hash": offline["hash"] if offline else None,
            "heldout": offline["heldout"] if offline else None,
            "loss": {"seq_len": seq_len, "batches": val_batches, "batch_size": args.batch_size} if do_loss else None,
        }
        if do_loss and offline is None:
            eval_set["heldout"] = json.loads((Path(data_dir) / "manifest.json").read_text())["args"]
        eval_set_hash = hashlib.sha256(json.dumps(eval_set, sort_keys=True).encode()).hexdigest()

        results = []
        for model_dir, out_path, meta in checkpoints:
            if out_path.is_file() and not args.force:
                old = json.loads(out_path.read_text())
                if old.get("eval_set_hash") == eval_set_hash:
                    print(f"[lsap] {out_path.parent.name}: already evaluated (eval_set_hash "
                          f"{eval_set_hash[:12]}); --force to redo")
                    results.append(old)
                    continue
            results.append(_evaluate_one(model_dir, out_path, meta, tasks, args, data_dir, do_loss, seq_len,
                                         val_batches, task_dir if offline else None, task_set, eval_set_hash))
        return results
    finally:
        if tmp is not None:
            tmp.cleanup()


def _evaluate_one(model_dir, out_path, meta, tasks, args, data_dir, do_loss, seq_len, val_batches, task_dir,
                  task_set, eval_set_hash) -> dict:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from lsap import evaluate as ev
    from lsap.data import _write_json_atomic
    from lsap.surrogate import inference_device_dtype
    from lsap.tokenizer import tokenizer_hash

    t0 = time.perf_counter()
    device, dtype = inference_device_dtype(args.device)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=dtype).to(device).eval()
    tok = AutoTokenizer.from_pretrained(model_dir)
    result = {k: meta.get(k) for k in META_KEYS}
    result.update(task_set=task_set, eval_set_hash=eval_set_hash, limit=args.limit, tokenizer_hash=tokenizer_hash(tok),
                  model_dir=str(model_dir), val_loss=None, val_bpb=None)
    if do_loss:
        result.update(ev.heldout_loss(model, data_dir, seq_len=seq_len, batch_size=args.batch_size,
                                      max_batches=val_batches, tokenizer=tok))
    # lm-eval truncates contexts from the left to this many tokens; RoPE models can
    # read past their training seq_len, and a choice longer than seq_len must still fit.
    max_len = int(getattr(model.config, "max_position_embeddings", 0) or 2048)
    result["tasks"] = ev.run_lm_eval(model, tok, tasks, include_path=task_dir, limit=args.limit,
                                     batch_size=args.batch_size, max_length=max_len) if tasks else {}
    scores = [t["value"] for t in result["tasks"].values()]
    result["average"] = sum(scores) / len(scores) if scores else None
    result["lm_eval_version"] = ev._lm_eval_version()
    result["wall_s"] = round(time.perf_counter() - t0, 3)
    _write_json_atomic(out_path, result)
    shown = ", ".join(f"{k} {v['value']:.4f}" for k, v in result["tasks"].items())
    loss = f"val_loss {result['val_loss']:.4f} bpb {result['val_bpb']:.4f}; " if result["val_loss"] is not None else ""
    print(f"[lsap] {out_path.parent.name}: {loss}{shown} ({result['wall_s']:.1f}s) -> {out_path}")
    return result


def run(args) -> int:
    evaluate_target(args)
    return 0
