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

DEFAULT_MAX_TOKENS = 2_000_000


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--base", required=True,
                        help="base tokenizer: dolma2, cl100k, qwen3, smollm2, a local dir / tokenizer.json / .gguf, or a hub id")
    parser.add_argument("--surrogate", required=True, help="surrogate tokenizer (same choices as --base)")
    parser.add_argument("--base-vocab-size", type=int, default=None,
                        help="base model's padded vocabulary (dolma2 / OLMo2: 100352)")
    parser.add_argument("--surrogate-vocab-size", type=int, default=None,
                        help="surrogate model's padded vocabulary (Qwen3: 151936)")
    parser.add_argument("--data", default=None,
                        help="corpus for the coverage figures: shakespeare, python-docs, gcide, linux-docs, "
                        "pydoc-topics, hf:NAME, or a local file/folder")
    parser.add_argument("--max-tokens", type=int, default=DEFAULT_MAX_TOKENS,
                        help=f"base tokens of --data to count, in corpus order (default {DEFAULT_MAX_TOKENS:,}; 0 = all)")
    parser.add_argument("--top", type=int, default=20, help="most frequent base tokens outside Σ∩ to list (default 20)")
    parser.add_argument("--out", default=None, metavar="DIR", help="save vocab_map.pt/.json and report.json here")
    parser.add_argument("--json", action="store_true", help="print the report as JSON instead of markdown")


def corpus_ids(source: str, tok, max_tokens: int | None = None, batch_docs: int = 64):
    """Base ids of `source` (int64 numpy): documents in order, each followed by eos; ≤ max_tokens."""
    import numpy as np

    from lsap.tokenizer import document_separator, plain_encoder
    from lsap.data import iter_documents

    enc, sep = plain_encoder(tok), document_separator(tok)
    chunks, have, batch = [], 0, []

    def flush():
        nonlocal have
        for e in enc.encode_batch(batch, add_special_tokens=False):
            chunks.append(np.asarray(e.ids + [sep], dtype=np.int64))
            have += len(chunks[-1])

    for text in iter_documents(source):
        batch.append(text)
        if len(batch) >= batch_docs:
            flush()
            batch = []
            if max_tokens and have >= max_tokens:
                break
    if batch and not (max_tokens and have >= max_tokens):
        flush()
    ids = np.concatenate(chunks) if chunks else np.zeros(0, dtype=np.int64)
    return ids[:max_tokens] if max_tokens else ids


def build(args: argparse.Namespace) -> tuple[object, dict]:
    """(VocabMap, report dict) for the parsed arguments."""
    from lsap.analyze import check_dataset_spec
    from lsap.errors import VocabError
    from lsap.tokenizer import load_tokenizer
    from lsap.vocab import VocabMap

    if args.data is not None:
        check_dataset_spec(args.data)  # before the (slow) tokenizer conversions
    if args.top < 0 or (args.max_tokens is not None and args.max_tokens < 0):
        raise VocabError("--top and --max-tokens must be ≥ 0")
    base, sur = load_tokenizer(args.base), load_tokenizer(args.surrogate)
    vmap = VocabMap.from_tokenizers(base, sur, base_vocab_size=args.base_vocab_size,
                                    surrogate_vocab_size=args.surrogate_vocab_size)
    ids = corpus_ids(args.data, base, args.max_tokens or None) if args.data is not None else None
    report = vmap.report(ids, top_missing=args.top, base_tokenizer=base)
    weak = vmap.weakness()
    if weak:
        report["warning"] = weak
        print(f"lsap vocab: warning: {weak}", file=sys.stderr)
    report.update({"base": args.base, "surrogate": args.surrogate, "data": args.data,
                   "max_tokens": args.max_tokens or None,
                   "base_model_vocab": vmap.base_vocab_size, "surrogate_model_vocab": vmap.surrogate_vocab_size})
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
        lines.append(f"| share of those inside Σ∩ | {100 * r['corpus_share_in_intersection']:.2f}% |")
        missing = r.get("top_missing") or []
        if missing:
            total = r["corpus_tokens"]
            lines += ["", f"Most frequent base tokens outside Σ∩ in `{r['data']}`:", "",
                      "| base id | token | count | share of corpus |", "|---:|---|---:|---:|"]
            for m in missing:
                tok = repr(m.get("token", "?")).replace("|", "\\|")
                lines.append(f"| {m['id']} | `{tok}` | {m['count']:,} | {100 * m['count'] / total:.3f}% |")
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    vmap, report = build(args)
    print(json.dumps(report, indent=2, ensure_ascii=False) if args.json else report_markdown(report))
    if args.out:
        from pathlib import Path

        d = vmap.save(args.out)
        (Path(d) / "report.json").write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n")
        print(f"wrote {d}/vocab_map.pt, vocab_map.json, report.json", file=sys.stderr)
    return 0
