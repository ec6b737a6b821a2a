"""`lsap prepare`'s resume state: the manifest it opens or starts, and the fingerprint of a
local source, so that a rerun after a kill continues only over the same text.

The fingerprint is each source file's (path, size, mtime_ns): cheap (no hashing of
gigabytes), written once to ``DIR/source_files.json`` when a preparation starts and removed
when it completes. A resume whose source differs (a file edited, added or removed) is refused
by name: its finished shards hold the old text, the rest would come from the new one (a
run stopped before its first shard, e.g. by a file it could not read, starts over instead).
"""

from __future__ import annotations

import json
from pathlib import Path

from lsap.data.corpora import CORPORA, local_files
from lsap.utils.errors import DataError
from lsap.utils.io import atomic_write_json

SOURCE_FILES = "source_files.json"


def source_fingerprint(source: str) -> dict[str, list[int]] | None:
    """{path relative to the source: [size, mtime_ns]} of a local file or folder source;
    None for a corpus name or an hf: dataset (nothing local to watch)."""
    if source in CORPORA or source.startswith("hf:"):
        return None
    path = Path(source).expanduser()
    if path.is_file():
        files, root = [path], path.parent
    elif path.is_dir():
        files, root = local_files(path, warn=False), path
    else:
        return None
    fp = {}
    for p in files:
        st = p.stat()
        fp[p.relative_to(root).as_posix()] = [int(st.st_size), int(st.st_mtime_ns)]
    return fp


def _changes(old: dict, new: dict) -> list[str]:
    out = []
    for name in sorted(set(old) | set(new)):
        if name not in new:
            out.append(f"{name} removed")
        elif name not in old:
            out.append(f"{name} added")
        elif old[name] != new[name]:
            s0, s1 = old[name][0], new[name][0]
            out.append(f"{name} modified (" + (f"size {s0} → {s1}" if s0 != s1 else "mtime") + ")")
    return out


def check_source(out: Path, source: str, fp: dict | None) -> None:
    """Refuse to resume the preparation in `out` when `source` changed since it began."""
    p = out / SOURCE_FILES
    if fp is None or not p.is_file():
        return  # a corpus name, or a preparation begun before fingerprints were recorded
    try:
        old = json.loads(p.read_text())["files"]
    except (ValueError, KeyError, TypeError):
        return  # torn by a kill while it was first written: nothing is known about the source
    changed = _changes(old, fp)
    if changed:
        more = f" and {len(changed) - 3} more" if len(changed) > 3 else ""
        raise DataError(
            f"source {source} changed since this `lsap prepare` into {out} began "
            f"({'; '.join(changed[:3])}{more}); its finished shards hold the old text. Restore "
            f"the source to resume, or start over: delete {out} or use another --out"
        )


def open_manifest(out: Path, head: dict, args: dict, args_hash: str, splits, progress, log):
    """(manifest, complete): the manifest of an earlier run with these arguments, or a new
    one (`head`'s fields, no shards yet) written to `out` with the source's fingerprint."""
    mpath = out / "manifest.json"
    tok_hash, spec = args["tokenizer_hash"], args["tokenizer"]
    fp = source_fingerprint(args["source"])
    if mpath.is_file():
        manifest = json.loads(mpath.read_text())
        had = manifest.get("tokenizer", {})
        if had.get("hash") != tok_hash:
            raise DataError(
                f"{out} holds shards made with tokenizer {had.get('spec')!r} "
                f"(hash {str(had.get('hash'))[:12]}), not {spec!r} "
                f"(hash {tok_hash[:12]}); use another --out directory"
            )
        if manifest.get("args_hash") != args_hash:
            raise DataError(
                f"{out} was prepared with other arguments ({manifest.get('args')}); "
                f"use another --out directory or the same arguments to resume"
            )
        if manifest.get("complete"):
            (out / SOURCE_FILES).unlink(missing_ok=True)  # left by a kill after the last write
            if progress:
                log.info(
                    f"{out}: already complete ({manifest['total_tokens']:,} tokens); nothing to do"
                )
            return manifest, True
        if any(e["shards"] for e in manifest["splits"].values()):
            check_source(out, args["source"], fp)
        elif fp is not None:  # no shard yet holds any text: this run starts from the source as is
            atomic_write_json(out / SOURCE_FILES, {"source": args["source"], "files": fp})
        return manifest, False
    out.mkdir(parents=True, exist_ok=True)
    if fp is not None:  # before the manifest: a manifest without it is a fresh start
        atomic_write_json(out / SOURCE_FILES, {"source": args["source"], "files": fp}, fsync=False)
    state = {"doc": -1, "offset": 0, "tokens": 0, "bytes": 0, "documents": 0}
    manifest = {
        **head,
        "args": args,
        "args_hash": args_hash,
        "complete": False,
        "splits": {s: {"shards": [], "state": dict(state)} for s in splits},
    }
    atomic_write_json(mpath, manifest, fsync=False)
    return manifest, False
