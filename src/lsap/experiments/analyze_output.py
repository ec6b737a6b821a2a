"""Table 1's outputs (`lsap analyze`): markdown, CSV, JSON and a bar plot of an
`lsap.experiments.analyze.analyze` result."""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path

import numpy as np

from lsap.experiments.analyze import STAT_ABOVE, STAT_AUX


def _label(row: dict, base: str | None = None) -> str:
    if row["statistic"] == STAT_AUX:
        return f"{row['model']} (aux → {base or 'base'})"
    return row["model"]


def table_markdown(result: dict, digits: int = 2) -> str:
    """Table 1's shape: one row per (model, α), a column per dataset, then AVG."""
    ds = result["settings"]["datasets"]
    base = result["settings"].get("base")
    lines = ["| Model | α | " + " | ".join(ds) + " | AVG |", "|---|---:|" + "---:|" * (len(ds) + 1)]
    for r in result["rows"]:
        cells = [f"{r['datasets'][d]['mean']:.{digits}f}" for d in ds] + [f"{r['avg']:.{digits}f}"]
        lines.append(f"| {_label(r, base)} | {r['alpha']:g} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def write_outputs(result: dict, out: str | os.PathLike) -> dict[str, Path]:
    """table1.{csv,json,md,png} under `out`; returns their paths."""
    d = Path(out)
    d.mkdir(parents=True, exist_ok=True)
    ds = result["settings"]["datasets"]
    paths = {k: d / f"table1.{k}" for k in ("csv", "json", "md", "png")}
    with open(paths["csv"], "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["model", "statistic", "alpha", *ds, "AVG"])
        for r in result["rows"]:
            w.writerow(
                [
                    r["model"],
                    r["statistic"],
                    r["alpha"],
                    *[repr(r["datasets"][x]["mean"]) for x in ds],
                    repr(r["avg"]),
                ]
            )
    paths["json"].write_text(json.dumps(result, indent=2) + "\n")
    s = result["settings"]
    paths["md"].write_text(
        table_markdown(result) + "\n\n"
        f"n={s['n']} examples × seq_len {s['seq_len']} per seed, seeds {s['seeds']}, "
        f"device {s['device']} ({s['dtype']}). Sampling: {s['sampling']}.\n"
    )
    plot_table(result, paths["png"])
    return paths


def plot_table(result: dict, path: str | os.PathLike) -> Path:
    """Grouped bars: one panel per (model, statistic), groups = datasets + AVG, a bar per α."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ds = result["settings"]["datasets"]
    base = result["settings"].get("base")
    panels: dict[tuple[str, str], list[dict]] = {}
    for r in result["rows"]:
        panels.setdefault((r["model"], r["statistic"]), []).append(r)
    groups = ds + ["AVG"]
    fig, axes = plt.subplots(
        len(panels), 1, figsize=(max(6, 1.6 * len(groups) + 2), 3.2 * len(panels)), squeeze=False
    )
    for ax, ((_model, stat), rows) in zip(axes[:, 0], panels.items()):
        width = 0.8 / len(rows)
        x = np.arange(len(groups))
        for j, r in enumerate(rows):
            vals = [r["datasets"][g]["mean"] for g in ds] + [r["avg"]]
            bars = ax.bar(
                x + (j - (len(rows) - 1) / 2) * width, vals, width, label=f"α = {r['alpha']:g}"
            )
            ax.bar_label(bars, fmt="%.2f", fontsize=7)
        ax.set_xticks(x, groups)
        ax.set_ylabel("entries with p > α" if stat == STAT_ABOVE else "aux targets / token")
        ax.set_title(_label(rows[0], base))
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return Path(path)
