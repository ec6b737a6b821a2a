"""What produced a result: one dict recorded in every run directory, eval output and report.

`provenance(device)` → lsap version, git commit (and whether the tree was dirty) when lsap
runs from a checkout, Python / torch / transformers versions, the device and the CPU
model. No timestamps, so regenerated reports stay byte-identical on one machine.
"""

from __future__ import annotations

import functools
import platform
import subprocess
import sys
from pathlib import Path


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _git() -> dict:
    root = Path(__file__).resolve().parents[3]  # src/lsap/utils/ → the checkout
    if not (root / ".git").exists():
        return {}
    try:
        run = functools.partial(
            subprocess.run, cwd=root, capture_output=True, text=True, timeout=10
        )
        commit = run(["git", "rev-parse", "HEAD"]).stdout.strip()
        dirty = bool(run(["git", "status", "--porcelain", "--untracked-files=no"]).stdout.strip())
    except (OSError, subprocess.SubprocessError):
        return {}
    return {"git_commit": commit, "git_dirty": dirty} if commit else {}


def _version(name: str) -> str | None:
    try:
        from importlib.metadata import version

        return version(name)
    except Exception:  # noqa: BLE001 — not installed
        return None


@functools.lru_cache(maxsize=1)
def _static() -> dict:
    import lsap

    return {
        "lsap_version": getattr(lsap, "__version__", None),
        **_git(),
        "python": sys.version.split()[0],
        "torch": _version("torch"),
        "transformers": _version("transformers"),
        "cpu": _cpu_model(),
        "platform": platform.platform(),
    }


def provenance(device=None) -> dict:
    """The record; `device` (a torch device or string) adds it and, for CUDA, the GPU name."""
    out = dict(_static())
    if device is not None:
        out["device"] = str(device)
        if str(device).startswith("cuda"):
            try:
                import torch

                out["gpu"] = torch.cuda.get_device_name(torch.device(device))
            except Exception:  # noqa: BLE001 — no GPU visible
                pass
    return out
