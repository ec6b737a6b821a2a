"""A tokenizer's vocabulary, canonicalised: id → bytes for string tokens, roles for controls.

`token_table` brings every vocabulary key to the bytes it decodes to (byte-level BPE keys
through the inverse of GPT-2's bytes↔unicode table, SentencePiece keys by '▁' → ' ' and
byte-fallback pieces → bytes, anything else as its UTF-8), so `lsap.method.vocab.VocabMap`
can match two tokenizers' strings and `lsap.eval.metrics` can count a token's bytes.
`surrogate_eos_id` picks the surrogate token that plays the base eos's role.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

# Surrogate tokens that separate documents in pretraining data, in order of preference.
# Instruct models (the paper's Qwen3-0.6B) declare a chat eos ('<|im_end|>') while their
# pretraining documents end with '<|endoftext|>': the base eos between packed documents
# means the latter.
from lsap.method.choices import DOC_SEPARATORS  # noqa: E402  (the one list)

_ROLE_ORDER = ("eos", "bos", "unk", "pad")


@lru_cache(maxsize=1)
def _byte_decoder() -> dict[str, int]:
    """Inverse of GPT-2's `bytes_to_unicode` table (printable stand-ins for bytes)."""
    bs = (
        list(range(ord("!"), ord("~") + 1))
        + list(range(ord("¡"), ord("¬") + 1))
        + list(range(ord("®"), ord("ÿ") + 1))
    )
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return {chr(c): b for b, c in zip(bs, cs)}


_BYTE_FALLBACK = re.compile(r"^<0x([0-9A-Fa-f]{2})>$")


def _walk_types(node: Any) -> Iterable[dict]:
    if isinstance(node, dict):
        if "type" in node:
            yield node
        for v in node.values():
            yield from _walk_types(v)
    elif isinstance(node, list):
        for v in node:
            yield from _walk_types(v)


@dataclass
class TokenTable:
    """One tokenizer, canonicalised: id → bytes for string tokens, roles for controls.

    strings: {id: canonical bytes} for every non-control token.
    controls: ids of added/control tokens (never matched by string).
    roles: {"eos"|"bos"|"pad"|"unk": id} where the tokenizer declares them.
    size: number of ids the tokenizer defines (max id + 1).
    fallback_ids: ids that are byte-fallback pieces ('<0x41>'); they lose ties.
    """

    strings: dict[int, bytes]
    controls: set[int]
    roles: dict[str, int]
    size: int
    kind: str
    fallback_ids: set[int] = field(default_factory=set)

    def fingerprint(self) -> str:
        """sha256 over (id, bytes) pairs, control ids and roles: equal iff same vocabulary."""
        h = hashlib.sha256()
        h.update(f"{self.kind}|{self.size}|".encode())
        for i in sorted(self.strings):
            h.update(i.to_bytes(4, "little"))
            h.update(len(self.strings[i]).to_bytes(2, "little"))
            h.update(self.strings[i])
        h.update(json.dumps(sorted(self.controls)).encode())
        h.update(json.dumps(sorted(self.roles.items())).encode())
        return h.hexdigest()


def _backend(tok: Any):
    """The `tokenizers.Tokenizer` behind a transformers tokenizer (or the object itself)."""
    if hasattr(tok, "backend_tokenizer"):
        return tok.backend_tokenizer
    if hasattr(tok, "get_vocab") and hasattr(tok, "to_str"):
        return tok
    raise TypeError(
        f"cannot read a vocabulary from {type(tok).__name__}: pass a transformers fast "
        "tokenizer, a tokenizers.Tokenizer, a local tokenizer directory or an lsap "
        "tokenizer name (see lsap.data.tokenizer.load_tokenizer)"
    )


def token_table(tok: Any) -> TokenTable:
    """Canonicalise a tokenizer's vocabulary. Accepts transformers / tokenizers objects."""
    backend = _backend(tok)
    spec = json.loads(backend.to_str())
    types = {n["type"] for n in _walk_types({k: spec.get(k) for k in ("decoder", "pre_tokenizer")})}
    model = spec.get("model") or {}
    if "ByteLevel" in types:
        kind = "byte_level"
    elif "Metaspace" in types or any(
        n.get("type") == "Replace" and "▁" in json.dumps(n.get("pattern", ""), ensure_ascii=False)
        for n in _walk_types(spec.get("decoder"))
    ):
        kind = "sentencepiece"
    else:
        kind = "utf8"
    byte_fallback = bool(model.get("byte_fallback")) or "ByteFallback" in types

    vocab: dict[str, int] = backend.get_vocab(with_added_tokens=True)
    added = {a["id"]: a for a in spec.get("added_tokens") or []}
    controls = set(added)

    dec = _byte_decoder()
    strings: dict[int, bytes] = {}
    fallback_ids: set[int] = set()
    for key, i in vocab.items():
        if i in controls:
            continue
        if kind == "byte_level":
            try:
                b = bytes(dec[c] for c in key)
            except (
                KeyError
            ):  # not a byte-level key: keep its UTF-8 (rare, e.g. merges of added text)
                b = key.encode("utf-8")
        elif kind == "sentencepiece":
            m = _BYTE_FALLBACK.match(key) if byte_fallback else None
            if m:
                b = bytes([int(m.group(1), 16)])
                fallback_ids.add(i)
            else:
                b = key.replace("▁", " ").encode("utf-8")
        else:
            b = key.encode("utf-8")
        strings[i] = b

    roles: dict[str, int] = {}
    for role in _ROLE_ORDER:
        tid = getattr(tok, f"{role}_token_id", None)
        if isinstance(tid, int) and tid >= 0:
            roles[role] = tid
    size = max(vocab.values()) + 1 if vocab else 0
    return TokenTable(strings, controls, roles, size, kind, fallback_ids)


def surrogate_eos_id(table: TokenTable, tok: Any = None) -> int | None:
    """The surrogate token that plays the base eos's role between packed documents.

    Its document separator when it has one ('<|endoftext|>' for Qwen3 and SmolLM2),
    else its declared eos.
    """
    by_content = {}
    if tok is not None:
        spec = json.loads(_backend(tok).to_str())
        by_content = {a["content"]: a["id"] for a in spec.get("added_tokens") or []}
    for s in DOC_SEPARATORS:
        if s in by_content:
            return by_content[s]
    return table.roles.get("eos")


def _other_roles(t: TokenTable) -> set[int]:
    return {t.roles[r] for r in ("eos", "bos", "unk") if r in t.roles}
