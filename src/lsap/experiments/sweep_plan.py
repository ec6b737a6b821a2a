"""A sweep spec's plan (`lsap sweep`): its regime variants, the names of its settings and
runs, and the expansion of grid × extra × seeds into runs (no config resolved here; see
`lsap.experiments.sweep` for checking and running the plan)."""

from __future__ import annotations

import hashlib
import itertools
import re
from pathlib import Path
from typing import Any

from lsap.utils.errors import SweepError

EVAL_KEYS = {"tasks", "max_examples", "targets", "alpha", "k", "vocab_map", "ood"}
AXIS_X = ("base_params", "surrogate_ratio", "overlap", "strength")


def variants(spec: dict) -> dict[str, dict]:
    """Regime settings per variant ("" for a spec without `regimes`)."""
    rs = dict(spec.get("regime_settings") or {})
    if not spec.get("regimes"):
        return {"": rs}
    return {str(n): {**rs, **(o or {})} for n, o in spec["regimes"].items()}


def surrogate_names(settings: dict) -> list[str]:
    """The "@" names a regime with these settings provides (without building it)."""
    from lsap.experiments.regime import Settings

    s = Settings(**settings)
    if s.surrogate != "pretrain":
        return [s.surrogate]
    return [f"{int(m)}x" for m in sorted(set(int(m) for m in s.surrogate_multiples))] + list(
        s.extra_surrogates
    )


def _fmt(v: Any) -> str:
    s = str(v).lstrip("@")
    short = re.sub(r"[^A-Za-z0-9.]+", "_", s)
    if len(short) <= 24:
        return short
    # long values (paths): 16 characters and a hash of the whole, so values that differ
    # only after character 24 still give distinct run names
    return short[:16] + "_" + hashlib.sha256(s.encode()).hexdigest()[:7]


def _setting_name(combo: dict) -> str:
    short = {
        "surrogate.model": "sur",
        "lsap.alpha": "a",
        "lsap.lam": "lam",
        "lsap.lambda_schedule": "sched",
        "lsap.normalization": "Z",
        "lsap.gold_outside": "gold",
        "lsap.k": "k",
        "lsap.intersection_keep": "keep",
        "lsap.intersection_seed": "kseed",
    }
    return "lsap-" + "-".join(
        f"{short.get(k, k.split('.')[-1])}{_fmt(v)}" for k, v in combo.items()
    )


def expand(spec: dict) -> list[dict]:
    """The plan: [{"name", "variant", "setting", "seed", "loss", "overrides"}], CE first per
    variant and seed; the headline setting also at its extra seeds."""
    keys = list(spec["grid"])
    combos = (
        [dict(zip(keys, vals)) for vals in itertools.product(*(spec["grid"][k] for k in keys))]
        if keys
        else []
    )
    combos += [dict(x) for x in spec.get("extra", [])]
    h = spec.get("headline")
    plan = []
    for v in variants(spec):
        pre = f"{v}-" if v else ""
        seeds = list(spec["seeds"]) + [
            s for s in (h["seeds"] if h else []) if s not in spec["seeds"]
        ]
        for seed in seeds:
            cs = combos if seed in spec["seeds"] else [dict(h["overrides"])]
            if spec["baseline"]:
                plan.append(
                    {
                        "name": f"{pre}ce-s{seed}",
                        "variant": v,
                        "setting": "ce",
                        "seed": seed,
                        "loss": "ce",
                        "overrides": {},
                    }
                )
            for c in cs:
                name = _setting_name(c)
                plan.append(
                    {
                        "name": f"{pre}{name}-s{seed}",
                        "variant": v,
                        "setting": name,
                        "seed": seed,
                        "loss": "lsap",
                        "overrides": c,
                    }
                )
            if (
                h
                and seed in spec["seeds"]
                and _setting_name(h["overrides"]) not in {_setting_name(c) for c in cs}
            ):
                raise SweepError(
                    f"headline setting {_setting_name(h['overrides'])} is not in the grid; "
                    f"settings: {', '.join(sorted({_setting_name(c) for c in cs}))}"
                )
    names = [r["name"] for r in plan]
    if len(set(names)) != len(names):
        twice = sorted({n for n in names if names.count(n) > 1})
        raise SweepError(
            f"two grid settings give the same run name ({', '.join(twice)}); "
            "make the values distinct or drop the repeated one"
        )
    return plan


def _check_eval_and_labels(p: Path, spec: dict) -> None:
    """The spec's eval, headline and axis entries (load_spec's second half)."""
    ev = spec["eval"]
    if not isinstance(ev, dict) or set(ev) - EVAL_KEYS:
        raise SweepError(
            f"{p}: eval: unknown keys {sorted(set(ev) - EVAL_KEYS) if isinstance(ev, dict) else ev}; "
            f"valid: {sorted(EVAL_KEYS)}"
        )
    ood = ev.get("ood", [])
    if not isinstance(ood, list) or not all(isinstance(c, str) for c in ood):
        raise SweepError(f"{p}: eval.ood must be a list of corpora (out-of-domain minimal pairs)")
    if ood:
        from lsap.data.corpora import check_dataset_spec
        from lsap.utils.errors import LsapError

        for c in ood:
            try:
                check_dataset_spec(c)
            except LsapError as e:
                raise SweepError(f"{p}: eval.ood: {e}") from None
        if not spec.get("regime"):
            raise SweepError(
                f"{p}: eval.ood needs a regime (its base tokenizer reads the other corpora)"
            )
    h = spec.get("headline")
    if h is not None:
        if (
            not isinstance(h, dict)
            or set(h) != {"overrides", "seeds"}
            or not isinstance(h["overrides"], dict)
            or not h["overrides"]
            or not isinstance(h["seeds"], list)
            or not all(isinstance(s, int) for s in h["seeds"])
        ):
            raise SweepError(
                f"{p}: headline must be {{overrides: {{config key: value}}, seeds: [ints]}}"
            )
    ax = spec.get("axis")
    if ax is not None and (
        not isinstance(ax, dict) or set(ax) - {"x", "title"} or ax.get("x") not in AXIS_X
    ):
        raise SweepError(
            f"{p}: axis must be {{x: one of {', '.join(AXIS_X)}, title: text}}, got {ax!r}"
        )
