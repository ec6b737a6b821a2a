"""`lsap flops` — FLOPs of a CE run and the LSAP tokens it buys at matched FLOPs.

    lsap flops --base olmo2-1b --surrogate qwen3-0.6b --tokens 26e9 --json

Everything comes from model configs (meta-device parameter counts; no weights, no
network); see `lsap.method.flops` for the formulas.
"""

from __future__ import annotations

import argparse
import json

from lsap.cli.args import positive_float as _number
from lsap.cli.args import positive_int


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--base",
        default="olmo2-1b",
        help="base model: preset name or config.json / HF directory",
    )
    parser.add_argument(
        "--surrogate",
        default="qwen3-0.6b",
        help="surrogate: preset name, config.json / HF directory, or 'none'",
    )
    budget = parser.add_mutually_exclusive_group()
    budget.add_argument(
        "--tokens",
        type=_number,
        default=None,
        help="base tokens of the CE run; its FLOPs set the budget (default: 26e9, the paper)",
    )
    budget.add_argument(
        "--flops",
        type=_number,
        default=None,
        help="FLOPs budget; report the CE and LSAP tokens it buys",
    )
    parser.add_argument(
        "--base-vocab-size",
        type=positive_int,
        default=None,
        help="override the base vocabulary size (e.g. a small tokenizer)",
    )
    parser.add_argument(
        "--surrogate-vocab-size",
        type=positive_int,
        default=None,
        help="override the surrogate vocabulary size",
    )
    parser.add_argument(
        "--surrogate-tokens-per-base-token",
        type=_number,
        default=1.0,
        help="surrogate tokens the surrogate runs per base token; the default is the paper's",
    )
    parser.add_argument(
        "--seq-len",
        type=positive_int,
        default=None,
        help="add the attention terms (PaLM 12·L·H·Q·T / 4·L·H·Q·T) for this sequence length",
    )
    parser.add_argument(
        "--json", action="store_true", help="print one JSON object instead of a table"
    )


def compute(args: argparse.Namespace) -> dict:
    """The report of `lsap flops` as a dict: `lsap.method.flops.matched_flops` on the parsed arguments."""
    from lsap.method.flops import matched_flops

    return matched_flops(
        args.base,
        args.surrogate,
        tokens=args.tokens,
        flops=args.flops,
        base_vocab_size=args.base_vocab_size,
        surrogate_vocab_size=args.surrogate_vocab_size,
        surrogate_tokens_per_base_token=args.surrogate_tokens_per_base_token,
        seq_len=args.seq_len,
    )


def _table(r: dict) -> str:
    rows = [
        ("base", f"{r['base']}"),
        ("  N_b (head counted untied)", f"{r['base_params']:,}  ({r['base_params'] / 1e9:.3f}e9)"),
        ("  training FLOPs / token", f"{r['base_flops_per_token']:.4e}"),
        ("surrogate", f"{r['surrogate']}"),
        (
            "  N_s (head counted untied)",
            f"{r['surrogate_params']:,}  ({r['surrogate_params'] / 1e9:.3f}e9)",
        ),
        ("  inference FLOPs / token", f"{r['surrogate_flops_per_token']:.4e}"),
        ("LSAP FLOPs / base token", f"{r['lsap_flops_per_token']:.4e}"),
        (
            "attention terms",
            f"seq_len {r['attention_seq_len']}" if r["attention_seq_len"] else "off (6N / 2N)",
        ),
        ("FLOPs budget", f"{r['budget_flops']:.4e}  ({r['budget_flops'] / 1e12:,.0f} TFLOPs)"),
        ("CE tokens", f"{r['ce_tokens']:.4e}"),
        ("LSAP tokens at matched FLOPs", f"{r['lsap_tokens_at_matched_flops']:.4e}"),
        ("LSAP token reduction", f"{100 * r['lsap_token_reduction']:.2f}%"),
    ]
    width = max(len(k) for k, _ in rows)
    return "\n".join(f"{k:<{width}}  {v}" for k, v in rows)


def run(args: argparse.Namespace) -> int:
    report = compute(args)
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print(_table(report))
    return 0
