"""Compare runs at matched FLOPs: the paper's Table 2 as markdown, and its Figure 2.

Inputs are run directories (the trainer's layout)::

    RUN/config.yaml                       read through `lsap.config.load_run_config` (loss, lsap.alpha, ...)
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
import re
import shutil
import tempfile
from pathlib import Path
from typing import Any

from lsap.eval.seeds import PAIRS_POOLED, pairs_verdict  # noqa: E402,F401  (re-exported)
from lsap.experiments.deltas import strength_rows  # noqa: E402 (re-exported: sweep, tests)
from lsap.experiments.plots import write_delta_plot, write_plots  # noqa: E402
from lsap.experiments.report_spread import (  # noqa: F401  (re-exported)
    SPREAD_COLUMNS,
    _spread_lines,
    group_spread,
)
from lsap.experiments.report_tables import delta_lines, paired_lines
from lsap.utils.errors import ReportError  # noqa: E402,F401  (re-exported)
from lsap.utils.provenance import provenance  # noqa: E402


@dataclasses.dataclass
class Run:
    name: str
    dir: Path
    config: dict
    evals: list[dict]  # eval.json dicts (+ "checkpoint"), sorted by flops
    metrics: list[dict]  # metrics.jsonl lines

    @property
    def loss_type(self) -> str:
        return {"ce": "Cross Entropy", "lsap": "LSAP"}.get(
            str(self.config.get("loss", "?")).lower(), str(self.config.get("loss", "?"))
        )

    @property
    def is_lsap(self) -> bool:
        return str(self.config.get("loss", "")).lower() == "lsap"

    @property
    def alpha(self) -> str:
        return f"{float(self.config.get('lsap', {}).get('alpha', 0)):g}" if self.is_lsap else "0"

    @property
    def schedule(self) -> str:
        return (
            str(self.config.get("lsap", {}).get("lambda_schedule", "constant"))
            if self.is_lsap
            else "-"
        )

    @property
    def seed(self):
        return self.config.get("train", {}).get("seed")

    @property
    def setting(self) -> str:
        """The run's name without its seed suffix (`lsap-a0.05-s1` → `lsap-a0.05`): runs of one
        setting differ only by seed and are grouped for the spread."""
        return re.sub(r"-s\d+$", "", self.name)

    @property
    def surrogate(self):
        return self.config.get("surrogate", {}).get("model") if self.is_lsap else None

    key: str = ""  # the run as report.json/report.md name it: its directory (run_keys)

    @property
    def label(self) -> str:
        if not self.is_lsap:
            return f"{self.name} (CE)"
        return f"{self.name} (LSAP α={self.alpha}, λ {self.schedule})"


def load_run(path: str | os.PathLike) -> Run:
    """Read a run directory; raises ReportError without checkpoints or without any eval.json."""
    from lsap.config import load_run_config
    from lsap.train.checkpoint import list_checkpoints

    d = Path(path)
    if not d.is_dir():
        raise ReportError(f"{d}: not a directory")
    root = d / "checkpoints"
    cks = list_checkpoints(root)  # finished ones (lsap.train.checkpoint)
    if not cks:
        raise ReportError(f"{d}: no checkpoints (expected {d}/checkpoints/step_*/)")
    config = load_run_config(d).to_dict()  # the resolved config: no defaults re-stated here
    evals = []
    for p in cks:
        if (p / "eval.json").is_file():
            e = json.loads((p / "eval.json").read_text())
            if e.get("flops") is None:
                raise ReportError(f"{p}/eval.json has no FLOPs (checkpoint without meta.json?)")
            evals.append({**e, "checkpoint": p.name})
    if not evals:
        raise ReportError(
            f"{d}: none of its {len(cks)} checkpoints is evaluated; run `lsap eval {d}` first"
        )
    evals.sort(key=lambda e: (e["flops"], e.get("step") or 0))
    metrics = []
    if (d / "metrics.jsonl").is_file():
        for line in (d / "metrics.jsonl").read_text().splitlines():
            if line.strip():
                metrics.append(json.loads(line))
    name = config.get("name") or d.name
    return Run(name=str(name), dir=d, config=config or {}, evals=evals, metrics=metrics)


def run_keys(runs: list[Run]) -> None:
    """Name each run by its directory (`ce-s0-<hash>`, what `ls` shows), or by its path when two
    runs' directories share a name; `Run.name` stays the short label (config or sweep name)."""
    dirs = [r.dir.name for r in runs]
    for r in runs:
        r.key = r.dir.name if dirs.count(r.dir.name) == 1 else str(r.dir)


def _shown(row: dict) -> str:
    """report.md's Run cell: the directory name, with the short label when it is not a prefix."""
    name = row.get("name")
    return row["run"] if not name or row["run"].startswith(name) else f"{row['run']} ({name})"


def _data_tokenizer_hash(config: dict) -> str | None:
    """The base tokenizer hash of a run's prepared data (its manifest), when evals lack one."""
    try:
        manifest = json.loads(
            (Path(config.get("data", {}).get("dir", "")) / "manifest.json").read_text()
        )
        return manifest["tokenizer"]["hash"]
    except (OSError, ValueError, KeyError, TypeError):
        return None


def check_comparable(runs: list[Run]) -> None:
    """Same base tokenizer and same eval set across every run and checkpoint, else ReportError."""
    names = [r.name for r in runs]
    if len(set(names)) != len(names):
        for r in runs:  # two runs with one config name: fall back to directory paths
            r.name = str(r.dir)
    toks = {}
    for r in runs:
        hashes = {e.get("tokenizer_hash") for e in r.evals} - {None}
        toks[r.name] = (
            ("hash", tuple(sorted(hashes))) if hashes else ("data", _data_tokenizer_hash(r.config))
        )
    if len(set(toks.values())) > 1:
        detail = "; ".join(f"{n}: {k} {str(v)[:40]}" for n, (k, v) in toks.items())
        raise ReportError(
            f"runs use different base tokenizers, so their scores are not comparable ({detail})"
        )
    sets = {}
    for r in runs:
        for e in r.evals:
            sets.setdefault(e.get("eval_set_hash"), []).append(f"{r.name}/{e['checkpoint']}")
    if len(sets) > 1:
        detail = "; ".join(
            f"{str(h)[:12]}: {', '.join(v[:3])}{' ...' if len(v) > 3 else ''}"
            for h, v in sets.items()
        )
        raise ReportError(
            "the checkpoints were evaluated on different evaluation sets (eval_set_hash); re-run "
            f"`lsap eval --force` with the same --tasks/--limit/data on all runs ({detail})"
        )


def _common_max_flops(runs: list[Run]) -> float | None:
    vals = {float((r.config.get("train") or {}).get("max_flops") or 0) for r in runs}
    return vals.pop() if len(vals) == 1 and next(iter(vals)) > 0 else None


def pick_matched(run: Run, budget: float, axis: str = "flops") -> tuple[dict, bool]:
    """The evaluated checkpoint with the most `axis` (flops | tokens) ≤ budget, else the least.

    Returns (eval dict, above) with above=True when it lies above the budget.
    """
    below = [e for e in run.evals if e[axis] <= budget * (1 + 1e-9)]
    if below:
        return below[-1], False
    return run.evals[0], True


def _targets_label(t: dict | None) -> str | None:
    if not t:
        return None
    return f"{t.get('surrogate')} at α {t.get('alpha')}, k {t.get('k')}"


def _fmt_flops(x: float | None) -> str:
    return "-" if x is None else f"{x:.3e}"


def build_table(runs: list[Run], flops: float | None = None, axis: str = "flops") -> dict[str, Any]:
    """The matched-FLOPs (or, axis="tokens", matched-tokens) comparison as data:
    {"axis", "budget", "tasks", "rows", "best"}.

    rows: one per run, {"run" (its directory name), "name" (config or sweep name), "loss", "alpha", "schedule", "checkpoint", "flops", "tokens",
    "above_budget", "scores": {task: value}, "average", "val_loss", "val_bpb"}.
    """
    check_comparable(runs)
    run_keys(runs)
    source = "given"
    if flops is not None:
        budget = float(flops)
    elif axis == "flops" and _common_max_flops(runs):
        # runs trained to one train.max_flops stop a fraction of a step below it, each at
        # its own step size: the configured budget, not the smallest run's last point
        budget, source = _common_max_flops(runs), "train.max_flops of every run"
    else:
        budget, source = min(r.evals[-1][axis] for r in runs), "largest reached by all runs"
    tasks: list[str] = []
    for r in runs:
        for e in r.evals:
            for t in e.get("tasks", {}):
                if t not in tasks:
                    tasks.append(t)
    rows = []
    for r in runs:
        e, above = pick_matched(r, budget, axis)
        # at a common train.max_flops each run stops less than one step below it; further
        # below, the run was stopped (killed, or still training): not a matched-FLOPs point
        step = e["flops"] / e["step"] if e.get("step") else budget * 1e-3
        short = source.startswith("train.max_flops") and budget - e["flops"] > step * 1.001
        scores = {t: (e["tasks"][t]["value"] if t in e.get("tasks", {}) else None) for t in tasks}
        vals = [v for v in scores.values() if v is not None]
        rows.append(
            {
                "run": r.key,
                "name": r.name,
                "setting": r.setting,
                "seed": r.seed,
                "surrogate": r.surrogate,
                "loss": r.loss_type,
                "alpha": r.alpha,
                "schedule": r.schedule,
                "checkpoint": e["checkpoint"],
                "step": e.get("step"),
                "flops": e["flops"],
                "tokens": e.get("tokens"),
                "above_budget": above,
                "short_of_budget": short,
                "scores": scores,
                "average": sum(vals) / len(vals) if vals and len(vals) == len(tasks) else None,
                "pairs_average": e.get("pairs_average"),
                "val_loss": e.get("val_loss"),
                "val_bpb": e.get("val_bpb"),
                **{k: e.get(k) for k in ("doc_bpb", "doc_nll", "doc_bytes")},
                "val_top1": e.get("val_top1"),
                "val_top5": e.get("val_top5"),
                "by_m": e.get("by_m"),
                "target_mass": e.get("target_mass"),
                "targets_label": _targets_label(e.get("targets")),
            }
        )
    best = {}
    for col, better in [
        *((t, max) for t in tasks),
        ("average", max),
        ("pairs_average", max),
        ("val_loss", min),
        ("val_bpb", min),
        ("val_top1", max),
        ("val_top5", max),
    ]:
        vals = [(row["scores"][col] if col in tasks else row[col]) for row in rows]
        vals = [v for v in vals if v is not None]
        best[col] = better(vals) if vals else None
    return {
        "axis": axis,
        "budget": budget,
        "budget_source": source,
        "tasks": tasks,
        "rows": rows,
        "best": best,
    }


def _cell(v: float | None, best: float | None, scale: float = 100.0, digits: int = 2) -> str:
    if v is None:
        return "-"
    s = f"{v * scale:.{digits}f}"
    return f"**{s}**" if best is not None and abs(v - best) <= 1e-12 else s


def _table_lines(table: dict) -> list[str]:
    tasks = table["tasks"]
    head = [
        "Run",
        "Loss",
        "α",
        "λ schedule",
        *tasks,
        "Avg",
        "val loss",
        "val bpb",
        "checkpoint",
        "FLOPs",
        "tokens",
    ]
    lines = [
        "| " + " | ".join(head) + " |",
        "|" + "|".join(["---"] * 4 + ["---:"] * (len(tasks) + 3) + ["---", "---:", "---:"]) + "|",
    ]
    b = table["best"]
    for row in table["rows"]:
        cells = [
            _shown(row),
            row["loss"],
            row["alpha"],
            row["schedule"],
            *(_cell(row["scores"][t], b[t]) for t in tasks),
            _cell(row["average"], b["average"]),
            _cell(row["val_loss"], b["val_loss"], 1, 4),
            _cell(row["val_bpb"], b["val_bpb"], 1, 4),
            row["checkpoint"]
            + (" †" if row["above_budget"] else "")
            + (f" ‡ {row['flops'] / table['budget']:.0%}" if row.get("short_of_budget") else ""),
            _fmt_flops(row["flops"]),
            "-" if row["tokens"] is None else f"{row['tokens']:,}",
        ]
        lines.append("| " + " | ".join(str(c) for c in cells) + " |")
    return lines


BY_CONSTRUCTION = (
    "Read before judging: LSAP's unweighted auxiliary NLLs move probability from the gold token to "
    "the surrogate's targets (METHOD §5b), so held-out loss, bits per byte, top-1/top-5 accuracy "
    "and the mass on targets move against LSAP *by construction*; the zero-shot scores "
    "(minimal pairs, tasks) are the paper's kind of verdict."
)


def _by_m_lines(table: dict) -> list[str]:
    """Held-out loss and top-1 split by the number of auxiliary targets per position."""
    rows = [r for r in table["rows"] if r.get("by_m")]
    if not rows:
        return []
    groups: dict[str, list[dict]] = {}
    for r in rows:
        groups.setdefault(r["setting"], []).append(r)
    buckets = list(rows[0]["by_m"])
    head = (
        ["Setting", "runs"]
        + [f"m={b}: share / loss / top-1" for b in buckets]
        + ["mass on targets"]
    )
    lines = [
        "## Held-out positions by the number m of auxiliary targets they would receive",
        "",
        f"Targets from `{rows[0].get('targets_label') or 'the reference surrogate'}`; mean over seeds. "
        + BY_CONSTRUCTION,
        "",
        "| " + " | ".join(head) + " |",
        "|---|---:|" + "---:|" * (len(buckets) + 1),
    ]

    def mean(vals):
        vals = [v for v in vals if v is not None]
        return sum(vals) / len(vals) if vals else None

    for setting, rs in groups.items():
        cells = [setting, str(len(rs))]
        for b in buckets:
            sh, lo, t1 = (mean([r["by_m"][b][k] for r in rs]) for k in ("share", "loss", "top1"))
            cells.append(
                "-"
                if sh is None
                else f"{sh:.0%} / {lo:.3f} / {t1:.1%}"
                if lo is not None
                else f"{sh:.0%} / - / -"
            )
        tm = mean([r.get("target_mass") for r in rs])
        cells.append("-" if tm is None else f"{tm:.1%}")
        lines.append("| " + " | ".join(cells) + " |")
    return lines + [""]


def render_markdown(table: dict, runs: list[Run], tokens_table: dict | None = None) -> str:
    lines = [
        "# Matched-FLOPs comparison",
        "",
        f"FLOPs budget: **{_fmt_flops(table['budget'])}** ({table['budget_source']}). Each run uses its evaluated "
        "checkpoint with the most FLOPs not above the budget (marked † when it had to go above). "
        "Scores are zero-shot, in percent; Avg is the mean over the task columns; best per column in bold.",
        "",
        *(
            [
                "**‡ NOT matched FLOPs**: " + ", ".join(short) + " stopped short of the common "
                "train.max_flops (percent of it reached); finish them (rerun their `lsap train`) "
                "before reading this table.",
                "",
            ]
            if (short := [r["run"] for r in table["rows"] if r.get("short_of_budget")])
            else []
        ),
        *_table_lines(table),
        "",
        BY_CONSTRUCTION,
        "",
        *_spread_lines(table),
        *_by_m_lines(table),
    ]
    if tokens_table is not None:
        lines += [
            "## Matched tokens (biased toward LSAP; not a verdict)",
            "",
            f"Token budget: **{tokens_table['budget']:,.0f}** (largest reached by all runs). Each run uses its "
            "evaluated checkpoint with the most tokens not above it. This view ignores the surrogate's "
            "compute (the matched-FLOPs table above charges it) and is **biased toward LSAP**: LSAP's "
            "checkpoint here is the end of its learning-rate schedule (annealed), CE's is a mid-schedule "
            "checkpoint of a longer cosine, at a higher learning rate. It shows where LSAP's tokens went, "
            "not what the same tokens buy; no CE run here ends its schedule at this token count.",
            "",
            *_table_lines(tokens_table),
            "",
            *_spread_lines(tokens_table),
        ]
    metrics = {}
    for r in runs:
        for e in r.evals:
            for t, v in e.get("tasks", {}).items():
                metrics.setdefault(t, v.get("metric"))
    e0 = runs[0].evals[-1]
    lines += [
        "",
        "Metrics: " + ", ".join(f"{t} = {m}" for t, m in metrics.items()) + ".",
        f"Evaluation set: `{str(e0.get('eval_set_hash'))[:16]}` (task set {e0.get('task_set')}, "
        f"limit {e0.get('limit')}).",
        "",
        "![average score vs FLOPs](score_vs_flops.png)",
        "",
        "![validation loss vs FLOPs](val_loss_vs_flops.png)",
        "",
        "![validation loss vs tokens](val_loss_vs_tokens.png)",
        "",
    ]
    return "\n".join(lines)


REPLACE_EQUAL = "lsap_pairs_replace (equal length)"


def paired_stats(
    runs: list[Run], table: dict, *, n_boot: int = 10_000, seed: int = 0
) -> list[dict]:
    """Per LSAP setting, paired tests of LSAP vs the CE run of the same seed on the same examples
    (each at its matched checkpoint, `table`), pooled across seeds (`lsap.eval.stats.paired_comparison`):
    one per minimal-pair task (its primary metric), all pair tasks pooled, and the replace task on
    its equal-length subset (both choices the same number of tokens). Needs eval.json files with
    per-example results (`lsap eval` since round 3); tasks without them are left out.

    Returns [{"setting", "seeds", "tests": {name: {... paired_comparison, "per_seed": [Δ, ...]}}}]."""
    from lsap.eval.seeds import holm, seed_deltas, seed_level_test
    from lsap.eval.stats import paired_comparison
    from lsap.eval.tasks import unpack_scores

    by_name = {r.key: r for r in runs}

    def correct(row) -> dict:
        e = next(e for e in by_name[row["run"]].evals if e["checkpoint"] == row["checkpoint"])
        out = {}
        for t, v in (e.get("tasks") or {}).items():
            if v.get("examples"):
                ex = unpack_scores(v["examples"])
                out[t] = (ex[v["metric"]], ex["same_tokens"])
        return out

    ce = {r["seed"]: r for r in table["rows"] if r["loss"] != "LSAP"}
    settings: dict[str, list[dict]] = {}
    for r in table["rows"]:
        if r["loss"] == "LSAP" and r["seed"] in ce:
            settings.setdefault(r["setting"], []).append(r)
    out = []
    for setting, rows in settings.items():
        groups: dict[str, tuple[list, list, list]] = {}  # name → (CE groups, LSAP groups, seeds)
        for row in rows:
            a, b = correct(ce[row["seed"]]), correct(row)
            for t in a:
                if t not in b or len(a[t][0]) != len(b[t][0]):
                    continue
                for name, mask in (
                    (t, None),
                    (PAIRS_POOLED, None),
                    *([(REPLACE_EQUAL, a[t][1] & b[t][1])] if t == "lsap_pairs_replace" else []),
                ):
                    g = groups.setdefault(name, ([], [], []))
                    g[0].append(a[t][0] if mask is None else a[t][0][mask])
                    g[1].append(b[t][0] if mask is None else b[t][0][mask])
                    g[2].append(row["seed"])
        tests = {}
        for name, (gc, gl, gs) in sorted(
            groups.items(), key=lambda kv: (kv[0] != PAIRS_POOLED, kv[0])
        ):
            if sum(len(x) for x in gc) == 0:
                continue
            res = paired_comparison(gc, gl, n_boot=n_boot, seed=seed)
            per_seed = seed_deltas(gc, gl, gs)
            tests[name] = {
                **res,
                "per_seed": per_seed,
                "per_seed_min": min(per_seed),
                "per_seed_max": max(per_seed),
                "seed_level": seed_level_test(per_seed),
            }
        # several p-values read together: Holm over this setting's tests (lsap.eval.seeds.holm)
        names = list(tests)
        for key, get in (
            ("p_holm", lambda t: t["p"]),
            ("seed_p_holm", lambda t: t["seed_level"]["p"]),
        ):
            for nm, q in zip(names, holm([get(tests[nm]) for nm in names])):
                tests[nm][key] = q
        if tests:
            out.append({"setting": setting, "seeds": len(rows), "tests": tests})
    return out


def make_report(
    run_dirs: list[str | os.PathLike],
    out: str | os.PathLike,
    flops: float | None = None,
    *,
    strength: dict | None = None,
    surrogates: dict | None = None,
    surrogate_docs: dict | None = None,
    names: list[str] | None = None,
) -> dict:
    """Load, check, tabulate and plot; writes report.md, report.json and PNGs to `out`.

    Everything is validated and rendered into a temporary directory first; files are
    moved into `out` only when all of them exist, so an error leaves `out` untouched.
    """
    if not run_dirs:
        raise ReportError("no run directories given")
    runs = [load_run(d) for d in run_dirs]
    if names is not None:  # display names (a sweep names runs whose directories it shares)
        for r, n in zip(runs, names):
            r.name = n
    table = build_table(runs, flops)
    tokens_table = (
        build_table(runs, axis="tokens")
        if all(e.get("tokens") is not None for r in runs for e in r.evals)
        else None
    )
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".tmp-report-", dir=out))
    try:
        md = render_markdown(table, runs, tokens_table)
        files = write_plots(runs, table, tmp)
        deltas, paired = None, None
        if any(r["loss"] == "LSAP" for r in table["rows"]) and any(
            r["loss"] != "LSAP" for r in table["rows"]
        ):
            deltas = strength_rows(table, strength or {}, surrogates or {}, surrogate_docs)
            paired = paired_stats(runs, table)
            if deltas:
                files.append(write_delta_plot(deltas, tmp))
                extra = "\n".join(delta_lines(deltas, paired) + paired_lines(paired))
                md = (
                    md.replace("\n## Matched tokens", "\n" + extra + "\n## Matched tokens", 1)
                    if "\n## Matched tokens" in md
                    else md + "\n" + extra
                )
        (tmp / "report.md").write_text(md)
        (tmp / "report.json").write_text(
            json.dumps(
                {
                    **table,
                    "spread": group_spread(table),
                    "matched_tokens": tokens_table,
                    "deltas": deltas,
                    "paired": paired,
                    "surrogate_bpb": strength,
                    "provenance": provenance(),
                },
                indent=2,
                sort_keys=True,
            )
            + "\n"
        )
        for name in [*files, "report.md", "report.json"]:
            os.replace(tmp / name, out / name)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return {
        "table": table,
        "out": str(out),
        "files": [*files, "report.md", "report.json"],
        "markdown": md,
        "paired": paired,
    }
