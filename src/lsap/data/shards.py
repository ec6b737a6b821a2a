"""Text → token shards (numpy memmaps) and a rank-aware, resumable loader over them.

Layout of a prepared directory::

    DIR/manifest.json            what, how, and which shards are finished
    DIR/train/000000.bin ...     raw little-endian uint16 / uint32 token ids
    DIR/val/000000.bin ...

Documents are tokenized with ``add_special_tokens=False`` and each one is followed by
the tokenizer's EOS id, then packed back to back (as OLMo does: no padding, no
cross-document masking). A document goes to ``val`` when a hash of (seed, document
index) falls below ``val_fraction``, so the split is deterministic and independent of
shard size. Text that happens to spell a special token (e.g. "<|endoftext|>") is
encoded as plain text: only the pipeline places separators.

Sources and their readers live in `lsap.data.corpora`.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from lsap.utils.logging import get_logger

log = get_logger(__name__)

if TYPE_CHECKING:
    import torch

FORMAT = "lsap-token-shards"
FORMAT_VERSION = 1
SPLITS = ("train", "val")

from lsap.data.corpora import describe_source, iter_documents  # noqa: E402
from lsap.data.prepare_state import SOURCE_FILES, open_manifest  # noqa: E402
from lsap.utils.errors import DataError  # noqa: E402
from lsap.utils.io import atomic_write_json, sha256_file  # noqa: E402
from lsap.utils.lock import holds_lock  # noqa: E402


# --------------------------------------------------------------------------- writing
def is_val(doc_index: int, seed: int, val_fraction: float) -> bool:
    """Deterministic document split: sha256(seed, index) as a uniform number in [0, 1)."""
    if val_fraction <= 0:
        return False
    h = hashlib.sha256(f"{seed}:{doc_index}".encode()).digest()
    return int.from_bytes(h[:8], "little") / 2**64 < val_fraction


def in_part(doc_index: int, seed: int, part: tuple[float, float] | None) -> bool:
    """Whether a *training* document belongs to the partition [lo, hi) of the training pool.

    A second hash, independent of `is_val`'s, so that disjoint parts of one corpus can
    feed different models (the base's training text vs the surrogate's) while both
    keep the same held-out documents. None: every document.
    """
    if part is None:
        return True
    h = hashlib.sha256(f"part:{seed}:{doc_index}".encode()).digest()
    u = int.from_bytes(h[:8], "little") / 2**64
    return part[0] <= u < part[1]


def _dtype_for(vocab: int) -> str:
    return "uint16" if vocab <= 65536 else "uint32"  # all ids < vocab fit


class _SplitWriter:
    """Accumulates one split's token stream and cuts it into fixed-size shards.

    `state` is what the manifest keeps after each finished shard: the document whose
    tail is still buffered (`doc`, from token `offset`) plus running counts through
    that document, so a killed run can rebuild the buffer exactly.
    """

    def __init__(
        self, out: Path, split: str, dtype: str, shard_tokens: int, vocab: int, entry: dict
    ):
        self.dir = out / split
        self.split, self.dtype, self.shard_tokens, self.vocab = split, dtype, shard_tokens, vocab
        self.entry = entry  # manifest["splits"][split], mutated in place
        self.buf: list[np.ndarray] = []
        self.buffered = 0
        self.on_shard: Callable[[], None] = lambda: None
        # Running counts; `entry["state"]` (what the manifest holds) only advances when
        # a shard is recorded, so a manifest saved for the *other* split never claims
        # documents whose tokens sit in this split's unsaved buffer.
        st = entry["state"]
        self.live = {k: st[k] for k in ("tokens", "bytes", "documents")}

    def append(self, doc: int, ids: np.ndarray, start: int, n_bytes: int, counted: bool) -> None:
        """Add document `doc`'s ids[start:] (ids include the trailing EOS)."""
        if counted:
            self.live["tokens"] += len(ids)
            self.live["bytes"] += n_bytes
            self.live["documents"] += 1
        self.buf.append(ids[start:])
        self.buffered += len(ids) - start
        while self.buffered >= self.shard_tokens:
            flat = np.concatenate(self.buf)
            self._write(flat[: self.shard_tokens])
            rest = flat[self.shard_tokens :]
            self.buf, self.buffered = [rest], len(rest)
            # The remainder is always a suffix of this document (the buffer held fewer
            # than shard_tokens before it), so (doc, offset) pins it.
            self.entry["state"] = {"doc": doc, "offset": len(ids) - len(rest), **self.live}
            self.on_shard()

    def _write(self, tokens: np.ndarray) -> None:
        max_id = int(tokens.max()) if len(tokens) else -1
        if max_id >= self.vocab:
            raise DataError(
                f"token id {max_id} >= vocabulary size {self.vocab}: tokenizer/vocab mismatch"
            )
        shards = self.entry["shards"]
        name = f"{len(shards):06d}.bin"
        self.dir.mkdir(parents=True, exist_ok=True)
        tmp, final = self.dir / f".tmp-{name}", self.dir / name
        arr = tokens.astype(self.dtype)
        try:
            with open(tmp, "wb") as f:
                f.write(arr.astype(arr.dtype.newbyteorder("<"), copy=False).tobytes())
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, final)  # a shard on disk under its final name is complete
        except BaseException as e:  # disk full: no partial file left to hold the space
            tmp.unlink(missing_ok=True)
            if isinstance(e, OSError) and not e.filename:
                raise OSError(e.errno, e.strerror, str(final)) from e  # name the file
            raise
        shards.append(
            {
                "path": f"{self.split}/{name}",
                "tokens": int(len(arr)),
                "sha256": sha256_file(final),
                "max_id": max_id,
            }
        )

    def finish(self) -> None:
        if self.buffered:
            self._write(np.concatenate(self.buf))
            self.buf, self.buffered = [], 0
        self.entry["state"].update(self.live)


def _finalize(manifest: dict) -> None:
    total = 0
    for split, e in manifest["splits"].items():
        st = e.pop("state")
        tokens = sum(s["tokens"] for s in e["shards"])
        assert tokens == st["tokens"], (split, tokens, st["tokens"])
        e.update(
            tokens=tokens,
            documents=st["documents"],
            bytes=st["bytes"],
            bytes_per_token=(st["bytes"] / tokens) if tokens else None,
            max_id=max((s["max_id"] for s in e["shards"]), default=-1),
        )
        total += tokens
    manifest["total_tokens"] = total
    manifest["complete"] = True


_WORKER_ENCODER = None


def _worker_init(backend_json: str | None) -> None:
    global _WORKER_ENCODER
    os.environ["TOKENIZERS_PARALLELISM"] = "false"  # one thread per worker process
    if backend_json is not None:  # spawn: rebuild the encoder (fork: inherited from the parent)
        from tokenizers import Tokenizer

        _WORKER_ENCODER = Tokenizer.from_str(backend_json)
        _WORKER_ENCODER.encode_special_tokens = True


def _worker_encode(texts: list[str]) -> list[list[int]]:
    return [e.ids for e in _WORKER_ENCODER.encode_batch(texts, add_special_tokens=False)]


def _encode_in_workers(blocks, consume, stopped, backend, workers: int) -> None:
    """Encode `blocks` (lists of (index, text)) in `workers` processes; `consume(block,
    ids)` in block order, with at most 2·workers blocks in flight (bounded memory)."""
    import collections
    import multiprocessing as mp

    global _WORKER_ENCODER
    fork = sys.platform.startswith("linux")
    ctx = mp.get_context("fork" if fork else "spawn")
    _WORKER_ENCODER = backend  # parsing a 100k-entry tokenizer again costs seconds per worker
    with ctx.Pool(
        workers, initializer=_worker_init, initargs=(None if fork else backend.to_str(),)
    ) as pool:
        pending: collections.deque = collections.deque()
        for block in blocks:
            pending.append((block, pool.apply_async(_worker_encode, ([t for _, t in block],))))
            if len(pending) >= 2 * workers:
                b, res = pending.popleft()
                consume(b, res.get())
                if stopped():
                    return
        while pending:
            b, res = pending.popleft()
            consume(b, res.get())
            if stopped():
                return


@holds_lock("out", "lsap prepare")
def prepare(
    tokenizer_spec: str,
    source: str,
    out: str | os.PathLike,
    *,
    val_fraction: float = 0.01,
    max_tokens: int | None = None,
    shard_tokens: int = 1 << 24,
    seed: int = 0,
    train_part: tuple[float, float] | None = None,
    batch_docs: int = 64,
    workers: int = 1,
    progress: bool = True,
    tokenizer=None,
    on_shard: Callable[[], None] | None = None,
) -> dict:
    """Tokenize `source` into train/val shards under `out`; returns the manifest dict.

    Resumable and idempotent: finished shards are recorded in the manifest after each
    write; a re-run with the same arguments continues (or, when complete, does nothing)
    and ends byte-identical to an uninterrupted run. `max_tokens` stops after the
    document that reaches it (train + val). `tokenizer` skips loading `tokenizer_spec`
    (tests). `on_shard()` is called after each recorded shard (progress, tests).
    `train_part` = (lo, hi) keeps only the training documents in that partition of the
    training pool (`in_part`); the val split is unaffected, so two data directories
    prepared with disjoint parts share their held-out documents and nothing else.

    `workers` > 1 tokenizes in that many processes: the documents are cut into ordered
    blocks of `batch_docs`, each block is encoded by a worker (one tokenizer thread
    each), and the results are written in block order by this process, so the output is
    byte-identical to one worker (and `workers` is not part of the arguments a resume
    compares). Reading the source and writing shards stay in this process.
    """
    from lsap.data.tokenizer import (
        document_separator,
        load_tokenizer,
        plain_encoder,
        tokenizer_hash,
        vocab_size,
    )

    if not 0 <= val_fraction < 1:
        raise DataError(f"val_fraction must be in [0, 1), got {val_fraction}")
    if shard_tokens < 1:
        raise DataError("shard_tokens must be >= 1")
    if workers < 1:
        raise DataError(f"workers must be >= 1, got {workers}")
    if train_part is not None:
        train_part = (float(train_part[0]), float(train_part[1]))
        if not 0 <= train_part[0] < train_part[1] <= 1:
            raise DataError(f"train_part must be (lo, hi) with 0 <= lo < hi <= 1, got {train_part}")
    out = Path(out)
    description = describe_source(source)
    tok = tokenizer if tokenizer is not None else load_tokenizer(tokenizer_spec)
    if tok.eos_token_id is None:
        raise DataError(f"tokenizer {tokenizer_spec!r} has no EOS token to separate documents")
    tok_hash, vocab, eos = tokenizer_hash(tok), vocab_size(tok), document_separator(tok)
    args = {
        "tokenizer": tokenizer_spec,
        "tokenizer_hash": tok_hash,
        "source": source,
        "val_fraction": val_fraction,
        "max_tokens": max_tokens,
        "shard_tokens": shard_tokens,
        "seed": seed,
        "format_version": FORMAT_VERSION,
    }
    if train_part is not None:  # absent by default: older manifests keep their hash
        args["train_part"] = list(train_part)
    if eos != tok.eos_token_id:  # the separator rule picked a non-eos token (Qwen3: <|endoftext|>)
        args["separator"] = eos
    args_hash = hashlib.sha256(json.dumps(args, sort_keys=True).encode()).hexdigest()

    mpath = out / "manifest.json"
    head = {
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
        "dtype": _dtype_for(vocab),
        "source": {"spec": source, "description": description},
    }
    manifest, complete = open_manifest(out, head, args, args_hash, SPLITS, progress, log)
    if complete:
        return manifest

    # A shard file the manifest does not list (a run killed between the rename and
    # the manifest update) is simply rewritten, identically, under the same name.
    writers = {
        s: _SplitWriter(out, s, manifest["dtype"], shard_tokens, vocab, manifest["splits"][s])
        for s in SPLITS
    }

    def record_shard():
        atomic_write_json(mpath, manifest, fsync=False)
        if on_shard is not None:
            on_shard()

    for w in writers.values():
        w.on_shard = record_shard
    resume = {
        s: (manifest["splits"][s]["state"]["doc"], manifest["splits"][s]["state"]["offset"])
        for s in SPLITS
    }
    # Before this document the first run is known to have gone on, so max_tokens is
    # only checked from here on (the counts restored below already run ahead).
    replay_end = max(d for d, _ in resume.values())
    total = sum(manifest["splits"][s]["state"]["tokens"] for s in SPLITS)

    # Specials spelled out inside documents are plain text; only we place separators.
    backend = plain_encoder(tok)

    from tqdm.auto import tqdm

    bar = tqdm(
        total=max_tokens,
        unit="tok",
        unit_scale=True,
        desc=f"prepare {source}",
        disable=not progress,
        initial=total,
        smoothing=0.1,
    )
    t0, done_tokens = time.perf_counter(), 0
    stop = False

    def consume(batch, encs):
        nonlocal total, stop, done_tokens
        for (i, text), enc in zip(batch, encs):
            split = "val" if is_val(i, seed, val_fraction) else "train"
            rdoc, roff = resume[split]
            if i < rdoc:  # already inside finished shards
                continue
            ids = np.asarray(enc + [eos], dtype=np.int64)
            counted = i > rdoc  # doc == rdoc was counted when its shard was written
            writers[split].append(
                i, ids, roff if i == rdoc else 0, len(text.encode("utf-8")), counted
            )
            if counted:
                total += len(ids)
                done_tokens += len(ids)
                bar.update(len(ids))
            if max_tokens is not None and i >= replay_end and total >= max_tokens:
                stop = True
                return

    start_doc = min(d for d, _ in resume.values())

    def blocks():
        batch = []
        for i, text in enumerate(iter_documents(source)):
            if i < start_doc:
                continue
            # Documents that are wholly in finished shards of their split are skipped
            # without tokenizing; the rest are tokenized in blocks of batch_docs.
            split = "val" if is_val(i, seed, val_fraction) else "train"
            if i < resume[split][0] or (split == "train" and not in_part(i, seed, train_part)):
                continue
            batch.append((i, text))
            if len(batch) >= batch_docs:
                yield batch
                batch = []
        if batch:
            yield batch

    if workers == 1:  # in this process (tokenizers' own threads)
        for batch in blocks():
            consume(
                batch,
                [
                    e.ids
                    for e in backend.encode_batch([t for _, t in batch], add_special_tokens=False)
                ],
            )
            if stop:
                break
    else:
        _encode_in_workers(blocks(), consume, lambda: stop, backend, workers)
    bar.close()
    if writers["train"].live["tokens"] == 0:  # no train tokens is an error, not a warning
        docs = writers["val"].live["documents"]
        mpath.unlink()
        (out / SOURCE_FILES).unlink(missing_ok=True)
        for split in SPLITS:
            for f in sorted((out / split).glob("*")) if (out / split).is_dir() else []:
                f.unlink()
            if (out / split).is_dir():
                (out / split).rmdir()
        raise DataError(
            f"source {source!r} gave no training tokens ({docs} document(s) went to val); "
            + (
                "check --train-part and --val-fraction"
                if train_part
                else "is it empty? (and check --val-fraction)"
            )
        )
    for w in writers.values():
        w.finish()
    _finalize(manifest)
    atomic_write_json(mpath, manifest, fsync=False)
    (out / SOURCE_FILES).unlink(missing_ok=True)  # only a resume needs it
    dt = time.perf_counter() - t0
    if progress:
        s = manifest["splits"]
        log.info(
            f"{out}: {manifest['total_tokens']:,} tokens (train {s['train']['tokens']:,} in "
            f"{s['train']['documents']} docs, val {s['val']['tokens']:,} in {s['val']['documents']} docs); "
            f"{done_tokens:,} new tokens in {dt:.1f}s ({done_tokens / max(dt, 1e-9):,.0f} tok/s)"
        )
        if val_fraction > 0 and s["val"]["documents"] == 0:
            log.warning("the val split is empty; raise --val-fraction")
    return manifest


# --------------------------------------------------------------------------- reading
class TokenShards:
    """One split of a prepared directory as a single token stream of length N.

    `tokens(start, n) -> np.ndarray[n]` (int64) reads across shard boundaries through
    memmaps; nothing is loaded eagerly.
    """

    def __init__(self, directory: str | os.PathLike, split: str = "train", *, verify: bool = False):
        self.dir = Path(directory)
        mpath = self.dir / "manifest.json"
        if not mpath.is_file():
            raise DataError(
                f"{self.dir}: no manifest.json (run `lsap prepare --out {self.dir}` first)"
            )
        self.manifest = json.loads(mpath.read_text())
        if self.manifest.get("format") != FORMAT:
            raise DataError(f"{mpath} is not an lsap token-shard manifest")
        if not self.manifest.get("complete"):
            raise DataError(
                f"{self.dir}: preparation did not finish; re-run the same `lsap prepare` to resume"
            )
        if split not in self.manifest["splits"]:
            raise DataError(
                f"{self.dir}: no split {split!r} (have {list(self.manifest['splits'])})"
            )
        self.split = split
        self.info = self.manifest["splits"][split]
        self.dtype = np.dtype(self.manifest["dtype"]).newbyteorder("<")
        self.eos_id = int(self.manifest["eos_id"])
        self.vocab_size = int(self.manifest["tokenizer"]["vocab_size"])
        self.bytes_per_token = self.info.get("bytes_per_token")
        self._maps = []
        for s in self.info["shards"]:
            p = self.dir / s["path"]
            if not p.is_file() or p.stat().st_size != s["tokens"] * self.dtype.itemsize:
                raise DataError(f"{p}: missing or wrong size; the shard directory is damaged")
            if verify and sha256_file(p) != s["sha256"]:
                raise DataError(f"{p}: sha256 mismatch; the shard directory is damaged")
            self._maps.append(np.memmap(p, dtype=self.dtype, mode="r"))
        self._starts = np.cumsum([0] + [len(m) for m in self._maps])
        self._verified = [verify] * len(self._maps)
        self.max_vocab: int | None = (
            None  # set by check_vocab: ids at or above it are refused at read time
        )

    def _verify(self, k: int) -> None:
        """First read of shard k: its sha256 against the manifest, its ids against the model's vocabulary."""
        s, p = self.info["shards"][k], self.dir / self.info["shards"][k]["path"]
        if s.get("sha256") and sha256_file(p) != s["sha256"]:
            raise DataError(
                f"{p}: sha256 mismatch (the file changed after `lsap prepare`); re-run prepare "
                "into a new directory"
            )
        limit = self.max_vocab if self.max_vocab is not None else self.vocab_size
        top = int(self._maps[k].max()) if len(self._maps[k]) else -1
        if top >= limit:
            raise DataError(
                f"{p}: token id {top} >= vocabulary size {limit}; the shard is corrupt or was made "
                "with another tokenizer"
            )
        self._verified[k] = True

    def __len__(self) -> int:
        return int(self._starts[-1])

    def tokens(self, start: int, n: int) -> np.ndarray:
        """ids[start : start + n] of the concatenated split, as int64."""
        if start < 0 or start + n > len(self):
            raise IndexError(f"tokens [{start}, {start + n}) outside [0, {len(self)})")
        out = np.empty(n, dtype=np.int64)
        k = int(np.searchsorted(self._starts, start, side="right")) - 1
        filled = 0
        while filled < n:
            if not self._verified[k]:
                self._verify(k)
            lo = start + filled - int(self._starts[k])
            take = min(n - filled, len(self._maps[k]) - lo)
            out[filled : filled + take] = self._maps[k][lo : lo + take]
            filled += take
            k += 1
        return out

    def n_windows(self, seq_len: int) -> int:
        """W = (N - 1) // T: how many windows of `window(j, seq_len)` the split holds."""
        return (len(self) - 1) // int(seq_len)

    def window(self, j: int, seq_len: int) -> np.ndarray:
        """Window j: tokens [j·T, j·T + T + 1) (int64 [T + 1]; inputs = [:-1], labels = [1:]).
        The one window rule of the loader, the held-out batches and the target store."""
        return self.tokens(int(j) * int(seq_len), int(seq_len) + 1)

    def check_tokenizer(self, tok) -> None:
        """Raise DataError unless `tok` is the tokenizer these shards were made with."""
        from lsap.data.tokenizer import tokenizer_hash

        self.check_tokenizer_hash(
            tokenizer_hash(tok), getattr(tok, "name_or_path", None) or type(tok).__name__
        )

    def check_tokenizer_hash(self, expected_hash: str, name: str = "?") -> None:
        t = self.manifest["tokenizer"]
        if t["hash"] != expected_hash:
            raise DataError(
                f"shards in {self.dir} were made with tokenizer {t['spec']!r} (hash {t['hash'][:12]}), "
                f"the model uses {name!r} (hash {expected_hash[:12]}); re-run `lsap prepare` with that tokenizer"
            )

    def check_vocab(self, model_vocab_size: int) -> None:
        """Raise DataError if a token id in this split would index past the embedding."""
        if int(self.info["max_id"]) >= model_vocab_size:
            raise DataError(
                f"{self.dir}/{self.split}: token id {self.info['max_id']} >= model vocab {model_vocab_size}"
            )
        self.max_vocab = int(model_vocab_size)

    def iter_eval_batches(self, seq_len: int, batch_size: int, max_batches: int | None = None):
        """Deterministic held-out batches: windows 0, 1, 2, ... (`window`) in order.

        Yields `(input_ids[B, T], labels[B, T])` LongTensors; the last incomplete batch
        is dropped so every batch has the same shape.
        """
        import torch

        n_batches = self.n_windows(seq_len) // batch_size
        if max_batches is not None:
            n_batches = min(n_batches, max_batches)
        for b in range(n_batches):
            t = torch.from_numpy(
                np.stack(
                    [self.window(j, seq_len) for j in range(b * batch_size, (b + 1) * batch_size)]
                )
            )
            yield t[:, :-1], t[:, 1:]


@dataclasses.dataclass
class Batch:
    """One micro-batch of packed windows.

    input_ids, labels: int64 [B, T] (labels = inputs shifted by one);
    window_ids: int64 [B] (CPU), the loader window of each row (window j = tokens
    [jT, jT + T + 1)): what a target store is keyed by (`TargetStore.lookup`).
    Unpacks as `(input_ids, labels)` for code written against the old tuple.
    """

    input_ids: torch.Tensor
    labels: torch.Tensor
    window_ids: torch.Tensor

    def __iter__(self):
        return iter((self.input_ids, self.labels))

    def to(self, device) -> Batch:
        """input_ids and labels to `device`; window_ids stay on the CPU (host-side indices)."""
        return Batch(self.input_ids.to(device), self.labels.to(device), self.window_ids)


class SequenceLoader:
    """Packed training batches: a `Batch` (input_ids [B, T], labels [B, T], window_ids [B]).

    The split is cut into W = (N - 1) // T windows of T + 1 tokens (window j starts at
    j·T; labels are inputs shifted by one). Each epoch visits the windows in the order
    of a permutation seeded by (seed, epoch); a global batch is world_size·B
    consecutive entries of it, and rank r takes slots r, r + world_size, ... so the
    ranks' batches together are exactly the 1-rank batch of size world_size·B.
    Incomplete global batches at the end of an epoch are dropped. Iteration never
    ends (epochs roll over); `state_dict()` after receiving batch k resumes at k + 1.
    """

    def __init__(
        self,
        shards: TokenShards,
        seq_len: int,
        batch_size: int,
        rank: int = 0,
        world_size: int = 1,
        seed: int = 0,
    ):
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} not in [0, {world_size})")
        self.shards, self.seq_len, self.batch_size = shards, seq_len, batch_size
        self.rank, self.world_size, self.seed = rank, world_size, seed
        self.n_windows = shards.n_windows(seq_len)
        self.global_batch = batch_size * world_size
        self.steps_per_epoch = self.n_windows // self.global_batch
        if self.steps_per_epoch <= 0:
            raise DataError(
                f"{shards.dir}/{shards.split} has {len(shards):,} tokens: fewer than one global batch of "
                f"{self.global_batch} x {seq_len + 1} tokens"
            )
        self.epoch, self.step = 0, 0
        self._perm_epoch, self._perm = -1, None

    def _permutation(self) -> np.ndarray:
        if self._perm_epoch != self.epoch:
            self._perm = np.random.default_rng([self.seed, self.epoch]).permutation(self.n_windows)
            self._perm_epoch = self.epoch
        return self._perm

    def next_batch(self) -> Batch:
        import torch

        if self.step >= self.steps_per_epoch:
            self.epoch, self.step = self.epoch + 1, 0
        g = self._permutation()[self.step * self.global_batch : (self.step + 1) * self.global_batch]
        mine = np.asarray(g[self.rank :: self.world_size], dtype=np.int64)
        rows = np.stack([self.shards.window(w, self.seq_len) for w in mine])
        self.step += 1
        t = torch.from_numpy(rows)
        return Batch(t[:, :-1], t[:, 1:], torch.from_numpy(mine))

    def __iter__(self):
        while True:
            yield self.next_batch()

    def state_dict(self) -> dict:
        return {
            "epoch": self.epoch,
            "step": self.step,
            "seed": self.seed,
            "seq_len": self.seq_len,
            "global_batch": self.global_batch,
            "n_windows": self.n_windows,
        }

    def load_state_dict(self, state: dict) -> None:
        for k in ("seed", "seq_len", "global_batch", "n_windows"):
            if state[k] != getattr(self, k):
                raise DataError(f"loader state has {k}={state[k]}, this loader {getattr(self, k)}")
        self.epoch, self.step = int(state["epoch"]), int(state["step"])
