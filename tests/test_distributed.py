"""The GPU-path switches that also exist on CPU: activation checkpointing, torch.compile,
FSDP2 mixed precision (2 gloo processes vs one fp32 process, here; DDP/FSDP fp32 in test_train)."""

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from lsap import distributed
from lsap.model import build_model, model_config
from lsap.train.loop import LossModule


def _tiny(seed=0):
    cfg = model_config("olmo2-tiny", vocab_size=96, num_hidden_layers=2)
    return build_model(cfg, seed=seed)


def _batch(seed=0, B=2, T=24, V=96, K=3):
    g = torch.Generator().manual_seed(seed)
    x = torch.randint(0, V, (B, T + 1), generator=g)
    ids = torch.randint(0, V, (B, T, K), generator=g)
    mask = torch.rand(B, T, K, generator=g) < 0.4
    return x[:, :-1], x[:, 1:], torch.where(mask, ids, -1), mask


def _grads(module):
    return {n: p.grad.clone() for n, p in module.named_parameters() if p.grad is not None}


def test_activation_checkpointing_equals_plain_and_recomputes():
    plain, ac = LossModule(_tiny()), LossModule(_tiny())
    distributed.checkpoint_blocks(ac.lm.model.layers)
    distributed.checkpoint_blocks(ac.lm.model.layers)  # idempotent
    calls = {"plain": 0, "ac": 0}
    for name, m in (("plain", plain), ("ac", ac)):
        for layer in m.lm.model.layers:
            layer.mlp.register_forward_hook(lambda *_, n=name: calls.__setitem__(n, calls[n] + 1))
    x, y, ids, mask = _batch()
    outs = []
    for m in (plain, ac):
        loss, *_ = m(x, y, ids, mask, None, 0.7)
        loss.backward()
        outs.append(loss.detach())
    assert calls == {"plain": 2, "ac": 4}  # each block ran again in backward
    assert torch.equal(outs[0], outs[1])
    a, b = _grads(plain), _grads(ac)
    assert a.keys() == b.keys() and len(a) > 0
    for n in a:
        torch.testing.assert_close(a[n], b[n], rtol=1e-6, atol=1e-7, msg=n)
    assert set(plain.state_dict()) == set(ac.state_dict())  # checkpoints keep their names


@pytest.mark.slow  # ~90 s on 2 cores (inductor compiles the block and the loss chunk)
def test_compile_equals_eager_over_steps():
    """train.compile: compiled blocks + compiled loss chunk track eager over a few AdamW steps."""
    torch._dynamo.reset()
    eager, comp = LossModule(_tiny()), LossModule(_tiny(), compile_loss=True)
    distributed.compile_blocks(comp.lm.model.layers)
    opts = [torch.optim.AdamW(m.parameters(), lr=1e-2, foreach=True) for m in (eager, comp)]
    t0 = time.perf_counter()
    for step in range(3):
        x, y, ids, mask = _batch(seed=step)
        losses = []
        for m, opt in zip((eager, comp), opts):
            loss, ce, aux, *_ = m(x, y, ids, mask, None, 0.5)
            loss.backward()
            opt.step()
            opt.zero_grad()
            losses.append((float(loss.detach()), float(ce), float(aux)))
        for a, b in zip(*losses):
            assert b == pytest.approx(a, rel=1e-4), step
    for (n, p), q in zip(eager.named_parameters(), comp.parameters()):
        torch.testing.assert_close(p, q, rtol=1e-3, atol=1e-4, msg=n)
    assert set(eager.state_dict()) == set(comp.state_dict())
    assert time.perf_counter() - t0 < 120  # a compile regression shows here, not as a hang


def test_fsdp_mixed_precision_is_validated():
    from lsap.config import ConfigError, load_config

    with pytest.raises(ConfigError, match="needs train.distributed=fsdp"):
        load_config(None, ["data.dir=x", "train.max_steps=1", "train.fsdp_mixed_precision=bf16"])
    with pytest.raises(ConfigError, match="fsdp_mixed_precision"):
        load_config(
            None,
            [
                "data.dir=x",
                "train.max_steps=1",
                "train.fsdp_mixed_precision=fp16",
                "train.distributed=fsdp",
            ],
        )
    with pytest.raises(ValueError, match="mixed_precision"):
        distributed.wrap(
            torch.nn.Linear(2, 2), distributed.Dist(world_size=2), "fsdp", mixed_precision="fp8"
        )


def _run(world, out, nproc, *extra):
    """`lsap train` on the tiny world: 1 process, or 2 gloo processes under torchrun."""
    import lsap

    src = str(Path(lsap.__file__).resolve().parents[1])
    args = [
        f"data.dir={world['data']}",
        f"out_dir={out}",
        "data.seq_len=32",
        "train.batch_size=4",
        "train.log_every=1",
        "optim.warmup_steps=1",
        "train.eval_batches=1",
        f"train.micro_batch_size={4 // nproc}",
        *extra,
    ]
    env = {
        **os.environ,
        "OMP_NUM_THREADS": "1",
        "PYTHONPATH": src + os.pathsep + os.environ.get("PYTHONPATH", ""),
    }
    launch = (
        ["-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}"]
        if nproc > 1
        else []
    )
    r = subprocess.run(
        [sys.executable, *launch, "-m", "lsap", "train", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=900,
    )
    assert r.returncode == 0, r.stderr[-3000:]
    rows = [
        json.loads(x) for x in (Path(out) / "metrics.jsonl").read_text().splitlines() if x.strip()
    ]
    return {r["step"]: r for r in rows if r["kind"] == "train"}


def _weights(out, step):
    from safetensors.torch import load_file

    d = Path(out) / "checkpoints" / f"step_{step:08d}" / "model"
    sd = {}
    for f in sorted(d.glob("*.safetensors")):
        sd.update(load_file(f))
    return sd


def _dist(a, b):
    return float(sum(((a[k].double() - b[k].double()) ** 2).sum() for k in a) ** 0.5)


@pytest.mark.slow  # three runs of 12 steps, two of them 2-process torchrun: ~2-4 min on 2 cores
def test_fsdp2_bf16_tracks_fp32_within_the_measured_bf16_error(tiny_world, tmp_path):
    """FSDP2 MixedPrecisionPolicy (bf16 params in compute, fp32 reduce) + per-block
    activation checkpointing on 2 gloo processes vs one fp32 process, over enough steps
    that the loss moves far more than bf16 rounding does. The tolerance is the bf16 error
    measured on the same model and data (one process, bf16 autocast vs fp32); losses at
    every step and the final weights must stay within a small multiple of it, and the
    weights must have moved: an FSDP2 path that never updates, or updates wrongly, fails."""
    steps = 12
    extra = (
        "loss=lsap",
        "lsap.alpha=0.02",
        "lsap.k=4",
        f"surrogate.model={tiny_world['surrogate']}",
        f"train.max_steps={steps}",
        "optim.lr=3e-3",
        "train.ckpt_at=[1]",
    )
    fp32 = _run(tiny_world, tmp_path / "fp32", 1, *extra)
    bf16 = _run(tiny_world, tmp_path / "bf16", 1, *extra, "train.precision=bf16")
    fsdp = _run(
        tiny_world,
        tmp_path / "fsdp",
        2,
        *extra,
        "train.distributed=fsdp",
        "train.fsdp_mixed_precision=bf16",
        "train.activation_checkpointing=true",
    )
    S = range(1, steps + 1)
    bf16_err = max(abs(bf16[s]["loss"] - fp32[s]["loss"]) for s in S)
    tol = 4 * bf16_err
    moved = fp32[1]["loss"] - fp32[steps]["loss"]
    fsdp_err = [abs(fsdp[s]["loss"] - fp32[s]["loss"]) for s in S]
    print(
        f"loss moved {moved:.4f} over {steps} steps; bf16 autocast error ≤ {bf16_err:.2e}; "
        f"FSDP2-bf16 error ≤ {max(fsdp_err):.2e} (tolerance {tol:.2e})"
    )
    assert (
        0 < bf16_err and moved > 10 * tol
    )  # a run that stalls at step 1's loss is out of tolerance
    assert max(fsdp_err) <= tol, fsdp_err
    assert max(fsdp_err) > 0  # bf16 compute did happen
    for s in S:
        assert fsdp[s]["aux_per_token"] == pytest.approx(fp32[s]["aux_per_token"]), s
        assert fsdp[s]["tokens"] == fp32[s]["tokens"]
    w1, w = _weights(tmp_path / "fp32", 1), _weights(tmp_path / "fp32", steps)
    wb, wf = _weights(tmp_path / "bf16", steps), _weights(tmp_path / "fsdp", steps)
    assert w.keys() == wf.keys() and all(
        v.dtype == torch.float32 for v in wf.values()
    )  # fp32 master weights
    update = _dist(w, w1)
    assert _dist(wf, w1) > 0.5 * update  # FSDP2 moved the weights as far as fp32 did
    rel_bf16, rel_fsdp = _dist(wb, w) / update, _dist(wf, w) / update
    print(
        f"weights after {steps} steps: |fsdp - fp32| = {rel_fsdp:.3f}, |bf16 - fp32| = {rel_bf16:.3f} "
        "(× the fp32 update since step 1)"
    )
    assert rel_fsdp <= 4 * rel_bf16 and rel_fsdp < 0.2
