"""Offline surrogate-target store: one surrogate pass serves a whole α / k / λ sweep.

This module holds the format and its reader (`TargetStore`, `StoredTargets`);
`lsap.surrogate.store_build.build_store` writes it. `build_store` runs the frozen surrogate once over the *train* split of prepared token
shards, on exactly the windows a run trains on (`window_layout` "lsap": `SequenceLoader`'s
window j = base inputs [jT, jT+T), labels shifted by one; "olmo": OLMo-core's
`NumpyFSLDataset` instance j, T tokens with T − 1 labels inside it, see `lsap.surrogate.store_build.Windows`; the
surrogate's context starts at the window start, as online), and stores, per base input position, the auxiliary candidates of METHOD §3
already in base ids: gold and non-Σ∩ excluded, top-k, p > min_alpha, in decreasing p.
Training with ``surrogate.source: store`` calls `TargetStore.lookup(windows, k', α)`
for any k' ≤ k and α ≥ min_alpha and gets what `propose_targets(..., k', α)` returns.

Layout of DIR::

    DIR/manifest.json        what was built from what (hashes), window_layout, sizes, per-chunk sha256
    DIR/chunks/000000.bin    windows [0, C), then [C, 2C), ... (C = chunk_windows)
    DIR/chunks/000000.json   that chunk's record (sha256, sizes, counts), written after it
    DIR/vocab_map/           the Σ∩ map used (`VocabMap.load`)
    DIR/build_stats.json     wall time, tokens/s, world size of the last build (not part of the artifact)
    DIR/verified-HOST.jsonl  chunks checked (sha256) on node HOST (`lsap.surrogate.verified`; not part of it)
    DIR/.lsap.utils.lock           held by rank 0 while a build runs

A chunk file holding n_w windows (P = n_w·T positions) and n candidates is four
little-endian sections back to back (CSR aligned with the shards)::

    woff   int64[n_w + 1]   candidate offset of each window's first position
    count  uint8[P]         candidates per position (≤ k ≤ 255)
    ids    uint24[n] (3 bytes, when the base vocabulary < 2**24; else uint32[n])
    probs  float16[n]       the surrogate's p, quantised as below

Bytes per position = 1 + 5·(mean candidates) (+ 8/T for woff). Measured: SmolLM2-135M-
Instruct over dolma2-tokenized Shakespeare (36,608 positions, T = 256, k = 15, min_alpha
0.01): 9.96 candidates per position, 50.8 bytes per token (2.12 / 0.33 candidates at α
0.05 / 0.2).

Exactness of ``p > α`` after quantisation. Rounding to float16 is monotone, so for any
α, ``p > α`` and ``q > fp16(α)`` disagree only where q == fp16(α) (p inside α's
rounding cell, relative width ~5e-4). At build time every stored q that equals
fp16(α) for an α in `EXACT_ALPHAS` (and min_alpha) is moved one float16 step to the
side of α that the float32 comparison `p > α` (what online selection does) puts it
on, so `lookup` is exact for those α. For other α, a lookup may flip the rare entries
with q == fp16(α); `lookup` counts them and warns once per α. On the SmolLM2 store
above, α = 0.07 (not in the list) has 52 of 364,509 stored candidates (1.4e-4; 1.4e-3
per position) sitting exactly on fp16(0.07); ~0.1% of candidates lie within one float16
step of each common α, so without the nudge some selections would differ from online. `probs` returned by
`lookup` are the float16 values (relative error ≤ 2**-11), which matters only for the
`aux_weighting: prob` ablation.

Many ranks and resume: under `torchrun` the unfinished chunks are dealt out in order
(chunk i of that list to rank i mod W). A chunk and then its record are written to
temporary names and renamed; a re-run of the same build (any world size) checks each
record against its chunk's sha256, skips the finished ones, and since a chunk is a
deterministic function of its windows (fixed batch boundaries inside the chunk) the
result is byte-identical to a straight build on any number of ranks. At the end each rank
checks its share of the chunks (hashing only those it did not write or hash itself) and
syncs; rank 0 then writes the manifest; it holds nothing that depends on timing or on
the world size.

Precision. Selection runs as online does (`propose_targets`: the surrogate body in
`--dtype`, the head in fp32), and the manifest records the surrogate dtype, device,
batch size and the dtype of the selection logits (`surrogate.logits_dtype`).
`check_run` warns when a run's online settings (surrogate.dtype, surrogate.batch_size)
differ: the store still serves the run, but its targets could differ from that run's
online ones near p = α or at top-k ties.

Compute accounting. The build costs ``build_flops = 2·N_s · (windows·T)`` (METHOD §5,
the same per-token charge as online, `inference_flops_per_token`). A run trained from
the store still charges 2·N_s per trained base token as ``flops_surrogate`` in its
metrics (the paper's per-run accounting, so matched-FLOPs comparisons against CE stay
conservative and store and online runs sit on the same FLOPs axis), and in addition
logs ``flops_surrogate_paid`` (0 for store runs; = flops_surrogate online) and writes
``targets.json`` (the store's `build_flops`) in its run directory. A sweep's real
compute is therefore Σ_runs flops_base + one `build_flops` per store.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections import OrderedDict
from pathlib import Path

import numpy as np
import torch

from lsap.method.targets import AuxTargets
from lsap.surrogate.verified import VerifiedRecord
from lsap.utils.errors import StoreError
from lsap.utils.io import sha256_file
from lsap.utils.logging import get_logger

log = get_logger(__name__)

FORMAT = (
    "lsap-target-cache"  # the manifest format name since round 2 (kept: old stores stay readable)
)
FORMAT_VERSION = 1
EXACT_ALPHAS = (0.005, 0.01, 0.02, 0.03, 0.05, 0.1, 0.15, 0.2, 0.25, 0.3, 0.4, 0.5)
INFO_ALPHAS = (0.01, 0.05, 0.2)
DEFAULT_CHUNK_WINDOWS = 1024
WINDOW_LAYOUTS = ("lsap", "olmo")


# --------------------------------------------------------------------------- helpers
def _f16(x: float) -> np.float16:
    return np.float16(np.float32(x))


def quantise_probs(p: np.ndarray, alphas) -> np.ndarray:
    """float32 p[n] → float16 q[n] with `q > fp16(α)` ⇔ `p > float32(α)` for every α in `alphas`."""
    p = np.asarray(p, dtype=np.float32)
    q = p.astype(np.float16)
    bits = q.view(np.uint16)  # positive halves: bit order == value order
    for a in alphas:
        ah = _f16(a)
        tie = q == ah
        if tie.any():
            above = p > np.float32(a)
            bits[tie & above] += 1
            bits[tie & ~above] -= 1
    return q


def _pack_ids(ids: np.ndarray, id_bytes: int) -> bytes:
    u = np.ascontiguousarray(ids, dtype="<u4")
    if id_bytes == 4:
        return u.tobytes()
    return np.ascontiguousarray(u.view(np.uint8).reshape(-1, 4)[:, :3]).tobytes()


def _unpack_ids(buf: np.ndarray, id_bytes: int) -> np.ndarray:
    if id_bytes == 4:
        return buf.view("<u4").astype(np.int64)
    b = buf.reshape(-1, 3).astype(np.int64)
    return b[:, 0] | (b[:, 1] << 8) | (b[:, 2] << 16)


def surrogate_weights_hash(spec: str) -> str:
    """sha256 over the surrogate's weight files (name + bytes), without loading the model.

    `smollm2` / `.gguf`: the GGUF file; a local directory: its *.safetensors / *.bin /
    *.gguf files; a hub id: those files in the local HF snapshot.
    """
    from lsap.surrogate.load import SHORT_NAMES, packaged_gguf

    text = os.fspath(spec)
    path = Path(text).expanduser()
    if text in SHORT_NAMES:
        files = [packaged_gguf(text)]
    elif path.is_file():
        files = [path]
    elif path.is_dir():
        files = sorted(
            p for p in path.iterdir() if p.suffix in (".safetensors", ".bin", ".gguf", ".pt")
        )
    else:
        from huggingface_hub import snapshot_download

        d = Path(snapshot_download(text, local_files_only=True))
        files = sorted(p for p in d.iterdir() if p.suffix in (".safetensors", ".bin"))
    if not files:
        raise StoreError(f"surrogate {text!r}: no weight files found to hash")
    h = hashlib.sha256()
    for f in files:
        h.update(f.name.encode() + b"\0" + sha256_file(f).encode() + b"\0")
    return h.hexdigest()


def vocab_map_hash(vmap) -> str:
    """sha256 of Σ∩ as sorted (base id, surrogate id) pairs: independent of vocabulary padding."""
    b2s = vmap.base_to_surrogate.cpu().numpy()
    base = np.nonzero(b2s >= 0)[0]
    pairs = np.stack([base, b2s[base]], 1).astype("<i8")
    return hashlib.sha256(pairs.tobytes()).hexdigest()


def _layout(n_windows: int, seq_len: int, n_cand: int, id_bytes: int) -> dict:
    sizes = {
        "woff": 8 * (n_windows + 1),
        "count": n_windows * seq_len,
        "ids": id_bytes * n_cand,
        "probs": 2 * n_cand,
    }
    out, pos = {}, 0
    for name, size in sizes.items():
        out[name] = (pos, size)
        pos += size
    out["total"] = (0, pos)
    return out


# --------------------------------------------------------------------------- build
def _pack_chunk(ids_l, mask_l, probs_l, seq_len: int, id_bytes: int, alphas, counts_at):
    """aux_ids / aux_mask / probs [nw, T, k] (numpy) → chunk bytes and candidate count."""
    mask = np.concatenate(mask_l)
    ids = np.concatenate(ids_l)
    probs = np.concatenate(probs_l)
    nw = mask.shape[0]
    count = mask.sum(-1).astype(np.uint8).reshape(-1)  # prefix masks: count = slots used
    woff = np.zeros(nw + 1, dtype="<i8")
    np.cumsum(count.reshape(nw, seq_len).sum(-1), out=woff[1:])
    p = probs[mask].astype(np.float32)
    for a in counts_at:
        counts_at[a] += int((p > np.float32(a)).sum())
    q = quantise_probs(p, alphas)
    blob = (
        woff.tobytes()
        + count.tobytes()
        + _pack_ids(ids[mask], id_bytes)
        + q.astype("<f2").tobytes()
    )
    return blob, int(mask.sum())


# --------------------------------------------------------------------------- reading
class TargetStore:
    """A finished store, opened for lookups. `TargetStore(dir, verify=False)`.

    Always checks the manifest and every chunk's size; `verify=True` also checks every
    chunk's sha256 up front (reads the whole store once). Without it, each chunk's
    sha256 is checked the first time a lookup reads it, so a corrupt chunk is refused
    before any training step uses it (~1 ms per MB), once per node: checked chunks are
    recorded beside the store (`lsap.surrogate.verified`) and the other ranks of the node,
    and later runs, trust them while the file is unchanged (`record=False`: once per process).
    """

    def __init__(self, directory: str | os.PathLike, *, verify: bool = False, record: bool = True):
        self.dir = Path(directory)
        mpath = self.dir / "manifest.json"
        if not mpath.is_file():
            raise StoreError(
                f"{self.dir}: no manifest.json (run `lsap store build --out {self.dir}` first)"
            )
        try:
            m = json.loads(mpath.read_text())
        except json.JSONDecodeError as e:
            raise StoreError(f"{mpath}: corrupt manifest ({e}); rebuild the store") from e
        if m.get("format") != FORMAT:
            raise StoreError(f"{mpath} is not an lsap target-store manifest")
        if m.get("format_version") != FORMAT_VERSION:
            raise StoreError(
                f"{self.dir}: store format {m.get('format_version')} != {FORMAT_VERSION}; rebuild it"
            )
        if not m.get("complete"):
            raise StoreError(
                f"{self.dir}: the build did not finish; re-run the same `lsap store build` to resume"
            )
        self.manifest = m
        self.window_layout = m.get(
            "window_layout", "lsap"
        )  # stores built before layouts were named: lsap
        if self.window_layout not in WINDOW_LAYOUTS:
            raise StoreError(
                f"{mpath}: unknown window_layout {self.window_layout!r} (this lsap reads "
                f"{WINDOW_LAYOUTS}); upgrade lsap or rebuild the store"
            )
        self.seq_len, self.k, self.min_alpha = int(m["seq_len"]), int(m["k"]), float(m["min_alpha"])
        self.n_windows = int(m["n_windows"])
        self.chunk_windows = int(m["layout"]["chunk_windows"])
        self.id_bytes = int(m["layout"]["id_bytes"])
        self.exact_alphas = [float(a) for a in m["exact_alphas"]]
        self._maps, self._lay = [], []
        for ch in m["chunks"]:
            p = self.dir / ch["path"]
            nw = ch["windows"][1] - ch["windows"][0]
            lay = _layout(nw, self.seq_len, ch["candidates"], self.id_bytes)
            if lay["total"][1] != ch["bytes"]:
                raise StoreError(
                    f"{self.dir}: manifest sizes are inconsistent for {ch['path']}; rebuild the store"
                )
            if not p.is_file() or p.stat().st_size != ch["bytes"]:
                raise StoreError(
                    f"{p}: missing or truncated (expected {ch['bytes']} bytes); the store is "
                    "damaged: rebuild it (re-running the build redoes nothing it trusts)"
                )
            if verify and sha256_file(p) != ch["sha256"]:
                raise StoreError(f"{p}: sha256 mismatch; the store is corrupt, rebuild it")
            self._lay.append(lay)
        # Chunk files are opened lazily and at most `max_open` stay mapped (each mmap holds a file
        # descriptor; a paper-scale store has ~25.7K chunks per rank).
        self._maps = OrderedDict()
        self.max_open = max(1, int(os.environ.get("LSAP_STORE_MAX_OPEN", "64")))
        self._verified = [verify] * len(self._lay)
        self._record = VerifiedRecord(self.dir) if record else None
        self._warned = set()

    # ---- checks ---------------------------------------------------------------------
    def check_run(
        self,
        shards,
        seq_len: int,
        k: int,
        alpha: float,
        surrogate: str | None = None,
        vmap=None,
        dtype: str | None = None,
        batch_size: int | None = None,
        window_layout: str = "lsap",
    ) -> list[str]:
        """Raise StoreError unless this store can serve a run with these settings.

        window_layout: the windows the run's loader produces ("lsap": `lsap train`'s
        windows of T + 1 tokens; "olmo": OLMo-core's instances of T tokens, see `lsap.surrogate.store_build.Windows`);
        a store built for the other layout is refused first, by name.
        shards: the run's train `TokenShards`; surrogate: the run's surrogate spec (its
        weight files are hashed and compared; None skips the check); vmap: a VocabMap
        the run would use (compared as Σ∩ pairs; None skips).
        dtype / batch_size: the surrogate precision ("bfloat16" / "float32") and forward
        batch the run would use online. A store built otherwise still serves the run,
        but its targets can differ from online ones near p = α or at top-k ties
        (other kernels, other padding); such differences are printed as warnings and
        returned (an empty list when there are none).
        """
        m = self.manifest
        if window_layout != self.window_layout:
            what = {
                "lsap": "`lsap train`'s windows (T + 1 tokens, T labels)",
                "olmo": "OLMo-core's instances (T tokens, T - 1 labels)",
            }
            raise StoreError(
                f"store {self.dir} has window_layout {self.window_layout!r} "
                f"({what.get(self.window_layout, '?')}), this run reads {window_layout!r} "
                f"({what.get(window_layout, '?')}): its window ids would name other tokens; rebuild "
                f"it with `lsap store build --window-layout {window_layout}`"
            )
        want = m["data"]
        if shards.manifest["tokenizer"]["hash"] != want["tokenizer"]["hash"]:
            raise StoreError(
                f"store {self.dir} was built for base tokenizer {want['tokenizer']['spec']!r} "
                f"(hash {want['tokenizer']['hash'][:12]}), the run's data use "
                f"{shards.manifest['tokenizer']['spec']!r} (hash {shards.manifest['tokenizer']['hash'][:12]})"
            )
        got = [s["sha256"] for s in shards.info["shards"]]
        if got != want["shards_sha256"] or len(shards) != want["tokens"]:
            raise StoreError(
                f"store {self.dir} was built on other data ({want['tokens']:,} train tokens, shards "
                f"{[h[:8] for h in want['shards_sha256']]}) than {shards.dir} ({len(shards):,} tokens, "
                f"{[h[:8] for h in got]}); rebuild it with `lsap store build --data {shards.dir}`"
            )
        if int(seq_len) != self.seq_len:
            raise StoreError(
                f"store {self.dir} holds windows of seq_len {self.seq_len}, the run uses {seq_len}: "
                "the surrogate's context would differ; rebuild with --seq-len "
                f"{seq_len} or set data.seq_len={self.seq_len}"
            )
        if k > self.k:
            raise StoreError(f"lsap.k={k} exceeds the store's k={self.k}; rebuild with --k {k}")
        if alpha < self.min_alpha:
            raise StoreError(
                f"lsap.alpha={alpha} is below the store's min_alpha={self.min_alpha}; "
                f"rebuild with --min-alpha {alpha}"
            )
        if surrogate:
            h = surrogate_weights_hash(surrogate)
            if h != m["surrogate"]["weights_sha256"]:
                raise StoreError(
                    f"store {self.dir} was built with surrogate {m['surrogate']['spec']!r} "
                    f"(weights {m['surrogate']['weights_sha256'][:12]}), the run names {surrogate!r} "
                    f"(weights {h[:12]})"
                )
        if vmap is not None and vocab_map_hash(vmap) != m["vocab_map"]["sigma_sha256"]:
            raise StoreError(
                f"store {self.dir} was built with another vocabulary map (Σ∩ of "
                f"{m['vocab_map']['size']} pairs); rebuild it with --map of the run's map"
            )
        return self._online_differences(dtype, batch_size)

    def _online_differences(self, dtype: str | None, batch_size: int | None) -> list[str]:
        s, lay = self.manifest["surrogate"], self.manifest["layout"]
        notes = []
        if dtype is not None and dtype != s.get("dtype"):
            notes.append(
                f"the store was built with the surrogate in {s.get('dtype')} on {s.get('device_type')}, "
                f"this run's online setting is {dtype}: targets near p = α may differ from online ones "
                f"(rebuild with `lsap store build --dtype {dtype}` to match)"
            )
        if s.get("logits_dtype", "unknown") != "float32":
            notes.append(
                f"the store's selection logits were {s.get('logits_dtype', 'not recorded (an older build)')}, "
                "not fp32: rebuild it to select from fp32 logits as online runs do"
            )
        if batch_size is not None and int(batch_size) != int(lay["batch_size"]):
            notes.append(
                f"the store was built with surrogate batch size {lay['batch_size']}, this run's online "
                f"batch is {batch_size}: other padding and kernels, so rare ties may resolve differently "
                f"(rebuild with --batch-size {batch_size} to match)"
            )
        for n in notes:
            log.warning(f"store: {n}")
        return notes

    def load_vocab_map(self):
        from lsap.method.vocab import VocabMap

        return VocabMap.load(self.dir / "vocab_map")

    # ---- lookups --------------------------------------------------------------------
    def _chunk(self, c: int) -> np.ndarray:
        """Chunk c's bytes, mapped on first use; the least recently used map is closed
        once more than `max_open` are open."""
        buf = self._maps.get(c)
        if buf is not None:
            self._maps.move_to_end(c)
            return buf
        ch = self.manifest["chunks"][c]
        buf = (
            np.memmap(self.dir / ch["path"], dtype=np.uint8, mode="r")
            if ch["bytes"]
            else np.zeros(0, np.uint8)
        )
        self._maps[c] = buf
        while len(self._maps) > self.max_open:
            _, old = self._maps.popitem(last=False)
            mm = getattr(old, "_mmap", None)
            del old
            if mm is not None:
                try:
                    mm.close()  # frees the descriptor now (views of it were copied out)
                except BufferError:
                    pass  # a caller still holds a view: the map closes when it is dropped
        return buf

    def _verify_chunk(self, c: int) -> None:
        ch, rec = self.manifest["chunks"][c], self._record
        if rec is not None and rec.trusted(ch["path"], ch["sha256"]):
            self._verified[c] = True
            return
        before = rec.key(ch["path"], ch["sha256"]) if rec is not None else None
        if hashlib.sha256(self._chunk(c)).hexdigest() != ch["sha256"]:
            raise StoreError(
                f"{self.dir / ch['path']}: sha256 mismatch, the chunk changed after it was built "
                "(corrupt); delete the directory and re-run the same `lsap store build` (or build into a "
                "new --out)"
            )
        self._verified[c] = True
        if rec is not None:
            rec.add(ch["path"], ch["sha256"], before)

    def _window(self, w: int):
        if not 0 <= w < self.n_windows:
            raise StoreError(f"window {w} outside the store's [0, {self.n_windows})")
        c, j = divmod(w, self.chunk_windows)
        if not self._verified[c]:
            self._verify_chunk(c)
        buf, lay = self._chunk(c), self._lay[c]
        o, _ = lay["woff"]
        a, b = np.frombuffer(buf, dtype="<i8", count=2, offset=o + 8 * j)
        T = self.seq_len
        count = np.asarray(buf[lay["count"][0] + j * T : lay["count"][0] + (j + 1) * T])
        ids = _unpack_ids(
            np.asarray(buf[lay["ids"][0] + a * self.id_bytes : lay["ids"][0] + b * self.id_bytes]),
            self.id_bytes,
        )
        probs = np.frombuffer(
            buf, dtype="<f2", count=int(b - a), offset=lay["probs"][0] + 2 * int(a)
        )
        return count, ids, probs

    def lookup(
        self, windows, k: int | None = None, alpha: float | None = None, device=None
    ) -> AuxTargets:
        """Targets of windows [B] (loader window ids in row order) → like `propose_targets`.

        Returns `AuxTargets`: ids [B, T, k] (base ids, -1 unused), mask [B, T, k] (a
        prefix in decreasing p), probs [B, T, k] (float32 of the stored float16; 0 unused).
        """
        k = self.k if k is None else int(k)
        alpha = self.min_alpha if alpha is None else float(alpha)
        if k > self.k or k < 1:
            raise StoreError(f"k={k} outside [1, {self.k}] (the store's k)")
        if alpha < self.min_alpha:
            raise StoreError(f"alpha={alpha} below the store's min_alpha={self.min_alpha}")
        ah = _f16(alpha)
        windows = np.asarray(windows, dtype=np.int64).reshape(-1)
        B, T = len(windows), self.seq_len
        ids_o = np.full((B, T, k), -1, dtype=np.int64)
        mask_o = np.zeros((B, T, k), dtype=bool)
        probs_o = np.zeros((B, T, k), dtype=np.float32)
        ambiguous = 0
        for r, w in enumerate(windows):
            count, ids, probs = self._window(int(w))
            n = len(ids)
            if n == 0:
                continue
            pos = np.repeat(np.arange(T), count)
            slot = np.arange(n) - np.repeat(np.cumsum(count, dtype=np.int64) - count, count)
            keep = (slot < k) & (probs > ah)
            if alpha not in self.exact_alphas:
                ambiguous += int(((slot < k) & (probs == ah)).sum())
            ids_o[r, pos[keep], slot[keep]] = ids[keep]
            mask_o[r, pos[keep], slot[keep]] = True
            probs_o[r, pos[keep], slot[keep]] = probs[keep]
        if ambiguous and alpha not in self._warned:
            self._warned.add(alpha)
            log.warning(
                f"store: alpha={alpha} is not one of the store's exact alphas; {ambiguous} "
                f"candidate(s) in this batch lie within float16 rounding of it and may differ from online "
                f"selection (exact: {self.exact_alphas})"
            )
        out = AuxTargets(
            torch.from_numpy(ids_o), torch.from_numpy(mask_o), torch.from_numpy(probs_o)
        )
        return out.to(device) if device is not None else out

    # ---- summary --------------------------------------------------------------------
    def info(self, alphas=None) -> dict:
        """Size on disk, bytes per token, candidates per position at each α, provenance."""
        m = self.manifest
        disk = sum(f.stat().st_size for f in self.dir.rglob("*") if f.is_file())
        alphas = sorted({*INFO_ALPHAS, *(alphas or ()), self.min_alpha})
        per_pos = {}
        for a in alphas:
            if str(a) in m["candidates_above"] and a in self.exact_alphas:
                n = m["candidates_above"][str(a)]
            else:
                ah = _f16(a)
                n = 0
                for c, lay in enumerate(self._lay):
                    buf = self._chunk(c)
                    o, size = lay["probs"]
                    n += int(
                        (np.frombuffer(buf, dtype="<f2", count=size // 2, offset=o) > ah).sum()
                    )
            per_pos[str(a)] = n / m["positions"]
        return {
            "dir": str(self.dir),
            "bytes": m["bytes"],
            "bytes_on_disk": disk,
            "bytes_per_token": m["bytes_per_token"],
            "positions": m["positions"],
            "windows": m["n_windows"],
            "seq_len": self.seq_len,
            "window_layout": self.window_layout,
            "k": self.k,
            "min_alpha": self.min_alpha,
            "candidates": m["candidates"],
            "candidates_per_position": per_pos,
            "exact_alphas": self.exact_alphas,
            "chunks": len(m["chunks"]),
            "build_flops": m["flops"]["build_flops"],
            "surrogate_flops_per_token": m["flops"]["per_token"],
            "covers": {
                "data_tokenizer": m["data"]["tokenizer"]["spec"],
                "data_tokenizer_hash": m["data"]["tokenizer"]["hash"],
                "train_tokens": m["data"]["tokens"],
                "shards_sha256": m["data"]["shards_sha256"],
                "surrogate": m["surrogate"]["spec"],
                "surrogate_weights_sha256": m["surrogate"]["weights_sha256"],
                "surrogate_tokenizer_hash": m["surrogate"]["tokenizer_hash"],
                "sigma_size": m["vocab_map"]["size"],
                "sigma_sha256": m["vocab_map"]["sigma_sha256"],
            },
        }
