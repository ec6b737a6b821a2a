"""Offline real tokenizers: ids against tiktoken, special-token layout, hashes, errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from lsap.data.tokenizer import (
    CL100K_PATTERN,
    DOLMA2_SPECIALS,
    OFFLINE_TOKENIZERS,
    TokenizerError,
    _cl100k_ranks,
    load_tokenizer,
    tokenizer_hash,
    vocab_size,
)

# Covers digit runs, contractions, unicode letters, CJK, whitespace runs and newlines:
# the places where a wrong split pattern shows.
TEXT = (
    "Hello world 12345 and 1234567!\nIt's  don'T we'LL\t\tgo   \n\n  naïve café 東京 2024-01-02 "
    "x=3.14159;  <tag>   \r\n end  "
)


@pytest.fixture(scope="module")
def tiktoken_dolma2():
    """tiktoken's own Encoding from the same rank file, with tiktoken's original pattern."""
    tiktoken = pytest.importorskip("tiktoken")
    pat = CL100K_PATTERN.replace(r"\p{N}{1,3}", r"\p{N}{1,3}+")  # tiktoken's exact pat_str
    return tiktoken.Encoding(
        "dolma2-ref",
        pat_str=pat,
        mergeable_ranks=_cl100k_ranks(),
        special_tokens={c: i for i, (c, _) in DOLMA2_SPECIALS.items()},
    )


@pytest.mark.real
def test_dolma2_matches_tiktoken(tiktoken_dolma2):
    tok = load_tokenizer("dolma2")
    ids = tok.encode(TEXT, add_special_tokens=False)
    assert ids == tiktoken_dolma2.encode(TEXT)
    assert tok.decode(ids) == TEXT
    # The digit fix: three-digit groups, not one pre-token per digit run.
    pieces = [tok.decode([i]) for i in tok.encode("1234567", add_special_tokens=False)]
    assert pieces == ["123", "456", "7"]


@pytest.mark.real
def test_dolma2_specials_and_size():
    tok = load_tokenizer("dolma2")
    assert len(tok) == 100278 == vocab_size(tok)
    assert (tok.eos_token, tok.eos_token_id) == ("<|endoftext|>", 100257)
    assert (tok.pad_token, tok.pad_token_id) == ("<|pad|>", 100277)
    assert tok.bos_token_id == 100257  # OLMo2: bos = eos
    for i, (content, _) in DOLMA2_SPECIALS.items():
        assert tok.convert_tokens_to_ids(content) == i
        assert tok.encode(content, add_special_tokens=False) == [i]
    # Specials are matched inside text and not split.
    assert tok.encode("a<|endoftext|>b", add_special_tokens=False)[1] == 100257
    # Encoding does not add anything by itself.
    assert tok.encode("Hello", add_special_tokens=False) == [9906]


@pytest.mark.real
def test_cl100k_specials():
    tok = load_tokenizer("cl100k")
    assert tok.eos_token_id == 100257
    assert tok.convert_tokens_to_ids("<|endofprompt|>") == 100276
    assert tok.convert_tokens_to_ids("<|fim_suffix|>") == 100260
    assert "<|pad|>" not in tok.get_vocab()
    assert vocab_size(tok) == 100277  # ids have holes at 100256, 100261-100275
    assert tok.encode(TEXT, add_special_tokens=False) == load_tokenizer("dolma2").encode(
        TEXT, add_special_tokens=False
    )


@pytest.mark.real
def test_qwen3():
    tok = load_tokenizer("qwen3")
    assert len(tok) == 151669
    assert tok.eos_token == "<|im_end|>" and tok.eos_token_id == 151645
    assert tok.pad_token == "<|endoftext|>" and tok.pad_token_id == 151643
    assert tok.bos_token is None
    ids = tok.encode(TEXT, add_special_tokens=False)
    assert tok.decode(ids) == TEXT
    # Qwen splits digits one by one.
    assert len(tok.encode("1234567", add_special_tokens=False)) == 7


@pytest.mark.real
def test_smollm2(tmp_path, monkeypatch):
    tok = load_tokenizer("smollm2")
    assert len(tok) == 49152
    assert tok.eos_token == "<|im_end|>"
    text = "Hello world, it's 2024."
    assert tok.decode(tok.encode(text, add_special_tokens=False)) == text


@pytest.mark.real
def test_hash_stable_and_distinct():
    d = load_tokenizer("dolma2")
    assert tokenizer_hash(d) == tokenizer_hash(d)
    # A second, independent build of the same tokenizer hashes the same.
    from lsap.data.tokenizer import _dolma2

    fresh = _dolma2()
    assert tokenizer_hash(fresh) == tokenizer_hash(d)
    # Padding settings are runtime state, not content.
    fresh.backend_tokenizer.enable_padding(pad_id=100277, pad_token="<|pad|>")
    assert tokenizer_hash(fresh) == tokenizer_hash(d)
    hashes = {tokenizer_hash(load_tokenizer(n)) for n in ("dolma2", "cl100k", "qwen3")}
    assert len(hashes) == 3


def test_saved_dir_roundtrip_hash(tmp_path):
    tok = _tiny_tokenizer()
    tok.save_pretrained(tmp_path / "tok")
    again = load_tokenizer(str(tmp_path / "tok"))
    assert tokenizer_hash(again) == tokenizer_hash(tok)
    assert again.eos_token == "<|endoftext|>"


def test_bad_specs():
    with pytest.raises(TokenizerError, match="dolma2"):
        load_tokenizer("no-such-tokenizer")
    with pytest.raises(ValueError, match="no such file"):
        load_tokenizer("./does/not/exist")
    with pytest.raises(ValueError, match="empty"):
        load_tokenizer("")
    assert set(OFFLINE_TOKENIZERS) >= {"dolma2", "cl100k", "qwen3", "smollm2"}


def test_hub_id_offline_error(monkeypatch):
    import huggingface_hub.constants as hc

    # Offline mode makes the hub fail at once instead of retrying for ~45 s.
    monkeypatch.setattr(hc, "HF_HUB_OFFLINE", True)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(TokenizerError, match="network"):
        load_tokenizer("lsap-test-owner/surely-not-cached-tokenizer")


def _tiny_tokenizer():
    """A 300-token byte-level BPE trained on a few lines (no files, no network)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    backend = Tokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=300,
        special_tokens=["<|endoftext|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    backend.train_from_iterator([TEXT, "the quick brown fox jumps over the lazy dog"] * 5, trainer)
    return PreTrainedTokenizerFast(tokenizer_object=backend, eos_token="<|endoftext|>")


def test_store_root_honours_lsap_cache_then_xdg(tmp_path, monkeypatch):
    from lsap.data import tokenizer
    from lsap.surrogate import load as surrogate

    monkeypatch.delenv("LSAP_CACHE", raising=False)
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert tokenizer.cache_root() == tmp_path / "home" / ".cache" / "lsap"
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert tokenizer.cache_root() == tmp_path / "xdg" / "lsap"
    monkeypatch.setenv("XDG_CACHE_HOME", "relative/dir")  # the XDG spec: ignore relative paths
    assert tokenizer.cache_root() == tmp_path / "home" / ".cache" / "lsap"
    monkeypatch.setenv("LSAP_CACHE", str(tmp_path / "mine"))
    assert tokenizer.cache_root() == tmp_path / "mine"
    # one rule: the surrogate cache and corpus archives use the same function
    assert surrogate.cache_root is tokenizer.cache_root
    assert surrogate._gguf_store_dir(Path(__file__)).parent == tmp_path / "mine" / "surrogates"
