"""The cross-tokenizer vocabulary map: Σ∩, F_b→s and F_s→b (METHOD §1).

Two tokens are "the same string" when they decode to the same byte sequence. Every
vocabulary key is first brought to its canonical bytes:

- byte-level BPE keys ('Ġthe', 'Ċ') through the inverse of GPT-2's bytes↔unicode table,
- SentencePiece keys ('▁the', '<0x0A>') by '▁' → ' ' and byte-fallback pieces → bytes,
- anything else as the UTF-8 of the key.

Control tokens (added tokens: bos/eos/pad/unk, chat markers, fim markers ...) never
meet by string; bos/eos/pad/unk meet **by role** (base eos ↔ surrogate document
separator, see `surrogate_eos_id`), the rest stay outside Σ∩.

Each string of Σ∩ has exactly one canonical id on each side (when a vocabulary holds
the same bytes twice — e.g. SentencePiece's 'A' and '<0x41>' — the id the tokenizer
itself produces is kept, the other is treated as outside Σ∩), so the two maps are
inverse bijections on Σ∩: `s2b[b2s[b]] == b` for every mapped `b`.

Padded embedding rows (ids ≥ the tokenizer's length but < the model's vocab size) are
never in Σ∩: the maps are sized to the model vocabularies and hold -1 there.
"""

from __future__ import annotations

import io
import json
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from lsap.method.token_table import (
    _ROLE_ORDER,
    TokenTable,
    _other_roles,
    surrogate_eos_id,
    token_table,
)
from lsap.utils.errors import VocabError
from lsap.utils.io import atomic_write_bytes, atomic_write_text

ABSENT = -1
FORMAT_VERSION = 1


def _resolve(tok: Any) -> Any:
    if isinstance(tok, (str, Path)):
        from lsap.data.tokenizer import load_tokenizer  # lazy: conversions are slow

        return load_tokenizer(str(tok))
    return tok


@dataclass
class VocabMap:
    """F_b→s and F_s→b as index tensors.

    base_to_surrogate: LongTensor [V_b] (model vocab, padded rows included), -1 = absent.
    surrogate_to_base: LongTensor [V_s], -1 = absent.
    """

    base_to_surrogate: torch.Tensor
    surrogate_to_base: torch.Tensor
    base_hash: str
    surrogate_hash: str
    base_tokenizer_size: int
    surrogate_tokenizer_size: int
    role_pairs: dict[str, tuple[int, int]] = field(default_factory=dict)
    meta: dict[str, Any] = field(default_factory=dict)

    # ---- construction -------------------------------------------------------------
    @classmethod
    def from_tokenizers(
        cls,
        base: Any,
        surrogate: Any,
        base_vocab_size: int | None = None,
        surrogate_vocab_size: int | None = None,
        keep_fraction: float = 1.0,
        seed: int = 0,
    ) -> VocabMap:
        """Build Σ∩ from two tokenizers.

        base / surrogate: transformers tokenizer, tokenizers.Tokenizer, local directory,
        hub id, or an lsap tokenizer name ('dolma2', 'qwen3', 'smollm2', ...).
        *_vocab_size: the models' (padded) vocabulary sizes; default the tokenizers'.
        keep_fraction: keep a random share of the string part of Σ∩ (the paper's
        proposed intersection ablation); role-matched specials are always kept.
        """
        base, surrogate = _resolve(base), _resolve(surrogate)
        tb, ts = token_table(base), token_table(surrogate)
        vb = tb.size if base_vocab_size is None else int(base_vocab_size)
        vs = ts.size if surrogate_vocab_size is None else int(surrogate_vocab_size)
        for name, v, t in (("base", vb, tb), ("surrogate", vs, ts)):
            if v < t.size:
                raise VocabError(
                    f"{name}_vocab_size={v} is smaller than the {name} tokenizer ({t.size} ids): "
                    "pass the model's (padded) vocabulary size"
                )
        if not 0.0 < keep_fraction <= 1.0:
            raise VocabError(f"keep_fraction must be in (0, 1], got {keep_fraction}")

        def canonical(t: TokenTable) -> dict[bytes, int]:
            # Prefer ids the tokenizer would produce (non-fallback), then the lowest id.
            out: dict[bytes, int] = {}
            for i in sorted(t.strings, key=lambda i: (i in t.fallback_ids, i)):
                out.setdefault(t.strings[i], i)
            return out

        cb, cs = canonical(tb), canonical(ts)
        common = sorted(set(cb) & set(cs))
        if keep_fraction < 1.0:
            g = torch.Generator().manual_seed(seed)
            keep = torch.rand(len(common), generator=g) < keep_fraction
            common = [s for s, k in zip(common, keep.tolist()) if k]

        b2s = torch.full((vb,), ABSENT, dtype=torch.long)
        s2b = torch.full((vs,), ABSENT, dtype=torch.long)
        for s in common:
            b2s[cb[s]] = cs[s]
            s2b[cs[s]] = cb[s]

        role_pairs: dict[str, tuple[int, int]] = {}
        s_roles = dict(ts.roles)
        sep = surrogate_eos_id(ts, surrogate)
        if sep is not None:
            s_roles["eos"] = sep
        for role in _ROLE_ORDER:
            bi, si = tb.roles.get(role), s_roles.get(role)
            # Roles may share an id (pad == eos); keep the map a bijection.
            if bi is None or si is None or b2s[bi] != ABSENT or s2b[si] != ABSENT:
                continue
            # A pad that aliases another role (SmolLM2-Instruct: pad = <|im_end|> = eos) is
            # not a padding token of its own; matching it would pair unrelated tokens.
            if role == "pad" and (si in _other_roles(ts) or bi in _other_roles(tb)):
                continue
            b2s[bi], s2b[si] = si, bi
            role_pairs[role] = (bi, si)

        n = int((b2s != ABSENT).sum())
        if n == 0:
            raise VocabError(
                "the two tokenizers share no token strings (Σ∩ is empty): LSAP needs a "
                "surrogate whose tokenizer overlaps the base's"
            )
        return cls(
            b2s,
            s2b,
            tb.fingerprint(),
            ts.fingerprint(),
            tb.size,
            ts.size,
            role_pairs,
            meta={
                "keep_fraction": keep_fraction,
                "seed": seed,
                "base_kind": tb.kind,
                "surrogate_kind": ts.kind,
            },
        )

    # ---- properties ---------------------------------------------------------------
    @property
    def base_vocab_size(self) -> int:
        return self.base_to_surrogate.numel()

    @property
    def surrogate_vocab_size(self) -> int:
        return self.surrogate_to_base.numel()

    @property
    def size(self) -> int:
        """|Σ∩|."""
        return int((self.base_to_surrogate != ABSENT).sum())

    @property
    def base_in(self) -> torch.Tensor:
        """BoolTensor [V_b]: base id is in Σ∩."""
        return self.base_to_surrogate != ABSENT

    @property
    def surrogate_in(self) -> torch.Tensor:
        """BoolTensor [V_s]: surrogate id is in Σ∩."""
        return self.surrogate_to_base != ABSENT

    def to(self, device: torch.device | str) -> VocabMap:
        return VocabMap(
            self.base_to_surrogate.to(device),
            self.surrogate_to_base.to(device),
            self.base_hash,
            self.surrogate_hash,
            self.base_tokenizer_size,
            self.surrogate_tokenizer_size,
            dict(self.role_pairs),
            dict(self.meta),
        )

    # ---- checks -------------------------------------------------------------------
    def check_tokenizers(self, base: Any = None, surrogate: Any = None) -> None:
        """Raise if `base` / `surrogate` are not the tokenizers this map was built for."""
        for name, tok, want in (
            ("base", base, self.base_hash),
            ("surrogate", surrogate, self.surrogate_hash),
        ):
            if tok is None:
                continue
            got = token_table(_resolve(tok)).fingerprint()
            if got != want:
                raise VocabError(
                    f"this vocabulary map was built for another {name} tokenizer "
                    f"(map: {want[:12]}…, given: {got[:12]}…); rebuild it with "
                    "`lsap vocab --base B --surrogate S`"
                )

    # ---- persistence --------------------------------------------------------------
    def save(self, directory: str | Path) -> Path:
        """Write `vocab_map.pt` (tensors) and `vocab_map.json` (hashes, sizes, report)."""
        d = Path(directory)
        d.mkdir(parents=True, exist_ok=True)
        tensors = {
            "b2s": self.base_to_surrogate.cpu(),
            "s2b": self.surrogate_to_base.cpu(),
        }  # loadable anywhere
        buf = (
            io.BytesIO()
        )  # torch.save names the zip's records after the file: not the per-process tmp name
        torch.save(tensors, buf)
        atomic_write_bytes(d / "vocab_map.pt", buf.getvalue())
        info = {
            "format_version": FORMAT_VERSION,
            "base_hash": self.base_hash,
            "surrogate_hash": self.surrogate_hash,
            "base_tokenizer_size": self.base_tokenizer_size,
            "surrogate_tokenizer_size": self.surrogate_tokenizer_size,
            "base_vocab_size": self.base_vocab_size,
            "surrogate_vocab_size": self.surrogate_vocab_size,
            "role_pairs": self.role_pairs,
            "meta": self.meta,
            "report": self.report(),
        }
        atomic_write_text(d / "vocab_map.json", json.dumps(info, indent=2))
        return d

    @classmethod
    def load(cls, directory: str | Path, base: Any = None, surrogate: Any = None) -> VocabMap:
        """Load a saved map; with `base` / `surrogate` given, refuse other tokenizers."""
        d = Path(directory)
        if not (d / "vocab_map.json").is_file() or not (d / "vocab_map.pt").is_file():
            raise FileNotFoundError(
                f"no vocabulary map in {d} (expected vocab_map.json and vocab_map.pt)"
            )
        info = json.loads((d / "vocab_map.json").read_text())
        if info.get("format_version") != FORMAT_VERSION:
            raise VocabError(
                f"{d}: vocab map format {info.get('format_version')} != {FORMAT_VERSION}; rebuild it"
            )
        t = torch.load(d / "vocab_map.pt", weights_only=True)
        vmap = cls(
            t["b2s"],
            t["s2b"],
            info["base_hash"],
            info["surrogate_hash"],
            info["base_tokenizer_size"],
            info["surrogate_tokenizer_size"],
            {k: tuple(v) for k, v in info["role_pairs"].items()},
            info.get("meta", {}),
        )
        vmap.check_tokenizers(base, surrogate)
        return vmap

    # ---- report -------------------------------------------------------------------
    def weakness(self, min_share: float = 0.01) -> str | None:
        """Why this Σ∩ cannot carry LSAP (only role-matched specials, or under `min_share`
        of the base tokenizer's vocabulary), or None when it is fine."""
        specials = {b for b, _ in self.role_pairs.values()}
        if self.size <= len(specials):
            return (
                f"Σ∩ holds only special tokens ({', '.join(self.role_pairs) or 'none'}): the tokenizers share "
                "no token strings, so LSAP would add no targets (plain CE that still pays for the surrogate)"
            )
        share = self.size / max(self.base_tokenizer_size, 1)
        if share < min_share:
            return (
                f"Σ∩ holds {self.size:,} tokens, {share:.2%} of the base vocabulary "
                f"({self.base_tokenizer_size:,}); under {min_share:.0%}, LSAP adds almost no targets"
            )
        return None

    def report(
        self, corpus_ids: Any = None, top_missing: int = 20, base_tokenizer: Any = None
    ) -> dict:
        """|Σ_b|, |Σ_s|, |Σ∩|, both ratios; with corpus base ids, the share inside Σ∩.

        corpus_ids: any integer array-like of base ids (e.g. a token shard memmap).
        base_tokenizer: optional, to name the most frequent base tokens outside Σ∩.
        """
        n = self.size
        out: dict[str, Any] = {
            "base_vocab": self.base_tokenizer_size,
            "surrogate_vocab": self.surrogate_tokenizer_size,
            "intersection": n,
            "intersection_over_base": n / self.base_tokenizer_size,
            "intersection_over_surrogate": n / self.surrogate_tokenizer_size,
            "role_pairs": {k: list(v) for k, v in self.role_pairs.items()},
        }
        if corpus_ids is not None:
            ids = torch.as_tensor(_as_int64(corpus_ids)).reshape(-1)
            if ids.numel() and (ids.min() < 0 or ids.max() >= self.base_vocab_size):
                raise VocabError(
                    f"corpus ids must lie in [0, {self.base_vocab_size}); got "
                    f"[{int(ids.min())}, {int(ids.max())}] — were they made with the base tokenizer?"
                )
            inside = self.base_in[ids]
            out["corpus_tokens"] = int(ids.numel())
            out["corpus_share_in_intersection"] = (
                float(inside.float().mean()) if ids.numel() else float("nan")
            )
            missing = Counter(ids[~inside].tolist()).most_common(top_missing)
            if base_tokenizer is not None:
                bt = _resolve(base_tokenizer)
                out["top_missing"] = [
                    {"id": i, "count": c, "token": bt.decode([i])} for i, c in missing
                ]
            else:
                out["top_missing"] = [{"id": i, "count": c} for i, c in missing]
        return out


def _as_int64(x: Any):
    import numpy as np

    return np.asarray(x, dtype=np.int64)


def restrict_intersection(vmap: VocabMap, keep_fraction: float, seed: int = 0) -> VocabMap:
    """`vmap` keeping a random, seeded share of its string pairs (the paper's proposed
    intersection ablation on a saved map); role-matched specials are always kept. Both
    directions lose a dropped pair, so the map stays a bijection on the kept set and the
    surrogate's targets on dropped tokens are lost too. Pairs are drawn in base-id order."""
    if not 0.0 < keep_fraction <= 1.0:
        raise VocabError(f"keep_fraction must be in (0, 1], got {keep_fraction}")
    b2s, s2b = vmap.base_to_surrogate.cpu().clone(), vmap.surrogate_to_base.cpu().clone()
    specials = {b for b, _ in vmap.role_pairs.values()}
    pairs = [b for b in torch.nonzero(b2s != ABSENT).flatten().tolist() if b not in specials]
    if keep_fraction < 1.0:
        g = torch.Generator().manual_seed(seed)
        drop = torch.rand(len(pairs), generator=g) >= keep_fraction
        for b, d in zip(pairs, drop.tolist()):
            if d:
                s2b[b2s[b]] = ABSENT
                b2s[b] = ABSENT
    meta = {
        **vmap.meta,
        "keep_fraction": float(vmap.meta.get("keep_fraction", 1.0)) * keep_fraction,
        "restricted": {"keep_fraction": keep_fraction, "seed": seed, "from_size": vmap.size},
    }
    return VocabMap(
        b2s,
        s2b,
        vmap.base_hash,
        vmap.surrogate_hash,
        vmap.base_tokenizer_size,
        vmap.surrogate_tokenizer_size,
        dict(vmap.role_pairs),
        meta,
    )
