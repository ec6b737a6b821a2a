"""`lsap sweep` — a grid of LSAP settings plus CE, one FLOPs budget, one report (see `lsap.experiments.sweep`).

    lsap sweep strength --out runs/sweep-strength        # packaged: configs/sweeps/strength.yaml
    lsap sweep my-grid.yaml --out runs/my-grid --dry-run # check every key, print the plan, build nothing
    lsap sweep base-size --runs-root runs/sweeps         # axes: base-size, surrogate-size, overlap, domain

Resumable: run the same command again after an interruption; finished runs and
evaluations are reused.
"""

from __future__ import annotations

import argparse

from lsap.cli.args import add_no_progress, progress_off


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "spec",
        help="sweep spec YAML, or a packaged one (strength, alpha-lambda, base-size, "
        "surrogate-size, overlap, domain, toy)",
    )
    parser.add_argument("--out", default=None, help="output directory (default: runs/sweep-<name>)")
    parser.add_argument(
        "--runs-root",
        default=None,
        help="where run directories live, named by config hash (default: OUT/runs); sweeps "
        "sharing it train identical runs, e.g. the CE baseline, once",
    )
    parser.add_argument(
        "--report-only",
        action="store_true",
        help="rewrite OUT's report from the runs finished so far, train nothing",
    )
    parser.add_argument(
        "--dry-run",
        action="store_true",
        help="check the spec and every run's config, print the expanded runs "
        "and stop (builds and writes nothing)",
    )
    add_no_progress(parser)


def run(args) -> int:
    from lsap.experiments.sweep import load_spec, report_sweep, run_sweep

    out = args.out or f"runs/sweep-{load_spec(args.spec)['name']}"
    if args.report_only:
        from lsap.utils.lock import DirLock

        with DirLock(out, "lsap sweep --report-only"):
            res = report_sweep(out)
        print(f"[sweep] wrote {', '.join(res['files'])} to {res['out']}")
        return 0
    with progress_off(args):
        run_sweep(args.spec, out, runs_root=args.runs_root, dry_run=args.dry_run)
    return 0
