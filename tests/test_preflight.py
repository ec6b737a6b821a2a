"""`lsap preflight`: on the tiny test world (fast) and on SmolLM2 offline (slow, real)."""

from __future__ import annotations

import json

import pytest


@pytest.fixture(scope="module")
def base_run(tiny_world, tmp_path_factory):
    """A 3-step CE run on the tiny world: what `--base-run` reads (checkpoint, tokenizer, N_b)."""
    from lsap.config import load_config
    from lsap.train.loop import train

    out = tmp_path_factory.mktemp("pilot") / "ce"
    cfg = load_config(
        None,
        [
            f"out_dir={out}",
            f"data.dir={tiny_world['data']}",
            "data.seq_len=32",
            "model.preset=olmo2-tiny",
            "model.overrides.hidden_size=32",
            "model.overrides.intermediate_size=64",
            "model.overrides.num_hidden_layers=1",
            "train.max_steps=3",
            "train.batch_size=4",
            "train.micro_batch_size=4",
            "train.eval_every=0",
            "train.log_every=1",
        ],
    )
    return str(train(cfg, resume="auto", log=lambda m: None, quiet=True))


# The surrogate's bits per byte is metrics.bpb_on_documents (tested against a naive
# per-document loop in tests/test_evaluate.py): preflight has no bpb code of its own.


def test_preflight_on_the_tiny_world(tiny_world, base_run, capsys):
    from lsap.cli.main import main

    out = tiny_world["root"] / "preflight.json"
    rc = main(
        [
            "preflight",
            "--base",
            tiny_world["base_tok"],
            "--surrogate",
            tiny_world["surrogate"],
            "--data",
            "pydoc-topics",
            "--base-run",
            base_run,
            "--n",
            "4",
            "--seq-len",
            "32",
            "--bpb-bytes",
            "5000",
            "--device",
            "cpu",
            "--json-out",
            str(out),
        ]
    )
    assert rc == 0
    text = capsys.readouterr().out
    res = json.loads(out.read_text())
    for s in (
        "Σ∩:",
        "your text's base tokens inside Σ∩",
        "auxiliary targets per base token",
        "α 0.05",
        "surrogate bits per byte",
        "strength",
        "FLOPs per base token: 1 + 2·N_s/(6·N_b)",
        "on lsap's measured map",
    ):
        assert s in text
    assert 0 < res["token_share_in_intersection"] <= 1 and res["intersection"] > 0
    a = res["aux_per_token"]
    assert (
        a["0.01"] >= a["0.05"] >= a["0.2"] >= 0 and a["0.01"] > 0
    )  # peaked random surrogate: targets exist
    assert res["strength"] == pytest.approx(res["surrogate_bpb"] / res["base_bpb"])
    lo, hi = res["strength_ci"]  # the document-bootstrap interval brackets the point estimate
    assert lo <= res["strength"] <= hi
    assert f"strength {res['strength']:.3f} [{lo:.3f}, {hi:.3f}] (95% bootstrap over" in text
    assert res["flops_price"] == pytest.approx(
        1 + 2 * res["surrogate_params"] / (6 * res["base_params"])
    )
    assert res["tokens_lost"] == pytest.approx(1 - 1 / res["flops_price"])


def test_base_run_on_another_tokenizer_than_base(tiny_world, base_run, capsys):
    """--base-run trained with one tokenizer and --base naming another: refused (Σ∩ from one,
    bits per byte from the other); no --base: the run's tokenizer, not the default dolma2."""
    from lsap.cli.main import main

    common = ["--surrogate", tiny_world["surrogate"], "--data", "pydoc-topics",
              "--base-run", base_run, "--n", "2", "--seq-len", "32", "--bpb-bytes", "2000",
              "--device", "cpu"]  # fmt: skip
    capsys.readouterr()
    assert main(["preflight", "--base", tiny_world["surrogate"], *common]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "is not the tokenizer of --base-run" in err[0], err
    assert "drop --base" in err[0]
    out = tiny_world["root"] / "preflight-run-tok.json"
    assert main(["preflight", *common, "--json-out", str(out)]) == 0
    res = json.loads(out.read_text())
    assert res["base"].endswith("/model") and "base_bpb" in res  # the run's own tokenizer


def test_where_on_map_sentences():
    from lsap.experiments.preflight import where_on_map

    assert "helped here" in where_on_map(0.65, 0.87)[0]
    assert "did not help" in where_on_map(1.02, 0.87)[0]
    assert "between" in where_on_map(0.88, 0.87)[0]
    assert "helped here" in where_on_map(0.65, 0.87)[1]
    assert "gain vanished" in where_on_map(0.65, 0.62)[1]
    assert (
        "worse than CE" in where_on_map(0.65, 0.40)[1]
        and "not measured" not in where_on_map(0.65, 0.40)[1]
    )
    assert "not measured" in where_on_map(0.65, 0.10)[1]
    assert "strength unknown" in where_on_map(None, 0.87)[0]
    # the interval is quoted; one across a band boundary says so, one inside a band does not
    inside = where_on_map(0.65, 0.87, [0.60, 0.70])
    assert inside[0].startswith("strength 0.65 [0.60, 0.70]:") and "crosses" not in " ".join(inside)
    across = where_on_map(0.70, 0.87, [0.66, 0.75])
    assert "helped here" in across[0] and "crosses the map's boundary at 0.72" in across[1]


def test_a_pair_whose_intersection_is_too_small_is_refused(tiny_world, tmp_path, capsys):
    """A surrogate whose tokenizer shares no token strings with the base's: exit 2, one line."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    from lsap.cli.main import main

    vocab = {"<unk>": 0, "</s>": 1, **{f"ZQX{i}": i + 2 for i in range(60)}}
    t = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    t.pre_tokenizer = pre_tokenizers.Whitespace()
    d = tmp_path / "alien"
    PreTrainedTokenizerFast(
        tokenizer_object=t, unk_token="<unk>", eos_token="</s>"
    ).save_pretrained(d)
    LlamaForCausalLM(
        LlamaConfig(
            vocab_size=62,
            hidden_size=16,
            intermediate_size=32,
            num_hidden_layers=1,
            num_attention_heads=2,
            num_key_value_heads=2,
        )
    ).save_pretrained(d)
    capsys.readouterr()
    rc = main(
        [
            "preflight",
            "--base",
            tiny_world["base_tok"],
            "--surrogate",
            str(d),
            "--data",
            "pydoc-topics",
            "--n",
            "2",
            "--seq-len",
            "16",
            "--device",
            "cpu",
        ]
    )
    err = [
        x for x in capsys.readouterr().err.splitlines() if x.startswith("lsap preflight: error:")
    ]
    assert (
        rc == 2
        and len(err) == 1
        and "cannot carry LSAP" in err[0]
        and "choose a surrogate" in err[0]
    )


@pytest.mark.slow
@pytest.mark.real
def test_preflight_smollm2_offline(tmp_path):
    """dolma2 base tokenizer, the packaged SmolLM2 GGUF, python-docs: the real pair, on a CPU."""
    from lsap.experiments.preflight import preflight

    res = preflight(
        "dolma2",
        "smollm2",
        "python-docs",
        n=4,
        seq_len=256,
        bpb_bytes=20_000,
        device="cpu",
        max_documents=300,
        log=lambda m: None,
    )
    assert res["intersection"] > 10_000 and res["token_share_in_intersection"] > 0.5
    assert 0.3 < res["surrogate_bpb"] < 3.0  # a trained 135M model on English/Python docs
    assert res["aux_per_token"]["0.01"] >= res["aux_per_token"]["0.05"] > 0
    assert res["flops_price"] == pytest.approx(
        1 + 2 * res["surrogate_params"] / (6 * res["base_params"])
    )
    assert "strength unknown" in res["map"][0]


def test_bpb_sample_is_whole_documents_within_the_byte_budget():
    from lsap.experiments.preflight import _sample_docs

    docs = ["a" * 5000, "b" * 300, "c" * 400, "d" * 200, "e" * 10_000, ""]
    s = _sample_docs(docs, 1000, seed=0)
    assert set(s) <= set(docs) and "" not in s and sum(len(d) for d in s) <= 1000 and len(s) >= 2
    assert _sample_docs(["x" * 50, "y" * 20], 10, seed=0) == ["y" * 20]  # none fits: the smallest
