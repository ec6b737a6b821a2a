"""The markdown tables of `lsap report` that read paired tests: Δ LSAP − CE per setting
(the seed-level verdict) and the per-test detail pooled over items (`report.paired_tests`)."""

from __future__ import annotations

from lsap.eval.seeds import PAIRS_POOLED
from lsap.eval.strength import ci_text


def delta_lines(rows: list[dict], paired: list[dict] | None = None) -> list[str]:
    def c(v, scale, digits):
        if not v:
            return "-"
        return f"{v['mean'] * scale:+.{digits}f} [{v['min'] * scale:+.{digits}f}, {v['max'] * scale:+.{digits}f}]"

    lines = [
        "## LSAP − CE at matched FLOPs, paired by seed",
        "",
        "Δ per seed = LSAP run − the CE run of the same seed (same init and data order); mean "
        "[min, max] over seeds. Strength = the surrogate's held-out bits per byte on the base's held-out "
        "documents / the CE base's (< 1: the surrogate is the stronger predictor), with its 95% "
        "interval over documents (bootstrap) where per-document NLLs were kept.",
        "",
        "The verdict is the seed-level test (one Δ per seed, t-test over seeds, "
        "`lsap.eval.seeds`); the pooled-pairs p counts items of all seeds as independent and is "
        "within-seed detail, never the verdict.",
        "",
        "| Setting | surrogate | strength | seeds | Δ minimal pairs (pts) | seed-level p | "
        "95% CI over seeds (pts) | p (pooled pairs, detail) | "
        "Δ task avg (pts) | Δ val loss | Δ top-1 (pts) | verdict on minimal pairs |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    tests = {row["setting"]: row["tests"].get(PAIRS_POOLED) for row in paired or []}
    for r in rows:
        p = r.get("pairs_average")
        if not p or r["n"] < 2:
            verdict = "one seed: no claim" if p else "-"
        elif p["min"] > 0:
            verdict = "LSAP better on every seed"
        elif p["max"] < 0:
            verdict = "LSAP worse on every seed"
        else:
            verdict = "within seed spread"
        t = tests.get(r["setting"])
        sl = (t or {}).get("seed_level") or {}
        if sl.get("n_seeds", 0) >= 2:  # the seed is the unit: its test decides
            verdict = f"{sl['verdict']}; {verdict}"
        pc = "-" if not t else f"{t['p']:.3g}"
        sp = fmt_p(sl.get("p"))
        ci = "-" if not sl.get("ci") else f"[{sl['ci'][0] * 100:+.2f}, {sl['ci'][1] * 100:+.2f}]"
        st = "-" if r.get("strength") is None else f"{r['strength']:.3f}{ci_text(r['strength_ci'])}"
        lines.append(
            f"| {r['setting']} | {r.get('surrogate') or '-'} | {st} | {r['n']} | {c(p, 100, 2)} | {sp} | {ci} | {pc} | "
            f"{c(r.get('average'), 100, 2)} | {c(r.get('val_loss'), 1, 4)} | {c(r.get('val_top1'), 100, 2)} | "
            f"{verdict} |"
        )
    tasks = list(rows[0].get("tasks") or {}) if rows else []
    if tasks:
        lines += [
            "",
            "Per task, Δ LSAP − CE in points, mean [min, max] over seeds:",
            "",
            "| Setting | " + " | ".join(tasks) + " |",
            "|---|" + "---:|" * len(tasks),
        ]
        for r in rows:
            lines.append(
                f"| {r['setting']} | "
                + " | ".join(c(r["tasks"].get(t), 100, 2) for t in tasks)
                + " |"
            )
    return lines + ["", "![Δ vs surrogate strength](delta_vs_strength.png)", ""]


def fmt_p(p) -> str:
    return "-" if p is None else f"{p:.3g}"


def paired_lines(paired: list[dict]) -> list[str]:
    if not paired:
        return []
    lines = [
        "## Paired tests over examples, pooled across seeds",
        "",
        "Each example scored by the CE run and the LSAP run of the same seed (matched-FLOPs checkpoints). "
        "p: exact two-sided sign test (McNemar) on the examples where the two disagree; CI: 95% paired "
        "bootstrap of Δ accuracy (examples resampled within each seed, 10,000 draws, seed 0). A Δ "
        "*survives* when p < 0.05. The replace task is also shown on its equal-length subset (a "
        "corrupted choice with another token count tilts raw log-prob sums). These item-pooled "
        "columns are within-seed detail; the verdict column is the seed-level test (t-test over "
        "per-seed Δ, `lsap.eval.seeds`; inconclusive when seeds disagree or the interval covers 0). "
        "p (Holm): Holm-corrected over the tests of a setting, read together.",
        "",
        "| Setting | test | pairs | Δ (pts) | per seed min–max | discordant (LSAP/CE) | p | 95% CI | "
        "survives p < 0.05 | seed-level p (Holm) | seed-level verdict |",
        "|---|---|---:|---:|---:|---:|---:|---:|---|---:|---|",
    ]
    for row in paired:
        for name, t in row["tests"].items():
            lines.append(
                f"| {row['setting']} | {name.removeprefix('lsap_')} | {t['n']:,} | {t['delta'] * 100:+.2f} | "
                f"[{t['per_seed_min'] * 100:+.2f}, {t['per_seed_max'] * 100:+.2f}] | {t['b']}/{t['c']} | "
                f"{t['p']:.3g} | [{t['ci'][0] * 100:+.2f}, {t['ci'][1] * 100:+.2f}] | "
                f"{'yes' if t['survives'] else 'no'} | {fmt_p(t.get('seed_p_holm'))} | "
                f"{(t.get('seed_level') or {}).get('verdict', '-')} |"
            )
    return lines + [""]
