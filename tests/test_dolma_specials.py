"""`dolma tokens` vs `lsap prepare` on text that spells a special token (issue 29 item 2).

lsap encodes a literal ``<|endoftext|>`` (or ``<|pad|>``) inside a document as text: only
the pipeline places separators. dolma (python/dolma/tokenizer/tokenizer.py, 1.2.x) sets
``tokenizers.Tokenizer.encode_special_tokens`` from ``--tokenizer.encode_special_tokens``
(default false: the literal becomes the special id, i.e. an EOS inside the document), then
encodes ``text.strip()`` with ``add_special_tokens=False`` and appends the EOS id unless the
last id already is one. dolma itself does not install next to OLMo-core here, so its encode
path is replayed below with the same `tokenizers` calls (not a recording of its output);
the fixture documents are already stripped (dolma strips, `lsap prepare` does not).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

FIXTURE = Path(__file__).parent / "fixtures" / "dolma_specials.jsonl"
EOS, PAD = 100257, 100277  # the recipe's --tokenizer.eos_token_id / pad_token_id (dolma2)


def dolma_encode(tok, text: str, encode_special_tokens: bool) -> list[int]:
    """dolma's `Tokenizer.encode(text.strip(), add_special_tokens=True)` with bos None."""
    from tokenizers import Tokenizer

    base = Tokenizer.from_str(tok.backend_tokenizer.to_str())
    base.no_padding()
    base.no_truncation()
    base.encode_special_tokens = encode_special_tokens
    ids = base.encode_batch([text.strip()], add_special_tokens=False)[0].ids
    if ids and ids[-1] != EOS:
        ids.append(EOS)
    return ids


@pytest.fixture(scope="module")
def dolma2():
    from lsap.data.tokenizer import load_tokenizer

    return load_tokenizer("dolma2")


def _docs():
    import json

    return [json.loads(line)["text"] for line in FIXTURE.read_text().splitlines()]


def test_lsap_prepare_equals_dolma_with_encode_special_tokens(dolma2, tmp_path):
    from lsap.data.shards import TokenShards, prepare

    prepare("dolma2", str(FIXTURE), tmp_path / "p", val_fraction=0.0, progress=False)
    sh = TokenShards(tmp_path / "p", "train")
    got = np.asarray(sh.tokens(0, len(sh))).tolist()
    want = [t for d in _docs() for t in dolma_encode(dolma2, d, encode_special_tokens=True)]
    assert got == want  # the recipe's `--tokenizer.encode_special_tokens true`
    assert got.count(EOS) == len(_docs()) and PAD not in got  # separators only between documents


def test_dolma_default_turns_the_literal_into_eos(dolma2):
    """Without the flag dolma ends documents early (EOS inside them) and drops a trailing
    literal's own EOS: the arrays no longer equal `lsap prepare`'s."""
    docs = _docs()
    plain = [dolma_encode(dolma2, d, True) for d in docs]
    default = [dolma_encode(dolma2, d, False) for d in docs]
    assert plain[0] == default[0]  # no literal: the same
    for p, d in zip(plain[1:], default[1:]):
        assert p != d and p.count(EOS) == 1
    assert default[1].count(EOS) == 2 and PAD in default[3]
