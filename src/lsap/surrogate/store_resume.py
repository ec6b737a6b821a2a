"""Resuming a store build (`lsap store build` into a DIR that holds a manifest): the earlier
build's identity must equal this command's, or the refusal names each setting that differs
with both values, so that the original arguments (which keep the finished chunks) are easy
to find again.

Every setting in the identity changes the chunks' bytes, `--batch-size` included: the
surrogate runs over fixed batches inside each chunk, and another batch shape gives other
float rounding (measured: batch 4, 8 and 16 over the same 48-window chunks give different
chunk sha256s on CPU in fp32), so a store is only resumed with the settings it was begun with.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from lsap.utils.errors import StoreError

# identity key (dotted) → what the user set it with; keys not named here follow from these
_FLAGS = {
    "seq_len": "--seq-len",
    "k": "--k",
    "min_alpha": "--min-alpha",
    "window_layout": "--window-layout",
    "layout.batch_size": "--batch-size",
    "layout.chunk_windows": "--chunk-windows (rounded down to a multiple of --batch-size)",
    "surrogate.dtype": "--dtype",
    "surrogate.device_type": "--device",
    "surrogate.spec": "--surrogate",
    "surrogate.weights_sha256": "--surrogate (its weights)",
    "vocab_map.sigma_sha256": "--map (the vocabulary map)",
    "data.shards_sha256": "--data (its token shards)",
    "data.tokenizer.hash": "--data (its tokenizer)",
    "format_version": "the store format version",
}
# follow from the settings above; named only when none of those differs
_DERIVED_FLAG = {
    "n_windows": "the window count (--max-windows, or --data)",
    "surrogate.head_dtype": "the surrogate head's dtype (a build of an older lsap)",
}


def _flat(d: dict, prefix: str = "") -> dict:
    out = {}
    for key, v in d.items():
        if isinstance(v, dict):
            out.update(_flat(v, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = v
    return out


def _show(v) -> str:
    if isinstance(v, list) and v and isinstance(v[0], str) and len(v[0]) == 64:  # sha256 lists
        return f"{len(v)} shard(s) {[h[:8] for h in v]}"[:60]
    s = str(v)
    return s[:12] if len(s) == 64 else s  # a sha256


def differing_settings(old: dict, identity: dict) -> list[str]:
    """`--flag: the store was built with A, this command says B` for each setting that differs."""
    a, b = _flat(old), _flat(identity)
    diff = [key for key in b if a.get(key) != b[key]]
    named = [key for key in diff if key in _FLAGS]
    if not named:
        named = [key for key in diff if key in _DERIVED_FLAG] or diff
    seen, out = set(), []
    for key in named:
        flag = _FLAGS.get(key) or _DERIVED_FLAG.get(key) or key
        if flag in seen:
            continue
        seen.add(flag)
        out.append(
            f"{flag}: the store was built with {_show(a.get(key))}, this command says "
            f"{_show(b[key])}"
        )
    return out


def flag_settings(
    seq_len, k, min_alpha, window_layout, n_windows, batch_size, chunk_windows, dtype, device, spec
) -> dict:
    """The part of a store's identity that `lsap store build`'s flags set, known before the
    data's tokenizer and the surrogate are loaded (as `build_store` records them)."""
    return {
        "seq_len": int(seq_len),
        "k": int(k),
        "min_alpha": float(min_alpha),
        "window_layout": window_layout,
        "n_windows": int(n_windows),
        "layout": {"batch_size": int(batch_size), "chunk_windows": int(chunk_windows)},
        "surrogate": {
            "dtype": str(dtype).removeprefix("torch."),
            "device_type": device,
            "spec": os.fspath(spec),
        },
    }


def check_resume(mpath: Path, identity: dict, only: bool = False) -> bool:
    """Whether the store at `mpath` (its manifest) is complete; raises StoreError naming each
    differing setting when it was begun with other settings than `identity` (`only`: compare
    just the keys `identity` has, the cheap check before the surrogate is loaded)."""
    out = mpath.parent
    try:
        full = json.loads(mpath.read_text())
        full["surrogate"].setdefault("head_dtype", full["surrogate"]["dtype"])  # older stores
    except (ValueError, KeyError, TypeError) as e:
        raise StoreError(f"{mpath}: corrupt manifest ({e}); delete {out} and build again") from e
    old = {k: full.get(k, "lsap" if k == "window_layout" else None) for k in identity}
    if only:
        flat = _flat(old)
        old = {k: flat.get(k) for k in _flat(identity)}
        identity = _flat(identity)
    if old != identity:
        diff = differing_settings(old, identity)
        raise StoreError(
            f"{out} holds a store begun with other settings ({'; '.join(diff)}); rerun with "
            "the original arguments to resume it (its finished chunks are kept), or use "
            "another --out"
        )
    return bool(full.get("complete"))
