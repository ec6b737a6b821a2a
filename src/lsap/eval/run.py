"""Run evaluation: a run's checkpoints through held-out metrics and zero-shot tasks; lm-eval glue.

- `evaluate_run(run)`: per checkpoint, held-out metrics (`lsap.eval.metrics`), the minimal pairs
  (`lsap.eval.tasks.score_choices`) and other tasks through lm-evaluation-harness; eval.json.
- `run_lm_eval(model, tokenizer, tasks, ...)`: lm-evaluation-harness on an already-loaded
  model (`HFLM(pretrained=model)`), zero-shot; lm-eval is imported lazily
  (``pip install lsap[eval]``).
- out-of-domain minimal pairs (`ood_eval`, `ood_paired`) live in `lsap.eval.ood`.
"""

from __future__ import annotations

import difflib
import hashlib
import json
import math
import os
import sys
from pathlib import Path

from lsap.eval.checkpoints import DamagedCheckpoint, check_weights, ckpt_name, find_checkpoints
from lsap.eval.metrics import STRENGTH_BYTES, document_fields, heldout_metrics, strength_documents
from lsap.eval.tasks import (
    OFFLINE_TASKS,
    PAIR_TASKS,
    PAPER_TASKS,
    TASK_SETS,
    build_offline_tasks,
    pack_scores,
    score_choices,
)
from lsap.utils.errors import EvalError


# --------------------------------------------------------------------------- lm-eval
def _import_lm_eval():
    try:
        import lm_eval  # noqa: F401
        from lm_eval.tasks import TaskManager  # noqa: F401
    except ImportError as e:
        raise EvalError(
            "lm-evaluation-harness is not installed: pip install 'lsap[eval]' (lm-eval==0.4.13)"
        ) from e
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
            raise EvalError(
                f"unknown task {n!r} (lm-eval {_lm_eval_version()} does not know it){hint}"
            )
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
        # subprocesses write to the file descriptors, not to sys.stderr (lm-eval runs `git describe`,
        # which prints "fatal: not a git repository" outside a git tree): route fds 1 and 2 as well
        for stream in (sys.__stdout__, sys.__stderr__):
            if stream is not None:
                stream.flush()
        self._fds = [(fd, os.dup(fd)) for fd in (1, 2)]
        for fd, _ in self._fds:
            os.dup2(f.fileno(), fd)
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
            for fd, saved in self._fds:
                os.dup2(saved, fd)
                os.close(saved)
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


def run_lm_eval(
    model,
    tokenizer,
    tasks: dict[str, str],
    *,
    include_path: str | None = None,
    limit: int | None = None,
    batch_size: int = 8,
    max_length: int | None = None,
    bootstrap_iters: int = 1000,
    log_file: str | os.PathLike | None = None,
) -> dict[str, dict]:
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
        lm = HFLM(
            pretrained=model, tokenizer=tokenizer, batch_size=batch_size, max_length=max_length
        )
        tm = TaskManager(
            include_path=include_path, include_defaults=bool(set(tasks) - set(OFFLINE_TASKS))
        )
        res = lm_eval.simple_evaluate(
            model=lm,
            tasks=list(tasks),
            num_fewshot=0,
            limit=limit,
            task_manager=tm,
            bootstrap_iters=bootstrap_iters,
            log_samples=False,
            random_seed=0,
            numpy_random_seed=0,
            torch_random_seed=0,
            fewshot_random_seed=0,
        )
    out = {}
    for task, metric in tasks.items():
        r = res["results"].get(task)
        if r is None:
            raise EvalError(f"lm-eval returned no result for {task!r}")
        metrics = {
            k.split(",")[0]: v
            for k, v in r.items()
            if "," in k and not k.split(",")[0].endswith("_stderr") and isinstance(v, (int, float))
        }
        m = metric if metric in metrics else ("acc" if "acc" in metrics else sorted(metrics)[0])
        stderr = r.get(f"{m}_stderr,none")
        out[task] = {
            "metric": m,
            "value": float(metrics[m]),
            "stderr": float(stderr) if isinstance(stderr, (int, float)) else None,
            "metrics": {k: float(v) for k, v in sorted(metrics.items())},
        }
    return out


# --------------------------------------------------------------------------- a run's checkpoints
META_KEYS = ("step", "tokens", "flops_base", "flops_surrogate", "flops")


# held-out windows for a bare HF model directory (no run config to read them from)
BARE_SEQ_LEN, BARE_BATCH_SIZE, BARE_VAL_BATCHES = 1024, 8, 20


def reference_targets(cfg, run_dir: Path) -> dict | None:
    """The auxiliary-target spec a run's own `Config` implies (LSAP runs with a surrogate model):
    {"surrogate", "vocab_map", "k", "alpha", "gold_outside", "intersection_keep", "intersection_seed"};
    None for CE runs. Held-out windows are not in a run's target store, so stored-target runs are
    split by their surrogate run online."""
    if cfg is None or cfg.loss != "lsap" or not cfg.surrogate.model:
        return None
    L = cfg.lsap
    vmap = cfg.surrogate.vocab_map or (
        str(run_dir / "vocab_map") if (run_dir / "vocab_map").is_dir() else None
    )
    return {
        "surrogate": cfg.surrogate.model,
        "vocab_map": vmap,
        "k": L.k,
        "alpha": L.alpha,
        "gold_outside": L.gold_outside,
        "intersection_keep": L.intersection_keep,
        "intersection_seed": L.intersection_seed,
    }


def _load_targets(spec: dict, base_tok, device):
    """`targets(inp, lab)` for `heldout_metrics` from a spec, through the one target-source
    factory (`lsap.surrogate.sources.TargetSpec`, online: held-out windows are in no store), so k, α,
    gold_outside and the intersection ablation apply as in training. Keys missing from `spec`
    take `LSAPCfg`'s defaults."""
    from lsap.config import LSAPCfg
    from lsap.data.tokenizer import padded_vocab_size
    from lsap.eval.metrics import source_targets
    from lsap.surrogate.sources import TargetSpec

    d = LSAPCfg()

    def get(key, default):
        return spec[key] if spec.get(key) is not None else default

    return source_targets(
        TargetSpec(
            k=int(get("k", d.k)),
            alpha=float(get("alpha", d.alpha)),
            gold_outside=get("gold_outside", d.gold_outside),
            keep_fraction=float(get("intersection_keep", d.intersection_keep)),
            seed=int(get("intersection_seed", d.intersection_seed)),
            surrogate=spec["surrogate"],
            vocab_map=spec.get("vocab_map") or None,
            allow_small_intersection=True,
        ).build(device=device, base_tokenizer=base_tok, base_vocab_size=padded_vocab_size(base_tok))
    )


def evaluate_run(
    target: str | os.PathLike,
    *,
    tasks: str = "offline",
    checkpoints: str = "all",
    limit: int | None = None,
    batch_size: int | None = None,
    data: str | None = None,
    seq_len: int | None = None,
    val_batches: int | None = None,
    loss: bool = True,
    task_dir: str | None = None,
    max_examples: int = 1000,
    device: str = "auto",
    force: bool = False,
    targets: dict | None | str = "auto",
    doc_bytes: int = STRENGTH_BYTES,
    log=print,
) -> list[dict]:
    """Evaluate a run's checkpoints (or one HF model directory); writes eval.json per checkpoint.

    Per checkpoint: held-out loss, bits per byte, top-1/top-5 accuracy (`heldout_metrics`)
    on the validation split of the run's data (``data.dir`` of RUN/config.yaml, or `data`),
    the same split by the number of auxiliary targets per position when `targets` is a
    spec {"surrogate", "vocab_map", "k", "alpha", "gold_outside"} (one reference for every run:
    keys left out take `LSAPCfg`'s defaults; "auto": the run's own targets as it trained with
    them, from `config.load_run_config`, for LSAP runs; None: no split), and zero-shot tasks through
    lm-evaluation-harness (`tasks`: offline | pairs | paper | names). Checkpoints whose
    eval.json has the same ``eval_set_hash`` are kept unless `force`. Held-out windows
    default to the run's own validation windows (data.seq_len, train.micro_batch_size ×
    train.eval_batches), so the trainer's curves and this table agree. ``doc_bpb``: bits per
    byte on the first complete held-out documents within `doc_bytes` (0: not measured), the
    text a surrogate's strength is measured on (`lsap.eval.metrics.strength_documents`).
    """
    import tempfile

    from lsap.config import load_run_config

    target = Path(target)
    if not target.is_dir():
        raise EvalError(f"{target}: not a directory")
    if (
        target / "model"
    ).is_dir() and target.parent.name == "checkpoints":  # RUN/checkpoints/step_X itself
        if checkpoints not in ("all", "last", target.name):
            raise EvalError(
                f"{target} is one checkpoint of run {target.parent.parent}; pass the run directory "
                f"with --checkpoints {checkpoints}"
            )
        log(
            f"[lsap] {target} is a checkpoint of run {target.parent.parent}: evaluating {target.name} only"
        )
        target, checkpoints = target.parent.parent, target.name
    cks = find_checkpoints(target, checkpoints)
    bare = cks and cks[0][0] == target  # a HF model directory, not a run
    cfg = None if bare else load_run_config(target)

    data_dir = data or (cfg.data.dir if cfg else None)
    if data_dir and not Path(data_dir).is_dir() and (target / data_dir).is_dir():
        data_dir = str(target / data_dir)
    if data_dir and not (Path(data_dir) / "manifest.json").is_file():
        raise EvalError(
            f"data directory {data_dir}: no manifest.json (pass --data DIR from `lsap prepare`)"
        )
    if targets == "auto":
        targets = reference_targets(cfg, target)
    elif isinstance(targets, dict):  # one reference for every run (same eval set): unset keys take
        from lsap.config import LSAPCfg  # lsap.*'s defaults, never a run's own settings

        targets = {
            "k": LSAPCfg.k,
            "alpha": LSAPCfg.alpha,
            "gold_outside": LSAPCfg.gold_outside,
            **{k: v for k, v in targets.items() if v is not None},
        }

    tmp = None
    offline = None
    try:
        task_map = resolve_tasks(tasks)
        if set(task_map) & set(OFFLINE_TASKS):
            if not data_dir:
                raise EvalError(
                    "the offline tasks are built from the held-out documents of a prepared data "
                    "directory: pass --data DIR (or evaluate a run whose config has data.dir)"
                )
            if task_dir is None:
                tmp = tempfile.TemporaryDirectory(prefix="lsap-tasks-")
                task_dir = tmp.name
            offline = build_offline_tasks(data_dir, task_dir, max_examples=max_examples)
            gone = {
                t.removeprefix("lsap_"): n for t, n in offline["removed_in_training"].items() if n
            }
            if gone:
                log(
                    "[lsap] offline tasks: dropped examples whose text occurs in a training document: "
                    + ", ".join(f"{t} {n}" for t, n in gone.items())
                )
        seq_len = seq_len or (cfg.data.seq_len if cfg else BARE_SEQ_LEN)
        batch_size = batch_size or (cfg.train.micro_batch_size if cfg else BARE_BATCH_SIZE)
        val_batches = val_batches or (cfg.train.eval_batches if cfg else BARE_VAL_BATCHES)
        do_loss = bool(data_dir) and loss
        task_set = tasks if tasks in TASK_SETS else ",".join(task_map)
        eval_set = {
            "tasks": task_map,
            "limit": limit,
            "num_fewshot": 0,
            "offline_hash": offline["hash"] if offline else None,
            "heldout": offline["heldout"] if offline else None,
            "loss": {"seq_len": seq_len, "batches": val_batches, "batch_size": batch_size}
            if do_loss
            else None,
            "targets": targets if do_loss else None,
        }
        if do_loss and offline is None:
            eval_set["heldout"] = json.loads((Path(data_dir) / "manifest.json").read_text())["args"]
        docs = strength_documents(data_dir, doc_bytes) if do_loss and doc_bytes else None
        if docs:  # bits per byte on complete held-out documents: what a surrogate's strength is compared with
            eval_set["doc_bpb"] = {"max_bytes": doc_bytes, "documents": len(docs)}
        eval_set_hash = hashlib.sha256(json.dumps(eval_set, sort_keys=True).encode()).hexdigest()

        results, target_fn, kept, skipped, gone = [], None, [], [], []
        for model_dir, out_path, meta in cks:
            if out_path.is_file() and not force:
                old = json.loads(out_path.read_text())
                if old.get("eval_set_hash") == eval_set_hash:
                    kept.append(out_path.parent.name)
                    results.append(old)
                    continue
            if not (out_path.parent / "meta.json").is_file():  # pruned since listed (a training run
                gone.append(out_path.parent.name)  # with keep_checkpoints): gone, not damaged
                continue
            try:
                check_weights(model_dir)
            except DamagedCheckpoint as e:
                log(f"[lsap] {ckpt_name(out_path.parent)}: skipped: {e}")
                skipped.append(out_path.parent.name)
                continue
            if do_loss and targets and target_fn is None:
                from transformers import AutoTokenizer

                from lsap.surrogate.load import inference_device_dtype

                target_fn = _load_targets(
                    targets,
                    AutoTokenizer.from_pretrained(model_dir),
                    inference_device_dtype(device)[0],
                )
            results.append(
                _evaluate_one(
                    model_dir,
                    out_path,
                    meta,
                    task_map,
                    limit,
                    batch_size,
                    device,
                    data_dir if do_loss else None,
                    seq_len,
                    val_batches,
                    task_dir if offline else None,
                    task_set,
                    eval_set_hash,
                    target_fn,
                    targets,
                    log,
                    docs,
                    offline and offline.get("removed_in_training"),
                )
            )
        _summarise_skips(target, eval_set_hash, kept, gone, skipped, results, log)
        return results
    finally:
        if tmp is not None:
            tmp.cleanup()


def _summarise_skips(target, eval_set_hash, kept, gone, skipped, results, log) -> None:
    """One line each for checkpoints kept (already evaluated), pruned meanwhile, damaged; an
    EvalError when none was evaluated."""
    if kept:
        log(
            f"[lsap] {target.name}: {len(kept)} checkpoint(s) already evaluated on this evaluation set "
            f"({eval_set_hash[:12]}: {kept[0]}{' … ' + kept[-1] if len(kept) > 1 else ''}); --force to redo"
        )
    if gone:
        log(
            f"[lsap] {target.name}: {len(gone)} checkpoint(s) pruned by the training run "
            f"(train.keep_checkpoints) while this evaluation ran, not evaluated: {', '.join(gone)}"
        )
    if skipped:
        log(
            f"[lsap] {target.name}: skipped {len(skipped)} damaged checkpoint(s), not evaluated: "
            f"{', '.join(skipped)}"
        )
    if not results and (skipped or gone):
        raise EvalError(
            f"{target}: every selected checkpoint is damaged or pruned "
            f"({', '.join(skipped + gone)})"
        )


def _evaluate_one(
    model_dir,
    out_path,
    meta,
    tasks,
    limit,
    batch_size,
    device,
    data_dir,
    seq_len,
    val_batches,
    task_dir,
    task_set,
    eval_set_hash,
    target_fn,
    targets,
    log,
    docs=None,
    removed=None,
) -> dict:
    import time

    from transformers import AutoModelForCausalLM, AutoTokenizer

    from lsap.data.tokenizer import tokenizer_hash
    from lsap.surrogate.load import inference_device_dtype
    from lsap.utils.io import atomic_write_json

    t0 = time.perf_counter()
    dev, dtype = inference_device_dtype(device)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=dtype).to(dev).eval()
    tok = AutoTokenizer.from_pretrained(model_dir)
    result = {k: meta.get(k) for k in META_KEYS}
    result.update(
        task_set=task_set,
        eval_set_hash=eval_set_hash,
        limit=limit,
        tokenizer_hash=tokenizer_hash(tok),
        model_dir=str(model_dir),
        val_loss=None,
        val_bpb=None,
        targets=targets,
    )
    if data_dir:
        result.update(
            heldout_metrics(
                model,
                data_dir,
                seq_len=seq_len,
                batch_size=batch_size,
                max_batches=val_batches,
                tokenizer=tok,
                targets=target_fn,
            )
        )
    if docs:
        result.update(document_fields(model, tok, docs, seq_len=seq_len))
    # lm-eval truncates contexts from the left to this many tokens; RoPE models can
    # read past their training seq_len, and a choice longer than seq_len must still fit.
    max_len = int(getattr(model.config, "max_position_embeddings", 0) or 2048)
    native = {t: m for t, m in tasks.items() if t in PAIR_TASKS and task_dir}
    rest = {t: m for t, m in tasks.items() if t not in native}
    result["tasks"] = {}
    for (
        t,
        metric,
    ) in native.items():  # the minimal pairs: lm-eval's scoring, natively (seconds, not minutes)
        rows = [
            json.loads(line)
            for line in (Path(task_dir) / f"{t}.jsonl").read_text().splitlines()
            if line
        ]
        sc = score_choices(model, tok, rows[:limit] if limit else rows)
        v = sc[metric]
        result["tasks"][t] = {
            "metric": metric,
            "value": v,
            "stderr": math.sqrt(v * (1 - v) / max(sc["n"], 1)),
            "metrics": {"acc": sc["acc"], "acc_norm": sc["acc_norm"]},
            "n": sc["n"],
            "equal_length": sc["equal_length"],
            "examples": pack_scores(sc),
            "engine": "lsap.eval.tasks.score_choices",
        }
    if rest:
        result["tasks"].update(
            run_lm_eval(
                model,
                tok,
                rest,
                include_path=task_dir,
                limit=limit,
                batch_size=max(batch_size, 32),
                max_length=max_len,
                log_file=Path(out_path).with_name("lm_eval.log"),
            )
        )
    result["tasks"] = {t: result["tasks"][t] for t in tasks}
    for t, n in (
        removed or {}
    ).items():  # examples dropped because their text occurs in training documents
        if t in result["tasks"]:
            result["tasks"][t]["removed_in_training"] = n
    scores = [t["value"] for t in result["tasks"].values()]
    result["average"] = sum(scores) / len(scores) if scores else None
    pairs = [result["tasks"][t]["value"] for t in PAIR_TASKS if t in result["tasks"]]
    result["pairs_average"] = sum(pairs) / len(pairs) if len(pairs) == len(PAIR_TASKS) else None
    result["lm_eval_version"] = _lm_eval_version()
    result["wall_s"] = round(time.perf_counter() - t0, 3)
    from lsap.utils.provenance import provenance

    result["provenance"] = provenance(dev)
    atomic_write_json(out_path, result)
    shown = ", ".join(
        f"{k.removeprefix('lsap_')} {v['value']:.3f}" for k, v in result["tasks"].items()
    )
    loss = (
        f"val loss {result['val_loss']:.4f} bpb {result['val_bpb']:.4f} top1 {result['val_top1']:.3f}; "
        if result["val_loss"] is not None
        else ""
    )
    log(f"[lsap] {ckpt_name(out_path.parent)}: {loss}{shown} ({result['wall_s']:.1f}s)")
    return result
