"""The GPU-path switches that also exist on CPU: activation checkpointing, torch.compile,
FSDP2 mixed precision (the 2-process gloo run is in test_train)."""

import time

import pytest
import torch

from lsap import distributed
from lsap.model import build_model, model_config
from lsap.train import LossModule


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
        load_config(None, ["data.dir=x", "train.max_steps=1", "train.fsdp_mixed_precision=fp16",
                           "train.distributed=fsdp"])
    with pytest.raises(ValueError, match="mixed_precision"):
        distributed.wrap(torch.nn.Linear(2, 2), distributed.Dist(world_size=2), "fsdp", mixed_precision="fp8")
