"""Token arrays written by another tool, used in place: `dolma tokens` output (or any raw
little-endian uint16/uint32 memmaps without a header, each document followed by EOS —
what OLMo-core's numpy datasets read). `link_token_arrays` writes only a manifest that
lists them, so `lsap train`, `lsap store build` and OLMo-core read the same files in the
same order (`lsap prepare --from-arrays`)."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import numpy as np

from lsap.data.shards import FORMAT, FORMAT_VERSION, SPLITS, _dtype_for
from lsap.utils.errors import DataError
from lsap.utils.io import atomic_write_json, sha256_file
from lsap.utils.lock import holds_lock
from lsap.utils.logging import get_logger

log = get_logger(__name__)

__all__ = ["link_token_arrays"]


NPY_MAGIC = b"\x93NUMPY"
# a mean document (EOS included) shorter than this many tokens is not text: the sign of
# uint32 arrays read as uint16 when EOS is id 0 (every second token is then 0)
MIN_MEAN_DOC_TOKENS = 3


def _array_info(args) -> dict:
    path, dtype, vocab, eos = args
    arr = np.memmap(path, dtype=np.dtype(dtype).newbyteorder("<"), mode="r")
    max_id = int(arr.max()) if len(arr) else -1
    return {
        "path": str(path),
        "tokens": int(len(arr)),
        "sha256": sha256_file(Path(path)),
        "max_id": max_id,
        "documents": int(np.count_nonzero(arr == eos)),
        "last": int(arr[-1]) if len(arr) else -1,
        # uint32 ids < 65,536 read as uint16: every odd position is a zero high half
        "high_halves_zero": dtype == "uint16" and len(arr) >= 8 and not np.count_nonzero(arr[1::2]),
    }


def _dolma_metadata_tokens(path: Path) -> int | None:
    """The token count `dolma tokens` recorded for an array (the last `end` of the
    .csv.gz metadata file next to it: start,end,path,id per document), or None."""
    import gzip

    meta = path.with_name(path.name.removesuffix(".npy") + ".csv.gz")
    if not meta.is_file():
        return None
    end = 0
    try:
        with gzip.open(meta, "rt") as f:
            for line in f:
                end = max(end, int(line.split(",", 2)[1]))
    except (OSError, ValueError, IndexError, EOFError) as e:
        raise DataError(f"{meta}: unreadable dolma metadata ({e}); delete or fix it") from None
    return end


def _check_format(files: list[Path], dtype: str) -> None:
    """Before reading any token: no .npy header, a whole number of tokens, and the token
    count dolma's metadata records (which names the dtype the arrays were written with)."""
    size = np.dtype(dtype).itemsize
    for f in files:
        with open(f, "rb") as fh:
            if fh.read(len(NPY_MAGIC)) == NPY_MAGIC:
                raise DataError(
                    f"{f}: a NumPy .npy file (np.save header), not a raw token array; write "
                    "the tokens headerless (arr.astype(dtype).tofile(path), as dolma tokens does)"
                )
        nbytes = f.stat().st_size
        if nbytes % size:
            raise DataError(
                f"{f}: {nbytes} bytes is not a whole number of {dtype} tokens: "
                "wrong --token-dtype, or not a raw token array"
            )
        meta = _dolma_metadata_tokens(f)
        if meta is not None and meta * size != nbytes:
            written = {2: "uint16", 4: "uint32"}.get(nbytes // meta if meta else 0)
            fix = f"--token-dtype {written}" if written else "the arrays and their .csv.gz differ"
            raise DataError(
                f"{f}: dolma metadata records {meta:,} tokens, the file holds "
                f"{nbytes // size:,} {dtype} tokens: {fix}"
            )


def _check_contents(infos: list[dict], dtype: str, vocab: int, eos: int, spec: str) -> None:
    """Every id in the vocabulary, every file ending with EOS, plausible document lengths,
    and one dtype for all files (a folder mixing uint16 and uint32 arrays is refused)."""
    bad = [
        i
        for i in infos
        if i["high_halves_zero"]
        or (i["tokens"] >= 64 and i["documents"] * MIN_MEAN_DOC_TOKENS > i["tokens"])
    ]
    if bad:
        i = bad[0]
        mixed = len(bad) < len(infos)
        raise DataError(
            f"{i['path']}: {i['documents']:,} EOS (id {eos}) in {i['tokens']:,} {dtype} tokens"
            + (", every second token 0" if i["high_halves_zero"] else "")
            + ": looks like uint32 arrays read as uint16"
            + (
                f" ({len(bad)} of {len(infos)} files; the arrays mix dtypes: one dtype per "
                "--from-arrays, rewrite or split them)"
                if mixed
                else " (--token-dtype uint32)"
            )
        )
    for info in infos:
        if info["max_id"] >= vocab:
            raise DataError(
                f"{info['path']}: token id {info['max_id']} >= vocabulary size {vocab} of "
                f"{spec!r}: wrong tokenizer or --token-dtype"
            )
        if info["tokens"] and info["last"] != eos:
            raise DataError(
                f"{info['path']}: does not end with the EOS id {eos} of {spec!r} (ends with "
                f"{info['last']}): wrong tokenizer or --token-dtype, or not `dolma tokens` output"
            )


def _array_paths(spec) -> list[Path]:
    import glob

    specs = [spec] if isinstance(spec, (str, os.PathLike)) else list(spec)
    out = []
    for one in specs:
        p = Path(one).expanduser()
        if p.is_dir():
            found = sorted(p.glob("*.npy"))
        elif p.is_file():
            found = [p]
        else:
            found = sorted(Path(f) for f in glob.glob(os.fspath(p)))
        if not found:
            raise DataError(
                f"{one}: no token arrays found (a directory of .npy files, a file, or a glob)"
            )
        out += found
    return [f.resolve() for f in out]


@holds_lock("out", "lsap prepare")
def link_token_arrays(
    tokenizer_spec: str,
    train,
    out: str | os.PathLike,
    *,
    val=(),
    token_dtype: str | None = None,
    workers: int = 1,
    tokenizer=None,
    progress: bool = True,
) -> dict:
    """Use token arrays written by `dolma tokens` (or any raw little-endian uint16 /
    uint32 memmaps without a header, each document followed by EOS: what OLMo-core's
    numpy datasets read) as a prepared directory, without copying them.

    train / val: a directory (its *.npy files, sorted by name), a file, a glob, or a
    list of those; the files keep that order. Writes only `out/manifest.json`, which
    lists the arrays by absolute path with their sha256, so `lsap train`, `lsap store
    build` (either window layout) and `TokenShards` read the very files OLMo-core
    trains on. token_dtype: the `dolma tokens --dtype` they were written with (default
    uint16 for vocabularies up to 65,536 ids, else uint32). Every file must end with the
    tokenizer's EOS id and hold no id ≥ the vocabulary (a wrong dtype fails both).
    """
    from lsap.data.tokenizer import document_separator, load_tokenizer, tokenizer_hash, vocab_size

    out = Path(out)
    tok = tokenizer if tokenizer is not None else load_tokenizer(tokenizer_spec)
    tok_hash, vocab, eos = tokenizer_hash(tok), vocab_size(tok), document_separator(tok)
    dtype = token_dtype or _dtype_for(vocab)
    if dtype not in ("uint16", "uint32"):
        raise DataError(f"token dtype must be uint16 or uint32, got {dtype!r}")
    if dtype == "uint16" and vocab > 65536:
        raise DataError(
            f"tokenizer {tokenizer_spec!r} has {vocab:,} ids: uint16 arrays cannot hold them "
            "(dolma tokens --dtype uint32)"
        )
    files = {"train": _array_paths(train), "val": _array_paths(val) if val else []}
    jobs = [(f, dtype, vocab, eos) for split in SPLITS for f in files[split]]
    _check_format([j[0] for j in jobs], dtype)
    if workers > 1:
        import multiprocessing as mp

        with mp.get_context("spawn").Pool(workers) as pool:
            infos = pool.map(_array_info, jobs)
    else:
        infos = [_array_info(j) for j in jobs]
    _check_contents(infos, dtype, vocab, eos, tokenizer_spec)
    by_path = {i["path"]: i for i in infos}
    manifest = {
        "format": FORMAT,
        "version": FORMAT_VERSION,
        "tokenizer": {
            "spec": tokenizer_spec,
            "hash": tok_hash,
            "vocab_size": vocab,
            "len": len(tok),
            "eos_id": eos,
        },
        "eos_id": eos,
        "dtype": dtype,
        "source": {
            "spec": "token-arrays",
            "description": "token arrays used in place (dolma tokens / OLMo-core "
            "numpy format), listed by absolute path",
        },
        "args": {
            "tokenizer": tokenizer_spec,
            "tokenizer_hash": tok_hash,
            "token_dtype": dtype,
            "train": [str(f) for f in files["train"]],
            "val": [str(f) for f in files["val"]],
        },
        "splits": {},
    }
    manifest["args_hash"] = hashlib.sha256(
        json.dumps(manifest["args"], sort_keys=True).encode()
    ).hexdigest()
    total = 0
    for split in SPLITS:
        shards = [
            {k: by_path[str(f)][k] for k in ("path", "tokens", "sha256", "max_id")}
            for f in files[split]
        ]
        tokens = sum(x["tokens"] for x in shards)
        manifest["splits"][split] = {
            "shards": shards,
            "tokens": tokens,
            "documents": sum(by_path[str(f)]["documents"] for f in files[split]),
            "bytes": None,
            "bytes_per_token": None,
            "max_id": max((x["max_id"] for x in shards), default=-1),
        }
        total += tokens
    if manifest["splits"]["train"]["tokens"] == 0:
        raise DataError(f"{train}: the train arrays hold no tokens")
    manifest["total_tokens"] = total
    manifest["complete"] = True
    mpath = out / "manifest.json"
    if mpath.is_file():
        old = json.loads(mpath.read_text())
        if old.get("args_hash") != manifest["args_hash"]:
            raise DataError(
                f"{out} already describes other data ({old.get('source', {}).get('spec')}); "
                "use another --out directory"
            )
    atomic_write_json(mpath, manifest, fsync=False)
    if progress:
        s = manifest["splits"]
        log.info(
            f"{out}: {total:,} tokens in place (train {s['train']['tokens']:,} in {len(files['train'])} "
            f"array(s), val {s['val']['tokens']:,} in {len(files['val'])}), {dtype}"
        )
    return manifest
