"""The quickstart pipeline end to end at toy size (slow: ~2 min on 2 cores)."""

import json

import pytest

pytestmark = pytest.mark.slow


def test_quickstart_end_to_end_tiny(tmp_path, capsys):
    from lsap.quickstart import Settings, run

    s = Settings(out=str(tmp_path / "out"), cache=str(tmp_path / "cache"), base_corpus="pydoc-topics",
                 surrogate_corpus="shakespeare", vocab_size=512, tokenizer_docs=100, seq_len=64, batch_size=8,
                 surrogate_tokens=3e4, ce_tokens=2e4, seeds=[0, 1], checkpoints=2, eval_examples=16)
    out = run(s)
    rep = json.loads((out / "report.json").read_text())
    assert {r["loss"] for r in rep["rows"]} == {"Cross Entropy", "LSAP"}
    assert len(rep["rows"]) == 4
    # matched FLOPs: LSAP (surrogate charged) trains fewer tokens than CE on the same budget
    ce = [r for r in rep["rows"] if r["loss"] == "Cross Entropy"]
    ls = [r for r in rep["rows"] if r["loss"] == "LSAP"]
    assert all(r["flops"] <= rep["budget"] * (1 + 1e-9) for r in rep["rows"])
    assert max(r["tokens"] for r in ls) < min(r["tokens"] for r in ce)
    # matched tokens: CE has a checkpoint at LSAP's token count
    tok = rep["matched_tokens"]
    assert len({r["tokens"] for r in tok["rows"]}) == 1
    assert {g["n"] for g in rep["spread"]} == {2}
    for f in ("report.md", "score_vs_flops.png", "val_loss_vs_flops.png", "val_loss_vs_tokens.png"):
        assert (out / f).is_file()
    text = capsys.readouterr().out
    assert "verdict on held-out loss" in text
    # a second run reuses everything: no training, same report
    run(s)
    assert "finished earlier, reused" in capsys.readouterr().out
