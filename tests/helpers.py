"""Small deterministic fixtures shared by the tests."""

from __future__ import annotations

import torch

from lsap.method.vocab import ABSENT, VocabMap


def random_vmap(
    vb: int, vs: int, n_common: int, seed: int = 0, pad_b: int = 0, pad_s: int = 0
) -> VocabMap:
    """A random bijection between n_common base ids and n_common surrogate ids.

    pad_*: extra padded rows (never mapped), as in real models' embedding tables.
    """
    g = torch.Generator().manual_seed(seed)
    b = torch.randperm(vb, generator=g)[:n_common]
    s = torch.randperm(vs, generator=g)[:n_common]
    b2s = torch.full((vb + pad_b,), ABSENT, dtype=torch.long)
    s2b = torch.full((vs + pad_s,), ABSENT, dtype=torch.long)
    b2s[b], s2b[s] = s, b
    return VocabMap(b2s, s2b, "base", "surr", vb, vs)


def tiny_llama(vocab_size: int = 48, seed: int = 0):
    """A 2-layer random LlamaForCausalLM (eval mode) standing in for a real surrogate."""
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    cfg = LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=64,
    )
    return LlamaForCausalLM(cfg).eval()
