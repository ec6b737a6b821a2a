"""The baselines table (issue 26 item 5): rows = arms, columns = benchmark scores; mean and
95% interval over seeds; a seed-level verdict per column against CE, Holm-corrected.

Input: a committed summary JSON (written by `collect`) of the form

    {"regime": {...free-form description...}, "columns": ["zorro", ...],
     "runs": [{"arm": "ce", "seed": 0, "scores": {"zorro": 61.2, ...}}, ...]}

The seed is the unit: for each arm and column, Δ_s = arm_s − CE_s over the seeds both have;
the interval is Student's t over those Δ_s and p the paired t-test's two-sided p. The
p-values of one arm's columns are read together, so they are Holm-corrected per arm. A
verdict says "better"/"worse" only when the corrected p < 0.05 (so the interval excludes
0); anything else, or fewer than 3 paired seeds, is "inconclusive".

    python -m lsap.experiments.baselines SUMMARY.json --out docs/results/baselines.md
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

SIGNIFICANCE = 0.05


def t_interval(xs: list[float], level: float = 0.95) -> tuple[float, float, float]:
    """(mean, lo, hi) of a Student-t interval; lo = hi = mean for one value."""
    from scipy import stats

    n = len(xs)
    m = sum(xs) / n
    if n < 2:
        return m, m, m
    sd = math.sqrt(sum((x - m) ** 2 for x in xs) / (n - 1))
    h = stats.t.ppf(0.5 + level / 2, n - 1) * sd / math.sqrt(n)
    return m, m - h, m + h


def paired_t_p(d: list[float]) -> float | None:
    """Two-sided p of the one-sample t-test of the per-seed differences against 0."""
    from scipy import stats

    n = len(d)
    if n < 2:
        return None
    m = sum(d) / n
    sd = math.sqrt(sum((x - m) ** 2 for x in d) / (n - 1))
    if sd == 0:
        return 0.0 if m != 0 else 1.0
    t = m / (sd / math.sqrt(n))
    return float(2 * stats.t.sf(abs(t), n - 1))


def holm(ps: list[float | None]) -> list[float | None]:
    """Holm–Bonferroni adjusted p-values (None stays None and is not counted)."""
    idx = sorted((p, i) for i, p in enumerate(ps) if p is not None)
    m, out, run = len(idx), list(ps), 0.0
    for rank, (p, i) in enumerate(idx):
        run = max(run, min(1.0, (m - rank) * p))
        out[i] = run
    return out


def lower_is_better(column: str) -> bool:
    """Bits-per-byte columns improve downwards; every other column (accuracy, p_gold) upwards."""
    return "bpb" in column


def compare(summary: dict, ref: str = "ce") -> dict:
    """{arm: {column: {mean, lo, hi, delta, d_lo, d_hi, n, p, p_holm, verdict}}}."""
    cols = summary["columns"]
    by = {}
    for r in summary["runs"]:
        by.setdefault(r["arm"], {})[r["seed"]] = r["scores"]
    out = {}
    for arm, seeds in by.items():
        row, ps = {}, []
        for c in cols:
            vals = [s[c] for s in seeds.values() if s.get(c) is not None]
            cell = {"n": len(vals)}
            if vals:
                cell["mean"], cell["lo"], cell["hi"] = t_interval(vals)
            d = [
                seeds[k][c] - by[ref][k][c]
                for k in seeds
                if arm != ref
                and k in by.get(ref, {})
                and seeds[k].get(c) is not None
                and by[ref][k].get(c) is not None
            ]
            cell["p"] = paired_t_p(d) if len(d) >= 3 else None
            if d:
                cell["delta"], cell["d_lo"], cell["d_hi"] = t_interval(d)
                cell["n_paired"] = len(d)
            row[c] = cell
            ps.append(cell["p"])
        for c, ph in zip(cols, holm(ps)):
            cell = row[c]
            cell["p_holm"] = ph
            if arm == ref:
                cell["verdict"] = "reference"
            elif ph is None or ph >= SIGNIFICANCE:
                cell["verdict"] = "inconclusive"
            else:
                up = cell["delta"] > 0
                cell["verdict"] = "better" if up != lower_is_better(c) else "worse"
        out[arm] = row
    return out


def _fmt_delta(cell: dict) -> str:
    """The paired Δ and its interval, as both tables print it."""
    return f"{cell['delta']:+.2f} [{cell['d_lo']:+.2f}, {cell['d_hi']:+.2f}]"


def _fmt_cell(cell: dict, ref: bool) -> str:
    if not cell.get("n"):
        return "–"
    s = f"{cell['mean']:.2f} [{cell['lo']:.2f}, {cell['hi']:.2f}]"
    if not ref and "delta" in cell:
        p = "" if cell["p_holm"] is None else f", p_Holm {cell['p_holm']:.3g}"
        d = f"Δ {_fmt_delta(cell)}"
        s += f"<br>{d}{p}: {cell['verdict']}"
    return s


def _delta_view(res: dict, cols: list[str], ref: str) -> list[str]:
    """Rows = columns, one column per arm: its per-seed paired Δ vs the reference, the interval,
    Holm's p and the verdict — the table to read first."""
    arms = [a for a in res if a != ref]
    if not arms:
        return []
    out = [
        f"Paired Δ vs {ref} over seeds (arm − {ref}; mean [95% t-interval], p Holm-corrected "
        "over each arm's column; ↓: lower is better):",
        "",
        "| column | " + " | ".join(arms) + " |",
        "|---|" + "---:|" * len(arms),
    ]
    for c in cols:
        cells = []
        for a in arms:
            cell = res[a][c]
            if "delta" not in cell:
                cells.append("–")
                continue
            p = "" if cell["p_holm"] is None else f" p {cell['p_holm']:.2g}"
            cells.append(f"{_fmt_delta(cell)} n={cell['n_paired']}{p} {cell['verdict']}")
        out.append(f"| {c}{' ↓' if lower_is_better(c) else ''} | " + " | ".join(cells) + " |")
    return out


def render(summary: dict, ref: str = "ce") -> str:
    ref = summary.get("arms_ref", ref)
    res = compare(summary, ref)
    cols, reg = summary["columns"], summary.get("regime", {})
    lines = [
        "# Baselines at matched FLOPs (issue 26 item 5)",
        "",
        "Generated by `python -m lsap.experiments.baselines` from "
        f"`{summary.get('source', 'the committed summary')}`; do not edit by hand.",
        "",
    ]
    for k, v in reg.items():
        lines.append(f"- **{k}**: {v}")
    lines += ["", *_delta_view(res, cols, ref)]
    lines += [
        "",
        "Cells: mean [95% t-interval] over seeds; below it, the per-seed paired Δ vs CE "
        "with "
        "its interval, the paired t-test's p Holm-corrected over this row's columns, and the "
        'verdict ("inconclusive" unless p_Holm < 0.05). Seed is the unit; item-level tests '
        "are not used here.",
        "",
        "| arm | seeds | " + " | ".join(cols) + " |",
        "|---|---:|" + "---:|" * len(cols),
    ]
    for arm, row in res.items():
        n = max(c["n"] for c in row.values())
        cells = " | ".join(_fmt_cell(row[c], arm == ref) for c in cols)
        lines.append(f"| {arm} | {n} | {cells} |")
    return "\n".join(lines) + "\n"


def _arm(sweep_dir: Path, setting: str) -> str:
    names = {
        "ce": "CE",
        "lsap-a0.05-lam1.0": "LSAP α0.05 λ1",
        "lsap-a0.01-lam0.3": "LSAP α0.01 λ0.3 (map best)",
        "lsap-a0.01-aux_weightingprob": "prob-weighted KD (α0.01)",
    }
    root = next((p.parent for p in [sweep_dir, *sweep_dir.parents] if p.name == "out-ls"), None)
    eps = root / "eps.json" if root else None
    if eps is not None and setting == "ce" and eps.is_file():
        return f"label smoothing ε={json.loads(eps.read_text())['eps']:.3f}"
    return names.get(setting, setting)


BENCH_METRICS = ("acc", "p_gold")  # accuracy and the choice-normalised gold probability (raw ll)


def _benchmarks(path: Path) -> dict:
    """`lsap eval --tasks paper,zorro`'s benchmarks.json beside eval.json: per task its
    accuracy and choice-normalised gold probability, in percent, as "task acc" / "task p_gold"."""
    if not path.is_file():
        return {}
    out = {}
    for t, v in json.loads(path.read_text()).get("tasks", {}).items():
        for m in BENCH_METRICS:
            if isinstance(v.get(m), (int, float)):
                out[f"{t} {m}"] = 100.0 * v[m]
    return out


def _run_dir(sweep_dir: Path, out_dir: str) -> Path:
    """A run's directory as sweep.json records it: absolute, or relative to the directory the
    sweep ran from (the cwd, else the first ancestor of the sweep folder that holds it)."""
    d = Path(out_dir)
    if d.is_absolute() or d.is_dir():
        return d
    return next((a / d for a in sweep_dir.resolve().parents if (a / d).is_dir()), d)


def collect(sweep_dirs: list[str], regime: dict) -> dict:
    """A summary from finished sweep runs: each run's last evaluated checkpoint's eval.json,
    every task's value in percent (all tasks found; columns in first-seen order)."""
    runs, cols = [], []
    for sd in map(Path, sweep_dirs):
        if not (sd / "sweep.json").is_file():  # that sweep has not started yet
            continue
        st = json.loads((sd / "sweep.json").read_text())
        for r in st["runs"]:
            if r.get("status") != "done":
                continue
            evs = sorted(_run_dir(sd, r["out_dir"]).glob("checkpoints/*/eval.json"))
            if not evs:
                continue
            ev = json.loads(evs[-1].read_text())
            scores = {
                t: 100.0 * v["value"]
                for t, v in ev.get("tasks", {}).items()
                if isinstance(v.get("value"), (int, float))
            }
            if isinstance(ev.get("val_bpb"), (int, float)):  # a likelihood: favours CE (METHOD 5b)
                scores["held-out bpb"] = ev["val_bpb"]
            scores.update(_benchmarks(evs[-1].parent / "benchmarks.json"))
            cols += [t for t in scores if t not in cols]
            runs.append(
                {
                    "arm": _arm(sd, r["setting"]),
                    "seed": r["seed"],
                    "checkpoint": evs[-1].parent.name,
                    "scores": scores,
                }
            )
    return {"regime": regime, "columns": cols, "runs": runs}


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("summary")
    ap.add_argument("--out", default="docs/results/baselines.md")
    ap.add_argument(
        "--collect", nargs="*", help="sweep OUT dirs: write SUMMARY from their finished runs first"
    )
    ap.add_argument(
        "--regime", default="", help="with --collect: a JSON file describing the regime"
    )
    a = ap.parse_args(argv)
    if a.collect:
        reg = json.loads(Path(a.regime).read_text()) if a.regime else {}
        Path(a.summary).parent.mkdir(parents=True, exist_ok=True)
        Path(a.summary).write_text(json.dumps(collect(a.collect, reg), indent=1) + "\n")
    summary = json.loads(Path(a.summary).read_text())
    summary.setdefault("source", a.summary)
    summary["arms_ref"] = "CE"
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(render(summary))


if __name__ == "__main__":
    main()
