"""Checkpoints on disk: list / latest / save / load / prune, and what "finished" means.

Layout of one checkpoint (written by `save_training`)::

    RUN/checkpoints/step_00000100/model/        HF `save_pretrained` weights + tokenizer
    RUN/checkpoints/step_00000100/trainer.pt    optimizer, loader position, FLOPs ledger, RNG, step
    RUN/checkpoints/step_00000100/config.yaml   the resolved run config
    RUN/checkpoints/step_00000100/meta.json     step, tokens, FLOPs (written last)
    RUN/checkpoints/step_00000100/eval.json     added later by `lsap eval`

A checkpoint is **finished** when its directory is named ``step_`` + 8 digits (no
suffix) and holds ``meta.json``. `save` writes everything into ``step_….tmp``, meta.json
last, fsyncs, then renames: a kill at any moment leaves either a finished checkpoint
or a ``.tmp`` directory, which `clean_stale` removes and nothing else ever reads.
Every consumer (trainer, `lsap eval`, `lsap report`, the quickstart) lists checkpoints
with `list_checkpoints`, so they all agree on which exist.
"""

from __future__ import annotations

import errno
import json
import os
import random
import re
import shutil
from collections.abc import Callable
from pathlib import Path

from lsap.utils.errors import TrainingError
from lsap.utils.io import fsync_tree
from lsap.utils.logging import get_logger

log = get_logger(__name__)

_NAME = re.compile(r"^step_(\d{8})$")


def root_of(run_or_root: str | os.PathLike) -> Path:
    """RUN/checkpoints for a run directory; the directory itself if it is already that."""
    p = Path(run_or_root)
    return p if p.name == "checkpoints" else p / "checkpoints"


def is_finished(path: str | os.PathLike) -> bool:
    p = Path(path)
    return bool(_NAME.match(p.name)) and (p / "meta.json").is_file()


def list_checkpoints(run_or_root: str | os.PathLike) -> list[Path]:
    """Finished checkpoints of a run (or of a checkpoints/ directory), in step order."""
    root = root_of(run_or_root)
    if not root.is_dir():
        return []
    return sorted(p for p in root.iterdir() if p.is_dir() and is_finished(p))


def latest(run_or_root: str | os.PathLike) -> Path | None:
    done = list_checkpoints(run_or_root)
    return done[-1] if done else None


def clean_stale(run_or_root: str | os.PathLike) -> list[Path]:
    """Remove ``step_*.tmp`` directories (checkpoints whose writer was killed). Only the
    directory's lock holder may call this: a live writer's .tmp would go too."""
    root = root_of(run_or_root)
    gone = sorted(root.glob("step_*.tmp")) if root.is_dir() else []
    for p in gone:
        shutil.rmtree(p, ignore_errors=True)
    return gone


def save(
    run_or_root: str | os.PathLike, step: int, write: Callable[[Path], None], meta: dict
) -> Path:
    """Write checkpoint `step`: `write(tmp_dir)` fills it, then meta.json, fsync, rename."""
    root = root_of(run_or_root)
    final = root / f"step_{step:08d}"
    tmp = final.with_name(final.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        tmp.mkdir(parents=True)
        write(tmp)
        (tmp / "meta.json").write_text(json.dumps(meta, indent=2))
        fsync_tree(tmp)
        if final.exists():
            shutil.rmtree(final)
        tmp.rename(final)
    except (
        BaseException
    ) as e:  # disk full, quota, I/O error, or a kill: no half checkpoint stays behind
        why = _write_error_text(e, tmp) if isinstance(e, Exception) else ""
        shutil.rmtree(tmp, ignore_errors=True)
        if not why:
            raise
        prev = latest(root)
        raise TrainingError(
            f"checkpoint step {step} not saved: {why} (under {root}); the partial copy was removed and "
            + (
                f"the previous checkpoint {prev.name} is intact: --resume continues from it"
                if prev
                else "no earlier checkpoint exists"
            )
            + "; free disk space and run again"
            + (" with --resume" if prev else "")
        ) from e
    return final


_FULL = {
    errno.ENOSPC: "disk full (No space left on device)",
    errno.EDQUOT: "disk quota exceeded",
    errno.EFBIG: "a file outgrew the file-size limit (File too large; see `ulimit -f`)",
}


def _write_error_text(e: Exception, tmp: Path) -> str:
    """Why a checkpoint write failed, in words. The libraries lose the errno on the way:
    safetensors gives it as text ("os error 28"), torch.save not at all ("unexpected pos
    …"), so a full file system or a file at RLIMIT_FSIZE is also looked for directly."""
    text = str(e)
    code = getattr(e, "errno", None)
    if code not in _FULL:
        code = next((c for c in _FULL if f"os error {c})" in text or os.strerror(c) in text), None)
    if code is None:
        try:
            st = os.statvfs(tmp.parent)
            if st.f_bavail * st.f_frsize < (1 << 20):
                code = errno.ENOSPC
            else:
                import resource

                soft = resource.getrlimit(resource.RLIMIT_FSIZE)[0]
                if soft != resource.RLIM_INFINITY and any(
                    f.is_file() and f.stat().st_size >= soft for f in tmp.rglob("*")
                ):
                    code = errno.EFBIG
        except (OSError, ImportError, ValueError):
            pass
    if code in _FULL:
        return _FULL[code]
    return f"{type(e).__name__}: {text.splitlines()[0][:200] if text else ''}"


AUTO_KEEP = 2  # keep_checkpoints = -1 ("auto") on a large model: the newest 2 (+ protected)
AUTO_KEEP_ALL_BYTES = 1 << 30  # ... "auto" keeps every checkpoint while one is below 1 GiB


def dir_bytes(path: str | os.PathLike) -> int:
    """Bytes of the files under `path` (a checkpoint's size on disk, roughly)."""
    return sum(f.stat().st_size for f in Path(path).rglob("*") if f.is_file())


def _step_of(p: Path) -> int | None:
    m = re.fullmatch(r"step_(\d+)", p.name)
    return int(m.group(1)) if m else None


def resolve_keep(keep: int, ckpt_bytes: int) -> int:
    """`train.keep_checkpoints` → how many newest to keep (0: all). -1 ("auto", the default):
    all while a checkpoint is < AUTO_KEEP_ALL_BYTES (the tiny quickstart/sweep models, whose
    intermediate checkpoints `lsap eval --checkpoints all` reads), else AUTO_KEEP (a 1B
    checkpoint with its optimizer is ~18 GB)."""
    if keep >= 0:
        return keep
    return 0 if ckpt_bytes < AUTO_KEEP_ALL_BYTES else AUTO_KEEP


def prune(run_or_root: str | os.PathLike, keep: int, protect=(), ckpt_bytes: int = 0) -> list[Path]:
    """Delete all but the `keep` newest finished checkpoints (keep = 0: keep all; -1: auto,
    see `resolve_keep` with `ckpt_bytes`), never those whose step is in `protect` (the
    `train.ckpt_at` matched-FLOPs points)."""
    keep = resolve_keep(keep, ckpt_bytes)
    if keep <= 0:
        return []
    protect = {int(s) for s in protect}
    gone = [p for p in list_checkpoints(run_or_root)[:-keep] if _step_of(p) not in protect]
    for p in gone:
        shutil.rmtree(p)
    return gone


def load(path: str | os.PathLike) -> tuple[dict, dict]:
    """(model state dict from model/*.safetensors, trainer state from trainer.pt).

    Raises whatever the readers raise for a damaged checkpoint (see `load_latest`).
    """
    import torch
    from safetensors.torch import load_file

    p = Path(path)
    files = sorted((p / "model").glob("*.safetensors"))
    if not files:
        raise FileNotFoundError(f"{p / 'model'}: no *.safetensors")
    model_sd = {}
    for f in files:
        model_sd.update(load_file(f))
    trainer = torch.load(p / "trainer.pt", weights_only=False, map_location="cpu")
    return model_sd, trainer


def _warn(msg: str) -> None:
    log.warning(msg)


def load_latest(
    run_or_root: str | os.PathLike, warn=_warn, check: Callable[[Path], None] | None = None
):
    """(path, model_sd, trainer_state) of the newest finished checkpoint that reads back;
    an unreadable one (truncated file, disk error) is skipped with a warning. None if none.
    check(path), when given, runs before each candidate is read and may raise to refuse it."""
    for p in reversed(list_checkpoints(run_or_root)):
        if check is not None:
            check(p)
        try:
            return (p, *load(p))
        except Exception as e:  # noqa: BLE001 — torch/safetensors raise many types for a torn file
            warn(
                f"[lsap] warning: checkpoint {p} is unreadable ({type(e).__name__}: {str(e)[:200]}); "
                "falling back to the previous one"
            )
    return None


# --------------------------------------------------------------------------- training state
def rng_state() -> dict:
    import numpy as np
    import torch

    s = {
        "python": random.getstate(),
        "numpy": np.random.get_state(),
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        s["cuda"] = torch.cuda.get_rng_state_all()
    return s


def set_rng_state(s: dict) -> None:
    import numpy as np
    import torch

    random.setstate(s["python"])
    np.random.set_state(s["numpy"])
    torch.set_rng_state(s["torch"])
    if "cuda" in s and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(s["cuda"])


def save_training(
    run_or_root: str | os.PathLike,
    step: int,
    *,
    lm,
    model_sd: dict,
    tokenizer,
    state: dict,
    config_yaml: str,
    meta: dict,
) -> Path:
    """A training checkpoint: `lm.save_pretrained(model_sd)` + tokenizer under model/, `state`
    (optimizer, loader, ledger, RNG, step) in trainer.pt, the resolved config. Refuses
    non-finite weights, so a checkpoint named "last" can always be trained from."""
    import torch

    bad = [
        k
        for k, v in model_sd.items()
        if v.is_floating_point() and not bool(torch.isfinite(v).all())
    ]
    if bad:
        raise TrainingError(
            f"step {step}: non-finite weights in {bad[0]} (and {len(bad) - 1} more); "
            f"not saved. Last finite checkpoint: {latest(run_or_root) or 'none'}"
        )

    def write(tmp: Path) -> None:
        lm.save_pretrained(tmp / "model", state_dict=model_sd)
        tokenizer.save_pretrained(tmp / "model")
        torch.save(state, tmp / "trainer.pt")
        (tmp / "config.yaml").write_text(config_yaml)
        from lsap.train.model_card import model_card

        (tmp / "model" / "README.md").write_text(model_card(config_yaml, {"step": step, **meta}))

    return save(run_or_root, step, write, meta)


# What may differ between a checkpoint's config and a `--resume` request: budgets,
# cadence, placement and the implementation of the same math. Everything else
# (model, data, loss, optimizer, seeds, batch) must match key by key.
RESUME_MAY_CHANGE = (
    "name",
    "out_dir",
    "data.dir",
    "surrogate.batch_size",
    "surrogate.dtype",
    "train.max_steps",
    "train.max_tokens",
    "train.max_flops",
    "train.log_every",
    "train.eval_every",
    "train.eval_batches",
    "train.ckpt_every",
    "train.ckpt_at",
    "train.keep_checkpoints",
    "train.micro_batch_size",
    "train.device",
    "train.precision",
    "train.distributed",
    "train.loss_impl",
    "train.skip_nonfinite_steps",
    "train.dist_timeout_s",
    "train.loggers",
)


def flatten(d: dict, prefix: str = "") -> dict:
    """{'a': {'b': 1}} → {'a.b': 1}; `model.overrides` entries become their own keys."""
    out = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(flatten(v, f"{prefix}{k}."))
        else:
            out[prefix + k] = v
    return out


def resume_differences(saved: dict, requested: dict) -> list[str]:
    """`key: saved → requested` for each key a resumed run may not change (see RESUME_MAY_CHANGE)."""
    a, b = flatten(saved), flatten(requested)
    diffs = []
    for key in sorted(set(a) | set(b)):
        if key in RESUME_MAY_CHANGE:
            continue
        if a.get(key, "<unset>") != b.get(key, "<unset>"):
            diffs.append(f"{key}: {a.get(key, '<unset>')!r} → {b.get(key, '<unset>')!r}")
    return diffs


def load_for_resume(
    run_or_root: str | os.PathLike, config: dict, warn=_warn
) -> tuple[Path, dict, dict]:
    """(path, model_sd, trainer_state) of the newest readable finished checkpoint, falling
    back over unreadable ones; refuses (TrainingError, key by key) a checkpoint trained
    with another config than `config` (`resume_differences`)."""
    import yaml

    def same_config(p: Path) -> None:
        if not (p / "config.yaml").is_file():
            return
        diffs = resume_differences(yaml.safe_load((p / "config.yaml").read_text()), config)
        if diffs:
            raise TrainingError(
                f"--resume: {p} was trained with another config: {'; '.join(diffs)}. Resume with the "
                "checkpoint's values, or start a new out_dir (only budgets, logging, eval and checkpoint "
                "cadence, placement and precision may change on resume)"
            )

    found = load_latest(run_or_root, warn, check=same_config)
    if found is None:
        raise TrainingError(
            f"--resume: no readable finished checkpoint under {root_of(run_or_root)}; "
            "start without --resume in a new out_dir"
        )
    return found


def restore_training(
    run_or_root: str | os.PathLike,
    *,
    config: dict,
    module,
    opt,
    tied: bool,
    data_sha256: list[str],
    warn=_warn,
) -> tuple[Path, dict]:
    """Resume `module` (an `lsap.train.loop.LossModule`, wrapped or not) and `opt` from the newest
    readable checkpoint with the same config (`load_for_resume`) and the RNG state;
    refuses other train data. Returns (path, trainer state: loader, ledger, step, ...)."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, set_state_dict

    last, model_sd, st = load_for_resume(run_or_root, config, warn)
    if st.get("data_sha256") and st["data_sha256"] != data_sha256:
        raise TrainingError(
            f"--resume: {last} was trained on other token shards than the run's data.dir "
            "(shard sha256 differ); point data.dir at the run's data"
        )
    sd = fit_model_state(model_sd, module.state_dict(), tied=tied, where=last)
    set_state_dict(
        module,
        opt,
        model_state_dict=sd,
        optim_state_dict=st["optimizer"],
        options=StateDictOptions(full_state_dict=True, strict=True),
    )
    set_rng_state(st["rng"])
    return last, st


def fit_model_state(
    model_sd: dict, expected: dict, *, tied: bool, where, prefix: str = "lm."
) -> dict:
    """A saved model state dict keyed for the module whose state dict is `expected`
    (`prefix` prepended; a tied head, which `save_pretrained` drops, restored from the
    embeddings). Raises TrainingError "does not fit" on missing, unexpected or resized
    tensors (e.g. a checkpoint without config.yaml resumed into a model of another width)."""
    sd = {f"{prefix}{k}": v for k, v in model_sd.items()}
    head, emb = f"{prefix}lm_head.weight", f"{prefix}model.embed_tokens.weight"
    if tied and head in expected and head not in sd and emb in sd:
        sd[head] = sd[emb]
    missing, unexpected = expected.keys() - sd.keys(), sd.keys() - expected.keys()
    if missing or unexpected:
        raise TrainingError(
            f"--resume: {where} does not fit the model: missing {sorted(missing)[:3]}, "
            f"unexpected {sorted(unexpected)[:3]}"
        )
    resized = [k for k in sorted(sd) if tuple(sd[k].shape) != tuple(expected[k].shape)]
    if resized:
        k = resized[0]
        raise TrainingError(
            f"--resume: {where} does not fit the model: {k} is {tuple(sd[k].shape)} in the "
            f"checkpoint, {tuple(expected[k].shape)} in the model ({len(resized)} tensors differ); "
            "resume with the checkpoint's model settings or start a new out_dir"
        )
    return sd
