"""The label-smoothing baseline arm (train.label_smoothing) against a direct computation."""

from types import SimpleNamespace

import pytest
import torch

from lsap.train.loop import LossModule


class _LM(torch.nn.Module):
    def __init__(self, V=11, H=5):
        super().__init__()
        self.emb, self.head = torch.nn.Embedding(V, H), torch.nn.Linear(H, V)

    def forward(self, input_ids):
        return SimpleNamespace(logits=self.head(self.emb(input_ids)))


@pytest.mark.parametrize("eps", [0.05, 0.3])
def test_label_smoothing_matches_direct_sum(eps):
    torch.manual_seed(0)
    lm = _LM()
    ids = torch.randint(0, 11, (2, 7))
    labels = torch.randint(0, 11, (2, 7))
    labels[0, -2:] = -100
    out = LossModule(lm, "linear", label_smoothing=eps)(ids, labels)
    z = lm(ids).logits.double().reshape(-1, 11)
    lab = labels.reshape(-1)
    ref, ce = 0.0, 0.0
    for i in range(z.shape[0]):
        if lab[i] < 0:
            continue
        lse = torch.log(torch.exp(z[i]).sum())
        nll = [float(lse - z[i, v]) for v in range(11)]
        ref += (1 - eps) * nll[lab[i]] + eps * sum(nll) / 11
        ce += nll[lab[i]]
    assert float(out.loss) == pytest.approx(ref, rel=1e-5)
    assert float(out.ce_sum) == pytest.approx(ce, rel=1e-5)
    assert int(out.n_labels) == 12 and float(out.aux_sum) == 0.0
    out.loss.backward()  # differentiable
    assert lm.head.weight.grad is not None and lm.head.weight.grad.abs().sum() > 0
    # ε changes the loss: the test can fail
    plain = LossModule(lm, "linear", label_smoothing=0.0)
    assert float(plain.lm(ids).logits.sum()) == float(lm(ids).logits.sum())
    assert abs(float(out.loss) - ce) > 1e-3
