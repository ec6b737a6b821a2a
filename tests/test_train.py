import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from lsap.config import ConfigError, load_config
from lsap.train.loop import Trainer, TrainingError


def cfg_for(world, out, *extra):
    return load_config(
        None,
        [
            f"data.dir={world['data']}",
            f"out_dir={out}",
            "data.seq_len=32",
            "train.batch_size=4",
            "train.micro_batch_size=2",
            "train.max_steps=6",
            "train.log_every=1",
            "optim.warmup_steps=2",
            "train.eval_batches=2",
            *extra,
        ],
    )


LSAP = ("loss=lsap", "lsap.alpha=0.02", "lsap.k=4")


def losses(out):
    rows = [json.loads(l) for l in (Path(out) / "metrics.jsonl").read_text().splitlines()]
    return {r["step"]: r for r in rows if r["kind"] == "train"}


def test_lsap_run_proposes_targets_and_charges_surrogate_flops(tiny_world, tmp_path):
    cfg = cfg_for(
        tiny_world,
        tmp_path / "r",
        *LSAP,
        f"surrogate.model={tiny_world['surrogate']}",
        "train.max_steps=3",
    )
    Trainer.from_config(cfg).run()
    rows = losses(tmp_path / "r")
    assert all(r["aux_per_token"] > 0 for r in rows.values())
    r = rows[3]
    assert r["flops_surrogate"] > 0 and r["flops"] == pytest.approx(
        r["flops_base"] + r["flops_surrogate"]
    )
    assert r["tokens"] == 3 * 4 * 32
    ck = tmp_path / "r" / "checkpoints" / "step_00000003"
    meta = json.loads((ck / "meta.json").read_text())
    assert meta["tokens"] == r["tokens"]
    from transformers import AutoModelForCausalLM

    assert AutoModelForCausalLM.from_pretrained(ck / "model").config.vocab_size % 128 == 0
    assert (tmp_path / "r" / "vocab_map" / "vocab_map.json").is_file()


def test_lambda_zero_reproduces_cross_entropy(tiny_world, tmp_path):
    """λ = 0 is CE exactly with Z = N ("tokens") and Z = N + λV ("weighted"); with the
    default Z = N + V ("targets") the loss is CE scaled by N/(N+V) (README, Decisions)."""
    Trainer.from_config(cfg_for(tiny_world, tmp_path / "ce", "train.max_steps=3")).run()
    runs = {}
    for norm in ("tokens", "weighted", "targets"):
        Trainer.from_config(
            cfg_for(
                tiny_world,
                tmp_path / norm,
                *LSAP,
                f"surrogate.model={tiny_world['surrogate']}",
                "lsap.lam=0.0",
                f"lsap.normalization={norm}",
                "train.max_steps=3",
            )
        ).run()
        runs[norm] = losses(tmp_path / norm)
    a = losses(tmp_path / "ce")
    n = 4 * 32  # labelled positions per step (packed windows: every position has a label)
    for norm in ("tokens", "weighted"):
        b = runs[norm]
        assert b[1]["aux_per_token"] > 0  # targets were proposed, λ = 0 ignores them
        for s in (1, 2, 3):
            assert a[s]["ce"] == b[s]["ce"] and a[s]["loss"] == b[s]["loss"], (norm, s)
            assert a[s]["grad_norm"] == b[s]["grad_norm"], (norm, s)
            assert b[s]["z"] == n
    t = runs["targets"]
    for s in (1, 2, 3):
        v = t[s]["aux_per_token"] * n
        assert t[s]["z"] == n + v > n
        assert t[s]["loss"] == pytest.approx(t[s]["ce"] * n / (n + v), rel=1e-12)
    assert t[1]["ce"] == a[1]["ce"]  # same model at step 1; only the scale differs
    assert t[1]["grad_norm"] == pytest.approx(
        a[1]["grad_norm"] * n / (n + t[1]["aux_per_token"] * n), rel=1e-5
    )


def test_weighted_normalization_follows_the_lambda_schedule(tiny_world, tmp_path):
    Trainer.from_config(
        cfg_for(
            tiny_world,
            tmp_path / "w",
            *LSAP,
            f"surrogate.model={tiny_world['surrogate']}",
            "lsap.lambda_schedule=cosine",
            "lsap.lam=1.0",
            "lsap.lam_min=0.0",
            "lsap.normalization=weighted",
            "train.max_steps=3",
        )
    ).run()
    rows = losses(tmp_path / "w")
    n = 4 * 32
    for s in (1, 2, 3):
        r = rows[s]
        assert r["z"] == pytest.approx(n + r["lam"] * r["aux_per_token"] * n, rel=1e-12)
        # the logged loss is (CE_sum + λ·aux_sum) / Z with the logged parts
        v = r["aux_per_token"] * n
        assert r["loss"] == pytest.approx(
            (r["ce"] * n + r["lam"] * r["aux"] * v) / r["z"], rel=1e-6
        )  # fp32 sums
    assert rows[1]["lam"] == 1.0 and rows[3]["lam"] < rows[2]["lam"] < 1.0


def test_grad_accumulation_does_not_reweight(tiny_world, tmp_path):
    Trainer.from_config(
        cfg_for(
            tiny_world,
            tmp_path / "a",
            *LSAP,
            f"surrogate.model={tiny_world['surrogate']}",
            "train.max_steps=3",
            "train.micro_batch_size=4",
        )
    ).run()
    Trainer.from_config(
        cfg_for(
            tiny_world,
            tmp_path / "b",
            *LSAP,
            f"surrogate.model={tiny_world['surrogate']}",
            "train.max_steps=3",
            "train.micro_batch_size=1",
        )
    ).run()
    a, b = losses(tmp_path / "a"), losses(tmp_path / "b")
    for s in (1, 2, 3):
        assert b[s]["loss"] == pytest.approx(a[s]["loss"], rel=1e-5)
        assert b[s]["grad_norm"] == pytest.approx(a[s]["grad_norm"], rel=1e-4)


def test_resume_continues_exactly(tiny_world, tmp_path, monkeypatch):
    args = (*LSAP, f"surrogate.model={tiny_world['surrogate']}", "train.ckpt_every=3")
    Trainer.from_config(cfg_for(tiny_world, tmp_path / "full", *args)).run()
    t = Trainer.from_config(cfg_for(tiny_world, tmp_path / "cut", *args))
    real_step = t.train_step

    def killed():
        if t.step == 4:
            raise KeyboardInterrupt
        return real_step()

    monkeypatch.setattr(t, "train_step", killed)
    with pytest.raises(KeyboardInterrupt):
        t.run()
    with pytest.raises(TrainingError, match="--resume"):
        Trainer.from_config(cfg_for(tiny_world, tmp_path / "cut", *args))
    Trainer.from_config(cfg_for(tiny_world, tmp_path / "cut", *args), resume=True).run()
    full, cut = losses(tmp_path / "full"), losses(tmp_path / "cut")
    assert sorted(cut) == sorted(full) == [1, 2, 3, 4, 5, 6]
    for s in range(1, 7):
        assert cut[s]["loss"] == full[s]["loss"], s
        assert cut[s]["flops"] == full[s]["flops"]


def test_budgets(tiny_world, tmp_path):
    t = Trainer.from_config(
        cfg_for(tiny_world, tmp_path / "b", "train.max_steps=0", "train.max_tokens=1000")
    )
    assert t.c.budget.total_steps == 1000 // (4 * 32) and t.c.budget.limited_by == "max_tokens"
    per_step = t.c.budget.flops_per_step
    t = Trainer.from_config(
        cfg_for(
            tiny_world, tmp_path / "c", "train.max_steps=100", f"train.max_flops={per_step * 5.5}"
        )
    )
    assert t.c.budget.total_steps == 5 and t.c.budget.limited_by == "max_flops"
    with pytest.raises(TrainingError, match="smaller than one optimizer step"):
        Trainer.from_config(
            cfg_for(tiny_world, tmp_path / "d", "train.max_steps=0", "train.max_tokens=10")
        )
    with pytest.raises(ConfigError, match="no budget"):
        cfg_for(tiny_world, tmp_path / "e", "train.max_steps=0")


def test_bad_input_errors(tiny_world, tmp_path):
    with pytest.raises(ConfigError, match="did you mean 'lsap.alpha'"):
        cfg_for(tiny_world, tmp_path, "lsap.alpah=0.1")
    with pytest.raises(ConfigError, match="lsap.alpha must lie"):
        cfg_for(tiny_world, tmp_path, "lsap.alpha=1.5")
    with pytest.raises(ConfigError, match="needs surrogate.model"):
        cfg_for(tiny_world, tmp_path, "loss=lsap")
    from lsap.data.shards import DataError

    with pytest.raises(DataError, match="no manifest"):
        Trainer.from_config(cfg_for(tiny_world, tmp_path / "x", f"data.dir={tmp_path}"))
    with pytest.raises(TrainingError, match="multiple of"):
        Trainer.from_config(cfg_for(tiny_world, tmp_path / "y", "train.micro_batch_size=3"))


def test_nan_loss_stops_with_step_and_checkpoint(tiny_world, tmp_path):
    t = Trainer.from_config(
        cfg_for(
            tiny_world, tmp_path / "n", "optim.lr=1e30", "optim.grad_clip=0", "optim.warmup_steps=0"
        )
    )
    with pytest.raises(TrainingError, match=r"non-finite loss .* at step \d+; last checkpoint"):
        t.run()


def _torchrun(world, out, nproc, *extra):
    args = [
        f"data.dir={world['data']}",
        f"out_dir={out}",
        "data.seq_len=32",
        "train.batch_size=4",
        "train.max_steps=3",
        "train.log_every=1",
        "optim.warmup_steps=1",
        "train.eval_batches=1",
        f"train.micro_batch_size={4 // nproc}",
        *extra,
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = (
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            f"--nproc_per_node={nproc}",
            "-m",
            "lsap",
            "train",
            *args,
        ]
        if nproc > 1
        else [sys.executable, "-m", "lsap", "train", *args]
    )
    r = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    return losses(out)


@pytest.mark.parametrize("strategy", ["ddp", "fsdp"])
def test_two_gloo_processes_match_one(tiny_world, tmp_path, strategy):
    extra = (*LSAP, f"surrogate.model={tiny_world['surrogate']}", f"train.distributed={strategy}")
    one = _torchrun(tiny_world, tmp_path / "one", 1, *extra)
    two = _torchrun(tiny_world, tmp_path / "two", 2, *extra)
    for s in (1, 2, 3):
        assert two[s]["loss"] == pytest.approx(one[s]["loss"], rel=1e-4), s
        assert two[s]["aux_per_token"] == pytest.approx(one[s]["aux_per_token"]), s
        assert two[s]["tokens"] == one[s]["tokens"]


# FSDP2 bf16 mixed precision vs fp32: tests/test_distributed.py (over enough steps, weights too)


def test_train_step_on_a_hand_built_model(tmp_path):
    """`Trainer(cfg, components, dist)` runs one step on parts built by hand: the logged loss is
    the model's mean CE, and the update is torch's AdamW on that loss (clipped)."""
    import copy

    import torch.nn.functional as F

    from lsap.data.shards import Batch
    from lsap.distributed import Dist
    from lsap.method.flops import FlopsLedger, plan_steps
    from lsap.method.schedules import LRSchedule
    from lsap.model import build_model, model_config
    from lsap.train.loop import Components, LossModule

    torch.manual_seed(0)
    lm = build_model(
        model_config(
            "olmo2-tiny",
            vocab_size=96,
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=1,
            num_attention_heads=2,
            num_key_value_heads=2,
        ),
        seed=0,
    )
    ref = copy.deepcopy(lm)
    x = torch.randint(0, 96, (3, 17))

    class Loader:
        def next_batch(self):
            return Batch(x[:, :-1], x[:, 1:], torch.arange(3))

    cfg = load_config(
        None,
        [
            f"out_dir={tmp_path / 'r'}",
            "data.dir=unused",
            "optim.grad_clip=0.5",
            "train.max_steps=1",
        ],
    )
    adamw = dict(lr=1e-2, betas=(0.9, 0.95), eps=1e-8, weight_decay=0.0)
    module = LossModule(lm, "linear")
    c = Components(
        shards=None,
        val=None,
        tokenizer=None,
        model_config=lm.config,
        lm=lm,
        targets=None,
        ledger=FlopsLedger(1.0, 0.0),
        budget=plan_steps(48, 1.0, max_steps=1),
        accum=1,
        module=module,
        wrapped=module,
        opt=torch.optim.AdamW(lm.parameters(), **adamw),
        lr_at=LRSchedule(1e-2, 0, 1, 1.0),
        lam_at=None,
        loader=Loader(),
        autocast=False,
    )
    t = Trainer(cfg, c, Dist())
    row = t.train_step()

    opt = torch.optim.AdamW(ref.parameters(), **adamw)
    loss = F.cross_entropy(ref(input_ids=x[:, :-1]).logits.flatten(0, 1), x[:, 1:].flatten())
    loss.backward()
    gn = torch.nn.utils.clip_grad_norm_(ref.parameters(), 0.5)
    opt.step()
    assert t.step == 1 and row["loss"] == pytest.approx(float(loss), rel=1e-5)
    assert row["grad_norm"] == pytest.approx(float(gn), rel=1e-4) and row["z"] == 48
    for (name, p), q in zip(lm.named_parameters(), ref.parameters()):
        torch.testing.assert_close(
            p, q, rtol=1e-4, atol=1e-5, msg=lambda m: f"{name}: {m}"
        )  # Adam: fp32 noise / sqrt(v)


def test_resume_into_another_width_without_config_yaml_does_not_fit(tiny_world, tmp_path):
    out = tmp_path / "r"
    Trainer.from_config(cfg_for(tiny_world, out, "train.max_steps=2")).run()
    for p in [out / "config.yaml", *out.glob("checkpoints/*/config.yaml")]:
        p.unlink()  # a checkpoint copied without its config: the config diff cannot refuse it
    with pytest.raises(
        TrainingError,
        match=r"does not fit the model: .* is \(\d+, 64\) in the checkpoint, "
        r"\(\d+, 96\) in the model",
    ):
        Trainer.from_config(
            cfg_for(
                tiny_world,
                out,
                "train.max_steps=4",
                "model.overrides.hidden_size=96",
                "model.overrides.num_attention_heads=4",
                "model.overrides.num_key_value_heads=4",
            ),
            resume=True,
        )
    assert not (out / ".lsap.utils.lock").exists()  # the refusal released the directory


_WRITER = """
import sys
from lsap.config import load_config
from lsap.train.loop import train
cfg = load_config(None, sys.argv[1:])
train(cfg, resume="auto", quiet=True, log=lambda m: print(m, flush=True))
"""


def test_two_pipelines_never_share_a_run_dir(tiny_world, tmp_path):
    """Issue 20: the entry point locks out_dir before touching it. A second writer (a second
    `lsap sweep` on the same --runs-root) meets a live run with no checkpoint yet: it is
    refused by name and the live run is neither deleted nor co-written."""
    import time

    out = tmp_path / "r"
    args = [
        f"data.dir={tiny_world['data']}",
        f"out_dir={out}",
        "data.seq_len=32",
        "train.batch_size=4",
        "train.micro_batch_size=2",
        "train.max_steps=300",
        "train.log_every=1",
        "train.ckpt_every=0",
        "train.eval_every=0",
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    a = subprocess.Popen(
        [sys.executable, "-c", _WRITER, *args],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.time() + 240
        while not (
            (out / "metrics.jsonl").is_file()
            and (out / "metrics.jsonl").read_text().count("\n") >= 2
        ):
            assert a.poll() is None, a.communicate()
            assert time.time() < deadline
            time.sleep(0.2)
        b = subprocess.run(
            [sys.executable, "-c", _WRITER, *args],
            env=env,
            capture_output=True,
            text=True,
            timeout=240,
        )
        assert b.returncode != 0 and f"is being written by pid {a.pid}" in b.stderr, b.stderr[
            -2000:
        ]
        assert a.poll() is None  # the first writer is still running, its directory intact
        assert (out / "config.yaml").is_file() and (out / "train.log").is_file()
    finally:
        a.kill()
        a.wait()
    steps = [
        json.loads(ln)["step"]
        for ln in (out / "metrics.jsonl").read_text().splitlines()
        if ln.strip()
    ]
    assert steps == list(range(1, len(steps) + 1))  # one writer's lines only


def test_label_smoothing_trains_and_refuses_lsap(tiny_world, tmp_path):
    """train.label_smoothing: a CE run trains with it (step 1's loss differs from plain CE's,
    its logged ce is the plain NLL of the same initial model); an LSAP run refuses it."""
    Trainer.from_config(cfg_for(tiny_world, tmp_path / "ce", "train.max_steps=1")).run()
    Trainer.from_config(
        cfg_for(tiny_world, tmp_path / "ls", "train.max_steps=1", "train.label_smoothing=0.2")
    ).run()
    a, b = losses(tmp_path / "ce")[1], losses(tmp_path / "ls")[1]
    assert b["ce"] == pytest.approx(a["ce"], rel=1e-5) and abs(b["loss"] - a["loss"]) > 1e-3
    with pytest.raises(ConfigError, match="label_smoothing"):
        Trainer.from_config(
            cfg_for(
                tiny_world,
                tmp_path / "bad",
                *LSAP,
                "train.label_smoothing=0.2",
                f"surrogate.model={tiny_world['surrogate']}",
            )
        )
