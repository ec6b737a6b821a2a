"""Issue 28: an unavailable `--device` is a usage error (one line, exit 2) before any work."""

from __future__ import annotations

import argparse

import pytest
import torch

from lsap.cli.args import device
from lsap.cli.main import main

CASES = {
    "preflight": ["preflight", "--surrogate", "smollm2", "--data", "shakespeare"],
    "store build": [
        "store",
        "build",
        "--surrogate",
        "smollm2",
        "--data",
        "shards",
        "--seq-len",
        "8",
        "--out",
        "out",
    ],  # fmt: skip
    "eval": ["eval", "run"],
    "analyze": ["analyze", "--model", "smollm2", "--data", "shakespeare"],
}


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
@pytest.mark.parametrize("name", sorted(CASES))
def test_unavailable_cuda_is_one_line_exit_2(name, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as e:
        main([*CASES[name], "--device", "cuda"])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    last = err.strip().splitlines()[-1]
    assert last.startswith("lsap ") and "error: argument --device: cuda: torch sees no CUDA" in last
    assert list(tmp_path.iterdir()) == []


def test_device_type(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    for ok in ("cuda", "cuda:1", "cpu", "auto"):
        assert device(ok) == ok
    for bad in ("cuda:2", "nonsense"):
        with pytest.raises(argparse.ArgumentTypeError):
            device(bad)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    with pytest.raises(argparse.ArgumentTypeError):
        device("mps")
