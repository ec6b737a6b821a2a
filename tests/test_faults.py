"""Faults and bad input (issue 13's table): each ends in correct behaviour or in one
line naming the problem and the fix (exit status 2 from the CLI).

The concurrency, kill -9 / resume and stalled-rank cases run real `lsap train`
processes on the tiny world of conftest.py; the rest run in-process.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

import lsap
from lsap.cli.main import COMMANDS, main
from lsap.config import load_config
from lsap.train.loop import Trainer
from lsap.utils.errors import (
    DataError,
    LockError,
    StoreError,
    SurrogateError,
    TrainingError,
)

SRC = str(Path(lsap.__file__).resolve().parents[1])
ENV = {
    **os.environ,
    "OMP_NUM_THREADS": "1",
    "PYTHONPATH": SRC + os.pathsep + os.environ.get("PYTHONPATH", ""),
}
LSAP = ("loss=lsap", "lsap.alpha=0.02", "lsap.k=4")


def args_for(world, out, *extra) -> list[str]:
    return [
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
    ]


def cfg_for(world, out, *extra):
    return load_config(None, args_for(world, out, *extra))


def rows(out, kind="train") -> list[dict]:
    return [
        json.loads(ln)
        for ln in (Path(out) / "metrics.jsonl").read_text().splitlines()
        if ln.strip() and json.loads(ln)["kind"] == kind
    ]


def lsap_cli(*argv, timeout=300) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "lsap", *argv],
        capture_output=True,
        text=True,
        env=ENV,
        timeout=timeout,
    )


def popen_train(*argv) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "lsap", "train", *argv],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=ENV,
    )


def wait_for(pred, timeout=180.0, proc=None):
    t0 = time.time()
    while not pred():
        if proc is not None and proc.poll() is not None:
            raise AssertionError(
                f"process ended early (rc {proc.returncode}): {proc.stderr.read()[-2000:]}"
            )
        if time.time() - t0 > timeout:
            raise AssertionError("timed out waiting")
        time.sleep(0.01)


def one_line_error(r, *needles, bars=False):
    """Exit 2 and one stderr line `lsap CMD: error: …` holding each needle, no traceback.
    bars: also allow progress-bar lines before it (transformers' 'Writing model shards')."""
    assert r.returncode == 2, (r.returncode, r.stderr[-2000:])
    err = [
        ln
        for ln in r.stderr.strip().splitlines()
        if not (bars and ("it/s]" in ln or "s/it]" in ln))
    ]
    assert len(err) == 1 and err[0].startswith("lsap ") and ": error: " in err[0], r.stderr[-2000:]
    assert "Traceback" not in r.stderr
    for n in needles:
        assert n in err[0], (n, err[0])
    return err[0]


# --------------------------------------------------------------------------- locks
def test_two_trainers_into_one_out_dir(tiny_world, tmp_path, capsys):
    out = tmp_path / "run"
    a = popen_train(*args_for(tiny_world, out, "train.max_steps=100000"))
    try:
        lock = out / ".lsap.utils.lock"
        wait_for(lambda: lock.is_file() and f'"pid": {a.pid}' in lock.read_text(), proc=a)
        os.kill(
            a.pid, signal.SIGSTOP
        )  # holds the lock, does nothing: no race with the second start
        b = lsap_cli("train", *args_for(tiny_world, out))
        one_line_error(b, f"pid {a.pid}", "being written by")
        assert not (out / "checkpoints").exists()
    finally:
        a.kill()
        a.wait()
    assert lock.is_file()  # a kill -9 leaves the file; the kernel dropped the flock: stale
    t = Trainer.from_config(cfg_for(tiny_world, out))
    assert f"taking over a stale lock of pid {a.pid}" in capsys.readouterr().err
    t.close()
    assert not lock.exists()


def test_lock_in_process(tmp_path):
    from lsap.utils.lock import DirLock

    with DirLock(tmp_path / "d", "test"):
        with pytest.raises(LockError, match=f"pid {os.getpid()}"):
            DirLock(tmp_path / "d", "other").acquire()
    assert not (tmp_path / "d").exists()  # created for the lock, left empty: removed again
    with DirLock(tmp_path / "d", "test"):
        pass


# --------------------------------------------------------------------------- kill -9 and resume
def test_kill_9_then_resume_matches_a_straight_run(tiny_world, tmp_path):
    args = ("train.max_steps=16", "train.ckpt_every=2", "train.eval_every=8")
    straight = popen_train(*args_for(tiny_world, tmp_path / "straight", *args))
    killed = popen_train(*args_for(tiny_world, tmp_path / "cut", *args))
    ck = tmp_path / "cut" / "checkpoints"
    wait_for(lambda: (ck / "step_00000004" / "meta.json").is_file(), proc=killed)
    killed.kill()
    killed.wait()
    assert not (ck / "step_00000016").exists(), "the run ended before the kill; nothing was tested"
    assert straight.wait(timeout=300) == 0, straight.stderr.read()[-2000:]
    r = lsap_cli("train", *args_for(tiny_world, tmp_path / "cut", *args), "--resume")
    assert r.returncode == 0, r.stderr[-2000:]
    a, b = rows(tmp_path / "straight"), rows(tmp_path / "cut")
    assert [x["step"] for x in b] == list(range(1, 17))
    assert [x["loss"] for x in a] == [x["loss"] for x in b]
    assert rows(tmp_path / "straight", "val") == [
        {**x, "wall_s": y["wall_s"]}
        for x, y in zip(rows(tmp_path / "cut", "val"), rows(tmp_path / "straight", "val"))
    ]
    from safetensors.torch import load_file

    wa = load_file(
        tmp_path / "straight" / "checkpoints" / "step_00000016" / "model" / "model.safetensors"
    )
    wb = load_file(ck / "step_00000016" / "model" / "model.safetensors")
    assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)


def test_kill_during_the_first_checkpoint_write_is_no_dead_end(tiny_world, tmp_path, capsys):
    out = tmp_path / "r"
    Trainer.from_config(cfg_for(tiny_world, out, "train.max_steps=2")).run()
    first = [r["loss"] for r in rows(out)]
    ck = out / "checkpoints"
    (ck / "step_00000002").rename(
        ck / "step_00000002.tmp"
    )  # what a kill inside save_checkpoint leaves
    (ck / "step_00000002.tmp" / "meta.json").unlink()
    Trainer.from_config(
        cfg_for(tiny_world, out, "train.max_steps=2")
    ).run()  # a plain rerun: no "already has checkpoints"
    assert "removed" in capsys.readouterr().out
    assert [r["loss"] for r in rows(out)] == first  # old lines dropped, not repeated
    assert (
        not (ck / "step_00000002.tmp").exists() and (ck / "step_00000002" / "meta.json").is_file()
    )
    shutil_rm = __import__("shutil").rmtree
    shutil_rm(ck / "step_00000002")
    t = Trainer.from_config(
        cfg_for(tiny_world, out, "train.max_steps=2"), resume=True
    )  # --resume with nothing to resume
    assert t.step == 0 and "starting at step 0" in capsys.readouterr().err
    t.close()


def test_torn_metrics_line_and_truncated_checkpoint_fall_back(tiny_world, tmp_path, capsys):
    out = tmp_path / "r"
    args = ("train.max_steps=4", "train.ckpt_every=2")
    Trainer.from_config(cfg_for(tiny_world, out, *args)).run()
    before = {r["step"]: r["loss"] for r in rows(out)}
    with open(out / "metrics.jsonl", "a") as f:
        f.write('{"step": 5, "kind": "tra')  # a line cut by a kill
    tp = out / "checkpoints" / "step_00000004" / "trainer.pt"
    tp.write_bytes(tp.read_bytes()[: tp.stat().st_size // 2])
    t = Trainer.from_config(cfg_for(tiny_world, out, *args), resume=True)
    err = capsys.readouterr().err
    assert "step_00000004 is unreadable" in err and "falling back" in err and "torn line" in err
    assert t.step == 2
    t.run()
    after = rows(out)
    assert [r["step"] for r in after] == [1, 2, 3, 4]
    assert {r["step"]: r["loss"] for r in after} == before


# --------------------------------------------------------------------------- NaN guard
def test_nan_guard_keeps_every_checkpoint_finite(tiny_world, tmp_path):
    from safetensors.torch import load_file

    out = tmp_path / "n"
    t = Trainer.from_config(
        cfg_for(
            tiny_world,
            out,
            "optim.lr=1e6",
            "train.ckpt_every=1",
            "train.max_steps=50",
            "optim.warmup_steps=0",
        )
    )
    with pytest.raises(
        TrainingError, match=r"non-finite .* at step (\d+); last checkpoint: .*step_"
    ) as e:
        t.run()
    bad_step = int(str(e.value).split(" at step ")[1].split(";")[0])
    named = Path(str(e.value).split("last checkpoint: ")[1].split(" ")[0])
    assert named.name == f"step_{bad_step - 1:08d}" and named.is_dir()
    assert not (out / "checkpoints" / f"step_{bad_step:08d}").exists()
    for ck in sorted((out / "checkpoints").iterdir()):
        w = load_file(ck / "model" / "model.safetensors")
        assert all(bool(torch.isfinite(v).all()) for v in w.values()), ck
    # resuming from the named checkpoint starts from finite weights (the same lr fails the same way)
    t = Trainer.from_config(
        cfg_for(
            tiny_world,
            out,
            "optim.lr=1e6",
            "train.ckpt_every=1",
            "train.max_steps=50",
            "optim.warmup_steps=0",
        ),
        resume=True,
    )
    assert t.step == bad_step - 1 and all(
        bool(torch.isfinite(p).all()) for p in t.c.lm.parameters()
    )
    t.close()


def test_skip_nonfinite_steps(tiny_world, tmp_path, capsys):
    t = Trainer.from_config(
        cfg_for(
            tiny_world,
            tmp_path / "s",
            "optim.lr=1e30",
            "optim.grad_clip=0",
            "optim.warmup_steps=0",
            "train.skip_nonfinite_steps=2",
        )
    )
    with pytest.raises(TrainingError, match="non-finite"):
        t.run()
    skipped = [r for r in rows(tmp_path / "s") if r.get("skipped")]
    assert len(skipped) == 2 and capsys.readouterr().err.count("step skipped") == 2


def _snapshot(t) -> tuple[dict, dict]:
    """(weights, optimizer state) of a trainer, cloned."""
    w = {k: v.detach().clone() for k, v in t.c.lm.state_dict().items()}
    o = {
        i: {k: v.clone() if torch.is_tensor(v) else v for k, v in st.items()}
        for i, st in t.c.opt.state_dict()["state"].items()
    }
    return w, o


def _same(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(
        _same(a[k], b[k])
        if isinstance(a[k], dict)
        else (torch.equal(a[k], b[k]) if torch.is_tensor(a[k]) else a[k] == b[k])
        for k in a
    )


def test_a_skipped_step_leaves_weights_and_optimizer_untouched_and_the_count_survives_resume(
    tiny_world, tmp_path, capsys
):
    """train.skip_nonfinite_steps: one step made non-finite (its loss × NaN) changes neither
    the weights nor the AdamW state (moments, step counts); the next step trains; the
    skip count is checkpointed, so after --resume the budget of skips is still spent."""
    out, args = tmp_path / "s", ("train.skip_nonfinite_steps=1", "train.max_steps=8")
    t = Trainer.from_config(cfg_for(tiny_world, out, *args))
    real_forward = t.c.wrapped.forward

    def nan_forward(*a, **k):
        out = real_forward(*a, **k)  # LSAPLossOutput
        return out._replace(loss=out.loss * float("nan"))

    t.train_step()
    t.train_step()
    w0, o0 = _snapshot(t)
    assert o0 and all(int(st["step"]) == 2 for st in o0.values())  # AdamW has state to protect
    t.c.wrapped.forward = nan_forward
    row = t.train_step()
    assert row.get("skipped") and t.skipped == 1 and t.step == 3
    w1, o1 = _snapshot(t)
    assert _same(w0, w1) and _same(o0, o1)  # bit for bit
    assert all(
        p.grad is None for p in t.c.lm.parameters()
    )  # no stale gradient reaches the next step
    t.c.wrapped.forward = real_forward
    t.train_step()
    w2, o2 = _snapshot(t)
    assert not _same(w1, w2) and all(
        int(st["step"]) == 3 for st in o2.values()
    )  # the next step trains
    t.save_checkpoint()
    t.close()
    t = Trainer.from_config(cfg_for(tiny_world, out, *args), resume=True)
    assert t.step == 4 and t.skipped == 1
    assert _same(_snapshot(t)[0], w2) and _same(_snapshot(t)[1], o2)
    real_forward = t.c.wrapped.forward
    t.c.wrapped.forward = nan_forward
    with pytest.raises(
        TrainingError, match="non-finite loss .* at step 5"
    ):  # 1 of 1 skips was spent before
        t.train_step()
    t.close()
    assert "step skipped (1/1)" in capsys.readouterr().err


# --------------------------------------------------------------------------- strict resume, overrides
def test_resume_refuses_a_changed_model(tiny_world, tmp_path):
    out = tmp_path / "r"
    Trainer.from_config(cfg_for(tiny_world, out, "train.max_steps=2")).run()
    before = (out / "config.yaml").read_text()
    with pytest.raises(TrainingError, match=r"model.overrides.num_hidden_layers: '<unset>' → 3"):
        Trainer.from_config(
            cfg_for(tiny_world, out, "train.max_steps=4", "model.overrides.num_hidden_layers=3"),
            resume=True,
        )
    with pytest.raises(TrainingError, match=r"optim.lr: 0.0004 → 0.001"):
        Trainer.from_config(
            cfg_for(tiny_world, out, "train.max_steps=4", "optim.lr=1e-3"), resume=True
        )
    assert (out / "config.yaml").read_text() == before
    t = Trainer.from_config(
        cfg_for(tiny_world, out, "train.max_steps=4", "train.log_every=2"), resume=True
    )  # budget, cadence
    assert t.step == 2
    t.close()


def test_cli_model_overrides_merge_and_are_checked(tmp_path, capsys):
    import yaml

    p = tmp_path / "c.yaml"
    p.write_text(
        yaml.safe_dump(
            {
                "data": {"dir": str(tmp_path)},
                "train": {"max_steps": 1},
                "model": {"overrides": {"num_hidden_layers": 1, "intermediate_size": 96}},
            }
        )
    )
    cfg = load_config(p, ["model.overrides.hidden_size=48"])
    assert cfg.model.overrides == {
        "num_hidden_layers": 1,
        "intermediate_size": 96,
        "hidden_size": 48,
    }
    assert main(["train", "--config", str(p), "model.overrides.hiden_size=48", "--dry-run"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "did you mean 'model.overrides.hidden_size'" in err[0]


# --------------------------------------------------------------------------- config validation
@pytest.mark.parametrize(
    "bad,needle",
    [
        ("lsap.lam=-1", "lsap.lam"),
        ("optim.lr=-1", "optim.lr must be > 0"),
        ("optim.betas=0.9", "optim.betas"),
        ("surrogate.model=/no/such.gguf", "surrogate.model"),
        ("out_dir=/etc/passwd/run", "out_dir"),
    ],
)
def test_config_errors_are_one_line_before_any_build(tiny_world, tmp_path, bad, needle):
    extra = (*LSAP, "surrogate.model=smollm2") if bad.startswith(("lsap", "surrogate")) else ()
    t0 = time.perf_counter()
    r = lsap_cli("train", *args_for(tiny_world, tmp_path / "o", *extra, bad))
    dt = time.perf_counter() - t0
    one_line_error(r, needle)
    assert not (tmp_path / "o").exists()  # nothing was built or written
    print(f"{bad}: exit 2 after {dt:.2f}s (process start included)")


@pytest.mark.parametrize(
    "bad,needle",
    [
        (
            "lsap.lam=.nan",
            "lsap.lam=nan is not a finite number",
        ),  # was: the NaN guard, "lower optim.lr"
        ("optim.weight_decay=.inf", "optim.weight_decay=inf is not a finite number"),
        ("train.max_tokens=.inf", "train.max_tokens=inf is not a finite number"),
        ("train.max_flops=.nan", "train.max_flops=nan is not a finite number"),
        ("train.seed=-1", "train.seed must be ≥ 0, got -1"),
        ("lsap.alpha=[0.1", "override 'lsap.alpha=[0.1': not a YAML value"),  # was: a traceback
        ("model.overrides.rope_theta=.inf", "model.overrides.rope_theta=inf is not a finite"),
    ],
)
def test_non_finite_and_unparsable_values_are_refused_up_front(
    tiny_world, tmp_path, capsys, bad, needle
):
    assert main(["train", *args_for(tiny_world, tmp_path / "o", bad), "--dry-run"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("lsap train: error: ") and needle in err[0], err
    assert not (tmp_path / "o").exists()


def test_invalid_yaml_config_file_is_one_line(tmp_path, capsys):
    p = tmp_path / "c.yaml"
    p.write_text("lsap: {alpha: [0.1}\n")
    assert main(["train", "--config", str(p), "--dry-run"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "not valid YAML at line 1, column 19" in err[0], err


# --------------------------------------------------------------------------- disk full, for real
@pytest.fixture
def small_disk(tmp_path):
    """A real out-of-space file system: a tmpfs of `size` bytes (root only; remountable)."""
    mounts = []

    def mount(size: int) -> Path:
        d = tmp_path / f"disk{len(mounts)}"
        d.mkdir()
        r = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(d)],
            capture_output=True,
            text=True,
        )
        if r.returncode != 0:
            pytest.skip(
                f"tmpfs: mount not permitted ({r.stderr.strip()[:80]}); the RLIMIT_FSIZE case still runs"
            )
        mounts.append(d)
        return d

    yield mount
    for d in mounts:
        subprocess.run(["umount", "-l", str(d)], capture_output=True)


def _fill(disk: Path, leave: int) -> Path:
    """A ballast file that leaves about `leave` bytes free on `disk`."""
    st = os.statvfs(disk)
    ballast = disk / "ballast"
    with open(ballast, "wb") as f:
        f.write(b"\0" * max(st.f_bavail * st.f_frsize - leave, 0))
    return ballast


def _fsize_limit(limit: int):
    """preexec_fn: writes past `limit` bytes fail with EFBIG (SIGXFSZ ignored, as a shell's `ulimit -f`)."""
    import resource

    def set_limit():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    return set_limit


def _tree_bytes(d: Path) -> dict:
    return {str(f.relative_to(d)): f.read_bytes() for f in sorted(d.rglob("*")) if f.is_file()}


@pytest.mark.parametrize("how", ["tmpfs", "rlimit"])
def test_disk_full_at_a_checkpoint(tiny_world, tmp_path, small_disk, how):
    """`lsap train` runs out of space while saving a checkpoint (tmpfs: ENOSPC inside
    safetensors; RLIMIT_FSIZE: EFBIG inside torch.save): one named line, exit 2, the
    .tmp gone, the previous checkpoint byte-identical and the one --resume takes; after
    space is freed the resumed run ends with the losses and weights of the same run without the fault."""
    from lsap.train.checkpoint import list_checkpoints

    root = small_disk(16 << 20) if how == "tmpfs" else tmp_path
    out, args = root / "run", ("train.max_steps=4", "train.ckpt_every=2")
    Trainer.from_config(cfg_for(tiny_world, out, "train.max_steps=2", "train.ckpt_every=2")).run()
    ck = out / "checkpoints"
    before = _tree_bytes(ck / "step_00000002")
    model, opt = len(before["model/model.safetensors"]), len(before["trainer.pt"])
    assert model < opt
    if how == "tmpfs":
        ballast = _fill(root, model // 2)  # the next model.safetensors does not fit
        r = subprocess.run(
            [sys.executable, "-m", "lsap", "train", *args_for(tiny_world, out, *args), "--resume"],
            capture_output=True,
            text=True,
            env=ENV,
            timeout=300,
        )
        line = one_line_error(
            r, "checkpoint step 4 not saved: disk full (No space left on device)", bars=True
        )
    else:  # model.safetensors fits, trainer.pt does not: torch.save's errno-less error
        r = subprocess.run(
            [sys.executable, "-m", "lsap", "train", *args_for(tiny_world, out, *args), "--resume"],
            capture_output=True,
            text=True,
            env=ENV,
            timeout=300,
            preexec_fn=_fsize_limit((model + opt) // 2),
        )
        line = one_line_error(
            r,
            "checkpoint step 4 not saved: a file outgrew the file-size limit (File too large",
            bars=True,
        )
    assert "step_00000002 is intact: --resume continues from it" in line and "with --resume" in line
    assert sorted(p.name for p in ck.iterdir()) == ["step_00000002"]  # no step_00000004(.tmp)
    assert _tree_bytes(ck / "step_00000002") == before
    assert [p.name for p in list_checkpoints(out)] == ["step_00000002"]
    if how == "tmpfs":
        ballast.unlink()
    t = Trainer.from_config(cfg_for(tiny_world, out, *args), resume=True)
    assert t.step == 2
    t.run()
    if how == "tmpfs":
        return  # the comparison below once is enough (it costs two more runs)
    straight = tmp_path / "straight"  # the same two legs, no fault
    Trainer.from_config(
        cfg_for(tiny_world, straight, "train.max_steps=2", "train.ckpt_every=2")
    ).run()
    Trainer.from_config(cfg_for(tiny_world, straight, *args), resume=True).run()
    assert [r["loss"] for r in rows(out)] == [r["loss"] for r in rows(straight)]
    a = _tree_bytes(straight / "checkpoints" / "step_00000004" / "model")
    assert _tree_bytes(ck / "step_00000004" / "model") == a


@pytest.mark.parametrize("how", ["tmpfs", "rlimit"])
def test_disk_full_in_prepare_then_resumes(tiny_world, tmp_path, small_disk, how):
    """`lsap prepare` runs out of space mid-way: one line, exit 2, no temporary files left;
    the same command after freeing space completes byte-identical to an uninterrupted run."""
    from lsap.data.shards import prepare

    argv = [
        "prepare",
        "--tokenizer",
        tiny_world["base_tok"],
        "--source",
        "pydoc-topics",
        "--val-fraction",
        "0.1",
        "--max-tokens",
        "20000",
        "--shard-tokens",
        "2048",
        "--quiet",
    ]
    ref = prepare(
        tiny_world["base_tok"],
        "pydoc-topics",
        tmp_path / "ref",
        val_fraction=0.1,
        max_tokens=20000,
        shard_tokens=2048,
        progress=False,
    )
    assert len(ref["splits"]["train"]["shards"]) >= 4
    if how == "tmpfs":
        root = small_disk(24 << 10)  # room for a few of the 4 KB shards
        out = root / "data"
        r = subprocess.run(
            [sys.executable, "-m", "lsap", *argv, "--out", str(out)],
            capture_output=True,
            text=True,
            env=ENV,
            timeout=300,
        )
        one_line_error(
            r, "disk full (No space left on device) writing under", "run the same command again"
        )
    else:
        out = tmp_path / "data"
        r = subprocess.run(
            [sys.executable, "-m", "lsap", *argv, "--out", str(out)],
            capture_output=True,
            text=True,
            env=ENV,
            timeout=300,
            preexec_fn=_fsize_limit(3 << 10),
        )
        one_line_error(r, "disk full (File too large) writing under", "run the same command again")
    m = json.loads((out / "manifest.json").read_text())
    assert (
        not m["complete"]
        and 0 < len(m["splits"]["train"]["shards"]) < len(ref["splits"]["train"]["shards"])
        if how == "tmpfs"
        else not m["complete"]
    )
    assert not [f for f in out.rglob("*") if f.name.startswith(".tmp")]  # nothing holds the space
    if how == "tmpfs":
        subprocess.run(["mount", "-o", "remount,size=4m", str(root)], check=True)
    r = subprocess.run(
        [sys.executable, "-m", "lsap", *argv, "--out", str(out)],
        capture_output=True,
        text=True,
        env=ENV,
        timeout=300,
    )
    assert r.returncode == 0, r.stderr[-2000:]
    assert _tree_bytes(out) == _tree_bytes(tmp_path / "ref")


_LIBRARY_ERRORS = r"""
import importlib, json, sys
from pathlib import Path
import lsap.train.loop
from lsap.cli.main import main

cases, args = json.loads(sys.argv[1]), json.loads(sys.argv[2])
truncated = Path(args[0].split("=", 1)[1]).parent / "torn.safetensors"

def fail_in_eval(case):  # raised by the library itself, after the model is built and has trained a step
    def evaluate(self):
        if case == "safetensors":
            from safetensors.torch import load_file, save_file
            import torch
            save_file({"w": torch.zeros(64)}, truncated)
            truncated.write_bytes(truncated.read_bytes()[:20])
            load_file(truncated)
        if case == "oserror":
            (self.out / "file").write_text("")
            open(self.out / "file" / "x", "w")  # NotADirectoryError
        if case == "import":
            importlib.import_module("lsap_no_such_extra")
    return evaluate

for case in cases:
    saved = lsap.train.loop.Trainer.evaluate
    extra = []
    if case in ("safetensors", "oserror", "import"):
        lsap.train.loop.Trainer.evaluate = fail_in_eval(case)
    else:  # a tracker listed in train.loggers that cannot be imported
        sys.modules[{"wandb": "wandb", "tensorboard": "torch.utils.tensorboard"}[case]] = None
        extra = [f"train.loggers=[jsonl,{case}]"]
    print(case, main(["train", *args, f"out_dir={args[1].split('=', 1)[1]}/{case}", *extra]), flush=True)
    lsap.train.loop.Trainer.evaluate = saved
"""


def test_library_errors_after_the_model_is_built_are_one_line(tiny_world, tmp_path):
    """The CLI contract for errors raised by libraries, not by lsap: a torn .safetensors
    (SafetensorError), an OS error, a missing package, a tracker that cannot be imported
    — each through `lsap.cli.main.main` in a real process: exit 2, one stderr line, no traceback."""
    cases = {
        "safetensors": "a damaged or truncated .safetensors file (Error while deserializing header",
        "oserror": "Not a directory: ",
        "import": "a package this needs is not installed (No module named 'lsap_no_such_extra')",
        "wandb": "wandb",
        "tensorboard": "tensorboard",
    }
    args = args_for(tiny_world, tmp_path, "train.max_steps=1")
    r = subprocess.run(
        [sys.executable, "-c", _LIBRARY_ERRORS, json.dumps(list(cases)), json.dumps(args)],
        capture_output=True,
        text=True,
        env=ENV,
        timeout=600,
    )
    assert [ln for ln in r.stdout.splitlines() if ln.split(" ")[0] in cases] == [
        f"{c} 2" for c in cases
    ], (r.stdout[-2000:], r.stderr[-3000:])
    assert "Traceback" not in r.stderr, r.stderr[-3000:]
    err = [ln for ln in r.stderr.strip().splitlines() if "it/s]" not in ln]
    assert len(err) == len(cases), r.stderr[-3000:]
    for line, (case, needle) in zip(err, cases.items()):
        assert line.startswith("lsap train: error: ") and needle in line, (case, line)


def test_every_command_bad_input_exits_2_with_one_line(tmp_path, capsys):
    missing = str(tmp_path / "missing")
    bad = {
        "vocab": ["--base", "dolma2", "--surrogate", "qwen3", "--data", missing],
        "prepare": ["--source", missing, "--out", str(tmp_path / "p")],
        "train": ["data.dir=x", "train.max_steps=1", "lsap.lam=-1"],
        "flops": ["--base", "no-such-preset"],
        "store": ["info", missing],
        "analyze": ["--model", "smollm2", "--data", missing],
        "eval": [missing],
        "report": [missing],
        "quickstart": ["--surrogate", missing, "--out", str(tmp_path / "q")],
        "sweep": [missing],
        "preflight": ["--base", "dolma2", "--surrogate", missing, "--data", missing],
    }
    assert set(bad) == set(COMMANDS)
    for cmd, argv in bad.items():
        rc = main([cmd, *argv])
        err = capsys.readouterr().err.strip().splitlines()
        assert rc == 2, (cmd, rc, err)
        assert len(err) == 1 and err[0].startswith(f"lsap {cmd}: error: "), (cmd, err)


# --------------------------------------------------------------------------- verified stores and shards
@pytest.fixture(scope="module")
def store(tiny_world, tmp_path_factory):
    from lsap.data.shards import prepare

    root = tmp_path_factory.mktemp("faults-cache")
    prepare(
        tiny_world["base_tok"],
        "pydoc-topics",
        root / "data",
        val_fraction=0.1,
        max_tokens=3000,
        progress=False,
    )
    assert (
        main(
            [
                "store",
                "build",
                "--surrogate",
                tiny_world["surrogate"],
                "--data",
                str(root / "data"),
                "--seq-len",
                "32",
                "--k",
                "4",
                "--min-alpha",
                "0.01",
                "--out",
                str(root / "c"),
                "--batch-size",
                "8",
                "--chunk-windows",
                "24",
                "--no-progress",
            ]
        )
        == 0
    )
    return root


@pytest.mark.parametrize("where", ["low", "high"])
def test_flipped_byte_in_a_store_chunk_is_refused_before_training_on_it(
    tiny_world, store, tmp_path, where
):
    import shutil

    from lsap.surrogate.store import _layout

    c = tmp_path / "c"
    shutil.copytree(store / "c", c)
    m = json.loads((c / "manifest.json").read_text())
    ch = m["chunks"][0]
    ids_at = _layout(ch["windows"][1] - ch["windows"][0], 32, ch["candidates"], 3)["ids"][0]
    chunk = c / ch["path"]
    b = bytearray(chunk.read_bytes())
    b[ids_at + (0 if where == "low" else 2)] ^= (
        0x01 if where == "low" else 0x80
    )  # a valid vs an invalid id
    chunk.write_bytes(bytes(b))
    out = tmp_path / "r"
    t = Trainer.from_config(
        cfg_for(
            tiny_world,
            out,
            *LSAP,
            f"data.dir={store / 'data'}",
            "surrogate.source=store",
            f"surrogate.store_dir={c}",
            "train.max_steps=40",
        )
    )
    with pytest.raises(StoreError, match="sha256 mismatch"):
        t.run()
    done = [r["step"] for r in rows(out)] if (out / "metrics.jsonl").exists() else []
    assert done == list(range(1, t.step + 1))  # the step that reached chunk 0 never trained
    assert not t.c.targets.store._verified[0]  # the StoredTargets source's store
    # ... nor touched the weights: they are those of the same run on the intact store after
    # exactly the steps that finished (no partial update from the flipped chunk)
    bad, opt_bad = _snapshot(t)
    clean = Trainer.from_config(
        cfg_for(
            tiny_world,
            tmp_path / "clean",
            *LSAP,
            f"data.dir={store / 'data'}",
            "surrogate.source=store",
            f"surrogate.store_dir={store / 'c'}",
            "train.max_steps=40",
        )
    )
    for _ in range(t.step):
        clean.train_step()
    assert _same(_snapshot(clean)[0], bad) and _same(_snapshot(clean)[1], opt_bad)
    clean.train_step()  # the step the flipped byte stopped: it does change the weights
    assert not _same(_snapshot(clean)[0], bad)
    clean.close()


def test_corrupt_token_shard_is_refused_at_first_read(tiny_world, tmp_path):
    import shutil

    from lsap.data.shards import TokenShards

    d = tmp_path / "data"
    shutil.copytree(tiny_world["data"], d)
    sh = TokenShards(d, "train")
    p = d / sh.info["shards"][0]["path"]
    a = np.fromfile(p, dtype=sh.dtype)
    a[5] = 65535  # a flipped high byte: an id past the vocabulary
    a.tofile(p)
    sh = TokenShards(d, "train")  # size still fine: opens
    sh.check_vocab(640)
    with pytest.raises(DataError, match="sha256 mismatch"):
        sh.tokens(0, 4)


# --------------------------------------------------------------------------- decoding, empty sources
def test_one_invalid_byte_keeps_utf8(tmp_path, capsys):
    from lsap.data.corpora import decode_text

    text = decode_text("naïve café ".encode() + b"\xff" + b" ok", "f.txt")
    assert text == "naïve café \ufffd ok"
    err = capsys.readouterr().err
    assert "f.txt: 1 invalid UTF-8 byte sequence(s)" in err
    assert decode_text("caf\xe9 na\xefve".encode("latin-1"), "old.txt") == "café naïve"
    assert "old.txt: not UTF-8" in capsys.readouterr().err


def test_prepare_keeps_utf8_text_with_one_bad_byte(tiny_world, tmp_path):
    from lsap.data.shards import TokenShards, prepare
    from lsap.data.tokenizer import load_tokenizer

    src = tmp_path / "doc.txt"
    src.write_bytes(("naïve café " * 20).encode() + b"\xff\n")
    prepare(tiny_world["base_tok"], str(src), tmp_path / "d", val_fraction=0.0, progress=False)
    sh = TokenShards(tmp_path / "d")
    text = load_tokenizer(tiny_world["base_tok"]).decode(sh.tokens(0, len(sh)).tolist())
    assert "naïve café" in text and "Ã" not in text


def test_prepare_refuses_an_empty_source(tiny_world, tmp_path, capsys):
    (tmp_path / "empty.txt").write_text("")
    assert (
        main(
            [
                "prepare",
                "--tokenizer",
                tiny_world["base_tok"],
                "--source",
                str(tmp_path / "empty.txt"),
                "--out",
                str(tmp_path / "d"),
                "--quiet",
            ]
        )
        == 2
    )
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "no training tokens" in err[0]
    assert not (tmp_path / "d" / "manifest.json").exists()


def test_prepare_reads_gz_and_uppercase_and_names_what_it_skips(tiny_world, tmp_path, capsys):
    """A folder of `.TXT`, `.jsonl.gz`, `.txt.gz` and two types lsap cannot read: the first three
    are read (extensions in any case, gzip), the others are named in one warning line; a folder
    of only unreadable types is refused in one line, exit 2."""
    import gzip

    from lsap.data.corpora import iter_documents

    src = tmp_path / "src"
    (src / "sub").mkdir(parents=True)
    (src / "A.TXT").write_text("upper case text file")
    (src / "b.jsonl.gz").write_bytes(gzip.compress(b'{"text": "one"}\n{"text": "two"}\n'))
    (src / "sub" / "c.Txt.GZ").write_bytes(gzip.compress(b"gzipped text"))
    (src / "d.jsonl.zst").write_bytes(b"\x28\xb5\x2f\xfd")
    (src / "e.doc").write_bytes(b"binary")
    (src / "f.doc").write_bytes(b"binary")
    docs = list(iter_documents(str(src)))
    assert docs == ["upper case text file", "one", "two", "gzipped text"]
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "skipping 3 file(s)" in err[0], err
    assert ".doc ×2" in err[0] and ".jsonl.zst ×1" in err[0] and "convert" in err[0]
    argv = ["prepare", "--tokenizer", tiny_world["base_tok"], "--val-fraction", "0", "--quiet"]
    assert main([*argv, "--source", str(src), "--out", str(tmp_path / "d")]) == 0
    assert (
        json.loads((tmp_path / "d" / "manifest.json").read_text())["splits"]["train"]["documents"]
        == 4
    )
    capsys.readouterr()
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "x.doc").write_bytes(b"binary")
    (bad / "y.jsonl.zst").write_bytes(b"z")
    assert main([*argv, "--source", str(bad), "--out", str(tmp_path / "d2")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "no .txt/.jsonl/.parquet" in err[0], err
    assert "2 file(s) of other types: .doc ×1, .jsonl.zst ×1" in err[0]
    assert not (tmp_path / "d2" / "manifest.json").exists()
    from lsap.data.corpora import check_dataset_spec  # preflight, analyze, sweeps: the same cause

    with pytest.raises(DataError, match=r"no \.txt/.*\.doc ×1"):
        check_dataset_spec(str(bad))
    assert main([*argv, "--source", str(bad / "x.doc"), "--out", str(tmp_path / "d2")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "x.doc: unsupported file type (use .txt" in err[0], err
    assert not (tmp_path / "d2").exists()  # refused before anything is written
    (bad / "torn.jsonl.gz").write_bytes(gzip.compress(b'{"text": "x"}\n')[:-6])
    assert main([*argv, "--source", str(bad / "torn.jsonl.gz"), "--out", str(tmp_path / "d3")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "torn.jsonl.gz: cannot be read as .jsonl.gz" in err[0], err
    (bad / "torn.jsonl.gz").write_bytes(gzip.compress(b'{"text": "repaired text"}\n'))
    assert main([*argv, "--source", str(bad / "torn.jsonl.gz"), "--out", str(tmp_path / "d3")]) == 0
    assert not (tmp_path / "d3" / "source_files.json").exists()  # no shard held the old text


def test_prepare_resume_refuses_a_changed_source(tiny_world, tmp_path, capsys):
    """A source folder edited between a killed `lsap prepare` and its rerun: one line naming
    the changed file and the fix, exit 2, nothing written; unchanged, the rerun resumes and ends
    byte-identical to a straight run (no fingerprint file left)."""
    from pydoc_data.topics import topics

    from lsap.data.shards import prepare

    src = tmp_path / "src"
    src.mkdir()
    for i, name in enumerate(sorted(topics)[:30]):
        (src / f"{i:02d}.txt").write_text(topics[name])
    kw = dict(val_fraction=0.1, shard_tokens=1024, progress=False)
    prepare(tiny_world["base_tok"], str(src), tmp_path / "ref", **kw)

    def killed(out):
        def stop():
            raise KeyboardInterrupt

        with pytest.raises(KeyboardInterrupt):
            prepare(tiny_world["base_tok"], str(src), out, on_shard=stop, **kw)
        assert not json.loads((out / "manifest.json").read_text())["complete"]

    killed(tmp_path / "a")
    prepare(tiny_world["base_tok"], str(src), tmp_path / "a", **kw)  # unchanged: resumes
    assert _tree_bytes(tmp_path / "a") == _tree_bytes(tmp_path / "ref")
    assert not (tmp_path / "a" / "source_files.json").exists()

    killed(tmp_path / "b")
    before = _tree_bytes(tmp_path / "b")
    (src / "07.txt").write_text("edited after the kill")
    argv = ["prepare", "--tokenizer", tiny_world["base_tok"], "--source", str(src)]
    argv += ["--out", str(tmp_path / "b"), "--val-fraction", "0.1", "--shard-tokens", "1024"]
    capsys.readouterr()
    assert main([*argv, "--quiet"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "07.txt modified (size" in err[0], err
    assert "Restore the source to resume" in err[0] and "use another --out" in err[0]
    assert _tree_bytes(tmp_path / "b") == before
    (src / "99.txt").write_text("a new file")
    assert main([*argv, "--quiet"]) == 2
    assert "99.txt added" in capsys.readouterr().err


# --------------------------------------------------------------------------- weak maps, GGUF
def test_specials_only_intersection_is_refused(tiny_world, tmp_path):
    from lsap.data.tokenizer import load_tokenizer, padded_vocab_size
    from lsap.method.vocab import ABSENT, VocabMap

    base, sur = load_tokenizer(tiny_world["base_tok"]), load_tokenizer(tiny_world["surrogate"])
    vmap = VocabMap.from_tokenizers(base, sur, base_vocab_size=padded_vocab_size(base))
    assert vmap.weakness() is None
    roles = {b for b, _ in vmap.role_pairs.values()}
    keep = torch.zeros_like(vmap.base_to_surrogate, dtype=torch.bool)
    keep[list(roles)] = True
    s_keep = torch.zeros_like(vmap.surrogate_to_base, dtype=torch.bool)
    s_keep[[s for _, s in vmap.role_pairs.values()]] = True
    vmap.base_to_surrogate[~keep] = ABSENT
    vmap.surrogate_to_base[~s_keep] = ABSENT
    assert "only special tokens" in vmap.weakness()
    vmap.save(tmp_path / "map")
    args = (
        *LSAP,
        f"surrogate.model={tiny_world['surrogate']}",
        f"surrogate.vocab_map={tmp_path / 'map'}",
    )
    with pytest.raises(TrainingError, match="only special tokens.*allow_small_intersection=true"):
        Trainer.from_config(cfg_for(tiny_world, tmp_path / "r", *args))
    Trainer.from_config(
        cfg_for(tiny_world, tmp_path / "r2", *args, "lsap.allow_small_intersection=true")
    ).close()
    small = VocabMap.from_tokenizers(base, sur, base_vocab_size=padded_vocab_size(base) + 128)
    small.save(tmp_path / "map2")
    with pytest.raises(SurrogateError, match="--base-vocab-size"):
        Trainer.from_config(
            cfg_for(
                tiny_world,
                tmp_path / "r3",
                *LSAP,
                f"surrogate.model={tiny_world['surrogate']}",
                f"surrogate.vocab_map={tmp_path / 'map2'}",
            )
        )


def test_truncated_gguf_is_named(tmp_path):
    gguf = pytest.importorskip("gguf")
    from lsap.data.gguf import check_gguf
    from lsap.data.tokenizer import load_tokenizer
    from lsap.surrogate.load import load_surrogate

    p = tmp_path / "m.gguf"
    w = gguf.GGUFWriter(str(p), "llama")
    w.add_block_count(1)
    w.add_tensor("token_embd.weight", np.ones((64, 16), dtype=np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    assert check_gguf(p) == p.stat().st_size
    p.write_bytes(p.read_bytes()[:-100])
    with pytest.raises(SurrogateError, match=r"truncated GGUF file: .* up to byte"):
        check_gguf(p)
    with pytest.raises(SurrogateError, match="truncated"):
        load_surrogate(p)
    # the tokenizer path too (`lsap vocab --surrogate m.gguf` was a reshape traceback, exit 1)
    with pytest.raises(SurrogateError, match="truncated GGUF file"):
        load_tokenizer(p)
    assert main(["vocab", "--base", str(p), "--surrogate", str(p), "--data", "pydoc-topics"]) == 2
    p.write_bytes(p.read_bytes()[:40])
    with pytest.raises(SurrogateError, match="inside its header"):
        check_gguf(p)
    p.write_bytes(b"not a gguf at all")
    with pytest.raises(SurrogateError, match="not a GGUF"):
        check_gguf(p)


# --------------------------------------------------------------------------- distributed stall
def _children(pid: int) -> list[int]:
    out = []
    for t in Path(f"/proc/{pid}/task").iterdir():
        out += [int(c) for c in (t / "children").read_text().split()]
    return out


def test_stalled_rank_ends_the_job_with_a_named_error(tiny_world, tmp_path):
    out = tmp_path / "two"
    argv = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node=2",
        "-m",
        "lsap",
        "train",
        *args_for(
            tiny_world,
            out,
            "train.max_steps=100000",
            "train.dist_timeout_s=10",
            "train.micro_batch_size=2",
        ),
    ]
    p = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV)
    stopped = None
    try:
        wait_for(
            lambda: (
                (out / "metrics.jsonl").is_file() and (out / "metrics.jsonl").read_text().strip()
            ),
            proc=p,
        )
        for c in _children(p.pid):
            env = Path(f"/proc/{c}/environ").read_bytes().split(b"\0")
            if b"RANK=1" in env:
                stopped = c
        assert stopped is not None
        os.kill(stopped, signal.SIGSTOP)
        t0 = time.time()
        _, err = p.communicate(timeout=240)
        waited = time.time() - t0
    finally:
        if stopped is not None:
            try:
                os.kill(stopped, signal.SIGKILL)
            except ProcessLookupError:
                pass
        p.kill()
    assert p.returncode != 0
    assert "timed out after train.dist_timeout_s=10s" in err, err[-3000:]
    print(f"stalled rank: job ended {waited:.1f}s after the SIGSTOP (dist_timeout_s=10)")
    # rank 0 names the stall after 10 s; torchrun (2.13) then needs its 5 s monitor interval and
    # a fixed 30 s SIGTERM grace before it SIGKILLs the stopped rank (README, Reliability): ≈ 47 s
    assert waited < 10 + 35 + 60


# --------------------------------------------------------------------------- store builds by many ranks
def _store_build_argv(world, data, out, *extra) -> list[str]:
    return [
        "store",
        "build",
        "--surrogate",
        world["surrogate"],
        "--data",
        str(data),
        "--seq-len",
        "32",
        "--k",
        "4",
        "--min-alpha",
        "0.01",
        "--out",
        str(out),
        "--batch-size",
        "8",
        "--chunk-windows",
        "24",
        "--no-progress",
        *extra,
    ]


def test_second_store_build_into_one_dir_is_refused_by_name(tiny_world, store, tmp_path):
    """A running build holds DIR/.lsap.utils.lock; a second build (one process or a torchrun
    job) into the same directory stops with one line naming the holder."""
    from lsap.utils.lock import DirLock

    out = tmp_path / "s"
    with DirLock(out, "lsap store build"):
        r = lsap_cli(*_store_build_argv(tiny_world, store / "data", out))
        one_line_error(r, "being written by", "lsap store build", str(os.getpid()))
    assert not (out / "manifest.json").exists()


@pytest.mark.slow
def test_second_multi_rank_store_build_is_refused_on_every_rank(tiny_world, store, tmp_path):
    from lsap.utils.lock import DirLock

    out = tmp_path / "s"
    with DirLock(out, "lsap store build"):
        r = subprocess.run(
            [
                sys.executable,
                "-m",
                "torch.distributed.run",
                "--standalone",
                "--nproc_per_node=2",
                "-m",
                "lsap",
                *_store_build_argv(tiny_world, store / "data", out),
            ],
            capture_output=True,
            text=True,
            env=ENV,
            timeout=300,
        )
    assert r.returncode != 0
    # every rank raises the same one-line error (torchrun may stop the slower one before it prints)
    lines = [ln for ln in r.stderr.splitlines() if ln.startswith("lsap store: error:")]
    assert 1 <= len(lines) <= 2 and all(
        "rank 0 of 2" in ln and "being written by" in ln for ln in lines
    ), r.stderr[-2000:]
    assert (
        "exitcode  : 2" in r.stderr
    )  # the first rank to stop exited with the CLI's status, not a timeout
    assert not (out / "manifest.json").exists()


def test_store_resumed_with_other_settings_names_each_one(tiny_world, store, tmp_path, capsys):
    """A killed store build rerun with another --batch-size (it changes the chunks' bytes: the
    surrogate's batches are fixed inside a chunk), --k or --seq-len: one line naming each
    setting with both values and the fix; nothing is deleted, and the original arguments then
    resume it byte-identical to a straight build."""
    from lsap.surrogate.store_build import build_store

    out = tmp_path / "s"

    def kill(c):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        build_store(
            tiny_world["surrogate"], store / "data", 32, out, k=4, min_alpha=0.01,
            batch_size=8, chunk_windows=24, progress=False, on_chunk=kill,
        )  # fmt: skip
    chunk0 = (out / "chunks" / "000000.bin").read_bytes()
    argv = _store_build_argv(tiny_world, store / "data", out)
    capsys.readouterr()
    assert main([*argv, "--batch-size", "16"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("lsap store: error: "), err
    assert "--batch-size: the store was built with 8, this command says 16" in err[0]
    assert "rerun with the original arguments to resume" in err[0] and "another --out" in err[0]
    assert main([*argv, "--k", "5", "--seq-len", "16"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--k: the store was built with 4, this command says 5" in err[0]
    assert "--seq-len: the store was built with 32, this command says 16" in err[0]
    assert "n_windows" not in err[0] and "positions" not in err[0]  # follow from --seq-len
    assert (out / "chunks" / "000000.bin").read_bytes() == chunk0  # nothing thrown away
    assert main(argv) == 0  # the original arguments resume
    for f in sorted((store / "c").rglob("*")):
        if f.is_file() and f.name != "build_stats.json" and not f.name.startswith("verified-"):
            assert (out / f.relative_to(store / "c")).read_bytes() == f.read_bytes(), f


@pytest.mark.parametrize(
    "extra, needle",
    [
        (["--seq-len", "-5"], "argument --seq-len: must be at least 1"),
        (["--max-windows", "-1"], "argument --max-windows: must be at least 1"),
        (["--batch-size", "0"], "argument --batch-size: must be at least 1"),
        (["--chunk-windows", "0"], "argument --chunk-windows: must be at least 1"),
        (["--dtype", "float16"], "argument --dtype: invalid choice: 'float16'"),
        (["--dist-timeout-s", "nan"], "argument --dist-timeout-s: must be a finite positive"),
        (["--dist-timeout-s", "-1"], "argument --dist-timeout-s: must be a finite positive"),
        (["--k", "300"], "k must lie in [1, 255]"),
        (["--min-alpha", "1.5"], "min_alpha must lie in [0, 1)"),
    ],
)
def test_store_build_bad_numbers_are_one_line_before_any_work(
    tiny_world, store, tmp_path, capsys, extra, needle
):
    """Each refused with one error line (after argparse's usage for flag errors), exit 2,
    before the surrogate is loaded or anything is written."""
    out = tmp_path / "s"
    try:
        rc = main([*_store_build_argv(tiny_world, store / "data", out), *extra])
    except SystemExit as e:  # argparse: usage, then the error line
        rc = e.code
    assert rc == 2
    err = [ln for ln in capsys.readouterr().err.strip().splitlines() if "error" in ln]
    assert len(err) == 1 and needle in err[0] and err[0].startswith("lsap store"), err
    assert not out.exists() or not any(out.iterdir())


def test_inference_dtype_outside_the_list_is_a_named_surrogate_error():
    from lsap.surrogate.load import inference_device_dtype

    with pytest.raises(SurrogateError, match="auto, bfloat16, float32, got 'float16'"):
        inference_device_dtype("cpu", "float16")


def test_store_of_the_other_window_layout_is_refused_by_lsap_train(tiny_world, store, tmp_path):
    """An OLMo-core-layout store (T-token instances) given to `lsap train` (T+1-token windows):
    one line naming both layouts, before any step."""
    assert (
        main(
            _store_build_argv(
                tiny_world, store / "data", tmp_path / "olmo", "--window-layout", "olmo"
            )
        )
        == 0
    )
    r = lsap_cli(
        "train",
        *args_for(
            {"data": str(store / "data")},
            tmp_path / "run",
            *LSAP,
            f"surrogate.model={tiny_world['surrogate']}",
            "surrogate.source=store",
            f"surrogate.store_dir={tmp_path / 'olmo'}",
        ),
    )
    one_line_error(r, "window_layout 'olmo'", "'lsap'", "--window-layout lsap")
    assert not (tmp_path / "run" / "metrics.jsonl").exists()


# --------------------------------------------------------------------------- the suite itself
def test_ci_fails_on_a_skip_it_did_not_expect(tmp_path):
    """conftest's hook: with CI=true a skip not in expected_skips.txt fails the session;
    listed ones pass; outside CI skips stay skips."""
    import shutil

    here = Path(__file__).parent
    shutil.copy(here / "conftest.py", tmp_path / "conftest.py")
    (tmp_path / "test_x.py").write_text(
        "import pytest\n\ndef test_ok():\n    pass\n\n"
        "def test_extra():\n    pytest.importorskip('lsap_no_such_extra')\n\n"
        "@pytest.mark.skipif(True, reason='needs a GPU')\ndef test_gpu():\n    pass\n"
    )

    def pytest_in(env_ci: str) -> subprocess.CompletedProcess:
        env = {k: v for k, v in ENV.items() if k not in ("CI", "LSAP_STRICT_SKIPS")}
        return subprocess.run(
            [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(tmp_path)],
            capture_output=True,
            text=True,
            cwd=tmp_path,
            timeout=120,
            env={**env, "CI": env_ci},
        )

    r = pytest_in("true")
    assert r.returncode == 1, r.stdout[-2000:]
    assert (
        "2 unexpected skip(s)" in r.stdout
        and "test_x.py::test_extra: could not import 'lsap_no_such_extra'" in r.stdout
        and "test_x.py::test_gpu: needs a GPU" in r.stdout
    ), r.stdout[-2000:]
    assert pytest_in("false").returncode == 0
    (tmp_path / "expected_skips.txt").write_text("# ok here\ntest_x.py::test_gpu: needs a GPU\n")
    r = pytest_in("true")
    assert r.returncode == 1 and "1 unexpected skip(s)" in r.stdout and "test_extra" in r.stdout, (
        r.stdout[-2000:]
    )
    (tmp_path / "expected_skips.txt").write_text(
        "test_x.py::test_gpu: needs a GPU\n*: could not import *\n"
    )
    assert pytest_in("true").returncode == 0


def test_the_suite_has_its_own_cache_root():
    from lsap.data.tokenizer import cache_root

    repo = Path(__file__).resolve().parents[1]
    root = cache_root().resolve()
    assert root != (Path.home() / ".cache" / "lsap").resolve()
    if not os.environ.get("LSAP_TEST_CACHE"):
        assert root == repo / ".pytest_cache" / "lsap"
        r = subprocess.run(
            ["git", "check-ignore", "-q", str(root / "x")], cwd=repo, capture_output=True
        )
        assert r.returncode in (0, 128), (
            "the suite's cache root must be git-ignored"
        )  # 128: not a git checkout


def test_run_dir_records_provenance_and_checkpoints_carry_a_model_card(tiny_world, tmp_path):
    out = tmp_path / "r"
    Trainer.from_config(cfg_for(tiny_world, out, "train.max_steps=2")).run()
    prov = json.loads((out / "provenance.json").read_text())
    assert prov["lsap_version"] == lsap.__version__ and prov["torch"] == torch.__version__
    assert prov["device"] == "cpu" and prov["cpu"]
    card = (out / "checkpoints" / "step_00000002" / "model" / "README.md").read_text()
    assert (
        "step 2" in card
        and "tokens trained:" in card
        and "FLOPs:" in card
        and "../config.yaml" in card
    )
    assert f"lsap_version: {lsap.__version__}" in card


# --------------------------------------------------------------------------- --from-arrays
def _eos0_stream(n_docs=40, seed=0) -> np.ndarray:
    """Documents of 5-30 ids in 1..599, each followed by EOS id 0 (lsap's own BPEs)."""
    rng = np.random.default_rng(seed)
    return np.concatenate(
        [np.append(rng.integers(1, 600, rng.integers(5, 30)), 0) for _ in range(n_docs)]
    )


def _write_raw(path: Path, tokens: np.ndarray, dtype: str, meta: bool = False) -> Path:
    import gzip

    path.parent.mkdir(parents=True, exist_ok=True)
    tokens.astype(dtype).tofile(path)
    if meta:  # dolma's start,end,path,id per document
        ends = np.nonzero(tokens == 0)[0] + 1
        starts = np.concatenate([[0], ends[:-1]])
        name = path.name.removesuffix(".npy") + ".csv.gz"
        with gzip.open(path.with_name(name), "wt") as f:
            f.writelines(f"{a},{b},src.jsonl,{i}\n" for i, (a, b) in enumerate(zip(starts, ends)))
    return path


@pytest.fixture
def eos0_tok(tiny_world):
    from lsap.data.tokenizer import document_separator, load_tokenizer

    assert document_separator(load_tokenizer(tiny_world["base_tok"])) == 0
    return tiny_world["base_tok"]


def _link(tok, src, out, *extra):
    return main(["prepare", "--tokenizer", tok, "--from-arrays", str(src), "--out", str(out),
                 "--quiet", *extra])  # fmt: skip


def test_from_arrays_proves_dtype_and_format(eos0_tok, tmp_path, capsys):
    s = _eos0_stream()
    # the good case: uint16, with and without dolma metadata
    _write_raw(tmp_path / "ok" / "part-0-00000.npy", s, "uint16", meta=True)
    _write_raw(tmp_path / "ok" / "part-0-00001.npy", s, "uint16")
    assert _link(eos0_tok, tmp_path / "ok", tmp_path / "linked") == 0
    capsys.readouterr()

    def refused(src, *needles, extra=()):
        assert _link(eos0_tok, src, tmp_path / ("o-" + Path(src).name), *extra) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and all(n in err[0] for n in needles), err
        assert not (tmp_path / ("o-" + Path(src).name) / "manifest.json").exists()

    # np.save files: the 128-byte header would be 64 tokens per file
    (tmp_path / "npy").mkdir()
    np.save(tmp_path / "npy" / "a.npy", s.astype("uint16"))
    refused(tmp_path / "npy", "np.save header", "tofile")
    # uint32 arrays read as uint16 with EOS id 0: every other token 0 (was: 2x tokens, exit 0)
    _write_raw(tmp_path / "u32" / "a.npy", s, "uint32")
    refused(tmp_path / "u32", "every second token 0", "--token-dtype uint32")
    # ... and with dolma metadata next to it, the metadata names the dtype
    _write_raw(tmp_path / "u32m" / "a.npy", s, "uint32", meta=True)
    refused(tmp_path / "u32m", "dolma metadata records", "--token-dtype uint32")
    # a folder mixing uint16 and uint32 files
    _write_raw(tmp_path / "mix" / "a.npy", s, "uint16")
    _write_raw(tmp_path / "mix" / "b.npy", s, "uint32")
    refused(tmp_path / "mix", "b.npy", "mix dtypes", "1 of 2 files")
    # implausible EOS spacing (mean document under 3 tokens) even without zero high halves
    dense = np.array([5, 0, 0, 6, 0] * 20, dtype="uint16")
    _write_raw(tmp_path / "dense" / "a.npy", dense, "uint16")
    refused(tmp_path / "dense", "EOS (id 0)", "looks like uint32")
    # the right dtype passes
    assert _link(eos0_tok, tmp_path / "u32", tmp_path / "l32", "--token-dtype", "uint32") == 0


def test_read_only_cache_names_lsap_cache(tmp_path, monkeypatch):
    """A read-only LSAP_CACHE said only "Read-only file system: PATH"."""
    import errno

    from lsap.cli.main import one_line

    monkeypatch.setenv("LSAP_CACHE", str(tmp_path / "cache"))
    e = OSError(errno.EROFS, "Read-only file system", str(tmp_path / "cache" / "tokenizers"))
    line = one_line(e)
    assert "Read-only file system" in line and "set LSAP_CACHE to a writable directory" in line
    other = one_line(OSError(errno.EACCES, "Permission denied", str(tmp_path / "run")))
    assert "LSAP_CACHE" not in other  # only paths inside the cache get the hint
