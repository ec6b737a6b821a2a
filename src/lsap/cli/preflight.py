"""`lsap preflight --base dolma2 --surrogate SPEC --data DATA [--base-run RUN]` — should I
use LSAP with this surrogate on my text? (see `lsap.experiments.preflight`)"""

from __future__ import annotations

import json
import sys

from lsap.cli.args import add_alphas, device, nonnegative_int, positive_int


def add_arguments(p) -> None:
    from lsap.experiments.preflight import ALPHAS

    p.add_argument(
        "--base",
        default=None,
        help="the base's tokenizer: a name (dolma2, qwen3, smollm2, ...) "
        "or a local tokenizer directory (default: --base-run's tokenizer, else dolma2; "
        "with --base-run another tokenizer is refused)",
    )
    p.add_argument(
        "--surrogate",
        required=True,
        help="the surrogate: smollm2, a local HF dir, a .gguf file or a hub id",
    )
    p.add_argument(
        "--data",
        required=True,
        help="your text: a local .txt/.jsonl/.parquet file or folder, an offline "
        "corpus name, or hf:NAME",
    )
    p.add_argument(
        "--base-run",
        default=None,
        help="a CE run (a short pilot on this text or a finished run): its "
        "latest checkpoint gives the base's bits per byte, the strength "
        "ratio and N_b",
    )
    p.add_argument(
        "--base-model",
        default="olmo2-1b",
        help="without --base-run: the base's model preset or config.json, for N_b",
    )
    p.add_argument(
        "--base-vocab-size",
        type=positive_int,
        default=None,
        help="the base model's padded vocabulary",
    )
    p.add_argument(
        "--n",
        type=positive_int,
        default=32,
        help="windows of the base tokenization counted",
    )
    p.add_argument("--seq-len", type=positive_int, default=512, help="tokens per window")
    p.add_argument("--batch-size", type=positive_int, default=8, help="windows per forward pass")
    p.add_argument("--k", type=positive_int, default=15, help="top-k surrogate candidates")
    add_alphas(p, list(ALPHAS), "targets per token are counted at each", old_alias=False)
    p.add_argument(
        "--device",
        type=device,
        default="auto",
        help="auto (a GPU when there is one) | cpu | cuda | cuda:N",
    )
    p.add_argument(
        "--max-documents", type=positive_int, default=5000, help="read at most this many documents"
    )
    p.add_argument(
        "--bpb-bytes",
        type=positive_int,
        default=50_000,
        help="bytes of whole documents scored for bits per byte",
    )
    p.add_argument(
        "--seed", type=nonnegative_int, default=0, help="seed of the document and window sample"
    )
    p.add_argument(
        "--json",
        action="store_true",
        help="print every number as one JSON object on stdout (the report goes to stderr)",
    )
    p.add_argument(
        "--json-out", default=None, metavar="PATH", help="also write every number to this JSON file"
    )


def run(args) -> int:
    from lsap.experiments.preflight import preflight

    res = preflight(
        args.base,
        args.surrogate,
        args.data,
        base_run=args.base_run,
        base_model=args.base_model,
        base_vocab_size=args.base_vocab_size,
        n=args.n,
        seq_len=args.seq_len,
        batch_size=args.batch_size,
        k=args.k,
        alphas=tuple(args.alphas),
        device=args.device,
        max_documents=args.max_documents,
        bpb_bytes=args.bpb_bytes,
        seed=args.seed,
        **({"log": lambda *a: print(*a, file=sys.stderr)} if args.json else {}),
    )
    if args.json:
        print(json.dumps(res, indent=2, sort_keys=True))
    if args.json_out:
        from lsap.utils.io import atomic_write_json

        atomic_write_json(args.json_out, res)
    return 0
