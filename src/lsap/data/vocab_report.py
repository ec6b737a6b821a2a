"""`lsap vocab`'s report: a tokenizer pair's Σ∩ measured on a corpus. Here, not in
`lsap.method.vocab`, because it loads tokenizers and reads corpora (data/), and method/
imports nothing from the rest of lsap."""

from __future__ import annotations

from lsap.data.corpora import check_dataset_spec, corpus_ids
from lsap.data.tokenizer import load_tokenizer
from lsap.method.vocab import VocabMap
from lsap.utils.errors import VocabError


def vocab_report(
    base: str,
    surrogate: str,
    *,
    base_vocab_size: int | None = None,
    surrogate_vocab_size: int | None = None,
    data: str | None = None,
    max_tokens: int | None = 2_000_000,
    top: int = 20,
) -> tuple[VocabMap, dict]:
    """(VocabMap, report) for a tokenizer pair (`lsap vocab`): sizes, |Σ∩|, both ratios and —
    with `data` — the share of its first `max_tokens` base tokens (`lsap.data.corpora.corpus_ids`;
    None / 0: all) inside Σ∩ and the `top` most frequent outside it. A weak intersection
    (`VocabMap.weakness`) is in report["warning"]."""
    if data is not None:
        check_dataset_spec(data)  # before the (slow) tokenizer conversions
    if top < 0 or (max_tokens is not None and max_tokens < 0):
        raise VocabError("--top and --max-tokens must be ≥ 0")
    base_tok, sur_tok = load_tokenizer(base), load_tokenizer(surrogate)
    vmap = VocabMap.from_tokenizers(
        base_tok,
        sur_tok,
        base_vocab_size=base_vocab_size,
        surrogate_vocab_size=surrogate_vocab_size,
    )
    ids = corpus_ids(data, base_tok, max_tokens or None) if data is not None else None
    report = vmap.report(ids, top_missing=top, base_tokenizer=base_tok)
    weak = vmap.weakness()
    if weak:
        report["warning"] = weak
    report.update(
        {
            "base": base,
            "surrogate": surrogate,
            "data": data,
            "max_tokens": max_tokens or None,
            "base_model_vocab": vmap.base_vocab_size,
            "surrogate_model_vocab": vmap.surrogate_vocab_size,
        }
    )
    return vmap, report
