"""`lsap eval`: bits per byte, offline task construction, eval.json next to checkpoints, errors.

The fixtures build, offline and in a few seconds: a byte-level BPE tokenizer (vocab
320) trained on the stdlib's pydoc topics, a data directory prepared from that corpus
(20% of documents held out), and two fake runs (CE and LSAP) whose checkpoints are tiny
random OLMo2 / Llama models saved with `save_pretrained`, with known FLOPs in meta.json
and metrics.jsonl. `tests/test_report.py` reuses them.
"""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import pytest

from lsap.cli.main import main
from lsap.eval import metrics, tasks

VOCAB = 320
# Per run: (name, config extras, checkpoint FLOPs). The LSAP run spends more FLOPs
# per token (surrogate); budgets are chosen so matched-FLOPs picks are known.
RUNS = {
    "ce": (
        {"loss": "ce", "lsap": {"alpha": 0.05, "k": 15, "lambda_schedule": "constant"}},
        [(100, 1.0e12), (200, 2.0e12), (300, 3.0e12)],
        "olmo2",
    ),
    "lsap": (
        {
            "loss": "lsap",
            "lsap": {"alpha": 0.05, "k": 15, "lambda_schedule": "cosine"},
            "surrogate": {"model": "smollm2"},
        },  # never loaded: the fixture evaluates with --no-targets
        [(100, 1.3e12), (200, 2.6e12)],
        "llama",
    ),
}


def make_tokenizer(out: Path):
    from pydoc_data.topics import topics

    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tk = Tokenizer(models.BPE())
    tk.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tk.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=VOCAB,
        special_tokens=["<|endoftext|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tk.train_from_iterator([topics[k] for k in sorted(topics)], trainer)
    tok = PreTrainedTokenizerFast(
        tokenizer_object=tk, eos_token="<|endoftext|>", bos_token="<|endoftext|>"
    )
    tok.save_pretrained(out)
    return tok


def tiny_model(family: str, seed: int):
    import torch
    from transformers import AutoModelForCausalLM, LlamaConfig, Olmo2Config

    cls = Olmo2Config if family == "olmo2" else LlamaConfig
    cfg = cls(
        vocab_size=VOCAB,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=1,
        num_attention_heads=2,
        num_key_value_heads=2,
        max_position_embeddings=256,
        eos_token_id=0,
        bos_token_id=0,
        tie_word_embeddings=False,
    )
    torch.manual_seed(seed)
    return AutoModelForCausalLM.from_config(cfg)


def make_run(root: Path, name: str, data_dir: Path, tok, spec: str) -> Path:
    import yaml

    extra, cks, family = RUNS[name]
    run = root / name
    run.mkdir(parents=True)
    cfg = {
        "name": name,
        "model": {"preset": "olmo2-tiny"},
        "data": {"dir": str(data_dir), "seq_len": 64},
        "train": {"eval_batches": 2, "max_steps": cks[-1][0]},
        **extra,
    }
    (run / "config.yaml").write_text(yaml.safe_dump(cfg))
    lines = []
    for i, (step, flops) in enumerate(cks):
        d = run / "checkpoints" / f"step_{step:08d}"
        model = tiny_model(family, seed=10 * len(name) + i)
        model.save_pretrained(d / "model")
        tok.save_pretrained(d / "model")
        meta = {
            "step": step,
            "tokens": step * 1000,
            "flops_base": flops * 0.8,
            "flops_surrogate": flops * 0.2,
            "flops": flops,
            "wall_s": 1.0,
        }
        (d / "meta.json").write_text(json.dumps(meta))
        lines.append(
            {"kind": "train", "step": step, "tokens": step * 1000, "flops": flops, "loss": 5.0 - i}
        )
        lines.append(
            {
                "kind": "val",
                "step": step,
                "tokens": step * 1000,
                "flops_base": flops * 0.8,
                "flops_surrogate": flops * 0.2,
                "flops": flops,
                "val_loss": 5.5 - i,
                "val_bpb": 2.0 - i / 10,
            }
        )
    (run / "metrics.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))
    return run


# test_report.py imports these fixtures; pytest then registers them once per module,
# so the built objects are cached here to build them once per session.
_CACHE: dict[str, dict] = {}


@pytest.fixture(scope="session")
def world(tmp_path_factory):
    """{'tok_dir', 'data', 'runs': {name: path}} — built once per session."""
    from lsap.data.shards import prepare

    if "world" in _CACHE:
        return _CACHE["world"]
    root = tmp_path_factory.mktemp("evalworld")
    tok = make_tokenizer(root / "tok")
    data = root / "data"
    prepare(
        str(root / "tok"),
        "pydoc-topics",
        data,
        val_fraction=0.2,
        shard_tokens=1 << 16,
        seed=0,
        progress=False,
        tokenizer=tok,
    )
    runs = {name: make_run(root / "runs", name, data, tok, str(root / "tok")) for name in RUNS}
    _CACHE["world"] = {
        "root": root,
        "tok_dir": root / "tok",
        "tok": tok,
        "data": data,
        "runs": runs,
    }
    return _CACHE["world"]


@pytest.fixture(scope="session")
def evaluated(world):
    """Both runs evaluated with the offline set at --limit 8 (lm-eval, CPU)."""
    pytest.importorskip("lm_eval")
    if "evaluated" not in _CACHE:
        for run in world["runs"].values():
            assert (
                main(
                    [
                        "eval",
                        str(run),
                        "--tasks",
                        "offline",
                        "--limit",
                        "8",
                        "--batch-size",
                        "4",
                        "--no-targets",
                        "--doc-bytes",
                        "20000",
                    ]
                )
                == 0
            )
        _CACHE["evaluated"] = world
    return _CACHE["evaluated"]


# --------------------------------------------------------------------------- bits per byte
def test_bits_per_byte_hand_computed():
    # 2 tokens of 4 bytes each, ln(4) nats each: 2·2 bits / 8 bytes = 0.5 bpb.
    assert metrics.bits_per_byte(2 * math.log(4), 8) == pytest.approx(0.5)
    nll, n_bytes = 2.3 * 37, 151  # Σ NLL of 37 tokens, their 151 bytes
    assert metrics.bits_per_byte(nll, n_bytes) == pytest.approx(37 * 2.3 / math.log(2) / 151)
    with pytest.raises(metrics.EvalError):
        metrics.bits_per_byte(1.0, 0)


def test_heldout_loss_matches_manual(world):
    import numpy as np
    import torch

    from lsap.data.shards import TokenShards

    model = tiny_model("olmo2", 0).eval()
    got = metrics.heldout_loss(
        model, world["data"], seq_len=32, batch_size=2, max_batches=3, tokenizer=world["tok"]
    )
    sh = TokenShards(world["data"], "val")
    x = torch.from_numpy(np.asarray(sh.tokens(0, 6 * 32 + 1)))
    inp = torch.stack([x[j * 32 : (j + 1) * 32] for j in range(6)])
    lab = torch.stack([x[j * 32 + 1 : (j + 1) * 32 + 1] for j in range(6)])
    with torch.no_grad():
        ref = torch.nn.functional.cross_entropy(
            model(input_ids=inp).logits.flatten(0, 1), lab.flatten()
        ).item()
    assert got["val_tokens"] == 6 * 32
    assert got["val_loss"] == pytest.approx(ref, rel=1e-5)
    # bpb divides by the bytes of exactly the labels scored (naive: decode them, count UTF-8 bytes)
    tok = world["tok"]
    n_bytes = len(
        tok.decode([int(i) for i in lab.flatten() if int(i) != tok.eos_token_id]).encode("utf-8")
    )
    assert got["val_bytes"] == n_bytes
    assert got["val_bpb"] == pytest.approx(ref * lab.numel() / math.log(2) / n_bytes, rel=1e-5)
    man = json.loads((world["data"] / "manifest.json").read_text())["splits"]["val"]
    assert got["val_bytes"] / got["val_tokens"] != pytest.approx(
        man["bytes"] / man["tokens"], rel=1e-3
    )


def test_token_byte_lengths_sum_to_the_split_bytes(world):
    """Σ bytes of every token of the val split = the manifest's UTF-8 bytes of its documents."""
    import numpy as np

    from lsap.data.shards import TokenShards

    sh = TokenShards(world["data"], "val")
    lengths = metrics.token_byte_lengths(world["tok"], sh.vocab_size)
    assert int(lengths[np.asarray(sh.tokens(0, len(sh)))].sum()) == sh.info["bytes"]
    assert lengths[world["tok"].eos_token_id] == 0


def test_bpb_on_documents_matches_naive(world):
    """Complete documents, own tokenizer: every token scored once (context from the window start),
    bytes = a naive per-document UTF-8 count."""
    import torch

    tok = world["tok"]
    docs = metrics.strength_documents(world["data"], max_bytes=3000)
    assert len(docs) >= 1 and (len(docs) == 1 or sum(len(d.encode()) for d in docs) <= 3000)
    docs = docs[:3] + ["short doc \u00e9\u00e8 \u2014 non-ASCII"]
    model = tiny_model("llama", 3).eval()
    T = 16
    got = metrics.bpb_on_documents(model, tok, docs, seq_len=T, batch_size=3)
    stream = [tok.eos_token_id]
    for d in docs:
        stream += tok(d, add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
    nll = 0.0
    with torch.no_grad():
        for t in range(1, len(stream)):  # label t, read by the window that starts at ((t-1)//T)·T
            s = ((t - 1) // T) * T
            logits = model(input_ids=torch.tensor([stream[s:t]])).logits[0, -1]
            nll -= float(torch.log_softmax(logits.double(), -1)[stream[t]])
    n_bytes = sum(len(d.encode("utf-8")) for d in docs)
    assert (
        got["bytes"] == n_bytes
        and got["tokens"] == len(stream) - 1
        and got["documents"] == len(docs)
    )
    assert got["nll"] == pytest.approx(nll, rel=1e-4)
    assert got["bpb"] == pytest.approx(nll / math.log(2) / n_bytes, rel=1e-4)


# --------------------------------------------------------------------------- offline tasks
def test_offline_tasks_deterministic_and_heldout(world, tmp_path):
    from pydoc_data.topics import topics

    from lsap.data.shards import is_val

    a = tasks.build_offline_tasks(world["data"], tmp_path / "a", max_examples=50)
    b = tasks.build_offline_tasks(world["data"], tmp_path / "b", max_examples=50)
    assert a["hash"] == b["hash"]
    for name in tasks.OFFLINE_TASKS:
        assert (tmp_path / "a" / f"{name}.jsonl").read_bytes() == (
            tmp_path / "b" / f"{name}.jsonl"
        ).read_bytes()
        assert a["counts"][name] > 5
    c = tasks.build_offline_tasks(world["data"], tmp_path / "c", max_examples=40)
    assert c["hash"] != a["hash"]

    docs = [" ".join(topics[k].split()) for k in sorted(topics)]
    val = [d for i, d in enumerate(docs) if is_val(i, 0, 0.2)]
    train = [d for i, d in enumerate(docs) if not is_val(i, 0, 0.2)]
    lw = [json.loads(x) for x in (tmp_path / "a" / "lsap_lastword.jsonl").read_text().splitlines()]
    for ex in lw:
        passage = ex["context"] + " " + ex["target"]
        assert any(passage in d for d in val)
        assert ex["target"].isalpha() or "-" in ex["target"] or "'" in ex["target"]
    ns = [json.loads(x) for x in (tmp_path / "a" / "lsap_nextsent.jsonl").read_text().splitlines()]
    for ex in ns:
        assert len(ex["choices"]) == 4 and len(set(ex["choices"])) == 4
        answer = ex["choices"][ex["label"]]
        home = [d for d in val if ex["context"] + " " + answer in d]
        assert home, "context + answer must be consecutive text of one held-out document"
        for j, ch in enumerate(ex["choices"]):
            assert any(ch in d for d in val)
            if j != ex["label"]:
                assert all(ch not in d for d in home)  # distractors come from other documents
    # Held-out only: no example is drawn from a training document (unless the text
    # also appears in a held-out one).
    assert not any(
        ex["context"] in d and not any(ex["context"] in v for v in val) for ex in lw for d in train
    )


def test_lastword_cutting_rule():
    doc = " ".join(f"w{i}" for i in range(20)) + " the final Word. 123"
    ex = tasks.lastword_examples([doc], passage_words=64, min_context_words=16)
    assert ex == [
        {"context": " ".join(f"w{i}" for i in range(20)) + " the final", "target": "Word"}
    ]


# --------------------------------------------------------------------------- lsap eval end to end
def test_eval_writes_results_next_to_checkpoints(evaluated, capsys):
    for name, run in evaluated["runs"].items():
        for step, flops in RUNS[name][1]:
            d = run / "checkpoints" / f"step_{step:08d}"
            res = json.loads((d / "eval.json").read_text())
            meta = json.loads((d / "meta.json").read_text())
            for k in ("step", "tokens", "flops_base", "flops_surrogate", "flops"):
                assert res[k] == meta[k]
            assert set(res["tasks"]) == set(tasks.OFFLINE_TASKS)
            for t in res["tasks"].values():
                assert 0.0 <= t["value"] <= 1.0 and t["metric"] in ("acc", "acc_norm")
            assert res["tasks"]["lsap_nextsent"]["metric"] == "acc_norm"
            assert res["val_loss"] > 0 and res["val_bpb"] > 0 and res["doc_bpb"] > 0
            # per-document NLLs for the strength interval: they sum to the documents' bpb
            assert len(res["doc_nll"]) == len(res["doc_bytes"]) > 0
            assert sum(res["doc_nll"]) / (math.log(2) * sum(res["doc_bytes"])) == pytest.approx(
                res["doc_bpb"], rel=1e-4
            )
            assert res["task_set"] == "offline" and len(res["eval_set_hash"]) == 64
            for t in (
                tasks.PAIR_TASKS
            ):  # per-example log-likelihoods, so paired tests are possible later
                r = res["tasks"][t]
                ex = tasks.unpack_scores(r["examples"])
                assert ex["ll"].shape == (r["n"], 2) and r["n"] == 8
                assert ex[r["metric"]].mean() == pytest.approx(r["value"])
                assert ex["acc"].tolist() == (ex["ll"][:, 0] >= ex["ll"][:, 1]).tolist()
                assert r["equal_length"]["n"] == int(ex["same_tokens"].sum())
                assert isinstance(r["removed_in_training"], int)
    # a second run skips everything (same eval set) and leaves the files untouched
    run = evaluated["runs"]["ce"]
    f = run / "checkpoints" / "step_00000100" / "eval.json"
    before = f.read_bytes()
    capsys.readouterr()
    assert (
        main(
            [
                "eval",
                str(run),
                "--tasks",
                "offline",
                "--limit",
                "8",
                "--batch-size",
                "4",
                "--no-targets",
                "--doc-bytes",
                "20000",
            ]
        )
        == 0
    )
    assert "3 checkpoint(s) already evaluated" in capsys.readouterr().out
    assert f.read_bytes() == before


def test_eval_hash_same_across_runs(evaluated):
    hashes = {
        json.loads(p.read_text())["eval_set_hash"]
        for run in evaluated["runs"].values()
        for p in run.glob("checkpoints/*/eval.json")
    }
    assert len(hashes) == 1


# --------------------------------------------------------------------------- errors
def test_error_run_without_checkpoints(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    assert main(["eval", str(tmp_path / "empty")]) == 2
    assert "no checkpoints" in capsys.readouterr().err


def test_error_unknown_checkpoint(world, capsys):
    assert main(["eval", str(world["runs"]["ce"]), "--checkpoints", "step_00000150"]) == 2
    assert "no checkpoint 'step_00000150'" in capsys.readouterr().err


def test_error_unknown_task_lists_close_ones(world, tmp_path, capsys):
    pytest.importorskip("lm_eval")
    run = tmp_path / "r"
    shutil.copytree(world["runs"]["ce"], run)
    before = sorted(p.name for p in run.rglob("*"))
    assert main(["eval", str(run), "--tasks", "hellaswagg,lsap_lastword"]) == 2
    err = capsys.readouterr().err
    assert "unknown task 'hellaswagg'" in err and "hellaswag" in err
    assert sorted(p.name for p in run.rglob("*")) == before  # nothing written


def test_error_offline_without_data(world, tmp_path, capsys):
    model_dir = world["runs"]["ce"] / "checkpoints" / "step_00000100" / "model"
    assert main(["eval", str(model_dir), "--tasks", "offline"]) == 2
    assert "--data" in capsys.readouterr().err
    assert not (model_dir / "eval.json").exists()


def test_eval_gold_outside_skip_run_uses_that_rule(tiny_world, tmp_path):
    """`lsap eval` on a lsap.gold_outside=skip run splits by m (and measures the mass on targets)
    with the targets the run trained with — the same as `heldout_metrics` with the trainer's
    OnlineTargets(gold_outside="skip") — not with the default rule (keep)."""
    import torch
    import yaml
    from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaConfig

    from lsap.data.tokenizer import load_tokenizer
    from lsap.method.vocab import VocabMap
    from lsap.surrogate.sources import OnlineTargets

    run = tmp_path / "skip-run"
    cfg = {
        "name": "skip-run",
        "loss": "lsap",
        "data": {"dir": tiny_world["data"], "seq_len": 32},
        "surrogate": {"model": tiny_world["surrogate"]},
        "train": {"eval_batches": 2, "micro_batch_size": 2, "max_steps": 10},
        "lsap": {"k": 5, "alpha": 0.02, "gold_outside": "skip"},
    }
    run.mkdir()
    (run / "config.yaml").write_text(yaml.safe_dump(cfg))
    ck = run / "checkpoints" / "step_00000010"
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(
        LlamaConfig(
            vocab_size=640,
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=1,
            num_attention_heads=2,
            num_key_value_heads=2,
            max_position_embeddings=256,
        )
    )
    model.save_pretrained(ck / "model")
    AutoTokenizer.from_pretrained(tiny_world["base_tok"]).save_pretrained(ck / "model")
    (ck / "meta.json").write_text(
        json.dumps(
            {"step": 10, "tokens": 640, "flops": 1e9, "flops_base": 8e8, "flops_surrogate": 2e8}
        )
    )
    assert (
        main(["eval", str(run), "--tasks", "pairs", "--max-examples", "4", "--doc-bytes", "0"]) == 0
    )
    res = json.loads((ck / "eval.json").read_text())
    assert res["targets"]["gold_outside"] == "skip"

    sur = AutoModelForCausalLM.from_pretrained(tiny_world["surrogate"]).eval()
    base_tok = load_tokenizer(tiny_world["base_tok"])
    vmap = VocabMap.from_tokenizers(
        base_tok,
        load_tokenizer(tiny_world["surrogate"]),
        base_vocab_size=640,
        surrogate_vocab_size=sur.config.vocab_size,
    )
    m = AutoModelForCausalLM.from_pretrained(ck / "model").eval()
    ref = {
        rule: metrics.heldout_metrics(
            m,
            tiny_world["data"],
            seq_len=32,
            batch_size=2,
            max_batches=2,
            targets=metrics.source_targets(OnlineTargets(sur, vmap, 5, 0.02, gold_outside=rule)),
        )
        for rule in ("skip", "keep")
    }
    for b in ("0", "1", "2+"):
        assert res["by_m"][b]["share"] == pytest.approx(ref["skip"]["by_m"][b]["share"])
    assert res["target_mass"] == pytest.approx(ref["skip"]["target_mass"], rel=1e-5)
    assert (
        ref["skip"]["by_m"]["0"]["share"] > ref["keep"]["by_m"]["0"]["share"]
    )  # the rule matters here


def test_eval_damaged_checkpoint_is_named_and_skipped(world, tmp_path, capsys):
    """A truncated model.safetensors: the file is named as damaged, the other checkpoints are
    evaluated, the skipped one is listed; a step directory passed itself evaluates that step."""
    run = tmp_path / "ce"
    shutil.copytree(world["runs"]["ce"], run)
    for p in run.glob("checkpoints/*/eval.json"):
        p.unlink()
    bad = run / "checkpoints" / "step_00000200" / "model" / "model.safetensors"
    data = bad.read_bytes()
    bad.write_bytes(data[: len(data) // 2])
    args = ["--tasks", "pairs", "--max-examples", "4", "--no-loss"]
    assert main(["eval", str(run), *args]) == 0
    out = capsys.readouterr().out
    assert (
        f"{bad} is damaged" in out
        and "skipped 1 damaged checkpoint(s), not evaluated: step_00000200" in out
    )
    # each checkpoint's line names its run (issue 28: lines of many runs interleave in a sweep)
    assert "[lsap] ce/step_00000200: skipped:" in out and "[lsap] ce/step_00000100: " in out
    assert sorted(p.parent.name for p in run.glob("checkpoints/*/eval.json")) == [
        "step_00000100",
        "step_00000300",
    ]

    (run / "checkpoints" / "step_00000100" / "eval.json").unlink()
    assert main(["eval", str(run / "checkpoints" / "step_00000100"), *args]) == 0
    assert "evaluating step_00000100 only" in capsys.readouterr().out
    assert (run / "checkpoints" / "step_00000100" / "eval.json").is_file()
    assert (
        main(
            [
                "eval",
                str(run / "checkpoints" / "step_00000100"),
                *args,
                "--checkpoints",
                "step_00000300",
            ]
        )
        == 2
    )
    assert "pass the run directory" in capsys.readouterr().err
    assert (
        main(["eval", str(run / "checkpoints" / "step_00000200"), *args]) == 2
    )  # every selected one damaged
    assert "every selected checkpoint is damaged" in capsys.readouterr().err


def test_eval_outside_git_tree_prints_no_git_error(evaluated, tmp_path):
    """lm-eval runs `git describe`; outside a git tree git's "fatal: not a git repository" must
    not reach the terminal (it goes to the checkpoint's lm_eval.log)."""
    import os
    import subprocess
    import sys

    if shutil.which("git") is None:
        pytest.skip("git not installed: the message cannot occur")
    if subprocess.run(["git", "rev-parse"], cwd=tmp_path, capture_output=True).returncode == 0:
        pytest.skip("the temporary directory lies inside a git tree")
    run = tmp_path / "ce"
    shutil.copytree(evaluated["runs"]["ce"], run)
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "lsap",
            "eval",
            str(run),
            "--tasks",
            "lsap_lastword",
            "--limit",
            "2",
            "--no-loss",
            "--checkpoints",
            "last",
            "--force",
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        env=os.environ.copy(),
        timeout=600,
    )
    assert r.returncode == 0, r.stderr
    assert "not a git repository" not in r.stdout + r.stderr
    assert "lastword" in r.stdout


def test_strength_documents_sample_across_the_split(world):
    from lsap.eval.tasks import heldout_documents

    docs, _ = heldout_documents(world["data"])
    total = sum(len(d.encode()) for d in docs)
    assert (
        metrics.strength_documents(world["data"], max_bytes=total) == docs
    )  # small split: all of it
    a = metrics.strength_documents(world["data"], max_bytes=total // 3, seed=0)
    assert metrics.strength_documents(world["data"], max_bytes=total // 3, seed=0) == a
    assert sum(len(d.encode()) for d in a) <= total // 3 or len(a) == 1
    idx = [docs.index(d) for d in a]
    assert idx == sorted(idx)
    b = metrics.strength_documents(world["data"], max_bytes=total // 3, seed=1)
    assert a != b or len(docs) < 4
    first = []
    for (
        d
    ) in docs:  # round 3's choice: a prefix in corpus order; the sample is not (given enough docs)
        if first and sum(len(x.encode()) for x in first) + len(d.encode()) > total // 3:
            break
        first.append(d)
    assert a != first or len(docs) < 4


def test_eval_pruned_checkpoints_are_not_damaged(world, tmp_path, capsys, monkeypatch):
    """Checkpoints `train.keep_checkpoints` pruned are gone, not damaged: the rest are evaluated,
    a requested pruned step says so, and one pruned while the evaluation runs is named as pruned."""
    import yaml

    import lsap.eval.run as R
    from lsap.train.checkpoint import prune

    run = tmp_path / "ce"
    shutil.copytree(world["runs"]["ce"], run)
    for p in run.glob("checkpoints/*/eval.json"):
        p.unlink()
    cfg = yaml.safe_load((run / "config.yaml").read_text())
    cfg["train"].update(ckpt_every=100, keep_checkpoints=2)
    (run / "config.yaml").write_text(yaml.safe_dump(cfg))
    assert [p.name for p in prune(run, 2)] == ["step_00000100"]
    args = ["--tasks", "pairs", "--max-examples", "4", "--no-loss"]
    assert main(["eval", str(run), *args]) == 0
    out = capsys.readouterr().out
    assert "damaged" not in out
    assert sorted(p.parent.name for p in run.glob("checkpoints/*/eval.json")) == [
        "step_00000200",
        "step_00000300",
    ]
    assert main(["eval", str(run), *args, "--checkpoints", "step_00000100"]) == 2
    err = capsys.readouterr().err
    assert "step 100 was pruned by keep_checkpoints=2" in err and "damaged" not in err

    listed = R.find_checkpoints  # the training run prunes step_00000200 after eval listed it

    def listed_then_pruned(target, which="all"):
        got = listed(target, which)
        shutil.rmtree(run / "checkpoints" / "step_00000200")
        return got

    monkeypatch.setattr(R, "find_checkpoints", listed_then_pruned)
    assert main(["eval", str(run), *args, "--force"]) == 0
    out = capsys.readouterr().out
    assert "damaged" not in out and "pruned by the training run" in out
    assert "step_00000200" in out


def test_eval_task_dir_with_glob_characters(world, tmp_path, capsys):
    """A --task-dir whose path holds `[` (lm-eval globs its include path) works: the task files
    land in that directory and the tasks are evaluated (issue 28)."""
    pytest.importorskip("lm_eval")
    run = tmp_path / "ce"
    shutil.copytree(world["runs"]["ce"], run)
    task_dir = tmp_path / "x[1]" / "tasks"
    args = ["eval", str(run), "--tasks", "lsap_lastword", "--limit", "2", "--no-loss"]
    rc = main([*args, "--checkpoints", "last", "--task-dir", str(task_dir)])
    out = capsys.readouterr()
    assert rc == 0, out.err
    assert "lastword" in out.out
    assert (task_dir / "lsap_lastword.yaml").is_file()
    res = json.loads((run / "checkpoints" / "step_00000300" / "eval.json").read_text())
    assert 0.0 <= res["tasks"]["lsap_lastword"]["value"] <= 1.0
