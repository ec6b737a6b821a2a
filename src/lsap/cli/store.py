"""`lsap store build|info` — the offline surrogate-target store (see `lsap.surrogate.store`).

    lsap store build --surrogate smollm2 --data runs/data --seq-len 256 --k 15 \\
        --min-alpha 0.01 --out runs/store-smollm2
    torchrun --nproc_per_node=8 -m lsap store build ...   (same store, byte for byte)
    lsap store info runs/store-smollm2 [--json] [--verify]

Train from it with ``surrogate.source=store surrogate.store_dir=DIR`` (any lsap.alpha ≥
min_alpha, lsap.k ≤ k; data.seq_len must equal --seq-len).
"""

from __future__ import annotations

import argparse
import json
import os

from lsap.cli.args import (
    ALPHAS_HELP,
    HelpFormatter,
    add_no_progress,
    device,
    positive_float,
    positive_int,
    probability,
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="store_command", metavar="SUBCOMMAND")
    _add_build(sub)
    _add_info(sub)


def _add_build(sub) -> None:
    b = sub.add_parser(
        "build",
        help="run the surrogate once over the train windows and store its targets",
        formatter_class=HelpFormatter,
    )
    b.add_argument(
        "--surrogate", required=True, help="smollm2, a .gguf file, a local HF dir, or a hub id"
    )
    b.add_argument(
        "--data",
        required=True,
        metavar="SHARDS",
        help="prepared token shards (`lsap prepare --out`)",
    )
    b.add_argument(
        "--seq-len",
        type=positive_int,
        required=True,
        help="the training data.seq_len (windows of T+1 tokens)",
    )
    b.add_argument(
        "--k",
        type=positive_int,
        default=15,
        help="candidates kept per position (train k' ≤ k)",
    )
    b.add_argument(
        "--min-alpha",
        type=float,
        default=0.01,
        help="keep p > min_alpha (train α ≥ it)",
    )
    b.add_argument(
        "--out", required=True, metavar="DIR", help="the store directory (resumed when it exists)"
    )
    b.add_argument(
        "--map",
        default=None,
        metavar="MAPDIR",
        help="saved VocabMap (default: built from the tokenizers)",
    )
    b.add_argument(
        "--batch-size",
        type=positive_int,
        default=8,
        help="windows per surrogate forward",
    )
    b.add_argument(
        "--chunk-windows",
        type=positive_int,
        default=1024,
        help="windows per chunk file (resume unit)",
    )
    b.add_argument(
        "--max-windows",
        type=positive_int,
        default=None,
        help="only the first N windows (measurements)",
    )
    b.add_argument(
        "--device",
        type=device,
        default="auto",
        help="auto | cpu | cuda[:i] (auto: cuda if available)",
    )
    b.add_argument(
        "--dtype",
        default="auto",
        choices=("auto", "bfloat16", "float32"),
        help="auto: bf16 on GPU, fp32 on CPU",
    )
    b.add_argument(
        "--window-layout",
        default="lsap",
        choices=("lsap", "olmo"),
        help="lsap: `lsap train`'s windows of T+1 tokens; olmo: OLMo-core's NumpyFSLDataset "
        "instances (T tokens, T-1 labels) over the shard files in order",
    )
    b.add_argument(
        "--dist-timeout-s",
        type=positive_float,
        default=3600.0,
        help="under torchrun: seconds a rank waits for the others at the start and end",
    )
    add_no_progress(b)


def _add_info(sub) -> None:
    i = sub.add_parser(
        "info",
        help="size, bytes per token, candidates per position at each α, provenance",
        formatter_class=HelpFormatter,
    )
    i.add_argument("dir", metavar="DIR", help="the store directory (`lsap store build --out`)")
    i.add_argument("--json", action="store_true", help="print JSON")
    i.add_argument("--verify", action="store_true", help="also check every chunk's sha256")
    i.add_argument(
        "--alphas",
        type=probability,
        nargs="+",
        action="extend",
        default=None,
        metavar="ALPHA",
        help=f"{ALPHAS_HELP}, besides 0.01 0.05 0.2 and the store's min_alpha",
    )
    # the old spelling, one value per flag (`--alpha 0.07 --alpha 0.1`); not shown in --help
    i.add_argument(
        "--alpha", dest="alphas", type=probability, action="append", help=argparse.SUPPRESS
    )


def _print_info(d: dict) -> None:
    print(f"store {d['dir']} (window_layout {d['window_layout']})")
    print(
        f"  size: {d['bytes']:,} bytes of chunks ({d['bytes_on_disk']:,} on disk), "
        f"{d['bytes_per_token']:.2f} bytes per token over {d['positions']:,} positions "
        f"({d['windows']:,} windows × seq_len {d['seq_len']}, {d['chunks']} chunk(s))"
    )
    print(f"  k={d['k']}  min_alpha={d['min_alpha']}  candidates={d['candidates']:,}")
    for a, v in d["candidates_per_position"].items():
        print(f"  candidates per position at α={a}: {v:.3f}")
    c = d["covers"]
    print(
        f"  data: {c['train_tokens']:,} train tokens, base tokenizer {c['data_tokenizer']!r} "
        f"({c['data_tokenizer_hash'][:12]}), shards {[h[:8] for h in c['shards_sha256']]}"
    )
    print(
        f"  surrogate: {c['surrogate']!r} weights {c['surrogate_weights_sha256'][:12]} "
        f"tokenizer {c['surrogate_tokenizer_hash'][:12]}; |Σ∩|={c['sigma_size']:,}"
    )
    print(
        f"  build FLOPs: {d['build_flops']:.3g} ({d['surrogate_flops_per_token']:.3g} per token), paid once"
    )
    print(f"  α compared exactly (as online) at: {d['exact_alphas']}")


def run(args) -> int:
    from lsap.surrogate.store import StoreError, TargetStore
    from lsap.surrogate.store_build import build_store

    if args.store_command is None:
        raise StoreError("choose a subcommand: build or info")
    if args.store_command == "build":
        m = build_store(
            args.surrogate,
            args.data,
            args.seq_len,
            args.out,
            k=args.k,
            min_alpha=args.min_alpha,
            vocab_map=args.map,
            batch_size=args.batch_size,
            device=args.device,
            dtype=args.dtype,
            chunk_windows=args.chunk_windows,
            max_windows=args.max_windows,
            window_layout=args.window_layout,
            progress=not args.no_progress,
            dist_timeout_s=args.dist_timeout_s,
        )
        if m is None or os.environ.get("RANK", "0") != "0":
            return 0
        print(
            f"store: {args.out} ({m.get('window_layout', 'lsap')} windows) | {m['positions']:,} positions | {m['bytes_per_token']:.2f} bytes/token | "
            f"{m['candidates'] / m['positions']:.3f} candidates/position (p > {m['min_alpha']}) | "
            f"build {m['flops']['build_flops']:.3g} FLOPs"
        )
        return 0
    d = TargetStore(args.dir, verify=args.verify).info(args.alphas)
    if args.json:
        print(json.dumps(d, indent=2))
    else:
        _print_info(d)
    return 0
