"""`lsap report` — compare runs at matched FLOPs (the paper's Table 2 and Figure 2).

    lsap report runs/ce runs/lsap-0.05 runs/lsap-0.01 --out reports/slimpajama
    lsap report runs/* --flops 2.32e20

Reads each run's ``checkpoints/*/eval.json`` (from `lsap eval`) and ``metrics.jsonl``;
writes ``report.md`` (one row per run at the matched FLOPs budget, best per column in
bold), ``report.json`` (the same numbers) and three PNGs to ``--out``. See
`lsap.experiments.report` for how the budget and checkpoints are chosen.
"""

from __future__ import annotations

import argparse

from lsap.cli.args import positive_float as _flops


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "runs", nargs="+", help="run directories (each with checkpoints/*/eval.json)"
    )
    parser.add_argument("--out", default="report", help="output directory")
    parser.add_argument(
        "--flops",
        type=_flops,
        default=None,
        help="FLOPs budget to match (default: the common train.max_flops of the runs, else the largest budget all runs reached)",
    )


def run(args) -> int:
    from lsap.experiments.report import make_report

    res = make_report(args.runs, args.out, flops=args.flops)
    print(res["markdown"].split("\n![")[0].rstrip())
    print(f"\n[lsap] wrote {', '.join(res['files'])} to {res['out']}")
    return 0
