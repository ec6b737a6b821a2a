"""Session fixtures: a tiny tokenizer pair, token shards and a tiny random surrogate.

Built once per test session in a temp dir (a few seconds), offline.
"""

from __future__ import annotations

import pytest


def _bpe(texts, vocab_size, digits=False):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    t = Tokenizer(models.BPE())
    pre = [pre_tokenizers.ByteLevel(add_prefix_space=False)]
    if digits:  # a different pre-tokenizer, so the two vocabularies are not nested
        pre = [pre_tokenizers.Digits(individual_digits=True)] + pre
    t.pre_tokenizer = pre_tokenizers.Sequence(pre)
    t.decoder = decoders.ByteLevel()
    t.train_from_iterator(texts, trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=["<|endoftext|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False))
    return PreTrainedTokenizerFast(tokenizer_object=t, eos_token="<|endoftext|>", pad_token="<|endoftext|>")


@pytest.fixture(scope="session")
def tiny_world(tmp_path_factory):
    """dict(base_tok=dir, surrogate=dir (random Llama + its tokenizer), data=shards dir)."""
    import torch
    from pydoc_data.topics import topics
    from transformers import LlamaConfig, LlamaForCausalLM

    from lsap.data import prepare

    root = tmp_path_factory.mktemp("world")
    texts = list(topics.values())
    base = _bpe(texts, 600)
    base.save_pretrained(root / "base_tok")
    surr = _bpe([t.lower() for t in texts], 700, digits=True)
    surr.save_pretrained(root / "surrogate")
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=len(surr), hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
                      tie_word_embeddings=True, initializer_range=0.5)  # peaked outputs: aux targets at α=0.05
    LlamaForCausalLM(cfg).save_pretrained(root / "surrogate")
    prepare(str(root / "base_tok"), "pydoc-topics", root / "data", val_fraction=0.1, progress=False)
    return {"base_tok": str(root / "base_tok"), "surrogate": str(root / "surrogate"), "data": str(root / "data"),
            "root": root}
