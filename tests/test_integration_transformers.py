"""`lsap.integrations.transformers.LSAPTrainer` against transformers' own Trainer and lsap's trainer.

Tiny models on CPU (the session's tiny_world: 0.2M-parameter OLMo2 base, 1-layer random
Llama surrogate); every comparison is for the same batches in the same order.
"""

import copy
import json
import math
from pathlib import Path

import pytest
import torch

transformers = pytest.importorskip("transformers")

from lsap.config import load_config  # noqa: E402
from lsap.data.tokenizer import load_tokenizer  # noqa: E402
from lsap.integrations.transformers import LSAPTrainer, WindowDataset  # noqa: E402
from lsap.train.loop import Trainer  # noqa: E402

T = 32
K, ALPHA = 4, 0.02


def _args(out, **kw):
    base = dict(
        output_dir=str(out),
        per_device_train_batch_size=2,
        gradient_accumulation_steps=2,
        max_steps=3,
        learning_rate=4e-4,
        lr_scheduler_type="constant",
        warmup_steps=0,
        weight_decay=0.0,
        adam_beta1=0.9,
        adam_beta2=0.95,
        adam_epsilon=1e-8,
        max_grad_norm=1.0,
        logging_steps=1,
        save_strategy="no",
        report_to="none",
        use_cpu=True,
        seed=0,
        dataloader_num_workers=0,
        disable_tqdm=True,
    )
    return transformers.TrainingArguments(**{**base, **kw})


def _lsap_cfg(world, out, *extra):
    return load_config(
        None,
        [
            f"data.dir={world['data']}",
            f"out_dir={out}",
            f"data.seq_len={T}",
            "train.batch_size=4",
            "train.micro_batch_size=2",
            "train.max_steps=3",
            "train.log_every=1",
            "optim.warmup_steps=0",
            "optim.min_lr_ratio=1.0",
            "optim.weight_decay=0.0",
            "train.eval_batches=1",
            "loss=lsap",
            f"lsap.k={K}",
            f"lsap.alpha={ALPHA}",
            f"surrogate.model={world['surrogate']}",
            *extra,
        ],
    )


@pytest.fixture(scope="module")
def base(tiny_world, tmp_path_factory):
    """The untrained base model lsap's trainer builds (so both trainers start from it) and its tokenizer."""
    t = Trainer.from_config(_lsap_cfg(tiny_world, tmp_path_factory.mktemp("init") / "r"))
    return copy.deepcopy(t.c.lm), load_tokenizer(tiny_world["base_tok"])


def _lsap_rows(out):
    rows = [json.loads(line) for line in (Path(out) / "metrics.jsonl").read_text().splitlines()]
    return {r["step"]: r for r in rows if r["kind"] == "train"}


def _hf_rows(trainer):
    return {r["step"]: r for r in trainer.state.log_history if "loss" in r}


def test_losses_and_updates_equal_lsap_trainer(tiny_world, base, tmp_path):
    lm, tok = base
    Trainer.from_config(_lsap_cfg(tiny_world, tmp_path / "own")).run()
    own = _lsap_rows(tmp_path / "own")
    model = copy.deepcopy(lm)
    hf = LSAPTrainer(
        model=model,
        args=_args(tmp_path / "hf"),
        train_dataset=WindowDataset(tiny_world["data"], T),
        data_collator=transformers.default_data_collator,
        processing_class=tok,
        surrogate=tiny_world["surrogate"],
        k=K,
        alpha=ALPHA,
        lam=1.0,
    )
    hf.train()
    rows = _hf_rows(hf)
    for s in (1, 2, 3):
        assert rows[s]["aux_per_token"] == own[s]["aux_per_token"] > 0, s
        for key in ("loss", "ce", "aux", "grad_norm"):
            assert rows[s][key] == pytest.approx(own[s][key], rel=1e-5), (s, key)
        assert rows[s]["lam"] == own[s]["lam"] == 1.0
    # same update: the trained weights agree with lsap's final checkpoint
    from transformers import AutoModelForCausalLM

    theirs = AutoModelForCausalLM.from_pretrained(
        tmp_path / "own" / "checkpoints" / "step_00000003" / "model"
    )
    for (name, p), q in zip(model.named_parameters(), theirs.parameters()):
        # Adam moves an element by <= ~lr a step and turns fp32 rounding of a near-zero gradient
        # into up to that much: 1% of the total step (3 steps × lr 4e-4), not a CPU-tuned 1e-6
        torch.testing.assert_close(
            p.detach(), q.detach(), rtol=1e-4, atol=0.01 * 3 * 4e-4, msg=lambda m: f"{name}: {m}"
        )


def _one_step_grads(trainer, model, batch):
    samples, n = trainer.get_batch_samples(iter([dict(batch)]), 1, trainer.args.device)
    model.zero_grad(set_to_none=True)
    loss = trainer.training_step(model, samples[0], n)
    return loss, {k: p.grad.clone() for k, p in model.named_parameters()}, samples[0]


@pytest.mark.parametrize("normalization", ["weighted", "tokens", "targets"])
def test_lambda_zero_is_transformers_cross_entropy(tiny_world, base, tmp_path, normalization):
    lm, tok = base
    it = iter(WindowDataset(tiny_world["data"], T))
    batch = transformers.default_data_collator([next(it) for _ in range(4)])
    ce_model, ls_model = copy.deepcopy(lm), copy.deepcopy(lm)
    args = _args(tmp_path / "x", per_device_train_batch_size=4, gradient_accumulation_steps=1)
    plain = transformers.Trainer(model=ce_model, args=args)
    ls = LSAPTrainer(
        model=ls_model,
        args=args,
        processing_class=tok,
        surrogate=tiny_world["surrogate"],
        k=K,
        alpha=ALPHA,
        lam=0.0,
        normalization=normalization,
    )
    ce_loss, ce_grads, _ = _one_step_grads(
        plain, ce_model, {k: v for k, v in batch.items() if k != "window_ids"}
    )
    loss, grads, inputs = _one_step_grads(ls, ls_model, batch)
    n = int((batch["labels"][:, 1:] != -100).sum())
    v = int(inputs["lsap_aux_mask"].sum())
    assert v > 0  # targets were proposed; λ = 0 ignores them
    scale = (
        n / (n + v) if normalization == "targets" else 1.0
    )  # README, Decisions: Z = N + V at λ = 0
    torch.testing.assert_close(loss, ce_loss * scale, rtol=1e-6, atol=0)
    for name, g in grads.items():  # chunked head vs full logits: fp32 rounding only
        ref = ce_grads[name] * scale
        torch.testing.assert_close(
            g, ref, rtol=1e-5, atol=1e-5 * float(ref.abs().max()), msg=lambda m: f"{name}: {m}"
        )


def test_grad_accumulation_one_vs_four_same_update(tiny_world, base, tmp_path):
    lm, tok = base
    models = {}
    logs = {}
    for per_device, ga in ((4, 1), (1, 4)):
        # fp64: fp32 kernels round differently per CPU (AVX2 vs AVX-512) and Adam divides a
        # gradient at rounding level by adam_epsilon, so a fp32 comparison of the weights has
        # no tolerance that is both tight and safe; in fp64 the same amplification is < 1e-9.
        model = copy.deepcopy(lm).double()
        tr = LSAPTrainer(
            model=model,
            args=_args(
                tmp_path / f"ga{ga}",
                per_device_train_batch_size=per_device,
                gradient_accumulation_steps=ga,
                max_steps=2,
            ),
            train_dataset=WindowDataset(tiny_world["data"], T),
            data_collator=transformers.default_data_collator,
            processing_class=tok,
            surrogate=tiny_world["surrogate"],
            k=K,
            alpha=ALPHA,
        )
        tr.train()
        models[ga], logs[ga] = model, _hf_rows(tr)
    for s in (1, 2):
        for key in ("loss", "ce", "aux_per_token", "grad_norm"):
            assert logs[4][s][key] == pytest.approx(logs[1][s][key], rel=1e-5), (s, key)
    for (name, p), q in zip(models[1].named_parameters(), models[4].parameters()):
        assert p.dtype == torch.float64
        # the step is ~lr per element; fp64 noise × lr / adam_epsilon stays far below 1e-3 × lr
        torch.testing.assert_close(p, q, rtol=0, atol=1e-3 * 4e-4 * 2, msg=lambda m: f"{name}: {m}")


def test_store_equals_online_and_flops_include_the_surrogate(tiny_world, base, tmp_path):
    from lsap.data.shards import prepare
    from lsap.method.flops import inference_flops_per_token
    from lsap.surrogate.load import load_surrogate
    from lsap.surrogate.store_build import build_store

    lm, tok = base
    data = tmp_path / "data"
    prepare(
        tiny_world["base_tok"],
        "pydoc-topics",
        data,
        val_fraction=0.1,
        max_tokens=2000,
        progress=False,
    )
    build_store(
        tiny_world["surrogate"],
        str(data),
        T,
        tmp_path / "store",
        k=K,
        min_alpha=0.01,
        progress=False,
    )
    runs = {}
    for name, source in (
        ("online", {"surrogate": tiny_world["surrogate"]}),
        ("store", {"target_store": tmp_path / "store"}),
    ):
        model = copy.deepcopy(lm)
        tr = LSAPTrainer(
            model=model,
            args=_args(tmp_path / name, max_steps=2),
            train_dataset=WindowDataset(data, T),
            data_collator=transformers.default_data_collator,
            processing_class=tok,
            k=K,
            alpha=ALPHA,
            **source,
        )
        tr.train()
        runs[name] = (tr, _hf_rows(tr))
    for s in (1, 2):
        assert runs["online"][1][s]["aux_per_token"] > 0
        for key in ("loss", "ce", "aux", "aux_per_token", "grad_norm"):
            assert runs["store"][1][s][key] == pytest.approx(runs["online"][1][s][key], rel=1e-6), (
                s,
                key,
            )
    # FLOPs: Trainer's 6·N (non-embedding) per token plus the surrogate's 2·N_s per token
    tr = runs["online"][0]
    tokens = 2 * 4 * (T + 1)
    n_s = inference_flops_per_token(load_surrogate(tiny_world["surrogate"])[0].config)
    want = tokens * (6 * tr.model.num_parameters(exclude_embeddings=True) + n_s)
    assert tr.state.total_flos == pytest.approx(want, rel=1e-9)
    assert runs["store"][0].state.total_flos == pytest.approx(want, rel=1e-9)


def test_store_for_other_data_is_refused_as_by_lsap_train(tiny_world, base, tmp_path):
    """One factory (`lsap.surrogate.sources.TargetSpec`): LSAPTrainer checks a store against its
    train dataset exactly as `lsap train` does, with the same message."""
    from lsap.data.shards import prepare
    from lsap.surrogate.store_build import build_store
    from lsap.utils.errors import StoreError

    lm, tok = base
    small = tmp_path / "small"
    prepare(
        tiny_world["base_tok"],
        "pydoc-topics",
        small,
        val_fraction=0.1,
        max_tokens=600,
        progress=False,
    )
    build_store(
        tiny_world["surrogate"],
        str(small),
        T,
        tmp_path / "store",
        k=K,
        min_alpha=0.01,
        progress=False,
    )
    with pytest.raises(StoreError, match="other data") as by_train:
        Trainer.from_config(
            _lsap_cfg(
                tiny_world,
                tmp_path / "r",
                "surrogate.source=store",
                f"surrogate.store_dir={tmp_path / 'store'}",
            )
        )
    with pytest.raises(StoreError, match="other data") as by_hf:
        LSAPTrainer(
            model=copy.deepcopy(lm),
            args=_args(tmp_path / "hf"),
            processing_class=tok,
            k=K,
            alpha=ALPHA,
            train_dataset=WindowDataset(tiny_world["data"], T),
            target_store=tmp_path / "store",
        )
    assert str(by_hf.value) == str(by_train.value)
    with pytest.raises(
        StoreError, match="WindowDataset"
    ):  # no shards to check against: refused, not trusted
        LSAPTrainer(
            model=copy.deepcopy(lm),
            args=_args(tmp_path / "hf2"),
            processing_class=tok,
            k=K,
            alpha=ALPHA,
            target_store=tmp_path / "store",
        )


def test_bad_arguments(tiny_world, base, tmp_path):
    lm, tok = base
    with pytest.raises(ValueError, match="exactly one"):
        LSAPTrainer(model=copy.deepcopy(lm), args=_args(tmp_path / "a"), processing_class=tok)
    with pytest.raises(ValueError, match="normalization"):
        LSAPTrainer(
            model=copy.deepcopy(lm),
            args=_args(tmp_path / "b"),
            processing_class=tok,
            surrogate=tiny_world["surrogate"],
            normalization="avg",
        )


def test_example_script_runs(tiny_world, tmp_path):
    import importlib.util

    path = Path(__file__).resolve().parents[1] / "examples" / "hf_trainer_pretrain.py"
    spec = importlib.util.spec_from_file_location("hf_trainer_pretrain", path)
    example = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(example)
    r = example.main(
        [
            "--out",
            str(tmp_path / "ex"),
            "--surrogate",
            tiny_world["surrogate"],
            "--steps",
            "2",
            "--seq-len",
            "32",
            "--batch-size",
            "2",
            "--grad-accum",
            "2",
            "--max-tokens",
            "0",
            "--vocab-size",
            "600",
            "--k",
            "4",
            "--alpha",
            "0.02",
        ]
    )
    assert (
        math.isfinite(r["eval_ce"]) and r["last_log"]["aux_per_token"] > 0 and r["total_flos"] > 0
    )


def _ddp_run(out, base_dir, world, nproc):
    import os
    import subprocess
    import sys

    worker = str(Path(__file__).with_name("hf_ddp_worker.py"))
    args = [str(out), str(base_dir), world["data"], world["surrogate"], str(4 // nproc)]
    cmd = (
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            f"--nproc_per_node={nproc}",
            worker,
        ]
        if nproc > 1
        else [sys.executable, worker]
    )
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    r = subprocess.run(cmd + args, capture_output=True, text=True, env=env, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    return json.loads((Path(out) / "logs.json").read_text()), torch.load(Path(out) / "weights.pt")


@pytest.mark.slow  # ~60 s on 2 cores (three interpreter starts, gloo)
def test_two_gloo_processes_match_one(tiny_world, base, tmp_path):
    """DDP: the global Z (N and V over both processes) gives one process's update."""
    lm, tok = base
    lm.save_pretrained(tmp_path / "base")
    tok.save_pretrained(tmp_path / "base")
    (tmp_path / "one").mkdir()
    (tmp_path / "two").mkdir()
    one_logs, one_w = _ddp_run(tmp_path / "one", tmp_path / "base", tiny_world, 1)
    two_logs, two_w = _ddp_run(tmp_path / "two", tmp_path / "base", tiny_world, 2)
    for a, b in zip(one_logs, two_logs, strict=True):
        assert b["aux_per_token"] == a["aux_per_token"] > 0
        for key in ("loss", "ce", "aux", "grad_norm"):
            assert b[key] == pytest.approx(a[key], rel=1e-5), key
    for name, w in one_w.items():
        # 1% of the largest Adam step (lr 4e-4 × 3 steps): fp32 reduction order differs by rank
        torch.testing.assert_close(
            two_w[name], w, rtol=1e-4, atol=0.01 * 3 * 4e-4, msg=lambda m: f"{name}: {m}"
        )
