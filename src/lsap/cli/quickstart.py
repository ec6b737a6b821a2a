"""`lsap quickstart [--out DIR]`: CE vs LSAP at matched FLOPs, end to end, offline, on a CPU."""

from __future__ import annotations

from lsap.cli.args import (
    ALPHA_HELP,
    add_no_progress,
    nonnegative_int,
    positive_float,
    positive_int,
    probability,
    progress_off,
)


def add_arguments(p) -> None:
    from lsap.experiments.quickstart import Settings

    d = Settings()
    p.add_argument("--out", default=d.out, help="output directory")
    p.add_argument(
        "--cache",
        default="",
        help="where tokenizers, shards and the surrogate are cached "
        "(default $LSAP_CACHE/quickstart, else $XDG_CACHE_HOME/lsap/quickstart, "
        "else ~/.cache/lsap/quickstart)",
    )
    p.add_argument(
        "--surrogate",
        default=d.surrogate,
        help="pretrain (a small surrogate pretrained once on its own part of the base's domain) | "
        "smollm2 | a local HF dir / .gguf / hub id",
    )
    p.add_argument(
        "--data",
        default=d.corpus,
        metavar="DATA",
        help="the regime's text: an offline corpus name (see `lsap prepare "
        "--help`), YOUR text as a local .txt/.jsonl/.parquet file or folder, or hf:NAME; split by "
        "document into held-out, the base's part and the surrogate's part",
    )
    p.add_argument(
        "--ce-tokens",
        type=positive_float,
        default=d.ce_tokens,
        help="FLOPs budget in CE tokens",
    )
    p.add_argument(
        "--surrogate-multiples",
        type=positive_int,
        nargs="+",
        default=d.surrogate_multiples,
        help="surrogate checkpoints at these multiples of the base's tokens; the last one is used",
    )
    p.add_argument(
        "--alpha", type=probability, default=d.alpha, help=f"the LSAP runs' {ALPHA_HELP}"
    )
    p.add_argument(
        "--k", type=positive_int, default=d.k, help="the LSAP runs' top-k surrogate candidates"
    )
    p.add_argument(
        "--seeds",
        type=nonnegative_int,
        nargs="+",
        default=d.seeds,
        help="training seeds, one CE and one LSAP run each; 5 are the fewest whose "
        "seed-level test can reach p < 0.05 at the effect measured here (fewer give "
        "'inconclusive' by construction)",
    )
    p.add_argument(
        "--eval-examples",
        type=positive_int,
        default=d.eval_examples,
        help="minimal pairs per task in the evaluation",
    )
    add_no_progress(p)


def run(args) -> int:
    from lsap.experiments.quickstart import Settings
    from lsap.experiments.quickstart import run as run_quickstart

    s = Settings(
        out=args.out,
        cache=args.cache,
        surrogate=args.surrogate,
        corpus=args.data,
        ce_tokens=args.ce_tokens,
        surrogate_multiples=args.surrogate_multiples,
        alpha=args.alpha,
        k=args.k,
        seeds=args.seeds,
        eval_examples=args.eval_examples,
    )
    with progress_off(args):
        run_quickstart(s)
    return 0
