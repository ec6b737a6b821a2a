"""Building a target store (`lsap store build`): the windows a run trains on, many ranks,
resume per chunk. The format, its reader (`TargetStore`) and the design notes are in
`lsap.surrogate.store`; this module writes what that one reads.

Under `torchrun` the unfinished chunks are dealt out in order (chunk i of that list to
rank i mod W); every rank first agrees on what it would build (data, tokenizers,
surrogate weights, vocabulary map), so a rank-local mismatch stops every rank with one
named error. The result is byte-identical for any world size.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from lsap.surrogate.store import (
    DEFAULT_CHUNK_WINDOWS,
    EXACT_ALPHAS,
    FORMAT,
    FORMAT_VERSION,
    INFO_ALPHAS,
    WINDOW_LAYOUTS,
    _pack_chunk,
    surrogate_weights_hash,
    vocab_map_hash,
)
from lsap.surrogate.store_resume import check_resume, flag_settings
from lsap.utils.errors import LockError, StoreError
from lsap.utils.io import atomic_write_bytes, atomic_write_json, sha256_file
from lsap.utils.logging import get_logger

log = get_logger(__name__)

__all__ = ["Windows", "olmo_paths", "build_store"]


class Windows:
    """The windows a store is keyed by, over the train split of prepared shards.

    layout "lsap": window j = tokens [jT, jT + T + 1) of the concatenated split (inputs
    [:-1], labels [1:]; `TokenShards.window`, what `SequenceLoader` trains on).
    layout "olmo": OLMo-core's `NumpyFSLDataset` instances over the split's shard files
    in order: file f holds floor(len_f / T) instances, instance i = T tokens, labels the
    T − 1 next tokens inside it (the last position has none). The instance `index` is
    the window id.
    """

    def __init__(self, shards, seq_len: int, layout: str = "lsap"):
        if layout not in WINDOW_LAYOUTS:
            raise StoreError(f"window_layout must be one of {WINDOW_LAYOUTS}, got {layout!r}")
        self.shards, self.seq_len, self.layout = shards, int(seq_len), layout
        T = self.seq_len
        lens = [int(s["tokens"]) for s in shards.info["shards"]]
        self._file_start = np.cumsum([0] + lens)[:-1]
        if layout == "lsap":
            self.n_windows = shards.n_windows(T)
        else:
            self._inst_start = np.cumsum([0] + [n // T for n in lens])
            self.n_windows = int(self._inst_start[-1])

    def rows(self, ids) -> tuple[np.ndarray, np.ndarray]:
        """Window ids [B] → (inputs int64 [B, T], labels int64 [B, T]; IGNORE where none)."""
        from lsap.method.targets import IGNORE

        T = self.seq_len
        if self.layout == "lsap":
            r = np.stack([self.shards.window(int(w), T) for w in ids])
            return r[:, :-1], r[:, 1:]
        x = np.stack([self.shards.tokens(self.token_start(int(w)), T) for w in ids])
        y = np.full_like(x, IGNORE)
        y[:, :-1] = x[:, 1:]
        return x, y

    def token_start(self, w: int) -> int:
        """olmo layout: where instance w starts in the concatenated split."""
        f = int(np.searchsorted(self._inst_start, w, side="right")) - 1
        return int(self._file_start[f]) + (w - int(self._inst_start[f])) * self.seq_len


def olmo_paths(data: str | os.PathLike, split: str = "train") -> list[str]:
    """The token files of a prepared split, in order: the `paths` to give OLMo-core's
    `NumpyFSLDataset` so its instance indices are this store's window ids (olmo layout)."""
    from lsap.data.shards import TokenShards

    sh = TokenShards(data, split)
    return [str(sh.dir / s["path"]) for s in sh.info["shards"]]


# --------------------------------------------------------------------------- build (many ranks)
def _gather(obj, world: int) -> list:
    if world == 1:
        return [obj]
    import torch.distributed as dist

    got = [None] * world
    dist.all_gather_object(got, obj)
    return got


def _agree(step, rank: int, world: int):
    """Run `step()` on every rank, then stop every rank with one named error if any
    rank failed (no rank is left waiting in a collective). Returns every rank's result."""
    if world == 1:
        return [step()]
    try:
        res, err = step(), None
    except Exception as e:  # noqa: BLE001 — reported to every rank below
        res, err = None, (type(e).__name__, str(e).splitlines()[0] if str(e) else type(e).__name__)
    got = _gather((res, err), world)
    bad = [(r, e) for r, (_, e) in enumerate(got) if e is not None]
    if bad:
        r, (kind, msg) = bad[0]
        others = f"; also rank(s) {[b for b, _ in bad[1:]]}" if len(bad) > 1 else ""
        cls = LockError if kind == "LockError" else StoreError
        import torch.distributed as dist

        dist.barrier()  # every rank raises at once (torchrun stops the others when the first exits)
        raise cls(f"rank {r} of {world}: {msg}{others}")
    return [res for res, _ in got]


def _differences(a, b, prefix="") -> list[str]:
    if isinstance(a, dict) and isinstance(b, dict):
        out = []
        for key in sorted(set(a) | set(b)):
            out += _differences(a.get(key), b.get(key), f"{prefix}{key}.")
        return out
    return [] if a == b else [f"{prefix[:-1]}={str(b)[:40]!r} (rank 0: {str(a)[:40]!r})"]


def _file_key(p: Path) -> tuple:
    st = p.stat()
    return st.st_size, st.st_mtime_ns, st.st_ino


def _chunk_ok(out: Path, c: int, known: dict | None = None) -> dict | None:
    """The record of chunk c if its file is finished and matches it (sha256), else None.
    known: {c: (record, file key)} of chunks this process wrote or already hashed; those
    are not read again while their file is unchanged (filled in here)."""
    rec_p, bin_p = out / f"chunks/{c:06d}.json", out / f"chunks/{c:06d}.bin"
    try:
        if known is not None and c in known and known[c][1] == _file_key(bin_p):
            return known[c][0]
        rec = json.loads(rec_p.read_text())
        key = _file_key(bin_p)
        if key[0] != rec["bytes"] or sha256_file(bin_p) != rec["sha256"]:
            return None
    except (OSError, ValueError, KeyError):
        return None
    if known is not None and key == _file_key(bin_p):
        known[c] = (rec, key)
    return rec


def _check_share(out: Path, chunks, known: dict) -> dict:
    """The end-of-build check of one rank: its chunks match their records (hashing only
    those this process neither wrote nor hashed), then one sync, so the chunks are durable
    before the manifest calls the store complete."""
    recs = {}
    for c in chunks:
        recs[c] = _chunk_ok(out, c, known)
        if recs[c] is None:
            raise StoreError(
                f"{out}/chunks/{c:06d}.bin is missing or does not match its record after "
                "the build; re-run the same `lsap store build` to redo it"
            )
    os.sync()
    return recs


def _final_manifest(identity: dict, records: list[dict], counts_keys) -> dict:
    m = {**identity, "complete": True, "chunks": [], "candidates": 0}
    m["candidates_above"] = {str(a): 0 for a in counts_keys}
    for rec in records:
        m["chunks"].append(
            {k: rec[k] for k in ("path", "windows", "candidates", "bytes", "sha256")}
        )
        m["candidates"] += rec["candidates"]
        for a, v in rec["candidates_above"].items():
            m["candidates_above"][a] += v
    m["bytes"] = sum(ch["bytes"] for ch in m["chunks"])
    m["bytes_per_token"] = m["bytes"] / m["positions"]
    return m


def build_store(
    surrogate: str,
    data: str,
    seq_len: int,
    out: str | os.PathLike,
    *,
    k: int = 15,
    min_alpha: float = 0.01,
    vocab_map: str | None = None,
    batch_size: int = 8,
    device: str = "auto",
    dtype: str = "auto",
    chunk_windows: int = DEFAULT_CHUNK_WINDOWS,
    max_windows: int | None = None,
    window_layout: str = "lsap",
    progress: bool = True,
    dist_timeout_s: float = 3600.0,
    on_chunk: Callable[[int], None] | None = None,
) -> dict:
    """Run `surrogate` once over the train windows of `data`; write the store to `out`.

    One process, or every rank of a `torchrun` job (WORLD_SIZE > 1: gloo on CPU, nccl
    on GPU). Chunks are the unit of work: the chunks not yet finished are dealt out in
    order, chunk i of that list to rank i mod W; each rank writes its own chunk files
    (``chunks/NNNNNN.bin`` and its record ``NNNNNN.json``), every rank checks its share of
    the chunks at the end and rank 0 writes the one
    manifest after all have finished. A chunk is a deterministic function of its
    windows (fixed batch boundaries inside it), so the store is byte-identical for any
    world size (given the same kernels: the same device type, dtype and thread count).

    Before any work the ranks agree: rank 0 holds the directory lock, every rank loads
    the data, tokenizers and surrogate and all compare what they would build; any
    failure or disagreement stops every rank with one named error.

    Resumable: re-running with the same arguments (any world size) verifies finished
    chunks (sha256) and computes only the others. `max_windows` limits the build to the
    first windows (tests / measurements; lookups beyond fail). `window_layout`: "lsap"
    or "olmo" (`Windows`). `on_chunk(c)` is called after each chunk c this rank
    recorded (progress callbacks; the tests' kill-and-resume). Returns the manifest.
    """
    from lsap import distributed
    from lsap.data.shards import TokenShards
    from lsap.data.tokenizer import load_tokenizer, padded_vocab_size, tokenizer_hash
    from lsap.method.flops import count_params, inference_flops_per_token
    from lsap.method.targets import propose_targets
    from lsap.surrogate.load import SurrogateError, inference_device_dtype, load_surrogate_with_map
    from lsap.surrogate.precision import head_dtype
    from lsap.utils.lock import DirLock
    from lsap.utils.progress import Progress

    if not 1 <= k <= 255:
        raise StoreError(f"k must lie in [1, 255] (counts are stored as uint8), got {k}")
    if not 0.0 <= min_alpha < 1.0:
        raise StoreError(f"min_alpha must lie in [0, 1), got {min_alpha}")
    if window_layout not in WINDOW_LAYOUTS:
        raise StoreError(f"--window-layout must be one of {WINDOW_LAYOUTS}, got {window_layout!r}")
    if chunk_windows % batch_size:
        chunk_windows = max(batch_size, chunk_windows // batch_size * batch_size)
    out = Path(out)
    dev, tdtype = inference_device_dtype(device, dtype)
    world = int(os.environ.get("WORLD_SIZE", "1"))
    started_pg = False
    if world > 1:
        import torch.distributed as dist

        started_pg = not dist.is_initialized()
        d = distributed.init("cuda" if dev.type == "cuda" else "cpu", timeout_s=dist_timeout_s)
        rank, dev = d.rank, (d.device if dev.type == "cuda" else dev)
    else:
        rank = 0
    lock = DirLock(out, "lsap store build") if rank == 0 else None
    mpath = out / "manifest.json"
    t0 = time.perf_counter()
    try:

        def setup():
            if lock is not None:
                lock.acquire()
            shards = TokenShards(data, "train")
            win = Windows(shards, seq_len, window_layout)
            n_windows = win.n_windows if not max_windows else min(win.n_windows, int(max_windows))
            if n_windows == 0:
                raise StoreError(
                    f"{data}: the train split ({len(shards)} tokens) holds no "
                    f"{window_layout!r} window of seq_len {seq_len}"
                )
            if rank == 0 and mpath.is_file():  # the settings a flag gives, before any loading
                flags = (seq_len, k, min_alpha, window_layout, n_windows, batch_size, chunk_windows)
                check_resume(mpath, flag_settings(*flags, tdtype, dev.type, surrogate), only=True)
            base_tok = load_tokenizer(shards.manifest["tokenizer"]["spec"])
            shards.check_tokenizer(base_tok)
            try:  # base side: the trainer's default model vocabulary
                sw = load_surrogate_with_map(
                    surrogate,
                    base_tok,
                    None if vocab_map else padded_vocab_size(base_tok),
                    vocab_map=vocab_map,
                    dtype=tdtype,
                    device=dev,
                )
            except SurrogateError as e:
                raise StoreError(str(e)) from e
            model, stok, vmap, s_pad = sw.model, sw.tokenizer, sw.vmap, sw.pad_id
            id_bytes = 3 if vmap.base_vocab_size <= 1 << 24 else 4
            flops_per_token = inference_flops_per_token(model.config)
            hd = head_dtype(model)  # = the logits' that decide p > α (fp32 unless S is not split)
            identity = {
                "format": FORMAT,
                "format_version": FORMAT_VERSION,
                "window_layout": window_layout,
                "data": {
                    "tokenizer": shards.manifest["tokenizer"],
                    "split": "train",
                    "tokens": len(shards),
                    "shards_sha256": [s["sha256"] for s in shards.info["shards"]],
                },
                "seq_len": int(seq_len),
                "n_windows": int(n_windows),
                "positions": int(n_windows * seq_len),
                "k": int(k),
                "min_alpha": float(min_alpha),
                "exact_alphas": sorted({*EXACT_ALPHAS, float(min_alpha)}),
                "surrogate": {
                    "spec": os.fspath(surrogate),
                    "weights_sha256": surrogate_weights_hash(surrogate),
                    "tokenizer_hash": tokenizer_hash(stok),
                    "vocab_size": int(model.config.vocab_size),
                    "params_untied": int(count_params(model.config)),
                    "dtype": str(tdtype).removeprefix("torch."),
                    "device_type": dev.type,
                    "pad_id": int(s_pad),
                    "logits_dtype": hd,
                    "head_dtype": hd,
                },
                "vocab_map": {
                    "sigma_sha256": vocab_map_hash(vmap),
                    "size": int(vmap.size),
                    "base_hash": vmap.base_hash,
                    "surrogate_hash": vmap.surrogate_hash,
                },
                "layout": {
                    "chunk_windows": int(chunk_windows),
                    "batch_size": int(batch_size),
                    "id_bytes": id_bytes,
                    "prob_dtype": "float16",
                    "sections": [
                        "woff:int64",
                        "count:uint8",
                        f"ids:uint{8 * id_bytes}",
                        "probs:float16",
                    ],
                },
                "flops": {
                    "per_token": flops_per_token,
                    "build_flops": flops_per_token * n_windows * seq_len,
                },
            }
            complete = rank == 0 and mpath.is_file() and check_resume(mpath, identity)
            return identity, complete, (win, model, vmap, s_pad)

        got = _agree(setup, rank, world)
        identity, complete, (win, model, vmap, s_pad) = got[rank][0], got[0][1], got[rank][2]
        for r in range(1, world):  # every rank runs this comparison on the same gathered values
            diff = _differences(got[0][0], got[r][0])
            if diff:
                raise StoreError(
                    f"the ranks disagree on what to build: rank {r} of {world} has "
                    f"{'; '.join(diff[:3])}; every rank must see the same surrogate, tokenizer, "
                    "map and data (the same files on every node)"
                )
        if complete:
            if progress and rank == 0:
                log.info(f"store: {out} is complete; nothing to do")
            return json.loads(mpath.read_text())
        n_windows = identity["n_windows"]
        n_chunks = -(-n_windows // chunk_windows)

        def prepare_dir():
            if rank == 0:
                (out / "chunks").mkdir(parents=True, exist_ok=True)
                for f in (out / "chunks").glob(
                    ".tmp-*"
                ):  # left by a killed rank; nothing reads them
                    f.unlink(missing_ok=True)
                if not mpath.is_file():
                    atomic_write_json(mpath, {**identity, "complete": False}, fsync=False)
                vmap.save(out / "vocab_map")
            return [c for c in range(rank, n_chunks, world) if _chunk_ok(out, c, known) is not None]

        known: dict = {}  # chunks this rank hashed or wrote: not hashed again at the end
        finished = {c for part in _agree(prepare_dir, rank, world) for c in part}
        todo = [c for c in range(n_chunks) if c not in finished]
        mine = todo[rank::world]
        T = int(seq_len)
        alphas = identity["exact_alphas"]
        counts_keys = sorted({*INFO_ALPHAS, float(min_alpha)})
        id_bytes = identity["layout"]["id_bytes"]
        bar = Progress(
            sum(min(chunk_windows, n_windows - c * chunk_windows) for c in mine) * T,
            f"lsap store build (rank {rank} of {world})" if world > 1 else "lsap store build",
            "tok",
            enabled=progress and rank == 0,
        )
        computed, t_compute = 0, time.perf_counter()
        for c in mine:
            w0, w1 = c * chunk_windows, min((c + 1) * chunk_windows, n_windows)
            ids_l, mask_l, probs_l = [], [], []
            counts_at = {a: 0 for a in counts_keys}
            for b0 in range(w0, w1, batch_size):
                b1 = min(b0 + batch_size, w1)
                x, y = win.rows(range(b0, b1))
                with torch.inference_mode():
                    ids, mask, probs = propose_targets(
                        model,
                        torch.from_numpy(x).to(dev),
                        torch.from_numpy(y).to(dev),
                        vmap,
                        k,
                        min_alpha,
                        pad_id=s_pad,
                    )
                ids_l.append(ids.cpu().numpy())
                mask_l.append(mask.cpu().numpy())
                probs_l.append(probs.float().cpu().numpy())
                bar.update((b1 - b0) * T)
            blob, n_cand = _pack_chunk(ids_l, mask_l, probs_l, T, id_bytes, alphas, counts_at)
            # no fsync per chunk (2 per chunk were ~25 ms of a tiny chunk's time here): a resume
            # re-hashes every chunk it keeps, and each rank syncs once before the manifest
            bin_p = atomic_write_bytes(out / f"chunks/{c:06d}.bin", blob, fsync=False)
            rec = {
                "path": f"chunks/{c:06d}.bin",
                "windows": [w0, w1],
                "candidates": n_cand,
                "bytes": len(blob),
                "sha256": hashlib.sha256(blob).hexdigest(),
                "candidates_above": {str(a): v for a, v in counts_at.items()},
            }
            key = _file_key(bin_p)
            atomic_write_json(out / f"chunks/{c:06d}.json", rec, fsync=False)
            known[c] = (rec, key)
            computed += (w1 - w0) * T
            if on_chunk is not None:
                on_chunk(c)
        bar.close()
        t_compute = time.perf_counter() - t_compute

        def check_share():  # every rank its share (stride) of the chunks, then one sync
            return _check_share(out, range(rank, n_chunks, world), known)

        _gather(None, world)  # every rank has written its chunks before any rank checks a share
        records = {c: r for part in _agree(check_share, rank, world) for c, r in part.items()}

        def finish():  # rank 0, once every rank has checked its share
            if rank != 0:
                return None
            manifest = _final_manifest(identity, [records[c] for c in range(n_chunks)], counts_keys)
            atomic_write_json(mpath, manifest)
            return manifest

        totals = _gather((computed, t_compute), world)
        manifest = _agree(finish, rank, world)[0]
        if rank == 0:  # timings: not part of the store (nothing in the manifest depends on them)
            wall, tokens, slowest = (
                time.perf_counter() - t0,
                sum(n for n, _ in totals),
                max(t for _, t in totals),
            )
            atomic_write_json(
                out / "build_stats.json",
                {
                    "wall_s": wall,
                    "compute_s": slowest,
                    "tokens_computed": tokens,
                    "tokens_per_s": tokens / max(slowest, 1e-9),
                    "tokens_computed_per_rank": [n for n, _ in totals],
                    "compute_s_per_rank": [t for _, t in totals],
                    "world_size": world,
                    "device": str(dev),
                },
                fsync=False,
            )
        return manifest
    finally:
        if lock is not None:
            lock.release()
        if started_pg:
            distributed.shutdown()
