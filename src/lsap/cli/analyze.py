"""`lsap analyze` — the paper's Table 1: vocabulary entries per position with p > α.

    lsap analyze --model smollm2 --data python-docs gcide linux-docs \\
        --alphas 0.01 0.05 0.2 --n 5000 --seeds 21 42 67 --seq-len 1024 --out runs/table1

Each example is a window of seq_len tokens of the model's own tokenization of the
dataset's documents, shuffled per seed and packed with a document separator; every
position is counted (see `lsap.experiments.analyze` for the exact definition). `--base dolma2`
adds rows with the auxiliary targets LSAP would actually add (METHOD §3 exclusions).
"""

from __future__ import annotations

import argparse
import sys

from lsap.cli.args import add_alphas, add_no_progress, device, nonnegative_int, positive_int


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from lsap.surrogate.load import MODEL_HELP

    parser.add_argument(
        "--model",
        action="append",
        required=True,
        metavar="M",
        help=f"model to analyse (repeat for several): {MODEL_HELP}",
    )
    parser.add_argument(
        "--data",
        nargs="+",
        required=True,
        metavar="D",
        help="datasets: offline corpora (shakespeare, python-docs, gcide, linux-docs, "
        "pydoc-topics), 'hf:NAME[:CONFIG]' (network), or local .txt/.jsonl/.parquet files/folders",
    )
    add_alphas(parser, [0.01, 0.05, 0.2], "the default is the paper's", old_alias=True)
    parser.add_argument(
        "--n", type=positive_int, default=5000, help="examples per dataset and seed"
    )
    parser.add_argument(
        "--seeds",
        nargs="+",
        type=nonnegative_int,
        default=[21, 42, 67],
        help="sampling seeds; each dataset's value is the mean over them",
    )
    parser.add_argument("--seq-len", type=positive_int, default=1024, help="tokens per example")
    parser.add_argument(
        "--batch-size", type=positive_int, default=8, help="examples per forward pass"
    )
    parser.add_argument(
        "--device",
        type=device,
        default=None,
        help="cuda / cpu (default: cuda if available; bf16 on GPU)",
    )
    parser.add_argument(
        "--base",
        default=None,
        metavar="TOK",
        help="also count the auxiliary targets LSAP would add for this base tokenizer "
        "(e.g. dolma2): gold and non-Σ∩ excluded, top-k, p > α",
    )
    parser.add_argument(
        "--k", type=positive_int, default=15, help="top-k for --base; the default is the paper's"
    )
    parser.add_argument(
        "--base-vocab-size",
        type=positive_int,
        default=None,
        help="the base model's padded vocabulary (dolma2: 100352); only for --base",
    )
    parser.add_argument(
        "--max-documents",
        type=positive_int,
        default=None,
        help="read at most this many documents per dataset before shuffling "
        "(default: all; 50000 for hf: datasets)",
    )
    parser.add_argument(
        "--out",
        default=None,
        metavar="DIR",
        help="write table1.csv, table1.json, table1.md and table1.png here",
    )
    add_no_progress(parser)


def run(args: argparse.Namespace) -> int:
    from lsap.experiments.analyze import analyze
    from lsap.experiments.analyze_output import table_markdown, write_outputs

    result = analyze(
        models=args.model,
        datasets=args.data,
        alphas=args.alphas,
        n=args.n,
        seeds=args.seeds,
        seq_len=args.seq_len,
        batch_size=args.batch_size,
        device=args.device,
        base=args.base,
        k=args.k,
        base_vocab_size=args.base_vocab_size,
        max_documents=args.max_documents,
        progress=not args.no_progress,
        log=lambda m: print(m, file=sys.stderr),
    )
    s = result["settings"]
    print(table_markdown(result))
    print(
        f"\nn={s['n']} × seq_len {s['seq_len']} per seed; seeds {s['seeds']}; {s['device']} ({s['dtype']})"
    )
    if args.out:
        paths = write_outputs(result, args.out)
        print("wrote " + ", ".join(str(p) for p in paths.values()))
    return 0
