"""The report's figures (matplotlib, imported lazily): score and validation loss against
compute / tokens per setting (mean over seeds, min–max band), and Δ(LSAP − CE) against
surrogate strength. Inputs are `lsap.experiments.report.Run`s and the tables `lsap.experiments.report` builds."""

from __future__ import annotations

import re
from pathlib import Path

from lsap.utils.errors import ReportError


def _val_points(run, x: str) -> tuple[list[float], list[float]]:
    pts = [
        (m[x], m["val_loss"])
        for m in run.metrics
        if m.get("kind") == "val" and m.get(x) is not None and m.get("val_loss") is not None
    ]
    # the checkpoints' eval.json held-out losses (the same windows as the table) take precedence
    ev = {
        e[x]: e["val_loss"]
        for e in run.evals
        if e.get(x) is not None and e.get("val_loss") is not None
    }
    pts = sorted({**dict(pts), **ev}.items())
    return [p[0] for p in pts], [p[1] for p in pts]


def _by_setting(runs: list) -> dict[str, list]:
    groups: dict[str, list] = {}
    for r in runs:
        groups.setdefault(r.setting, []).append(r)
    return groups


def _band(ax, series: list[tuple[list[float], list[float]]], label: str, marker: str = "o") -> None:
    """Mean over seeds with a min–max band; points are matched by position along each run."""
    series = [(xs, ys) for xs, ys in series if xs]
    if not series:
        return
    n = min(len(xs) for xs, _ in series)
    xs = [sum(s[0][i] for s in series) / len(series) for i in range(n)]
    cols = [[s[1][i] for s in series] for i in range(n)]
    mean = [sum(c) / len(c) for c in cols]
    (line,) = ax.plot(xs, mean, marker=marker, markersize=3, label=f"{label} (n={len(series)})")
    if len(series) > 1:
        ax.fill_between(
            xs, [min(c) for c in cols], [max(c) for c in cols], color=line.get_color(), alpha=0.2
        )


def write_plots(runs: list, table: dict, out: Path) -> list[str]:
    """score_vs_flops.png (Figure 2), val_loss_vs_flops.png, val_loss_vs_tokens.png into `out`:
    one line per setting (mean over its seeds) with a min–max band, the matched budget marked."""
    plt = _pyplot()
    files = []

    def save(fig, name):
        fig.tight_layout()
        fig.savefig(out / name, dpi=120)
        plt.close(fig)
        files.append(name)

    groups = _by_setting(runs)
    fig, ax = plt.subplots(figsize=(7, 4.4))
    pairs = all(e.get("pairs_average") is not None for r in runs for e in r.evals)
    for setting, rs in groups.items():
        series = []
        for r in rs:
            pts = [
                (
                    e["flops"],
                    e.get("pairs_average")
                    if pairs
                    else (e["average"] if e.get("average") is not None else _mean_score(e)),
                )
                for e in r.evals
            ]
            pts = [(x, y * 100) for x, y in pts if y is not None]
            series.append(([p[0] for p in pts], [p[1] for p in pts]))
        _band(ax, series, setting)
    ax.axvline(
        table["budget"], color="gray", linestyle="--", linewidth=1, label="matched FLOPs budget"
    )
    ax.set_xlabel("training FLOPs incl. surrogate")
    ax.set_ylabel(
        "minimal-pair accuracy, mean of 3 tasks (%)" if pairs else "average zero-shot score (%)"
    )
    ax.set_title("Zero-shot score vs training compute")
    ax.legend(fontsize=7)
    save(fig, "score_vs_flops.png")

    for x, xlabel, name in [
        ("flops", "training FLOPs incl. surrogate", "val_loss_vs_flops.png"),
        ("tokens", "training tokens", "val_loss_vs_tokens.png"),
    ]:
        fig, ax = plt.subplots(figsize=(7, 4.4))
        for setting, rs in groups.items():
            _band(ax, [_val_points(r, x) for r in rs], setting, marker=".")
        if x == "flops":
            ax.axvline(
                table["budget"],
                color="gray",
                linestyle="--",
                linewidth=1,
                label="matched FLOPs budget",
            )
        ax.set_xlabel(xlabel)
        ax.set_ylabel("validation loss (nats/token)")
        ax.set_title(
            f"Validation loss vs training {'compute' if x == 'flops' else 'tokens'} "
            "(favours CE by construction)"
        )
        ax.legend(fontsize=7)
        save(fig, name)
    return files


def _pyplot():
    try:
        import matplotlib
    except ImportError as e:
        raise ReportError("plots need matplotlib: pip install 'lsap[plot]'") from e
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


DELTA_METRICS = (
    ("pairs_average", "minimal pairs (points)", 100),
    ("val_loss", "held-out loss (nats)", 1),
    ("val_top1", "top-1 accuracy (points)", 100),
)


def strength_xerr(rows: list[dict]) -> list[list[float]] | None:
    """Horizontal error bars [[below], [above]] from each row's 95 % document-bootstrap
    interval of strength (`strength_ci`); None when any row has no interval (a partial set
    of bars would read as "no uncertainty" for the others)."""
    cis = [r.get("strength_ci") for r in rows]
    if not rows or any(c is None for c in cis):
        return None
    return [
        [max(r["strength"] - c[0], 0.0) for r, c in zip(rows, cis)],
        [max(c[1] - r["strength"], 0.0) for r, c in zip(rows, cis)],
    ]


def write_delta_plot(rows: list[dict], out: Path) -> str:
    """delta_vs_strength.png: Δ(LSAP − CE) at matched FLOPs per setting, mean with min–max bars
    over seeds, against surrogate strength (x = surrogate bpb / CE bpb; lower = stronger, with
    its 95 % document-bootstrap interval as horizontal bars) when the settings differ in
    surrogate, else one point per setting."""
    plt = _pyplot()
    rows = [r for r in rows if any(r.get(m) for m, _, _ in DELTA_METRICS)]
    strengths = {r["strength"] for r in rows if r.get("strength") is not None}
    fig, axes = plt.subplots(1, len(DELTA_METRICS), figsize=(4.2 * len(DELTA_METRICS), 3.8))
    for ax, (m, label, scale) in zip(axes, DELTA_METRICS):
        if len(strengths) > 1:
            groups: dict[str, list[dict]] = {}
            for r in rows:
                groups.setdefault(re.sub(r"-sur[^-]+", "", r["setting"]), []).append(r)
            for g, rs in groups.items():
                rs = sorted(
                    (r for r in rs if r.get(m) and r.get("strength")), key=lambda r: r["strength"]
                )
                if not rs:
                    continue
                xs = [r["strength"] for r in rs]
                ys = [r[m]["mean"] * scale for r in rs]
                err = [
                    [(r[m]["mean"] - r[m]["min"]) * scale for r in rs],
                    [(r[m]["max"] - r[m]["mean"]) * scale for r in rs],
                ]
                ax.errorbar(
                    xs, ys, yerr=err, xerr=strength_xerr(rs), marker="o", capsize=3, label=g
                )
                for r in rs:
                    ax.annotate(
                        str(r.get("surrogate")),
                        (r["strength"], r[m]["mean"] * scale),
                        fontsize=7,
                        textcoords="offset points",
                        xytext=(4, 4),
                    )
            ax.set_xlabel("surrogate bpb / CE base bpb (< 1: surrogate stronger)")
        else:
            rs = [r for r in rows if r.get(m)]
            xs = list(range(len(rs)))
            ax.errorbar(
                xs,
                [r[m]["mean"] * scale for r in rs],
                yerr=[
                    [(r[m]["mean"] - r[m]["min"]) * scale for r in rs],
                    [(r[m]["max"] - r[m]["mean"]) * scale for r in rs],
                ],
                fmt="o",
                capsize=3,
            )
            ax.set_xticks(xs)
            ax.set_xticklabels(
                [r["setting"].removeprefix("lsap-") for r in rs],
                rotation=60,
                ha="right",
                fontsize=7,
            )
        ax.axhline(0, color="gray", linewidth=1)
        ax.set_ylabel(f"Δ LSAP − CE, {label}")
        ax.set_title(label.split(" (")[0], fontsize=9)
    if axes[0].get_legend_handles_labels()[0]:
        axes[0].legend(fontsize=7)
    ci = "; strength: 95 % interval" if len(strengths) > 1 else ""
    fig.suptitle(f"LSAP − CE at matched FLOPs (mean, min–max over seeds{ci})", fontsize=10)
    fig.tight_layout()
    fig.savefig(out / "delta_vs_strength.png", dpi=120)
    plt.close(fig)
    return "delta_vs_strength.png"


def _mean_score(e: dict) -> float | None:
    vals = [t["value"] for t in e.get("tasks", {}).values()]
    return sum(vals) / len(vals) if vals else None


def axis_plot(rows: list[dict], x: str, title: str, out: Path) -> str:
    """One sweep axis: Δ minimal pairs (LSAP − CE, mean and min–max over seeds) against
    `x`, in-domain and per out-of-domain corpus, each series nudged sideways so bars do not
    hide each other; a filled marker where the pooled sign test gives p < 0.05, hollow where
    not. Returns the file name written in `out`."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 4))
    pts = [r for r in rows if r[x] is not None and r["pairs"]]
    xs = [r[x] for r in pts]
    span = (max(xs) - min(xs)) or abs(xs[0]) or 1.0
    series = [("in-domain", lambda r: (r["pairs"], r.get("pairs_test")), "o")] + [
        (
            f"out-of-domain {c}",
            (lambda c: lambda r: (r["ood"].get(c), (r["ood"].get(c) or {}).get("test")))(c),  # noqa: B023
            "s",
        )
        for c in sorted({c for r in pts for c in r["ood"]})
    ]
    for i, (label, get, m) in enumerate(series):
        got = [(a, *get(r)) for a, r in zip(xs, pts) if get(r)[0]]
        if not got:
            continue
        shift = (i - (len(series) - 1) / 2) * 0.015
        px = [a * 10**shift if x == "base_params" else a + shift * span for a, _, _ in got]
        py = [d["mean"] * 100 for _, d, _ in got]
        color = f"C{i}"
        ax.errorbar(
            px,
            py,
            yerr=[
                [(d["mean"] - d["min"]) * 100 for _, d, _ in got],
                [(d["max"] - d["mean"]) * 100 for _, d, _ in got],
            ],
            fmt="none",
            capsize=3,
            ecolor=color,
        )
        sig = [bool(t and t.get("survives")) for _, _, t in got]
        ax.scatter(
            px,
            py,
            marker=m,
            color=[color if s_ else "white" for s_ in sig],
            edgecolors=color,
            zorder=3,
            label=label,
        )
        if i == 0 and len({r.get("regime") for r in pts}) > 1:  # name each regime's point
            for a, b_, r in zip(px, py, [r for r in pts if get(r)[0]]):
                ax.annotate(
                    r["regime"],
                    (a, b_),
                    textcoords="offset points",
                    xytext=(-6, -12),
                    fontsize=7,
                    ha="right",
                )
    ax.axhline(0, color="gray", lw=0.8)
    ax.margins(x=0.12)  # room for the regime labels
    if x == "base_params":
        ax.set_xscale("log")
    ax.set_xlabel(
        {
            "base_params": "base parameters",
            "surrogate_ratio": "N_s / N_b",
            "overlap": "share of held-out base tokens in kept Σ∩",
            "strength": "strength (bpb ratio)",
        }[x]
    )
    ax.set_ylabel("Δ minimal pairs, LSAP − CE (points)")
    ax.set_title(
        title + "\n(filled: pooled sign test p < 0.05; bars: min–max over seeds)", fontsize=9
    )
    ax.legend(fontsize=7)
    name = f"delta_vs_{x}.png"
    fig.tight_layout()
    fig.savefig(out / name, dpi=120)
    plt.close(fig)
    return name
