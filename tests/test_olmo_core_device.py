"""Targets are computed on the surrogate's device whatever device the batch arrives on
(issue 29 item 1: OLMo-core hands `train_batch` CPU batches; an online surrogate on the GPU
crashed at step 1). CPU-only: the surrogate lives on the `meta` device and asserts it."""

from __future__ import annotations

import pytest
import torch

pytest.importorskip("olmo_core")


class _Reached(Exception):
    pass


class _MetaSurrogate(torch.nn.Module):
    """A surrogate whose parameters live on `meta`; it checks its inputs' device and stops."""

    def __init__(self):
        super().__init__()
        self.w = torch.nn.Parameter(torch.empty(2, device="meta"))

    def forward(self, input_ids=None, **kw):
        assert input_ids.device.type == "meta", f"surrogate got inputs on {input_ids.device}"
        raise _Reached


def test_online_targets_move_batch_to_surrogate_device(monkeypatch):
    from lsap.data.shards import Batch
    from lsap.surrogate import sources

    seen = {}

    def fake_propose(surrogate, x, y, vmap, k, alpha, pad_id=0):
        seen["x"], seen["y"] = x.device, y.device
        surrogate(input_ids=x)

    monkeypatch.setattr(sources, "propose_targets", fake_propose)
    src = sources.OnlineTargets(_MetaSurrogate(), vmap=None, k=2, alpha=0.1)
    x = torch.zeros(2, 5, dtype=torch.long)  # a CPU batch, as OLMo-core's loader hands it
    with pytest.raises(_Reached):
        src(Batch(x, x.clone(), torch.arange(2)))
    assert seen == {"x": torch.device("meta"), "y": torch.device("meta")}


def test_train_module_passes_batch_to_source_on_its_own_device():
    """The integration hands the (CPU) micro-batch to the source unmoved; the source moves it,
    and `pack_labels` brings the targets back to the labels' device."""
    from lsap.integrations.olmo_core import pack_labels
    from lsap.method.targets import AuxTargets

    labels = torch.tensor([[1, 2, -100]])
    aux = AuxTargets(
        torch.tensor([[[3], [4], [5]]]), torch.tensor([[[True], [False], [True]]]), None
    )
    packed = pack_labels(labels, aux)
    assert packed.device == labels.device
    assert packed.tolist() == [[[1, 3], [2, -100], [-100, 5]]]
