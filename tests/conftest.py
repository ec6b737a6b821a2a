"""Session fixtures: a tiny tokenizer pair, token shards and a tiny random surrogate.

Built once per test session in a temp dir (a few seconds), offline.
"""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def tiny_world(tmp_path_factory):
    """dict(base_tok=dir, surrogate=dir (random Llama + its tokenizer), data=shards dir)."""
    import torch
    from pydoc_data.topics import topics
    from transformers import LlamaConfig, LlamaForCausalLM

    from lsap.data import prepare
    from lsap.tokenizer import train_bpe

    root = tmp_path_factory.mktemp("world")
    texts = list(topics.values())
    train_bpe(texts, 600, root / "base_tok")
    # another text and pre-tokenizer (digits split), so the vocabularies are not nested
    surr = train_bpe([t.lower() for t in texts], 700, root / "surrogate", split_digits=True)
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=len(surr), hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
                      tie_word_embeddings=True, initializer_range=0.5)  # peaked outputs: aux targets at α=0.05
    LlamaForCausalLM(cfg).save_pretrained(root / "surrogate")
    prepare(str(root / "base_tok"), "pydoc-topics", root / "data", val_fraction=0.1, progress=False)
    return {"base_tok": str(root / "base_tok"), "surrogate": str(root / "surrogate"), "data": str(root / "data"),
            "root": root}
