"""Δ(LSAP − CE) per LSAP setting at matched FLOPs, with the surrogate's strength and its interval.

Split out of `lsap.experiments.report` (which re-exports `strength_rows`); pure: a table from
`report.build_table` in, rows out.
"""

from __future__ import annotations


def strength_rows(
    table: dict, strength: dict, surrogates: dict, docs: dict | None = None
) -> list[dict]:
    """Δ(LSAP − CE) per LSAP setting, paired by seed, with the surrogate's strength.

    Returns [{"setting", "surrogate", "strength" (surrogate bpb / mean CE bpb), "strength_ci"
    (its 95% document-bootstrap interval, `documents_strength`; None unless `docs` (name →
    {"doc_nll", "doc_bytes"}) has the surrogate and every CE row has per-document NLLs),
    metric: {mean, min, max}}]."""
    from lsap.eval.strength import documents_strength

    ce = {r["seed"]: r for r in table["rows"] if r["loss"] != "LSAP"}
    by_setting: dict[str, list] = {}
    for r in table["rows"]:
        if r["loss"] == "LSAP" and r["seed"] in ce:
            by_setting.setdefault(r["setting"], []).append(r)
    # the CE bases' bits per byte on the documents the surrogate's was measured on
    ce_bpb = [r["doc_bpb"] for r in ce.values() if r.get("doc_bpb") is not None]
    ce_bpb_mean = sum(ce_bpb) / len(ce_bpb) if ce_bpb else None
    name_of = {v: k for k, v in surrogates.items()}
    out = []
    for setting, rows in by_setting.items():
        sur = rows[0].get("surrogate")
        name = name_of.get(sur, sur)
        bpb = strength.get(name) if name is not None else None
        row = {
            "setting": setting,
            "surrogate": name,
            "n": len(rows),
            "strength": bpb / ce_bpb_mean if bpb and ce_bpb_mean else None,
            "strength_ci": None,
        }
        st = documents_strength((docs or {}).get(name), list(ce.values())) if bpb else None
        if st:
            row["strength_ci"], row["strength_documents"] = list(st["ci"]), st["documents"]
        for m in ("pairs_average", "average", "val_loss", "val_top1"):
            ds = [
                r[m] - ce[r["seed"]][m]
                for r in rows
                if r.get(m) is not None and ce[r["seed"]].get(m) is not None
            ]
            row[m] = {"mean": sum(ds) / len(ds), "min": min(ds), "max": max(ds)} if ds else None
        row["tasks"] = {}
        for t in table.get("tasks", []):
            ds = [
                r["scores"][t] - ce[r["seed"]]["scores"][t]
                for r in rows
                if r["scores"].get(t) is not None and ce[r["seed"]]["scores"].get(t) is not None
            ]
            row["tasks"][t] = (
                {"mean": sum(ds) / len(ds), "min": min(ds), "max": max(ds)} if ds else None
            )
        out.append(row)
    return out
