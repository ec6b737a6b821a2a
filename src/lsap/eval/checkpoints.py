"""A run's checkpoints for `lsap eval`: which exist, which were pruned, which are damaged.

Checkpoints that `train.keep_checkpoints` pruned are gone, not damaged: only what exists is
evaluated, and a requested step that was pruned is named as such (`pruned_note`)."""

from __future__ import annotations

import difflib
import json
import re
from pathlib import Path

from lsap.utils.errors import EvalError


def _train_settings(run_dir: Path) -> dict:
    """The `train:` section of RUN/config.yaml ({} when absent or unreadable)."""
    import yaml

    try:
        cfg = yaml.safe_load((Path(run_dir) / "config.yaml").read_text()) or {}
        return dict(cfg.get("train") or {})
    except (OSError, ValueError, TypeError, AttributeError, yaml.YAMLError):
        return {}


def pruned_note(run_dir: Path, name: str, have: list[str]) -> str | None:
    """ "step N was pruned by keep_checkpoints=K" when the run saved checkpoint `name`
    (step_NNNNNNNN, a multiple of train.ckpt_every, older than the newest it still has) and
    its `train.keep_checkpoints` deletes old ones (-1 "auto" only when a checkpoint is ≥ 1 GiB);
    else None."""
    from lsap.train.checkpoint import dir_bytes, resolve_keep

    m, t = re.fullmatch(r"step_(\d{8})", name), _train_settings(run_dir)
    every, keep = int(t.get("ckpt_every") or 0), int(t.get("keep_checkpoints", -1))
    if not m or not have or every <= 0 or keep == 0:
        return None
    step = int(m.group(1))
    if step % every or step >= int(have[-1].removeprefix("step_")):
        return None
    if (
        resolve_keep(keep, dir_bytes(Path(run_dir) / "checkpoints" / have[-1]) if keep < 0 else 0)
        == 0
    ):
        return None
    shown = "-1 (auto)" if keep < 0 else str(keep)
    return f"step {step} was pruned by keep_checkpoints={shown}, only the newest are kept"


class DamagedCheckpoint(EvalError):
    """A checkpoint's weight file is missing, truncated or unreadable (the others are still evaluated)."""


def ckpt_name(step_dir: Path) -> str:
    """How log lines name a checkpoint: `RUN/step_X` inside a run, the folder's name otherwise."""
    if step_dir.parent.name == "checkpoints":
        return f"{step_dir.parent.parent.name}/{step_dir.name}"
    return step_dir.name


def check_weights(model_dir: Path) -> None:
    """Raise DamagedCheckpoint unless every ``*.safetensors`` file of `model_dir` is complete: its
    8-byte header length, JSON header and the data it describes (the largest tensor end offset)
    fit the file size exactly. Reads only the headers."""
    files = sorted(Path(model_dir).glob("*.safetensors"))
    if not files and not any(Path(model_dir).glob("*.bin")):
        raise DamagedCheckpoint(
            f"{model_dir}: no model weights (*.safetensors); the checkpoint is incomplete"
        )
    for f in files:
        size = f.stat().st_size
        try:
            with open(f, "rb") as fh:
                n = int.from_bytes(fh.read(8), "little")
                if size < 8 + n:
                    raise ValueError(f"header of {n:,} bytes, file of {size:,}")
                header = json.loads(fh.read(n))
            end = max(
                (int(v["data_offsets"][1]) for k, v in header.items() if k != "__metadata__"),
                default=0,
            )
            if size != 8 + n + end:
                raise ValueError(f"{size:,} bytes, its header describes {8 + n + end:,}")
        except (ValueError, KeyError, TypeError, OSError) as e:
            raise DamagedCheckpoint(
                f"{f} is damaged (truncated or corrupt: {e}); re-save or delete that checkpoint"
            ) from e


def find_checkpoints(target: Path, which: str = "all") -> list[tuple[Path, Path, dict]]:
    """(model_dir, eval_json_path, meta) per selected checkpoint, in step order.

    `which`: all | last | step_00000100[,step_...]. A bare HF model directory (config.json,
    no checkpoints/) is one "checkpoint" whose result goes to DIR/eval.json."""
    target = Path(target)
    if (target / "config.json").is_file() and not (target / "checkpoints").is_dir():
        return [(target, target / "eval.json", {})]
    from lsap.train.checkpoint import list_checkpoints

    root = target / "checkpoints"
    cks = [
        p for p in list_checkpoints(root) if (p / "model").is_dir()
    ]  # finished ones (lsap.train.checkpoint)
    if not cks:
        raise EvalError(
            f"{target}: no checkpoints (expected {root}/step_*/model/ or a HF model directory "
            "with config.json)"
        )
    names = [p.name for p in cks]
    if which == "last":
        cks = cks[-1:]
    elif which != "all":
        wanted = [w.strip() for w in which.split(",") if w.strip()]
        for w in wanted:
            if w not in names:
                close = difflib.get_close_matches(w, names, n=3)
                raise EvalError(
                    f"{target}: "
                    + (pruned_note(target, w, names) or f"no checkpoint {w!r}")
                    + (f"; close: {', '.join(close)}" if close else f"; have {', '.join(names)}")
                )
        cks = [p for p in cks if p.name in wanted]
    out = []
    for p in cks:
        meta = json.loads((p / "meta.json").read_text()) if (p / "meta.json").is_file() else {}
        out.append((p / "model", p / "eval.json", meta))
    return out
