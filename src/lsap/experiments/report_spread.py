"""The seed-to-seed spread of a matched-FLOPs table (`lsap report`): rows grouped by
setting, with the mean, min and max over each group's seeds, as data and as markdown."""

from __future__ import annotations

SPREAD_COLUMNS = (
    "average",
    "pairs_average",
    "val_loss",
    "val_bpb",
    "doc_bpb",
    "val_top1",
    "target_mass",
)


def group_spread(table: dict) -> list[dict]:
    """Rows grouped by setting (the run name without its `-s<seed>` suffix) with the mean,
    min and max over the group (its seeds) of the scores and held-out metrics."""
    groups: dict[str, list[dict]] = {}
    for row in table["rows"]:
        groups.setdefault(row.get("setting") or row["run"], []).append(row)
    out = []
    for setting, rows in groups.items():
        g = {
            "setting": setting,
            "loss": rows[0]["loss"],
            "alpha": rows[0]["alpha"],
            "schedule": rows[0]["schedule"],
            "n": len(rows),
            "runs": [r["run"] for r in rows],
        }
        for col in SPREAD_COLUMNS:
            vals = [r.get(col) for r in rows if r.get(col) is not None]
            g[col] = (
                {"mean": sum(vals) / len(vals), "min": min(vals), "max": max(vals)}
                if vals
                else None
            )
        out.append(g)
    return out


def _spread_lines(table: dict) -> list[str]:
    groups = group_spread(table)
    if all(g["n"] < 2 for g in groups):
        return [
            "One run per setting: no seed-to-seed spread was measured, so differences between rows "
            "are observations, not significant claims.",
            "",
        ]

    def cell(v, scale, digits):
        if v is None:
            return "-"
        return f"{v['mean'] * scale:.{digits}f} [{v['min'] * scale:.{digits}f}, {v['max'] * scale:.{digits}f}]"

    lines = [
        "Mean [min, max] over the runs of each setting (seeds):",
        "",
        "| Setting | Loss | α | λ schedule | runs | Avg | minimal pairs | val loss | val bpb | top-1 | mass on targets |",
        "|---|---|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for g in groups:
        lines.append(
            f"| {g['setting']} | {g['loss']} | {g['alpha']} | {g['schedule']} | {g['n']} | "
            f"{cell(g['average'], 100, 2)} | {cell(g['pairs_average'], 100, 2)} | "
            f"{cell(g['val_loss'], 1, 4)} | {cell(g['val_bpb'], 1, 4)} | {cell(g['val_top1'], 100, 2)} | "
            f"{cell(g['target_mass'], 100, 1)} |"
        )
    return lines + [""]
