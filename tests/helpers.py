"""Small deterministic fixtures shared by the tests."""

from __future__ import annotations

import torch

from lsap.vocab import ABSENT, VocabMap


def random_vmap(vb: int, vs: int, n_common: int, seed: int = 0, pad_b: int = 0, pad_s: int = 0) -> VocabMap:
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
