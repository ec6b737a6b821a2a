"""Strength interval: per-document NLLs from bpb_on_documents and the document bootstrap."""

from __future__ import annotations

import math
import random

import pytest

from lsap.eval.metrics import bpb_on_documents
from lsap.eval.strength import StrengthError, strength_interval, strength_line


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    from pydoc_data.topics import topics

    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from lsap.data.tokenizer import train_bpe

    root = tmp_path_factory.mktemp("strength")
    tok = train_bpe(list(topics.values())[:100], 400, root)
    torch.manual_seed(0)
    cfg = LlamaConfig(
        vocab_size=len(tok),
        hidden_size=16,
        intermediate_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        num_key_value_heads=1,
        max_position_embeddings=4096,
    )
    docs = [t[:300] for t in list(topics.values())[-7:]]
    return LlamaForCausalLM(cfg).eval(), tok, docs


def test_doc_nll_sums_and_matches_one_forward(tiny):
    import numpy as np
    import torch

    from lsap.data.tokenizer import document_separator, encode_documents

    model, tok, docs = tiny
    r = bpb_on_documents(model, tok, docs, seq_len=37, batch_size=2, per_document=True)
    assert sum(r["doc_nll"]) == pytest.approx(r["nll"], rel=1e-9)
    assert r["doc_bytes"] == [len(d.encode()) for d in docs]
    # slow reference: one forward over the whole stream, each label summed into its document
    enc = list(encode_documents(docs, tok))
    ids = torch.tensor(np.concatenate([[document_separator(tok)], *enc]).astype(np.int64))
    with torch.no_grad():
        logp = torch.log_softmax(model(input_ids=ids[None, :-1]).logits[0].double(), -1)
    ref, j = [], 0
    for e in enc:
        ref.append(-sum(float(logp[j + k, ids[j + k + 1]]) for k in range(len(e))))
        j += len(e)
    whole = bpb_on_documents(model, tok, docs, seq_len=4000, per_document=True)
    assert whole["doc_nll"] == pytest.approx(ref, rel=1e-4)
    # windows of 37 cut the context, so the per-document values move (the split stays exact)
    assert r["doc_nll"] != pytest.approx(ref, rel=1e-4)


def test_bootstrap_against_slow_loop():
    rnd = random.Random(1)
    s = [rnd.uniform(50, 150) for _ in range(40)]
    b = [x * rnd.uniform(1.1, 1.5) for x in s]
    nb = [rnd.randint(80, 200) for _ in s]
    res = strength_interval(s, b, nb, n_boot=4000, seed=0)
    assert res["strength"] == pytest.approx(sum(s) / sum(b))
    assert res["surrogate_bpb"] / res["base_bpb"] == pytest.approx(res["strength"])
    assert res["surrogate_bpb"] == pytest.approx(sum(s) / (math.log(2) * sum(nb)))
    # slow reference: python resampling loop, percentile interval
    ratios = []
    for _ in range(4000):
        ix = [rnd.randrange(len(s)) for _ in s]
        ratios.append(sum(s[i] for i in ix) / sum(b[i] for i in ix))
    ratios.sort()
    lo, hi = ratios[int(0.025 * 4000)], ratios[int(0.975 * 4000) - 1]
    assert res["ci"][0] == pytest.approx(lo, abs=3e-3) and res["ci"][1] == pytest.approx(
        hi, abs=3e-3
    )
    assert res["ci"][0] < res["strength"] < res["ci"][1]
    assert "strength" in strength_line(res) and "40 documents" in strength_line(res)


def test_interval_shrinks_with_identical_ratio_and_bad_input():
    s = [10.0, 20.0, 30.0]
    res = strength_interval(s, [2 * x for x in s], [1, 1, 1])
    assert res["ci"] == pytest.approx((0.5, 0.5))
    with pytest.raises(StrengthError, match="per_document=True"):
        strength_interval([1.0], [1.0, 2.0], [1])


def _table(ce_docs):
    """A report table (`report.build_table` rows) for two seeds: CE and one LSAP setting."""
    rows = []
    for seed, (nll, nb) in enumerate(ce_docs):
        bpb = sum(nll) / (math.log(2) * sum(nb))
        rows.append(
            {
                "run": f"ce-s{seed}",
                "setting": "ce",
                "seed": seed,
                "loss": "Cross Entropy",
                "doc_bpb": bpb,
                "doc_nll": nll,
                "doc_bytes": nb,
                "pairs_average": 0.6,
                "scores": {},
            }
        )
        rows.append(
            {
                "run": f"lsap-s{seed}",
                "setting": "lsap",
                "seed": seed,
                "loss": "LSAP",
                "surrogate": "/m/16x",
                "pairs_average": 0.6 + 0.01 * seed,
                "scores": {},
            }
        )
    return {"rows": rows, "tasks": []}


def test_strength_rows_carry_the_interval_and_it_brackets_the_point():
    """The map's strength (report/sweep rows): surrogate bpb / mean CE bpb, with the document
    bootstrap of the surrogate's per-document NLLs against the CE seeds' mean per document."""
    from lsap.eval.strength import ci_text, documents_strength
    from lsap.experiments.report import strength_rows

    rnd = random.Random(3)
    nb = [rnd.randint(200, 900) for _ in range(30)]
    ce = [([b * rnd.uniform(1.2, 1.6) for b in nb], nb) for _ in range(2)]
    sur_nll = [b * rnd.uniform(0.8, 1.1) for b in nb]
    sur_bpb = sum(sur_nll) / (math.log(2) * sum(nb))
    docs = {"16x": {"doc_nll": sur_nll, "doc_bytes": nb}}
    (row,) = strength_rows(_table(ce), {"16x": sur_bpb}, {"16x": "/m/16x"}, docs)
    ce_mean = sum(sum(c) / (math.log(2) * sum(nb)) for c, _ in ce) / 2
    assert row["strength"] == pytest.approx(sur_bpb / ce_mean)
    lo, hi = row["strength_ci"]
    assert lo < row["strength"] < hi and hi - lo < 0.2 and row["strength_documents"] == 30
    # slow reference for the base side: the per-document mean over seeds, then the plain interval
    base = [(a + b) / 2 for a, b in zip(ce[0][0], ce[1][0])]
    assert [lo, hi] == pytest.approx(list(strength_interval(sur_nll, base, nb)["ci"]))
    assert ci_text(row["strength_ci"]) == f" [{lo:.3f}, {hi:.3f}]" and ci_text(None) == ""
    # no interval without per-document values of the surrogate, or of every CE seed, or on
    # other documents: the point estimate stays
    (no,) = strength_rows(_table(ce), {"16x": sur_bpb}, {"16x": "/m/16x"})
    assert no["strength_ci"] is None and no["strength"] == pytest.approx(row["strength"])
    old = _table(ce)
    old["rows"][0]["doc_nll"] = None
    assert strength_rows(old, {"16x": sur_bpb}, {"16x": "/m/16x"}, docs)[0]["strength_ci"] is None
    other = {"16x": {"doc_nll": sur_nll[1:], "doc_bytes": nb[1:]}}
    assert documents_strength(other["16x"], [{"doc_nll": c, "doc_bytes": n} for c, n in ce]) is None


def test_regime_caches_the_surrogates_per_document_nlls(tmp_path):
    """`surrogate_documents` reads what `_surrogate_bpb` cached; old caches give no entry."""
    import json

    from lsap.eval.metrics import STRENGTH_BYTES
    from lsap.experiments import regime as rg

    s = rg.Settings(cache=str(tmp_path))
    key = f"/m/16x|docs:{STRENGTH_BYTES}"
    path = tmp_path / f"surrogate-bpb-{rg.tokenizer_key(s)}.json"
    path.write_text(json.dumps({key: 1.2, "/m/4x|docs:300000": 1.4}))
    assert rg.surrogate_documents(s, {"16x": "/m/16x", "4x": "/m/4x"}) == {}
    entry = {"doc_nll": [1.0, 2.0], "doc_bytes": [3, 4]}
    path.write_text(json.dumps({key: 1.2, f"{key}|per_document": entry}))
    assert rg.surrogate_documents(s, {"16x": "/m/16x", "4x": "/m/4x"}) == {"16x": entry}
