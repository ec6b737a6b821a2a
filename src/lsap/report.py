"""Compare runs at matched FLOPs: the paper's Table 2 as markdown, and its Figure 2.

Inputs are run directories (the trainer's layout)::

    RUN/config.yaml                       loss, lsap.alpha, lsap.lambda_schedule, tokenizer, ...
    RUN/metrics.jsonl                     {"kind": "val", "flops", "tokens", "val_loss", ...} lines
    RUN/checkpoints/step_*/eval.json      written by `lsap eval`

Matched FLOPs: the budget is `flops` if given, else the largest budget every run
reached (the smallest of the runs' largest evaluated checkpoint FLOPs). Each run uses
its evaluated checkpoint with the most FLOPs not above the budget; a run with none
below it uses its checkpoint nearest above (flagged in the table). Scores are shown
in percent (value × 100); Avg is the unweighted mean of the task scores (each task's
primary metric); the best value per column is bold (highest score, lowest loss/bpb).

All runs in one report must share the base tokenizer (eval.json `tokenizer_hash`,
else config `tokenizer`) and the evaluation set (eval.json `eval_set_hash`);
otherwise `ReportError` is raised before anything is written.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any


from lsap.errors import ReportError  # noqa: E402,F401  (re-exported)


@dataclasses.dataclass
class Run:
    name: str
    dir: Path
    config: dict
    evals: list[dict]  # eval.json dicts (+ "checkpoint"), sorted by flops
    metrics: list[dict]  # metrics.jsonl lines

    @property
    def loss_type(self) -> str:
        return {"ce": "Cross Entropy", "lsap": "LSAP"}.get(str(self.config.get("loss", "?")).lower(),
                                                          str(self.config.get("loss", "?")))

    @property
    def is_lsap(self) -> bool:
        return str(self.config.get("loss", "")).lower() == "lsap"

    @property
    def alpha(self) -> str:
        return f"{float(self.config.get('lsap', {}).get('alpha', 0)):g}" if self.is_lsap else "0"

    @property
    def schedule(self) -> str:
        return str(self.config.get("lsap", {}).get("lambda_schedule", "constant")) if self.is_lsap else "-"

    @property
    def label(self) -> str:
        if not self.is_lsap:
            return f"{self.name} (CE)"
        return f"{self.name} (LSAP α={self.alpha}, λ {self.schedule})"


def load_run(path: str | os.PathLike) -> Run:
    """Read a run directory; raises ReportError without checkpoints or without any eval.json."""
    import yaml

    from lsap.checkpoint import list_checkpoints

    d = Path(path)
    if not d.is_dir():
        raise ReportError(f"{d}: not a directory")
    root = d / "checkpoints"
    cks = list_checkpoints(root)  # finished ones (lsap.checkpoint)
    if not cks:
        raise ReportError(f"{d}: no checkpoints (expected {d}/checkpoints/step_*/)")
    config = yaml.safe_load((d / "config.yaml").read_text()) if (d / "config.yaml").is_file() else {}
    evals = []
    for p in cks:
        if (p / "eval.json").is_file():
            e = json.loads((p / "eval.json").read_text())
            if e.get("flops") is None:
                raise ReportError(f"{p}/eval.json has no FLOPs (checkpoint without meta.json?)")
            evals.append({**e, "checkpoint": p.name})
    if not evals:
        raise ReportError(f"{d}: none of its {len(cks)} checkpoints is evaluated; run `lsap eval {d}` first")
    evals.sort(key=lambda e: (e["flops"], e.get("step") or 0))
    metrics = []
    if (d / "metrics.jsonl").is_file():
        for line in (d / "metrics.jsonl").read_text().splitlines():
            if line.strip():
                metrics.append(json.loads(line))
    name = config.get("name") or d.name
    return Run(name=str(name), dir=d, config=config or {}, evals=evals, metrics=metrics)


def check_comparable(runs: list[Run]) -> None:
    """Same base tokenizer and same eval set across every run and checkpoint, else ReportError."""
    names = [r.name for r in runs]
    if len(set(names)) != len(names):
        for r in runs:  # two runs with one config name: fall back to directory paths
            r.name = str(r.dir)
    toks = {}
    for r in runs:
        hashes = {e.get("tokenizer_hash") for e in r.evals} - {None}
        toks[r.name] = ("hash", tuple(sorted(hashes))) if hashes else ("spec", r.config.get("tokenizer"))
    if len(set(toks.values())) > 1:
        detail = "; ".join(f"{n}: {k} {str(v)[:40]}" for n, (k, v) in toks.items())
        raise ReportError(f"runs use different base tokenizers, so their scores are not comparable ({detail})")
    sets = {}
    for r in runs:
        for e in r.evals:
            sets.setdefault(e.get("eval_set_hash"), []).append(f"{r.name}/{e['checkpoint']}")
    if len(sets) > 1:
        detail = "; ".join(f"{str(h)[:12]}: {', '.join(v[:3])}{' ...' if len(v) > 3 else ''}" for h, v in sets.items())
        raise ReportError("the checkpoints were evaluated on different evaluation sets (eval_set_hash); re-run "
                          f"`lsap eval --force` with the same --tasks/--limit/data on all runs ({detail})")


def pick_matched(run: Run, budget: float, axis: str = "flops") -> tuple[dict, bool]:
    """The evaluated checkpoint with the most `axis` (flops | tokens) ≤ budget, else the least.

    Returns (eval dict, above) with above=True when it lies above the budget.
    """
    below = [e for e in run.evals if e[axis] <= budget * (1 + 1e-9)]
    if below:
        return below[-1], False
    return run.evals[0], True


def _fmt_flops(x: float | None) -> str:
    return "-" if x is None else f"{x:.3e}"


def build_table(runs: list[Run], flops: float | None = None, axis: str = "flops") -> dict[str, Any]:
    """The matched-FLOPs (or, axis="tokens", matched-tokens) comparison as data:
    {"axis", "budget", "tasks", "rows", "best"}.

    rows: one per run, {"run", "loss", "alpha", "schedule", "checkpoint", "flops", "tokens",
    "above_budget", "scores": {task: value}, "average", "val_loss", "val_bpb"}.
    """
    check_comparable(runs)
    budget = float(flops) if flops is not None else min(r.evals[-1][axis] for r in runs)
    tasks: list[str] = []
    for r in runs:
        for e in r.evals:
            for t in e.get("tasks", {}):
                if t not in tasks:
                    tasks.append(t)
    rows = []
    for r in runs:
        e, above = pick_matched(r, budget, axis)
        scores = {t: (e["tasks"][t]["value"] if t in e.get("tasks", {}) else None) for t in tasks}
        vals = [v for v in scores.values() if v is not None]
        rows.append({"run": r.name, "loss": r.loss_type, "alpha": r.alpha, "schedule": r.schedule,
                     "checkpoint": e["checkpoint"], "step": e.get("step"), "flops": e["flops"],
                     "tokens": e.get("tokens"), "above_budget": above, "scores": scores,
                     "average": sum(vals) / len(vals) if vals and len(vals) == len(tasks) else None,
                     "val_loss": e.get("val_loss"), "val_bpb": e.get("val_bpb")})
    best = {}
    for col, better in [*((t, max) for t in tasks), ("average", max), ("val_loss", min), ("val_bpb", min)]:
        vals = [(row["scores"][col] if col in tasks else row[col]) for row in rows]
        vals = [v for v in vals if v is not None]
        best[col] = better(vals) if vals else None
    return {"axis": axis, "budget": budget,
            "budget_source": "given" if flops is not None else "largest reached by all runs",
            "tasks": tasks, "rows": rows, "best": best}


def group_spread(table: dict) -> list[dict]:
    """Rows grouped by (loss, α, λ schedule) — e.g. seeds of one setting — with the mean,
    min and max of average score, val loss and val bpb over the group."""
    groups: dict[tuple, list[dict]] = {}
    for row in table["rows"]:
        groups.setdefault((row["loss"], row["alpha"], row["schedule"]), []).append(row)
    out = []
    for (loss, alpha, schedule), rows in groups.items():
        g = {"loss": loss, "alpha": alpha, "schedule": schedule, "n": len(rows), "runs": [r["run"] for r in rows]}
        for col in ("average", "val_loss", "val_bpb"):
            vals = [r[col] for r in rows if r[col] is not None]
            g[col] = ({"mean": sum(vals) / len(vals), "min": min(vals), "max": max(vals)} if vals else None)
        out.append(g)
    return out


def _cell(v: float | None, best: float | None, scale: float = 100.0, digits: int = 2) -> str:
    if v is None:
        return "-"
    s = f"{v * scale:.{digits}f}"
    return f"**{s}**" if best is not None and abs(v - best) <= 1e-12 else s


def _table_lines(table: dict) -> list[str]:
    tasks = table["tasks"]
    head = ["Run", "Loss", "α", "λ schedule", *tasks, "Avg", "val loss", "val bpb", "checkpoint", "FLOPs", "tokens"]
    lines = ["| " + " | ".join(head) + " |",
             "|" + "|".join(["---"] * 4 + ["---:"] * (len(tasks) + 3) + ["---", "---:", "---:"]) + "|"]
    b = table["best"]
    for row in table["rows"]:
        cells = [row["run"], row["loss"], row["alpha"], row["schedule"],
                 *(_cell(row["scores"][t], b[t]) for t in tasks), _cell(row["average"], b["average"]),
                 _cell(row["val_loss"], b["val_loss"], 1, 4), _cell(row["val_bpb"], b["val_bpb"], 1, 4),
                 row["checkpoint"] + (" †" if row["above_budget"] else ""), _fmt_flops(row["flops"]),
                 "-" if row["tokens"] is None else f"{row['tokens']:,}"]
        lines.append("| " + " | ".join(str(c) for c in cells) + " |")
    return lines


def _spread_lines(table: dict) -> list[str]:
    groups = group_spread(table)
    if all(g["n"] < 2 for g in groups):
        return ["One run per setting: no seed-to-seed spread was measured, so differences between rows "
                "are observations, not significant claims.", ""]

    def cell(v, scale, digits):
        if v is None:
            return "-"
        return f"{v['mean'] * scale:.{digits}f} [{v['min'] * scale:.{digits}f}, {v['max'] * scale:.{digits}f}]"

    lines = ["Mean [min, max] over the runs of each setting (seeds):", "",
             "| Loss | α | λ schedule | runs | Avg | val loss | val bpb |", "|---|---|---|---:|---:|---:|---:|"]
    for g in groups:
        lines.append(f"| {g['loss']} | {g['alpha']} | {g['schedule']} | {g['n']} | {cell(g['average'], 100, 2)} | "
                     f"{cell(g['val_loss'], 1, 4)} | {cell(g['val_bpb'], 1, 4)} |")
    return lines + [""]


def render_markdown(table: dict, runs: list[Run], tokens_table: dict | None = None) -> str:
    lines = [
        "# Matched-FLOPs comparison",
        "",
        f"FLOPs budget: **{_fmt_flops(table['budget'])}** ({table['budget_source']}). Each run uses its evaluated "
        "checkpoint with the most FLOPs not above the budget (marked † when it had to go above). "
        "Scores are zero-shot, in percent; Avg is the mean over the task columns; best per column in bold.",
        "",
        *_table_lines(table),
        "",
        *_spread_lines(table),
    ]
    if tokens_table is not None:
        lines += ["## Matched tokens", "",
                  f"Token budget: **{tokens_table['budget']:,.0f}** (largest reached by all runs). Each run uses its "
                  "evaluated checkpoint with the most tokens not above it. This view ignores the surrogate's "
                  "compute; the matched-FLOPs table above charges it.", "",
                  *_table_lines(tokens_table), "", *_spread_lines(tokens_table)]
    metrics = {}
    for r in runs:
        for e in r.evals:
            for t, v in e.get("tasks", {}).items():
                metrics.setdefault(t, v.get("metric"))
    e0 = runs[0].evals[-1]
    lines += ["", "Metrics: " + ", ".join(f"{t} = {m}" for t, m in metrics.items()) + ".",
              f"Evaluation set: `{str(e0.get('eval_set_hash'))[:16]}` (task set {e0.get('task_set')}, "
              f"limit {e0.get('limit')}).", "",
              "![average score vs FLOPs](score_vs_flops.png)", "",
              "![validation loss vs FLOPs](val_loss_vs_flops.png)", "",
              "![validation loss vs tokens](val_loss_vs_tokens.png)", ""]
    return "\n".join(lines)


def _val_points(run: Run, x: str) -> tuple[list[float], list[float]]:
    pts = [(m[x], m["val_loss"]) for m in run.metrics
           if m.get("kind") == "val" and m.get(x) is not None and m.get("val_loss") is not None]
    if not pts:  # no val lines in metrics.jsonl: the eval.json held-out losses
        pts = [(e[x], e["val_loss"]) for e in run.evals if e.get(x) is not None and e.get("val_loss") is not None]
    pts.sort()
    return [p[0] for p in pts], [p[1] for p in pts]


def write_plots(runs: list[Run], table: dict, out: Path) -> list[str]:
    """score_vs_flops.png (Figure 2), val_loss_vs_flops.png, val_loss_vs_tokens.png into `out`."""
    try:
        import matplotlib
    except ImportError as e:
        raise ReportError("plots need matplotlib: pip install 'lsap[plot]'") from e
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    files = []

    def save(fig, name):
        fig.tight_layout()
        fig.savefig(out / name, dpi=120)
        plt.close(fig)
        files.append(name)

    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for r in runs:
        pts = [(e["flops"], e["average"] if e.get("average") is not None else _mean_score(e)) for e in r.evals]
        pts = [(x, y * 100) for x, y in pts if y is not None]
        if pts:
            ax.plot(*zip(*pts), marker="o", label=r.label)
    ax.axvline(table["budget"], color="gray", linestyle="--", linewidth=1, label="matched budget")
    ax.set_xlabel("training FLOPs (base + surrogate)")
    ax.set_ylabel("average zero-shot score (%)")
    ax.set_title("Average score vs FLOPs")
    ax.legend(fontsize=8)
    save(fig, "score_vs_flops.png")

    for x, xlabel, name in [("flops", "training FLOPs (base + surrogate)", "val_loss_vs_flops.png"),
                            ("tokens", "training tokens", "val_loss_vs_tokens.png")]:
        fig, ax = plt.subplots(figsize=(6.4, 4.2))
        for r in runs:
            xs, ys = _val_points(r, x)
            if xs:
                ax.plot(xs, ys, marker=".", label=r.label)
        ax.set_xlabel(xlabel)
        ax.set_ylabel("validation loss (nats/token)")
        ax.set_title(f"Validation loss vs {x}")
        ax.legend(fontsize=8)
        save(fig, name)
    return files


def _mean_score(e: dict) -> float | None:
    vals = [t["value"] for t in e.get("tasks", {}).values()]
    return sum(vals) / len(vals) if vals else None


def make_report(run_dirs: list[str | os.PathLike], out: str | os.PathLike, flops: float | None = None) -> dict:
    """Load, check, tabulate and plot; writes report.md, report.json and PNGs to `out`.

    Everything is validated and rendered into a temporary directory first; files are
    moved into `out` only when all of them exist, so an error leaves `out` untouched.
    """
    if not run_dirs:
        raise ReportError("no run directories given")
    runs = [load_run(d) for d in run_dirs]
    table = build_table(runs, flops)
    tokens_table = build_table(runs, axis="tokens") if all(e.get("tokens") is not None
                                                          for r in runs for e in r.evals) else None
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".tmp-report-", dir=out))
    try:
        md = render_markdown(table, runs, tokens_table)
        files = write_plots(runs, table, tmp)
        (tmp / "report.md").write_text(md)
        (tmp / "report.json").write_text(json.dumps({**table, "spread": group_spread(table), "matched_tokens": tokens_table},
                                                    indent=2, sort_keys=True) + "\n")
        for name in [*files, "report.md", "report.json"]:
            os.replace(tmp / name, out / name)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return {"table": table, "out": str(out), "files": [*files, "report.md", "report.json"], "markdown": md}
