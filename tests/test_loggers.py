"""train.loggers: TensorBoard and offline W&B receive exactly the JSONL rows and the config."""

import json
import struct
from pathlib import Path

import pytest

from lsap.config import ConfigError, load_config
from lsap.train.loggers import LoggerError, Loggers
from lsap.train.loop import Trainer


def _rows(out):
    return [json.loads(line) for line in (Path(out) / "metrics.jsonl").read_text().splitlines()]


def _numeric(row):
    return {
        k: v
        for k, v in row.items()
        if k not in ("kind", "step") and isinstance(v, (int, float)) and not isinstance(v, bool)
    }


def tensorboard_scalars(run_dir) -> dict:
    """{tag: {step: value}} read back from RUN/tensorboard's event files."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(
        str(Path(run_dir) / "tensorboard"), size_guidance={"scalars": 0, "tensors": 0}
    )
    acc.Reload()
    return {tag: {e.step: e.value for e in acc.Scalars(tag)} for tag in acc.Tags()["scalars"]}, acc


def wandb_records(run_dir):
    """(config, [history dicts]) from an offline run's .wandb file (a LevelDB-style log of
    protobuf Records: 7-byte file header, 32 KiB blocks, 7-byte chunk headers)."""
    from wandb.proto import wandb_internal_pb2 as pb

    [path] = Path(run_dir).glob("wandb/offline-run-*/run-*.wandb")
    buf, pos, block, chunks, cur = path.read_bytes(), 7, 32768, [], b""
    assert buf[:4] == b":W&B"
    while pos + 7 <= len(buf):
        if block - pos % block < 7:
            pos += block - pos % block
            continue
        _crc, length, kind = struct.unpack("<IHB", buf[pos : pos + 7])
        if kind == 0 and length == 0:
            pos += block - pos % block
            continue
        data, pos = buf[pos + 7 : pos + 7 + length], pos + 7 + length
        if kind == 1:
            chunks.append(data)
        elif kind == 2:
            cur = data
        elif kind == 3:
            cur += data
        elif kind == 4:
            chunks.append(cur + data)
    config, history = {}, []
    for data in chunks:
        rec = pb.Record()
        rec.ParseFromString(data)
        which = rec.WhichOneof("record_type")
        if which == "run":
            config.update({i.key: json.loads(i.value_json) for i in rec.run.config.update})
        elif which == "config":
            config.update({i.key: json.loads(i.value_json) for i in rec.config.update})
        elif which == "history":
            history.append(
                {
                    i.key or "/".join(i.nested_key): json.loads(i.value_json)
                    for i in rec.history.item
                }
            )
    return config, history


def test_tiny_run_feeds_tensorboard_and_offline_wandb(tiny_world, tmp_path, monkeypatch):
    pytest.importorskip("tensorboard")
    pytest.importorskip("wandb")
    monkeypatch.delenv("WANDB_MODE", raising=False)  # offline is the default: no network
    monkeypatch.setenv("WANDB_DISABLE_GIT", "true")
    out = tmp_path / "r"
    cfg = load_config(
        None,
        [
            f"data.dir={tiny_world['data']}",
            f"out_dir={out}",
            "data.seq_len=32",
            "train.batch_size=4",
            "train.micro_batch_size=4",
            "train.max_steps=3",
            "train.log_every=1",
            "optim.warmup_steps=1",
            "train.eval_batches=1",
            "train.loggers=[jsonl,tensorboard,wandb]",
        ],
    )
    Trainer.from_config(cfg).run()
    rows = _rows(out)
    assert {r["kind"] for r in rows} == {"train", "val"} and len(rows) == 4

    scalars, acc = tensorboard_scalars(out)
    for r in rows:
        for key, value in _numeric(r).items():
            assert scalars[f"{r['kind']}/{key}"][r["step"]] == pytest.approx(
                value, rel=1e-6, abs=1e-30
            ), key
    assert sum(len(v) for v in scalars.values()) == sum(len(_numeric(r)) for r in rows)
    [text] = acc.Tensors("config/text_summary")  # the config, as YAML
    assert f"name: {cfg.name}" in text.tensor_proto.string_val[0].decode()

    config, history = wandb_records(out)
    assert config["name"] == cfg.name and config["train"]["loggers"] == [
        "jsonl",
        "tensorboard",
        "wandb",
    ]
    assert {k: v for k, v in config.items() if not k.startswith("_")} == cfg.to_dict()
    by_step = {}
    for h in history:
        by_step.setdefault(h["_step"], {}).update(h)
    for r in rows:
        for key, value in _numeric(r).items():
            assert by_step[r["step"]][f"{r['kind']}/{key}"] == pytest.approx(value, rel=1e-12), key


def test_resume_purges_tensorboard_steps_after_the_checkpoint(tmp_path):
    pytest.importorskip("tensorboard")
    first = Loggers(["tensorboard"], tmp_path, {"name": "x"})
    for s in (1, 2, 3, 4):
        first.log({"kind": "train", "step": s, "loss": float(s)})
    first.close()
    again = Loggers(["tensorboard"], tmp_path, {"name": "x"}, resume_step=3)  # checkpoint at step 2
    for s in (3, 4):
        again.log({"kind": "train", "step": s, "loss": 10.0 * s})
    again.close()
    scalars, _ = tensorboard_scalars(tmp_path)
    assert scalars["train/loss"] == {1: 1.0, 2: 2.0, 3: 30.0, 4: 40.0}
    assert [
        json.loads(line)["loss"] for line in (tmp_path / "metrics.jsonl").read_text().splitlines()
    ] == [1.0, 2.0, 30.0, 40.0]  # the JSONL logger drops the lines it will get again


def _hide_wandb(monkeypatch):
    import builtins

    real_import = builtins.__import__

    def no_wandb(name, *args, **kwargs):
        if name == "wandb":
            raise ImportError("no wandb here")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_wandb)


def test_bad_logger_names_and_missing_packages(tmp_path, monkeypatch):
    with pytest.raises(ConfigError, match="train.loggers"):
        load_config(None, ["data.dir=x", "train.max_steps=1", "train.loggers=[tensorbord]"])
    _hide_wandb(monkeypatch)
    with pytest.raises(LoggerError, match=r"pip install 'lsap\[wandb\]'"):
        Loggers(["jsonl", "wandb"], tmp_path, {})


def test_missing_wandb_is_one_line_exit_2(tiny_world, tmp_path, monkeypatch, capsys):
    """LoggerError is an LsapError: `lsap train train.loggers=[wandb]` without wandb is one line, exit 2."""
    from lsap.cli.main import main
    from lsap.utils.errors import LsapError

    assert issubclass(LoggerError, LsapError)
    _hide_wandb(monkeypatch)
    code = main(
        [
            "train",
            f"data.dir={tiny_world['data']}",
            f"out_dir={tmp_path / 'r'}",
            "data.seq_len=32",
            "train.batch_size=2",
            "train.micro_batch_size=2",
            "train.max_steps=1",
            "train.loggers=[wandb]",
        ]
    )
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "pip install 'lsap[wandb]'" in err[0], err
    assert not (tmp_path / "r" / "checkpoints").exists()


def test_a_run_says_what_it_builds_before_building_it(tiny_world, tmp_path, monkeypatch, capsys):
    """Issue 28: a base run printed nothing for 66-76 s while its surrogate loaded. The first
    line (timestamped, naming the run) now comes before the components are built."""
    import re

    import lsap.train.loop as loop

    def slow_build(cfg, d):
        print("BUILD STARTED")
        raise RuntimeError("stop here")

    monkeypatch.setattr(loop, "build_components", slow_build)
    cfg = load_config(
        None,
        [f"data.dir={tiny_world['data']}", f"out_dir={tmp_path / 'my-run'}", "train.max_steps=1"],
    )
    with pytest.raises(RuntimeError, match="stop here"):
        Trainer.from_config(cfg)
    out = capsys.readouterr().out.splitlines()
    i = out.index("BUILD STARTED")
    assert i >= 1 and re.match(r"^\d\d:\d\d:\d\d lsap: my-run: building the CE run", out[i - 1]), (
        out
    )
