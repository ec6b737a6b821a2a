"""Where a run's metrics go: `metrics.jsonl` always, TensorBoard and W&B when asked.

`train.loggers: [jsonl, tensorboard, wandb]`. Every logger receives exactly the rows the
JSONL file gets (one dict per log step: {"kind": "train" | "val", "step": ..., metrics})
and, once, the resolved config. The JSONL file is always written, whatever the list says:
resume, `lsap eval` and `lsap report` read it.

- tensorboard: `RUN/tensorboard/` event files; each numeric field is a scalar tagged
  "{kind}/{field}" at x = step; the config is a text summary ("config", YAML). On resume
  the writer purges events past the checkpoint's step (they are redone); a fresh run
  purges whatever a run that left no checkpoint had written there.
- wandb: an offline run under `RUN/wandb/` unless `WANDB_MODE` says otherwise (upload
  later with `wandb sync RUN/wandb/offline-run-*`); project `$WANDB_PROJECT` or "lsap",
  run name = config name, the config as the run config, the same "{kind}/{field}" keys
  at step = step. A resumed run continues the same W&B run id (kept in RUN/wandb-id).

Both trackers are optional dependencies (`pip install 'lsap[tensorboard]'` / `'lsap[wandb]'`),
imported only when listed; a missing one is a clear error before training starts.
"""

from __future__ import annotations

import json
import math
import os
import secrets
from pathlib import Path

from lsap.config import LOGGERS
from lsap.utils.errors import LoggerError
from lsap.utils.io import atomic_write_text
from lsap.utils.logging import get_logger

log = get_logger(__name__)


def _scalars(row: dict):
    for key, value in row.items():
        if (
            key in ("kind", "step")
            or isinstance(value, bool)
            or not isinstance(value, (int, float))
        ):
            continue
        if math.isfinite(value):
            yield key, float(value)


class JsonlLogger:
    """One JSON object per line in RUN/metrics.jsonl (appended).

    Opening it repairs the file for the run that continues it: a fresh run
    (`resume_step` None) starts it empty (lines of a run that left no checkpoint are
    redone from step 0); a resumed one keeps the lines before `resume_step` (those at or
    after it are redone) and drops a torn last line (a kill mid-write)."""

    def __init__(self, out: Path, resume_step: int | None = None):
        self.path = Path(out) / "metrics.jsonl"
        if resume_step is None:
            self.path.unlink(missing_ok=True)
        elif self.path.exists():
            keep = []
            for ln in self.path.read_text().splitlines():
                if not ln.strip():
                    continue
                try:
                    row = json.loads(ln)
                except json.JSONDecodeError:
                    log.warning(f"{self.path}: dropped a torn line ({ln[:60]!r})")
                    continue
                if row["step"] < resume_step:
                    keep.append(ln)
            atomic_write_text(self.path, "".join(ln + "\n" for ln in keep))

    def log(self, row: dict) -> None:
        with open(self.path, "a") as f:
            f.write(json.dumps(row) + "\n")

    def close(self) -> None:
        pass


class TensorBoardLogger:
    def __init__(self, out: Path, config: dict, resume_step: int | None = None):
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError as e:
            raise LoggerError(
                "train.loggers lists tensorboard, which is not installed: "
                "pip install 'lsap[tensorboard]' (or pip install tensorboard)"
            ) from e
        import yaml

        # purge: a resumed run drops the steps it redoes; a fresh one drops a dead run's leftovers
        self.writer = SummaryWriter(
            log_dir=str(Path(out) / "tensorboard"), purge_step=resume_step or 1
        )
        if resume_step is None:
            text = yaml.safe_dump(config, sort_keys=False)
            self.writer.add_text("config", "```\n" + text + "```", 0)

    def log(self, row: dict) -> None:
        for key, value in _scalars(row):
            self.writer.add_scalar(f"{row.get('kind', 'train')}/{key}", value, int(row["step"]))

    def close(self) -> None:
        self.writer.flush()
        self.writer.close()


class WandbLogger:
    def __init__(self, out: Path, config: dict, resume: bool = False):
        try:
            import wandb
        except ImportError as e:
            raise LoggerError(
                "train.loggers lists wandb, which is not installed: "
                "pip install 'lsap[wandb]' (or pip install wandb)"
            ) from e
        out = Path(out)
        id_file = out / "wandb-id"
        run_id = (
            id_file.read_text().strip() if resume and id_file.is_file() else secrets.token_hex(4)
        )
        id_file.write_text(run_id + "\n")
        self.run = wandb.init(
            project=os.environ.get("WANDB_PROJECT", "lsap"),
            name=config.get("name"),
            dir=str(out),
            id=run_id,
            resume="allow",
            config=config,
            mode=os.environ.get("WANDB_MODE", "offline"),
            settings=wandb.Settings(silent=True, console="off", save_code=False),
        )

    def log(self, row: dict) -> None:
        kind = row.get("kind", "train")
        self.run.log({f"{kind}/{k}": v for k, v in _scalars(row)}, step=int(row["step"]))

    def close(self) -> None:
        self.run.finish()


class Loggers:
    """Fan-out to every configured logger (rank 0 only; the trainer calls it there).
    resume_step: the first step the run will log (None: a fresh run)."""

    def __init__(self, names, out: str | os.PathLike, config: dict, resume_step: int | None = None):
        unknown = [n for n in names if n not in LOGGERS]
        if unknown:
            raise LoggerError(f"unknown train.loggers {unknown}; choose from {LOGGERS}")
        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        self.loggers = [JsonlLogger(out, resume_step)]  # always: resume, eval and report read it
        try:
            if "tensorboard" in names:
                self.loggers.append(TensorBoardLogger(out, config, resume_step))
            if "wandb" in names:
                self.loggers.append(WandbLogger(out, config, resume=resume_step is not None))
        except BaseException:
            self.close()
            raise

    def log(self, row: dict) -> None:
        for logger in self.loggers:
            logger.log(row)

    def close(self) -> None:
        for logger in self.loggers:
            logger.close()
        self.loggers = []


def quiet_libraries() -> None:
    """No per-load progress bars or advisory warnings from transformers / datasets: the
    quickstart and sweeps print one line per stage and keep full logs in their run dirs."""
    import os
    import warnings

    os.environ.setdefault("HF_DATASETS_DISABLE_PROGRESS_BARS", "1")
    try:
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
        hf_logging.set_verbosity_error()
    except ImportError:  # pragma: no cover
        pass
    warnings.filterwarnings("ignore", module="transformers")
