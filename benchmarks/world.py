"""A synthetic, offline "world" for the GPU benchmark: tokenizers, shards, a random surrogate.

    python benchmarks/world.py --out /tmp/world --surrogate qwen3-0.6b        # GPU shapes
    python benchmarks/world.py --out /tmp/world --surrogate olmo2-tiny --surrogate-vocab 1024

Writes OUT/base_tok (byte-level BPE, 600 entries), OUT/data (`lsap prepare` shards of
Python's pydoc topics), OUT/surrogate (a randomly initialised model of the named preset
with its own 700-entry tokenizer and the preset's full vocabulary rows, saved with
`save_pretrained`) — enough for a real `lsap store build` and store lookups. The
surrogate's head is sharpened (× --logit-scale) so that α = 0.05 selects targets.
Random weights: the figures measure cost, not quality.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", required=True)
    ap.add_argument("--surrogate", default="qwen3-0.6b", help="lsap.model preset")
    ap.add_argument("--surrogate-vocab", type=int, default=None, help="default: the preset's")
    ap.add_argument("--surrogate-overrides", default="", help="k=v,... config fields")
    ap.add_argument("--dtype", default="bfloat16")
    ap.add_argument("--logit-scale", type=float, default=40.0)
    ap.add_argument("--max-tokens", type=int, default=None, help="smaller corpus and tokenizers (smoke runs)")
    args = ap.parse_args()

    from pydoc_data.topics import topics

    from lsap.data.shards import prepare
    from lsap.data.tokenizer import train_bpe
    from lsap.model import build_model, model_config

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    texts = list(topics.values())
    if args.max_tokens:
        texts = texts[: max(20, args.max_tokens // 500)]
    if not (out / "base_tok").is_dir():
        train_bpe(texts, 600, out / "base_tok")
    if not (out / "surrogate" / "config.json").is_file():
        stok = train_bpe([t.lower() for t in texts], 700, out / "surrogate", split_digits=True)
        over = {k: int(v) for k, v in (p.split("=") for p in args.surrogate_overrides.split(",") if p)}
        cfg = model_config(args.surrogate, vocab_size=args.surrogate_vocab, **over)
        cfg.eos_token_id, cfg.bos_token_id, cfg.pad_token_id = stok.eos_token_id, None, stok.pad_token_id
        model = build_model(cfg, dtype=getattr(torch, args.dtype), seed=1)
        with torch.no_grad():
            model.get_output_embeddings().weight.mul_(args.logit_scale)
        model.save_pretrained(out / "surrogate")
    if not (out / "data" / "manifest.json").is_file():
        prepare(str(out / "base_tok"), "pydoc-topics", out / "data", val_fraction=0.01, progress=False,
                max_tokens=args.max_tokens)
    m = json.loads((out / "data" / "manifest.json").read_text())
    print(json.dumps({"out": str(out), "train_tokens": m["splits"]["train"]["tokens"]}))


if __name__ == "__main__":
    main()
