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
from lsap.cli import COMMANDS, main
from lsap.config import ConfigError, load_config
from lsap.errors import StoreError, DataError, LockError, LsapError, SurrogateError, TrainingError
from lsap.train import Trainer

SRC = str(Path(lsap.__file__).resolve().parents[1])
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": SRC + os.pathsep + os.environ.get("PYTHONPATH", "")}
LSAP = ("loss=lsap", "lsap.alpha=0.02", "lsap.k=4")


def args_for(world, out, *extra) -> list[str]:
    return [f"data.dir={world['data']}", f"out_dir={out}", "data.seq_len=32", "train.batch_size=4",
            "train.micro_batch_size=2", "train.max_steps=6", "train.log_every=1", "optim.warmup_steps=2",
            "train.eval_batches=2", *extra]


def cfg_for(world, out, *extra):
    return load_config(None, args_for(world, out, *extra))


def rows(out, kind="train") -> list[dict]:
    return [json.loads(ln) for ln in (Path(out) / "metrics.jsonl").read_text().splitlines()
            if ln.strip() and json.loads(ln)["kind"] == kind]


def lsap_cli(*argv, timeout=300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "lsap.cli", *argv], capture_output=True, text=True, env=ENV,
                          timeout=timeout)


def popen_train(*argv) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "lsap.cli", "train", *argv], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=ENV)


def wait_for(pred, timeout=180.0, proc=None):
    t0 = time.time()
    while not pred():
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"process ended early (rc {proc.returncode}): {proc.stderr.read()[-2000:]}")
        if time.time() - t0 > timeout:
            raise AssertionError("timed out waiting")
        time.sleep(0.01)


def one_line_error(r, *needles):
    assert r.returncode == 2, (r.returncode, r.stderr[-2000:])
    err = r.stderr.strip().splitlines()
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
        lock = out / ".lsap.lock"
        wait_for(lambda: lock.is_file() and f'"pid": {a.pid}' in lock.read_text(), proc=a)
        os.kill(a.pid, signal.SIGSTOP)  # holds the lock, does nothing: no race with the second start
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
    from lsap.lock import DirLock

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
    assert rows(tmp_path / "straight", "val") == [{**x, "wall_s": y["wall_s"]} for x, y in
                                                  zip(rows(tmp_path / "cut", "val"), rows(tmp_path / "straight", "val"))]
    from safetensors.torch import load_file

    wa = load_file(tmp_path / "straight" / "checkpoints" / "step_00000016" / "model" / "model.safetensors")
    wb = load_file(ck / "step_00000016" / "model" / "model.safetensors")
    assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)


def test_kill_during_the_first_checkpoint_write_is_no_dead_end(tiny_world, tmp_path, capsys):
    out = tmp_path / "r"
    Trainer.from_config(cfg_for(tiny_world, out, "train.max_steps=2")).run()
    first = [r["loss"] for r in rows(out)]
    ck = out / "checkpoints"
    (ck / "step_00000002").rename(ck / "step_00000002.tmp")  # what a kill inside save_checkpoint leaves
    (ck / "step_00000002.tmp" / "meta.json").unlink()
    Trainer.from_config(cfg_for(tiny_world, out, "train.max_steps=2")).run()  # a plain rerun: no "already has checkpoints"
    assert "removed" in capsys.readouterr().out
    assert [r["loss"] for r in rows(out)] == first  # old lines dropped, not repeated
    assert not (ck / "step_00000002.tmp").exists() and (ck / "step_00000002" / "meta.json").is_file()
    shutil_rm = __import__("shutil").rmtree
    shutil_rm(ck / "step_00000002")
    t = Trainer.from_config(cfg_for(tiny_world, out, "train.max_steps=2"), resume=True)  # --resume with nothing to resume
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
    t = Trainer.from_config(cfg_for(tiny_world, out, "optim.lr=1e6", "train.ckpt_every=1", "train.max_steps=50",
                        "optim.warmup_steps=0"))
    with pytest.raises(TrainingError, match=r"non-finite .* at step (\d+); last checkpoint: .*step_") as e:
        t.run()
    bad_step = int(str(e.value).split(" at step ")[1].split(";")[0])
    named = Path(str(e.value).split("last checkpoint: ")[1].split(" ")[0])
    assert named.name == f"step_{bad_step - 1:08d}" and named.is_dir()
    assert not (out / "checkpoints" / f"step_{bad_step:08d}").exists()
    for ck in sorted((out / "checkpoints").iterdir()):
        w = load_file(ck / "model" / "model.safetensors")
        assert all(bool(torch.isfinite(v).all()) for v in w.values()), ck
    # resuming from the named checkpoint starts from finite weights (the same lr fails the same way)
    t = Trainer.from_config(cfg_for(tiny_world, out, "optim.lr=1e6", "train.ckpt_every=1", "train.max_steps=50",
                        "optim.warmup_steps=0"), resume=True)
    assert t.step == bad_step - 1 and all(bool(torch.isfinite(p).all()) for p in t.c.lm.parameters())
    t.close()


def test_skip_nonfinite_steps(tiny_world, tmp_path, capsys):
    t = Trainer.from_config(cfg_for(tiny_world, tmp_path / "s", "optim.lr=1e30", "optim.grad_clip=0", "optim.warmup_steps=0",
                        "train.skip_nonfinite_steps=2"))
    with pytest.raises(TrainingError, match="non-finite"):
        t.run()
    skipped = [r for r in rows(tmp_path / "s") if r.get("skipped")]
    assert len(skipped) == 2 and capsys.readouterr().err.count("step skipped") == 2


# --------------------------------------------------------------------------- strict resume, overrides
def test_resume_refuses_a_changed_model(tiny_world, tmp_path):
    out = tmp_path / "r"
    Trainer.from_config(cfg_for(tiny_world, out, "train.max_steps=2")).run()
    before = (out / "config.yaml").read_text()
    with pytest.raises(TrainingError, match=r"model.overrides.num_hidden_layers: '<unset>' → 3"):
        Trainer.from_config(cfg_for(tiny_world, out, "train.max_steps=4", "model.overrides.num_hidden_layers=3"), resume=True)
    with pytest.raises(TrainingError, match=r"optim.lr: 0.0004 → 0.001"):
        Trainer.from_config(cfg_for(tiny_world, out, "train.max_steps=4", "optim.lr=1e-3"), resume=True)
    assert (out / "config.yaml").read_text() == before
    t = Trainer.from_config(cfg_for(tiny_world, out, "train.max_steps=4", "train.log_every=2"), resume=True)  # budget, cadence
    assert t.step == 2
    t.close()


def test_cli_model_overrides_merge_and_are_checked(tmp_path, capsys):
    import yaml

    p = tmp_path / "c.yaml"
    p.write_text(yaml.safe_dump({"data": {"dir": str(tmp_path)}, "train": {"max_steps": 1},
                                 "model": {"overrides": {"num_hidden_layers": 1, "intermediate_size": 96}}}))
    cfg = load_config(p, ["model.overrides.hidden_size=48"])
    assert cfg.model.overrides == {"num_hidden_layers": 1, "intermediate_size": 96, "hidden_size": 48}
    assert main(["train", "--config", str(p), "model.overrides.hiden_size=48", "--dry-run"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "did you mean 'model.overrides.hidden_size'" in err[0]


# --------------------------------------------------------------------------- config validation
@pytest.mark.parametrize("bad,needle", [
    ("lsap.lam=-1", "lsap.lam"), ("optim.lr=-1", "optim.lr must be > 0"), ("optim.betas=0.9", "optim.betas"),
    ("surrogate.model=/no/such.gguf", "surrogate.model"), ("out_dir=/etc/passwd/run", "out_dir"),
])
def test_config_errors_are_one_line_before_any_build(tiny_world, tmp_path, bad, needle):
    extra = (*LSAP, "surrogate.model=smollm2") if bad.startswith(("lsap", "surrogate")) else ()
    t0 = time.perf_counter()
    r = lsap_cli("train", *args_for(tiny_world, tmp_path / "o", *extra, bad))
    dt = time.perf_counter() - t0
    one_line_error(r, needle)
    assert not (tmp_path / "o").exists()  # nothing was built or written
    print(f"{bad}: exit 2 after {dt:.2f}s (process start included)")


def test_disk_full_is_one_line(monkeypatch, tiny_world, tmp_path, capsys):
    import errno

    import lsap.train

    def full(cfg, resume=False):
        raise OSError(errno.ENOSPC, "No space left on device", str(tmp_path / "o" / "metrics.jsonl"))

    monkeypatch.setattr(lsap.train, "train", full)
    assert main(["train", *args_for(tiny_world, tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "No space left on device" in err[0] and "metrics.jsonl" in err[0]


def test_every_command_bad_input_exits_2_with_one_line(tmp_path, capsys):
    missing = str(tmp_path / "missing")
    bad = {
        "vocab": ["--base", "dolma2", "--surrogate", "qwen3", "--data", missing],
        "prepare": ["--source", missing, "--out", str(tmp_path / "p")],
        "train": ["data.dir=x", "train.max_steps=1", "lsap.lam=-1"],
        "flops": ["--base", "no-such-preset"],
        "cache": ["info", missing],
        "analyze": ["--model", "smollm2", "--data", missing],
        "eval": [missing],
        "report": [missing],
        "quickstart": ["--surrogate", missing, "--out", str(tmp_path / "q")],
        "sweep": [missing],
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
    from lsap.data import prepare

    root = tmp_path_factory.mktemp("faults-cache")
    prepare(tiny_world["base_tok"], "pydoc-topics", root / "data", val_fraction=0.1, max_tokens=3000, progress=False)
    assert main(["cache", "build", "--surrogate", tiny_world["surrogate"], "--data", str(root / "data"),
                 "--seq-len", "32", "--k", "4", "--min-alpha", "0.01", "--out", str(root / "c"),
                 "--batch-size", "8", "--chunk-windows", "24", "--no-progress"]) == 0
    return root


@pytest.mark.parametrize("where", ["low", "high"])
def test_flipped_byte_in_a_store_chunk_is_refused_before_training_on_it(tiny_world, store, tmp_path, where):
    import shutil

    from lsap.store import _layout

    c = tmp_path / "c"
    shutil.copytree(store / "c", c)
    m = json.loads((c / "manifest.json").read_text())
    ch = m["chunks"][0]
    ids_at = _layout(ch["windows"][1] - ch["windows"][0], 32, ch["candidates"], 3)["ids"][0]
    chunk = c / ch["path"]
    b = bytearray(chunk.read_bytes())
    b[ids_at + (0 if where == "low" else 2)] ^= 0x01 if where == "low" else 0x80  # a valid vs an invalid id
    chunk.write_bytes(bytes(b))
    out = tmp_path / "r"
    t = Trainer.from_config(cfg_for(tiny_world, out, *LSAP, f"data.dir={store / 'data'}", "surrogate.source=store",
                        f"surrogate.store_dir={c}", "train.max_steps=40"))
    with pytest.raises(StoreError, match="sha256 mismatch"):
        t.run()
    done = [r["step"] for r in rows(out)] if (out / "metrics.jsonl").exists() else []
    assert done == list(range(1, t.step + 1))  # the step that reached chunk 0 never trained
    assert not t.c.targets.cache._verified[0]  # the StoredTargets source's store


def test_corrupt_token_shard_is_refused_at_first_read(tiny_world, tmp_path):
    import shutil

    from lsap.data import TokenShards

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
    from lsap.corpora import decode_text

    text = decode_text("naïve café ".encode() + b"\xff" + " ok".encode(), "f.txt")
    assert text == "naïve café \ufffd ok"
    err = capsys.readouterr().err
    assert "f.txt: 1 invalid UTF-8 byte sequence(s)" in err
    assert decode_text("caf\xe9 na\xefve".encode("latin-1"), "old.txt") == "café naïve"
    assert "old.txt: not UTF-8" in capsys.readouterr().err


def test_prepare_keeps_utf8_text_with_one_bad_byte(tiny_world, tmp_path):
    from lsap.data import TokenShards, prepare
    from lsap.tokenizer import load_tokenizer

    src = tmp_path / "doc.txt"
    src.write_bytes(("naïve café " * 20).encode() + b"\xff\n")
    prepare(tiny_world["base_tok"], str(src), tmp_path / "d", val_fraction=0.0, progress=False)
    sh = TokenShards(tmp_path / "d")
    text = load_tokenizer(tiny_world["base_tok"]).decode(sh.tokens(0, len(sh)).tolist())
    assert "naïve café" in text and "Ã" not in text


def test_prepare_refuses_an_empty_source(tiny_world, tmp_path, capsys):
    (tmp_path / "empty.txt").write_text("")
    assert main(["prepare", "--tokenizer", tiny_world["base_tok"], "--source", str(tmp_path / "empty.txt"),
                 "--out", str(tmp_path / "d"), "--quiet"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "no training tokens" in err[0]
    assert not (tmp_path / "d" / "manifest.json").exists()


# --------------------------------------------------------------------------- weak maps, GGUF
def test_specials_only_intersection_is_refused(tiny_world, tmp_path):
    from lsap.tokenizer import load_tokenizer, padded_vocab_size
    from lsap.vocab import ABSENT, VocabMap

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
    args = (*LSAP, f"surrogate.model={tiny_world['surrogate']}", f"surrogate.vocab_map={tmp_path / 'map'}")
    with pytest.raises(TrainingError, match="only special tokens.*allow_small_intersection=true"):
        Trainer.from_config(cfg_for(tiny_world, tmp_path / "r", *args))
    Trainer.from_config(cfg_for(tiny_world, tmp_path / "r2", *args, "lsap.allow_small_intersection=true")).close()
    small = VocabMap.from_tokenizers(base, sur, base_vocab_size=padded_vocab_size(base) + 128)
    small.save(tmp_path / "map2")
    with pytest.raises(SurrogateError, match="--base-vocab-size"):
        Trainer.from_config(cfg_for(tiny_world, tmp_path / "r3", *LSAP, f"surrogate.model={tiny_world['surrogate']}",
                        f"surrogate.vocab_map={tmp_path / 'map2'}"))


def test_truncated_gguf_is_named(tmp_path):
    gguf = pytest.importorskip("gguf")
    from lsap.surrogate import check_gguf, load_surrogate

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
    argv = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "lsap.cli",
            "train", *args_for(tiny_world, out, "train.max_steps=100000", "train.dist_timeout_s=10",
                               "train.micro_batch_size=2")]
    p = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV)
    stopped = None
    try:
        wait_for(lambda: (out / "metrics.jsonl").is_file() and (out / "metrics.jsonl").read_text().strip(), proc=p)
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
    assert waited < 120
