"""`lsap analyze`: the Table-1 statistic vs naive references, sampling, outputs, errors."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import torch

from lsap.cli.main import main
from lsap.experiments.analyze import (
    AnalyzeError,
    DataTooSmall,
    count_above,
    count_aux,
    document_separator,
    plain_encoder,
    read_documents,
    sample_windows,
)
from tests.helpers import random_vmap


# --------------------------------------------------------------------------- references
def naive_count_above(logits, mask, alphas):
    """Loop over positions; fp32 softmax; count p > α."""
    B, T, V = logits.shape
    out = {}
    for a in alphas:
        s = c = 0
        for b in range(B):
            for t in range(T):
                if mask is not None and not mask[b, t]:
                    continue
                p = torch.softmax(logits[b, t].float(), dim=-1)
                s += sum(1 for v in range(V) if p[v].item() > a)
                c += 1
        out[a] = (s, c)
    return out


def naive_count_aux(logits, labels, vmap, alphas, k, valid):
    """METHOD §3 one position at a time: exclude gold and non-Σ∩, top-k, p > α."""
    B, T, V = logits.shape
    out = {}
    for a in alphas:
        s = c = 0
        for b in range(B):
            for t in range(T):
                if labels[b, t] < 0:
                    continue
                c += 1
                if not valid[b, t]:
                    continue
                p = torch.softmax(logits[b, t].double(), dim=-1)
                gold = int(vmap.base_to_surrogate[labels[b, t]])
                cand = [
                    (p[v].item(), v)
                    for v in range(vmap.surrogate_vocab_size)
                    if vmap.surrogate_to_base[v] >= 0 and v != gold
                ]
                cand.sort(reverse=True)
                s += sum(1 for pv, _ in cand[:k] if pv > a)
        out[a] = (s, c)
    return out


@pytest.mark.parametrize("shape", [(3, 47, 31), (1, 1, 5), (2, 5, 123)])
def test_count_above_matches_naive(shape):
    g = torch.Generator().manual_seed(sum(shape))
    # Peaked logits so that several entries cross each α.
    logits = torch.randn(shape, generator=g) * 3.0
    mask = torch.rand(shape[:2], generator=g) > 0.3
    alphas = [0.01, 0.05, 0.2, 0.9]
    got = count_above(logits, mask, alphas, chunk_size=7)
    assert got == naive_count_above(logits, mask, alphas)
    # no mask = every position; empty mask = nothing counted
    assert count_above(logits, None, alphas) == naive_count_above(logits, None, alphas)
    empty = count_above(logits, torch.zeros(shape[:2], dtype=torch.bool), alphas)
    assert all(v == (0, 0) for v in empty.values())


def test_count_above_bf16_is_fp32_of_same_values():
    g = torch.Generator().manual_seed(0)
    logits = (torch.randn(2, 9, 64, generator=g) * 4).bfloat16()
    alphas = [0.01, 0.05, 0.2]
    assert count_above(logits, None, alphas) == count_above(logits.float(), None, alphas)


def test_count_above_rejects_bad_alpha_and_shapes():
    x = torch.zeros(1, 2, 3)
    for a in (0.0, 1.0, -0.1, 1.5, float("nan")):
        with pytest.raises(AnalyzeError, match=r"\(0, 1\)"):
            count_above(x, None, [a])
    with pytest.raises(ValueError, match=r"\[B, T, V\]"):
        count_above(torch.zeros(2, 3), None, [0.1])
    with pytest.raises(ValueError, match="mask"):
        count_above(x, torch.ones(2, 2, dtype=torch.bool), [0.1])


@pytest.mark.parametrize("k", [1, 4])
def test_count_aux_matches_naive(k):
    g = torch.Generator().manual_seed(k)
    vmap = random_vmap(40, 50, 30, seed=k, pad_b=3, pad_s=5)
    B, T, V = 3, 11, 55
    logits = torch.randn(B, T, V, generator=g) * 3
    labels = torch.randint(0, 40, (B, T), generator=g)
    labels[0, :3] = -100
    valid = torch.rand(B, T, generator=g) > 0.2
    alphas = [0.01, 0.05, 0.2]
    got = count_aux(logits, labels, vmap, alphas, k=k, valid=valid)
    assert got == naive_count_aux(logits, labels, vmap, alphas, k, valid)
    # aux targets never exceed the plain count at the same α (gold and non-Σ∩ removed)
    plain = count_above(logits, labels >= 0, alphas)
    for a in alphas:
        assert got[a][0] <= plain[a][0] and got[a][1] == plain[a][1]


# --------------------------------------------------------------------------- tiny model
def _train_tokenizer(texts, vocab_size=400):
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
    backend.train_from_iterator(texts, trainer)
    return PreTrainedTokenizerFast(tokenizer_object=backend, eos_token="<|endoftext|>")


@pytest.fixture(scope="module")
def tiny_model_dir(tmp_path_factory):
    """A 2-layer LlamaForCausalLM (padded vocab rows) + its 400-token BPE, saved to a dir."""
    from transformers import LlamaConfig, LlamaForCausalLM

    d = tmp_path_factory.mktemp("tiny-llama")
    tok = _train_tokenizer(read_documents("pydoc-topics")[:20])
    torch.manual_seed(0)
    cfg = LlamaConfig(
        vocab_size=len(tok) + 8,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=256,
        eos_token_id=tok.eos_token_id,
        bos_token_id=tok.eos_token_id,
    )
    model = LlamaForCausalLM(cfg)
    with torch.no_grad():  # sharper distributions than the default init, so counts vary by α
        model.lm_head.weight.mul_(60)
    model.save_pretrained(d)
    tok.save_pretrained(d)
    return d


@pytest.fixture(scope="module")
def tiny_tok(tiny_model_dir):
    from lsap.data.tokenizer import load_tokenizer

    return load_tokenizer(str(tiny_model_dir))


@pytest.fixture()
def jsonl_data(tmp_path):
    p = tmp_path / "small.jsonl"
    with open(p, "w") as f:
        for i in range(30):
            f.write(
                json.dumps(
                    {
                        "text": f"Document {i}: the quick brown fox jumps over the lazy dog. "
                        * (1 + i % 4)
                    }
                )
                + "\n"
            )
    return p


# --------------------------------------------------------------------------- sampling
def test_sampling_is_reproducible_and_documented(tiny_tok):
    docs = read_documents("pydoc-topics")
    a = sample_windows(docs, tiny_tok, n=5, seq_len=40, seed=21)
    b = sample_windows(docs, tiny_tok, n=5, seq_len=40, seed=21)
    c = sample_windows(docs, tiny_tok, n=5, seq_len=40, seed=42)
    assert a.shape == (5, 40) and a.dtype == torch.long
    assert torch.equal(a, b) and not torch.equal(a, c)
    # The definition: documents shuffled by default_rng(seed), encoded, each + separator,
    # packed, cut into consecutive windows.
    order = np.random.default_rng(21).permutation(len(docs))
    enc, sep = plain_encoder(tiny_tok), document_separator(tiny_tok)
    stream = []
    for i in order:
        stream += enc.encode(docs[int(i)], add_special_tokens=False).ids + [sep]
        if len(stream) >= 200:
            break
    assert a.reshape(-1).tolist() == stream[:200]


def test_special_token_spelling_is_plain_text(tiny_tok):
    docs = ["a <|endoftext|> b " * 30]
    x = sample_windows(docs, tiny_tok, n=1, seq_len=20, seed=0)
    assert (x == tiny_tok.eos_token_id).sum() == 0


def test_too_small_dataset_names_the_fix(tiny_tok):
    with pytest.raises(DataTooSmall, match=r"lower --n \(≤ \d+\)"):
        sample_windows(["tiny document"] * 3, tiny_tok, n=10, seq_len=64, seed=0, name="x")


# --------------------------------------------------------------------------- end to end
def _run_cli(argv, capsys):
    rc = main(argv)
    out = capsys.readouterr()
    return rc, out.out, out.err


def test_cli_writes_consistent_table(tiny_model_dir, tiny_tok, jsonl_data, tmp_path, capsys):
    from lsap.surrogate.load import load_surrogate

    out = tmp_path / "t1"
    argv = [
        "analyze",
        "--model",
        str(tiny_model_dir),
        "--data",
        "pydoc-topics",
        str(jsonl_data),
        "--alpha",
        "0.01",
        "0.05",
        "0.2",
        "--n",
        "5",
        "--seeds",
        "1",
        "2",
        "--seq-len",
        "24",
        "--batch-size",
        "2",
        "--base",
        str(tiny_model_dir),
        "--k",
        "3",
        "--out",
        str(out),
        "--no-progress",
    ]
    rc, stdout, _ = _run_cli(argv, capsys)
    assert rc == 0
    res = json.loads((out / "table1.json").read_text())
    ds = ["pydoc-topics", str(jsonl_data)]
    above = [r for r in res["rows"] if r["statistic"] == "above_alpha"]
    aux = [r for r in res["rows"] if r["statistic"] == "aux_targets"]
    assert [r["alpha"] for r in above] == [0.01, 0.05, 0.2] and len(aux) == 3

    # Per seed: positions = n * seq_len, mean = sum / positions; dataset mean = mean over seeds.
    for r in res["rows"]:
        for d in ds:
            e = r["datasets"][d]
            assert set(e["seeds"]) == {"1", "2"}
            for s in e["seeds"].values():
                assert s["positions"] == 5 * 24 and s["mean"] == pytest.approx(
                    s["sum"] / s["positions"]
                )
            assert e["mean"] == pytest.approx(np.mean([s["mean"] for s in e["seeds"].values()]))
            assert e["positions"] == 2 * 5 * 24
        assert r["avg"] == pytest.approx(np.mean([r["datasets"][d]["mean"] for d in ds]))
    # Fewer entries cross a higher α; aux targets ≤ k and ≤ the plain count.
    for d in ds:
        m = [r["datasets"][d]["mean"] for r in above]
        assert m[0] >= m[1] >= m[2] and m[0] > 0
        for ra, rp in zip(aux, above):
            assert ra["datasets"][d]["mean"] <= min(3, rp["datasets"][d]["mean"]) + 1e-12

    # Independent recomputation of one cell from the documented sampling.
    model, _ = load_surrogate(str(tiny_model_dir))
    x = sample_windows(read_documents("pydoc-topics"), tiny_tok, n=5, seq_len=24, seed=2)
    with torch.inference_mode():
        ref = count_above(model(input_ids=x).logits, None, [0.05])[0.05]
    cell = above[1]["datasets"]["pydoc-topics"]["seeds"]["2"]
    assert (cell["sum"], cell["positions"]) == ref

    # CSV, markdown and console carry the same numbers.
    with open(out / "table1.csv") as f:
        rows = list(csv.reader(f))
    assert rows[0] == ["model", "statistic", "alpha", *ds, "AVG"]
    for row, r in zip(rows[1:], res["rows"]):
        assert float(row[2]) == r["alpha"] and row[1] == r["statistic"]
        assert [float(v) for v in row[3:]] == [r["datasets"][d]["mean"] for d in ds] + [r["avg"]]
    md = (out / "table1.md").read_text()
    first = (
        f"| {tiny_model_dir} | 0.01 | "
        + " | ".join(
            f"{v:.2f}" for v in [above[0]["datasets"][d]["mean"] for d in ds] + [above[0]["avg"]]
        )
        + " |"
    )
    assert first in md and first in stdout
    assert (out / "table1.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


# --------------------------------------------------------------------------- bad input
@pytest.fixture()
def no_weights(monkeypatch):
    """Fail the test if a model's weights are loaded."""
    import lsap.surrogate.load

    def boom(*a, **k):
        raise AssertionError("weights were loaded before the input was validated")

    monkeypatch.setattr(lsap.surrogate.load, "load_surrogate", boom)


def _bad_gguf(path):
    import gguf

    w = gguf.GGUFWriter(str(path), arch="llama")
    w.add_block_count(1)
    w.add_tensor("token_embd.weight", np.zeros((4, 8), dtype=np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


@pytest.mark.parametrize(
    "case, pattern",
    [
        ("unknown-model", r"unknown model 'no-such-model'.*smollm2"),
        ("missing-path", r"no such file or directory"),
        ("unknown-data", r"unknown dataset 'no-such-corpus'.*pydoc-topics"),
        ("gguf-no-tokenizer", r"no tokenizer metadata"),
        ("n-too-large", r"holds [\d,]+ tokens.*lower --n"),
    ],
)
def test_clear_errors_before_loading_weights(
    case, pattern, tiny_model_dir, tmp_path, capsys, no_weights
):
    model, data, n = str(tiny_model_dir), "pydoc-topics", "2"
    if case == "unknown-model":
        model = "no-such-model"
    elif case == "missing-path":
        model = str(tmp_path / "nothing-here")
    elif case == "unknown-data":
        data = "no-such-corpus"
    elif case == "gguf-no-tokenizer":
        model = str(_bad_gguf(tmp_path / "bare.gguf"))
    elif case == "n-too-large":
        n = "100000"
    rc, _, err = _run_cli(
        [
            "analyze",
            "--model",
            model,
            "--data",
            data,
            "--n",
            n,
            "--seq-len",
            "16",
            "--seeds",
            "1",
            "--no-progress",
        ],
        capsys,
    )
    assert rc == 2
    import re

    assert re.search(pattern, err, re.S), err


@pytest.mark.parametrize("alpha", ["0", "1", "-0.5", "1.2", "x"])
def test_alpha_outside_unit_interval_is_rejected(alpha, capsys):
    with pytest.raises(SystemExit) as e:
        main(["analyze", "--model", "smollm2", "--data", "pydoc-topics", "--alpha", alpha])
    assert e.value.code == 2
    assert "α must lie in (0, 1)" in capsys.readouterr().err or alpha == "x"
