"""Golden loss curves: the first 20 losses of a tiny fixed-seed CE run and LSAP run.

Recorded on the code as it was before the issue-11 refactor (commit 5a800d9); any
silent change in data order, initialisation, target selection or the loss moves them.
If a change is *meant* to move them, say so in the commit and re-record with
`python tests/test_golden.py` (prints the new lists).
"""

import json
from pathlib import Path

import pytest

from lsap.config import load_config
from lsap.train.loop import Trainer

STEPS = 20
ARGS = (
    "data.seq_len=32",
    "train.batch_size=4",
    "train.micro_batch_size=2",
    f"train.max_steps={STEPS}",
    "train.log_every=1",
    "optim.warmup_steps=2",
    "train.eval_batches=1",
    "train.eval_every=1000",
)
LSAP = ("loss=lsap", "lsap.alpha=0.02", "lsap.k=4")

GOLDEN_CE = [
    6.521674871444702,
    6.493364095687866,
    6.453332185745239,
    6.4824912548065186,
    6.470349550247192,
    6.443917989730835,
    6.446536302566528,
    6.42759370803833,
    6.430397272109985,
    6.417295694351196,
    6.419832706451416,
    6.406954288482666,
    6.373267889022827,
    6.4194254875183105,
    6.3711628913879395,
    6.368302345275879,
    6.371508598327637,
    6.3697829246521,
    6.348343133926392,
    6.346473932266235,
]
GOLDEN_LSAP = [
    6.471781167639307,
    6.491782553200043,
    6.458823713407342,
    6.469319807562837,
    6.469888305664062,
    6.443885610884979,
    6.445354707362288,
    6.410393440002224,
    6.427902352096688,
    6.409413708306347,
    6.388467708104093,
    6.388334211046575,
    6.363644824867629,
    6.390096099534516,
    6.36799877212867,
    6.364464179619209,
    6.349502151076858,
    6.358191111731151,
    6.3468067446991565,
    6.359978244729238,
]
GOLDEN_LSAP_AUX_PER_TOKEN = [
    3.5390625,
    3.5546875,
    3.6953125,
    3.3515625,
    3.375,
    3.6484375,
    3.609375,
    3.390625,
    3.5703125,
    3.5234375,
    3.4375,
    3.4765625,
    3.703125,
    3.484375,
    3.5234375,
    3.46875,
    3.625,
    3.4296875,
    3.3984375,
    3.5625,
]


def _run(world, out, *extra):
    cfg = load_config(None, [f"data.dir={world['data']}", f"out_dir={out}", *ARGS, *extra])
    Trainer.from_config(cfg).run()
    rows = [json.loads(line) for line in (Path(out) / "metrics.jsonl").read_text().splitlines()]
    return [r for r in rows if r["kind"] == "train"]


def test_golden_ce_curve(tiny_world, tmp_path):
    rows = _run(tiny_world, tmp_path / "ce")
    assert [r["loss"] for r in rows] == pytest.approx(GOLDEN_CE, rel=1e-5, abs=1e-5)


def test_golden_lsap_curve(tiny_world, tmp_path):
    rows = _run(tiny_world, tmp_path / "lsap", *LSAP, f"surrogate.model={tiny_world['surrogate']}")
    assert [r["loss"] for r in rows] == pytest.approx(GOLDEN_LSAP, rel=1e-5, abs=1e-5)
    assert [r["aux_per_token"] for r in rows] == pytest.approx(GOLDEN_LSAP_AUX_PER_TOKEN, rel=1e-9)


if __name__ == "__main__":  # re-record: prints the lists to paste above
    import tempfile

    import conftest

    class _Factory:
        def __init__(self):
            self.root = Path(tempfile.mkdtemp())

        def mktemp(self, name):
            (self.root / name).mkdir()
            return self.root / name

    world = conftest.tiny_world.__wrapped__(_Factory())
    ce = _run(world, world["root"] / "ce")
    ls = _run(world, world["root"] / "lsap", *LSAP, f"surrogate.model={world['surrogate']}")
    print("GOLDEN_CE =", [r["loss"] for r in ce])
    print("GOLDEN_LSAP =", [r["loss"] for r in ls])
    print("GOLDEN_LSAP_AUX_PER_TOKEN =", [r["aux_per_token"] for r in ls])
