"""`lsap prepare`: tokenize a text source into train/val token shards (see `lsap.data.shards`),
in `--workers` processes (byte-identical to one), or use token arrays written by
`dolma tokens` in place (`--from-arrays`)."""

from __future__ import annotations

import argparse

from lsap.cli.args import add_no_progress, nonnegative_int, positive_int


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from lsap.data.corpora import CORPORA

    parser.add_argument(
        "--tokenizer",
        default="dolma2",
        help="offline name (dolma2, cl100k, qwen3, smollm2), local path, or hub id",
    )
    parser.add_argument(
        "--source",
        default=None,
        help=f"corpus name ({', '.join(CORPORA)}), hf:NAME[:CONFIG], or a .txt/.jsonl/.parquet "
        "file or folder (also .txt.gz/.jsonl.gz, any case; other files are skipped with a warning)",
    )
    parser.add_argument(
        "--out", required=True, help="output directory (manifest.json, train/, val/)"
    )
    parser.add_argument(
        "--val-fraction",
        type=float,
        default=0.01,
        help="share of documents for validation, chosen by a hash of (seed, index)",
    )
    parser.add_argument(
        "--max-tokens",
        type=positive_int,
        default=None,
        help="stop after the document that reaches this many tokens (train + val)",
    )
    parser.add_argument(
        "--shard-tokens", type=positive_int, default=1 << 24, help="tokens per shard file"
    )
    parser.add_argument(
        "--seed", type=nonnegative_int, default=0, help="seed of the train/val document split"
    )
    parser.add_argument(
        "--train-part",
        default=None,
        metavar="LO:HI",
        help="keep only this partition of the training documents (e.g. 0:0.3 for the base, "
        "0.3:1 for a surrogate): disjoint training text, the same held-out documents",
    )
    parser.add_argument(
        "--workers",
        type=positive_int,
        default=1,
        help="tokenizer processes (1: one process, tokenizers' own threads); the output "
        "is byte-identical for any number",
    )
    parser.add_argument(
        "--from-arrays",
        default=None,
        nargs="+",
        metavar="NPY",
        help="instead of --source: `dolma tokens` output (directories of .npy, files or globs; "
        "sorted by name) used in place as the train split; writes only manifest.json",
    )
    parser.add_argument(
        "--val-arrays",
        default=None,
        nargs="+",
        metavar="NPY",
        help="with --from-arrays: token arrays for the val split",
    )
    parser.add_argument(
        "--token-dtype",
        default=None,
        choices=("uint16", "uint32"),
        help="with --from-arrays: the `dolma tokens --dtype` (default by vocabulary size)",
    )
    add_no_progress(parser)
    # the old name, kept so existing command lines work; not shown in --help
    parser.add_argument("--quiet", dest="no_progress", action="store_true", help=argparse.SUPPRESS)


def run(args: argparse.Namespace) -> int:
    from lsap.data.arrays import link_token_arrays
    from lsap.data.shards import DataError, prepare

    if args.from_arrays:
        if args.source:
            raise DataError(
                "give either --source (text to tokenize) or --from-arrays (token arrays), not both"
            )
        link_token_arrays(
            args.tokenizer,
            args.from_arrays,
            args.out,
            val=args.val_arrays or (),
            token_dtype=args.token_dtype,
            workers=args.workers,
            progress=not args.no_progress,
        )
        return 0
    if not args.source:
        raise DataError("--source is required (or --from-arrays for `dolma tokens` output)")

    part = None
    if args.train_part:
        lo, sep, hi = args.train_part.partition(":")
        try:
            part = (float(lo), float(hi))
        except ValueError:
            raise DataError(
                f"--train-part {args.train_part!r} must look like LO:HI, e.g. 0:0.3"
            ) from None
    prepare(
        args.tokenizer,
        args.source,
        args.out,
        val_fraction=args.val_fraction,
        max_tokens=args.max_tokens,
        shard_tokens=args.shard_tokens,
        seed=args.seed,
        train_part=part,
        workers=args.workers,
        progress=not args.no_progress,
    )
    return 0
