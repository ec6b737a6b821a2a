"""`lsap sweep SPEC.yaml`: a grid of LSAP settings plus the CE baseline, every run to one
FLOPs budget, evaluated and reported together — the map of where LSAP helps.

A spec (YAML; `configs/sweeps/*.yaml` are shipped)::

    name: strength
    regime: quickstart            # optional: the quickstart's paper-like regime (cached) provides
    regime_settings: {}           #   data, shapes, surrogate checkpoints "@1x" "@4x" "@16x" and the budget
    base: [optim.lr=2e-3, ...]    # dotlist keys shared by every run (with a regime: added to its own)
    budget_flops: 0               # FLOPs per run (0 with a regime: 6·N_b·ce_tokens)
    seeds: [0, 1, 2]
    baseline: true                # one CE run per seed
    grid:                         # every combination is one LSAP setting (× seeds)
      surrogate.model: ["@1x", "@4x", "@16x"]
      lsap.alpha: [0.05]
    extra: [{lsap.lambda_schedule: cosine}]   # more LSAP settings, outside the product
    store: true                   # one target store per surrogate serves every α/k/λ of the grid
    eval: {tasks: pairs, max_examples: 1000, targets: "@16x", alpha: 0.05, k: 15,
           ood: [linux-docs, shakespeare]}   # + minimal pairs from these corpora's held-out documents
    regimes:                      # optional: one regime per entry (each with its own CE baseline and
      b0.5M: {base_shape: {...}}  #   budget), regime_settings + the entry; run names get "<entry>-"
    headline: {overrides: {surrogate.model: "@16x", lsap.alpha: 0.05}, seeds: [3, 4]}  # more seeds, one setting
    axis: {x: base_params, title: "base size"}  # the summary figure's x: base_params | surrogate_ratio |
                                                #   overlap | strength

Values starting with "@" name a regime surrogate (its checkpoints "1x" … and the names of
`extra_surrogates`). `lsap.intersection_keep` < 1 (the Σ∩ ablation) is run on the
regime's map restricted to that random, seeded share (`lsap.method.vocab.restrict_intersection`:
the surrogate's view loses the dropped tokens too), so target stores serve it. Every run trains with
`train.max_flops` = the budget (the surrogate's inference charged, METHOD §5) and a CE
run also checkpoints at the LSAP runs' token count (the matched-tokens view). The
sweep is resumable at run granularity: a finished run (DONE marker) and a checkpoint
already evaluated on the same evaluation set are reused, so a killed sweep, rerun,
continues where it stopped. Run directories are named by a hash of the run's resolved
config under `runs_root` (default OUT/runs), so sweeps that share a runs root train an
identical run (e.g. the CE baseline) once. Outputs in OUT: sweep.json (the expanded plan,
run directories and status), report.md / report.json and figures; target stores under
`runs_root`/stores.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import time
from pathlib import Path
from typing import Any

from lsap.config import ConfigError, load_config
from lsap.experiments.sweep_plan import (  # noqa: F401  (re-exported)
    AXIS_X,
    EVAL_KEYS,
    _check_eval_and_labels,
    _setting_name,
    expand,
    surrogate_names,
    variants,
)
from lsap.utils.errors import SweepError  # noqa: F401  (re-exported)

SPEC_KEYS = {
    "name",
    "regime",
    "regime_settings",
    "base",
    "budget_flops",
    "seeds",
    "baseline",
    "grid",
    "extra",
    "store",
    "eval",
    "description",
    "regimes",
    "headline",
    "axis",
}


def _settings_fields() -> set[str]:
    import dataclasses

    from lsap.experiments.regime import Settings

    return {f.name for f in dataclasses.fields(Settings)}


def load_spec(path: str | Path) -> dict:
    """Read and check a sweep spec (a path, or the name of a packaged one in configs/sweeps).
    Every key is checked by name here, before anything slow runs."""
    import yaml

    from lsap.config import PACKAGED

    p = Path(path)
    if not p.is_file():
        named = PACKAGED / "sweeps" / f"{p.name.removesuffix('.yaml')}.yaml"
        if named.is_file():
            p = named
        else:
            have = sorted(q.stem for q in (PACKAGED / "sweeps").glob("*.yaml"))
            raise SweepError(f"sweep spec {path} not found; packaged sweeps: {', '.join(have)}")
    try:
        spec = yaml.safe_load(p.read_text()) or {}
    except yaml.YAMLError as e:
        raise SweepError(f"{p}: not valid YAML ({getattr(e, 'problem', e)})") from None
    if not isinstance(spec, dict):
        raise SweepError(f"{p}: a sweep spec is a mapping")
    b = spec.get("budget_flops", 0)
    try:
        ok = b is None or (not isinstance(b, bool) and math.isfinite(float(b)) and float(b) >= 0)
    except (TypeError, ValueError):
        ok = False
    if not ok:
        raise SweepError(
            f"{p}: budget_flops must be a finite number of FLOPs ≥ 0 (e.g. 2e18), got {b!r}"
        )
    unknown = set(spec) - SPEC_KEYS
    if unknown:
        raise SweepError(f"{p}: unknown keys {sorted(unknown)}; valid: {sorted(SPEC_KEYS)}")
    spec.setdefault("name", p.stem)
    spec.setdefault("seeds", [0])
    spec.setdefault("baseline", True)
    spec.setdefault("grid", {})
    spec.setdefault("extra", [])
    if not isinstance(spec["extra"], list) or not all(
        isinstance(x, dict) and x for x in spec["extra"]
    ):
        raise SweepError(
            f"{p}: extra must be a list of settings (mappings of config keys to values)"
        )
    spec.setdefault("base", [])
    spec.setdefault("store", False)
    spec.setdefault("eval", {})
    if not isinstance(spec["grid"], dict) or not all(
        isinstance(v, list) and v for v in spec["grid"].values()
    ):
        raise SweepError(f"{p}: grid must map config keys to non-empty lists of values")
    if (
        not isinstance(spec["seeds"], list)
        or not spec["seeds"]
        or not all(isinstance(s, int) for s in spec["seeds"])
    ):
        raise SweepError(f"{p}: seeds must be a non-empty list of integers")
    if not spec["grid"] and not spec["extra"] and not spec["baseline"]:
        raise SweepError(f"{p}: nothing to run (empty grid and baseline: false)")
    _check_regimes(p, spec)
    _check_eval_and_labels(p, spec)
    return spec


def _check_regimes(p: Path, spec: dict) -> None:
    fields = _settings_fields()
    rs = spec.get("regime_settings") or {}
    if not isinstance(rs, dict) or set(rs) - fields:
        raise SweepError(
            f"{p}: regime_settings: unknown keys {sorted(set(rs) - fields)}; valid: {sorted(fields)}"
        )
    regimes = spec.get("regimes")
    if regimes is None:
        return
    if not spec.get("regime"):
        raise SweepError(f"{p}: regimes needs regime: quickstart")
    if not isinstance(regimes, dict) or not regimes:
        raise SweepError(f"{p}: regimes must map names to regime settings")
    for name, over in regimes.items():
        if not re.fullmatch(r"[A-Za-z0-9._-]+", str(name)):
            raise SweepError(
                f"{p}: regimes: name {name!r} may hold only letters, digits, '.', '_' and '-'"
            )
        if not isinstance(over, dict) or set(over) - fields:
            bad = sorted(set(over) - fields) if isinstance(over, dict) else over
            raise SweepError(
                f"{p}: regimes.{name}: unknown settings {bad}; valid: {sorted(fields)}"
            )


def _resolve(value: Any, surrogates: dict) -> Any:
    if isinstance(value, str) and value.startswith("@"):
        key = value[1:]
        if key not in surrogates:
            raise SweepError(
                f"{value!r}: the regime has surrogates {', '.join('@' + k for k in surrogates)}"
            )
        return surrogates[key]
    return value


def _resolve_item(item: str, surrogates: dict) -> str:
    key, sep, value = str(item).partition("=")
    return f"{key}={_resolve(value, surrogates)}" if sep and value.startswith("@") else str(item)


def _run_items(r: dict, base: list[str], surrogates: dict, budget: float) -> list[str]:
    ov = {k: _resolve(v, surrogates) for k, v in r["overrides"].items()}
    return (
        base
        + [f"{k}={v}" for k, v in ov.items()]
        + [
            f"loss={r['loss']}",
            f"train.max_flops={budget}",
            f"train.seed={r['seed']}",
            f"model.init_seed={r['seed']}",
            "train.ckpt_every=0",
            "train.eval_every=0",
        ]
    )


def check_plan(spec: dict, plan: list[dict]) -> None:
    """Every run's config validated with placeholders for what the regime will provide
    (data, surrogate paths): a bad key or value is refused by name before anything trains,
    and so are two settings whose configs are the same (they would share one run)."""
    from lsap.experiments.regime import config_hash

    for v, settings in variants(spec).items():
        if spec.get("regime"):
            from lsap.experiments.regime import Settings, base_overrides

            try:
                s = Settings(**settings)
            except TypeError as e:
                raise SweepError(f"regime settings{' of ' + v if v else ''}: {e}") from None
            sur = {n: f"/placeholder/{n}" for n in surrogate_names(settings)}
            base = base_overrides(s) + ["data.dir=/placeholder/data", "surrogate.vocab_map="]
        else:
            sur, base = {}, []
        base = [_resolve_item(b, sur) for b in base + list(spec["base"])]
        seen: dict[tuple, str] = {}
        for r in plan:
            if r["variant"] != v:
                continue
            try:
                cfg = load_config(
                    None, _run_items(r, base, sur, float(spec.get("budget_flops") or 1e12))
                )
            except ConfigError as e:
                raise SweepError(f"run {r['name']}: {e}") from None
            key = (r["seed"], config_hash(cfg))
            if key in seen and seen[key] != r["setting"]:
                raise SweepError(
                    f"settings {seen[key]} and {r['setting']}{' of ' + v if v else ''} give the "
                    "same run config (one run, reported twice); drop one of them"
                )
            seen[key] = r["setting"]


def run_sweep(
    spec_path: str | Path,
    out: str | Path,
    *,
    runs_root: str | Path | None = None,
    dry_run: bool = False,
    log=print,
) -> dict:
    """Expand, train (resumably), evaluate and report a sweep; returns the report dict
    (with `dry_run`: the checked plan, nothing built). OUT is held with
    `lsap.utils.lock.DirLock` for the whole sweep: a second `lsap sweep` on it is refused
    at once instead of rewriting sweep.json under the first."""
    if dry_run:
        return _run_sweep(spec_path, out, runs_root=runs_root, dry_run=True, log=log)
    from lsap.utils.lock import DirLock

    with DirLock(out, "lsap sweep"):
        return _run_sweep(spec_path, out, runs_root=runs_root, dry_run=False, log=log)


def _run_sweep(spec_path, out, *, runs_root, dry_run, log) -> dict:
    from lsap.eval.ood import ood_eval
    from lsap.eval.run import evaluate_run
    from lsap.train.loggers import quiet_libraries
    from lsap.train.loop import train

    quiet_libraries()
    spec = load_spec(spec_path)
    out = Path(out)
    plan = expand(spec)
    check_plan(spec, plan)
    vs = variants(spec)
    n_set = len({(r["variant"], r["setting"]) for r in plan})
    log(
        f"[sweep] {spec['name']}: {len(plan)} runs ({len(vs)} regime(s), {n_set} settings, seeds "
        f"{sorted({r['seed'] for r in plan})}) → {out}"
    )
    if dry_run:
        for r in plan:
            log(f"  {r['name']}: " + " ".join(f"{k}={v}" for k, v in r["overrides"].items()))
        return {"spec": spec, "runs": plan}
    if not spec.get("regime") and not float(spec.get("budget_flops") or 0) > 0:
        raise SweepError("no budget: set budget_flops (or use a regime)")
    if spec.get("regime") and spec["regime"] != "quickstart":
        raise SweepError(
            f"regime {spec['regime']!r}: only 'quickstart' is built in (or leave it out and give "
            "data.dir / surrogate.model in base and grid)"
        )
    out.mkdir(parents=True, exist_ok=True)
    runs_dir = Path(runs_root) if runs_root else out / "runs"
    spec_hash = hashlib.sha256(json.dumps(spec, sort_keys=True, default=str).encode()).hexdigest()
    state_path = out / "sweep.json"
    if state_path.is_file() and json.loads(state_path.read_text()).get("spec_hash") != spec_hash:
        raise SweepError(f"{out} holds another sweep (spec changed); use a new output directory")

    cfgs, vstate, overlap = {}, {}, {}
    for v, settings in vs.items():
        cfgs_v, vstate[v] = _variant_configs(
            spec, v, settings, [r for r in plan if r["variant"] == v], runs_dir, overlap, log
        )
        cfgs.update(cfgs_v)
    one = vstate[next(iter(vs))]
    state = {
        "spec": spec,
        "spec_hash": spec_hash,
        "budget_flops": one["budget_flops"],
        "surrogates": one["surrogates"],
        "surrogate_bpb": one["surrogate_bpb"],
        "variants": vstate,
        "overlap": overlap,
        "runs": [{**r, "out_dir": cfgs[r["name"]].out_dir} for r in plan],
    }
    if state_path.is_file():  # keep the status of runs finished earlier
        done = {
            r["name"]
            for r in json.loads(state_path.read_text())["runs"]
            if r.get("status") == "done"
        }
        for r in plan:
            if r["name"] in done and (Path(cfgs[r["name"]].out_dir) / "DONE").is_file():
                r["status"] = "done"
        state["runs"] = [{**r, "out_dir": cfgs[r["name"]].out_dir} for r in plan]
    _write(state_path, state)

    if spec.get("store"):
        _use_stores({k: c for k, c in cfgs.items()}, runs_dir / "stores", log)

    ev = dict(spec.get("eval") or {})
    t0 = time.time()
    tasks_memo: dict = {}
    for i, r in enumerate(plan):
        cfg, vst = cfgs[r["name"]], vstate[r["variant"]]
        log(f"\n[sweep] run {i + 1}/{len(plan)}: {r['name']} ({time.time() - t0:.0f}s elapsed)")
        train(cfg, resume="auto", log=log, quiet=True)
        tgt = ev.get("targets")
        targets = None
        if tgt:
            targets = {
                "surrogate": _resolve(tgt, vst["surrogates"]),
                "vocab_map": vst.get("vocab_map") or ev.get("vocab_map"),
                "k": int(ev.get("k", 15)),
                "alpha": float(ev.get("alpha", 0.05)),
            }
        evaluate_run(
            cfg.out_dir,
            tasks=ev.get("tasks", "pairs"),
            max_examples=int(ev.get("max_examples", 1000)),
            targets=targets,
            log=log,
        )
        if vst.get("ood"):
            ood_eval(
                cfg.out_dir,
                vst["ood"],
                out / "ood-tasks",
                int(ev.get("max_examples", 1000)),
                tasks_memo,
                log,
            )
        r["status"] = "done"
        _write(
            state_path, {**state, "runs": [{**x, "out_dir": cfgs[x["name"]].out_dir} for x in plan]}
        )

    result = report_sweep(out)
    log(f"\n[sweep] done in {(time.time() - t0) / 60:.1f} min: {out / 'report.md'}")
    return result


def _variant_configs(
    spec: dict, v: str, settings: dict, plan: list[dict], runs_dir: Path, overlap: dict, log
) -> tuple[dict, dict]:
    """Build (or reuse) one regime and the resolved configs of its runs."""
    from lsap.experiments.regime import config_hash
    from lsap.method.flops import FlopsLedger, plan_steps

    surrogates, bpb, params, base, regime, s = {}, {}, {}, list(spec["base"]), None, None
    budget = float(spec.get("budget_flops") or 0)
    if spec.get("regime"):
        from lsap.experiments import regime as rg

        s = rg.Settings(**settings)
        if v:
            log(
                f"\n[sweep] regime {v}: "
                + ", ".join(f"{k}={val}" for k, val in (spec["regimes"][v] or {}).items())
            )
        regime = rg.build_regime(s)
        surrogates, bpb, params = (
            dict(regime.surrogates),
            dict(regime.surrogate_bpb),
            dict(regime.params),
        )
        base = (
            rg.base_overrides(s)
            + [f"data.dir={regime.base_data}", f"surrogate.vocab_map={regime.vocab_map}"]
            + base
        )
        budget = budget or regime.budget
    base = [_resolve_item(b, surrogates) for b in base]
    cfgs = {}
    for r in plan:
        try:
            cfg = load_config(None, _run_items(r, base, surrogates, budget))
        except ConfigError as e:
            raise SweepError(f"run {r['name']}: {e}") from None
        if cfg.loss == "ce":  # surrogate keys do not change a CE run: one CE run serves every sweep
            from lsap.config import LSAPCfg, SurrogateCfg

            cfg.surrogate, cfg.lsap = SurrogateCfg(), LSAPCfg()
        elif cfg.lsap.intersection_keep < 1.0:
            _restricted_map(cfg, regime, runs_dir / "maps", overlap, r["setting"], v)
        elif regime is not None:
            overlap.setdefault(v, {})[r["setting"]] = regime.overlap
        cfg.name, cfg.out_dir = r["name"], str(runs_dir / f"{r['loss']}-{config_hash(cfg)}")
        cfgs[r["name"]] = cfg
    lsap_cfgs = [c for c in cfgs.values() if c.loss == "lsap"]
    # the CE runs also checkpoint at the LSAP runs' token count (configs only, no weights)
    if lsap_cfgs:
        from lsap.data.shards import TokenShards
        from lsap.data.tokenizer import load_tokenizer, padded_vocab_size
        from lsap.experiments.regime import surrogate_config
        from lsap.model import model_config

        c0 = lsap_cfgs[0]
        tok = load_tokenizer(TokenShards(c0.data.dir, "train").manifest["tokenizer"]["spec"])
        bcfg = model_config(
            c0.model.preset,
            vocab_size=c0.model.vocab_size or padded_vocab_size(tok),
            **c0.model.overrides,
        )
        steps_at = set()
        for spec_s in sorted({c.surrogate.model for c in lsap_cfgs}):
            led = FlopsLedger.from_configs(bcfg, surrogate_config(spec_s))
            steps_at.add(
                plan_steps(
                    c0.train.batch_size * c0.data.seq_len,
                    led.base_flops_per_token + led.surrogate_flops_per_token,
                    max_flops=budget,
                ).total_steps
            )
        if min(steps_at) < 1:
            raise SweepError(
                f"budget_flops {budget:.3g} buys no training step of the LSAP runs (one step costs "
                f"{(led.base_flops_per_token + led.surrogate_flops_per_token) * c0.train.batch_size * c0.data.seq_len:.3g} FLOPs); raise it"
            )
        for c in list(cfgs.values()):
            if c.loss == "ce":
                c.train.ckpt_at = sorted(steps_at)  # a resume-free key: the CE run dir stays shared
    ood = {}
    if regime is not None:
        for corpus in (spec.get("eval") or {}).get("ood", []):
            if corpus != s.corpus:
                ood[corpus] = str(rg.heldout_shards(regime, s, corpus))
    vst = {
        "budget_flops": budget,
        "surrogates": surrogates,
        "surrogate_bpb": bpb,
        "surrogate_docs": rg.surrogate_documents(s, surrogates) if regime is not None else {},
        "params": params,
        "corpus": s.corpus if s else None,
        "ood": ood,
        "vocab_map": str(regime.vocab_map) if regime else None,
    }
    return cfgs, vst


def _restricted_map(cfg, regime, root: Path, overlap: dict, setting: str, v: str) -> None:
    """Point an intersection-ablation run at the regime's map restricted to
    `lsap.intersection_keep` (saved once per keep/seed), and record x = the share of the
    base's held-out tokens inside the kept Σ∩."""
    from lsap.data.shards import TokenShards
    from lsap.method.vocab import VocabMap, restrict_intersection

    L = cfg.lsap
    src = cfg.surrogate.vocab_map or (str(regime.vocab_map) if regime else "")
    if not src:
        raise SweepError(
            f"{setting}: lsap.intersection_keep < 1 in a sweep needs a saved map (a regime or "
            "surrogate.vocab_map)"
        )
    key = hashlib.sha256(
        json.dumps([src, L.intersection_keep, L.intersection_seed]).encode()
    ).hexdigest()[:10]
    d = root / f"keep{L.intersection_keep}-seed{L.intersection_seed}-{key}"
    if not (d / "vocab_map.json").is_file():
        restrict_intersection(VocabMap.load(src), L.intersection_keep, L.intersection_seed).save(d)
    vmap = VocabMap.load(d)
    val = TokenShards(cfg.data.dir, "val")
    share = vmap.report(val.tokens(0, min(len(val), 200_000)))["corpus_share_in_intersection"]
    overlap.setdefault(v, {})[setting] = share
    cfg.surrogate.vocab_map, L.intersection_keep = str(d), 1.0  # the map is the ablation now


def report_sweep(out: str | Path) -> dict:
    """(Re)write a sweep's report from its sweep.json and the runs' eval.json files, at
    each regime's FLOPs budget (`lsap sweep SPEC --report-only`): one report per regime
    (OUT, or OUT/<regime> for several) and, for axes, OUT/summary.md|json with Δ against
    the axis (base parameters, N_s/N_b, strength, overlap) and in- vs out-of-domain Δ."""
    from lsap.experiments import report as rep

    out = Path(out)
    path = out / "sweep.json"
    if not path.is_file():
        raise SweepError(f"{out}: no sweep.json (run the sweep first)")
    st = json.loads(path.read_text())
    done = [r for r in st["runs"] if r.get("status") == "done"]
    if not done:
        raise SweepError(f"{out}: no finished runs yet")
    vstates = st.get("variants") or {
        "": {
            "budget_flops": st["budget_flops"],
            "surrogates": st.get("surrogates") or {},
            "surrogate_bpb": st.get("surrogate_bpb") or {},
        }
    }
    multi = len(vstates) > 1
    result, rows = None, []
    for v, vst in vstates.items():
        runs = [r for r in done if r.get("variant", "") == v]
        if not runs:
            continue
        res = rep.make_report(
            [r["out_dir"] for r in runs],
            out / v if multi else out,
            flops=vst["budget_flops"],
            strength=vst.get("surrogate_bpb") or {},
            surrogates=vst.get("surrogates") or {},
            surrogate_docs=vst.get("surrogate_docs"),
            names=[r["name"] for r in runs],
        )
        result = result or res
        rows += _summary_rows(
            v, vst, runs, res["table"], st.get("overlap", {}).get(v, {}), res.get("paired")
        )
    axis = st["spec"].get("axis")
    if multi or axis or any(r["ood"] for r in rows):
        files = _write_summary(out, st["spec"], rows, axis, write_report_md=multi)
        if multi:
            result = {"out": str(out), "files": files, "summary": rows}
        else:
            result = {**result, "files": result["files"] + files, "summary": rows}
    return result


def _summary_rows(
    v: str,
    vst: dict,
    runs: list[dict],
    table: dict,
    overlap: dict,
    paired: list[dict] | None = None,
) -> list[dict]:
    from lsap.eval.ood import ood_paired
    from lsap.experiments.report import PAIRS_POOLED, strength_rows

    sur = vst.get("surrogate_bpb") or {}, vst.get("surrogates") or {}, vst.get("surrogate_docs")
    deltas = strength_rows(table, *sur)
    in_domain = {x["setting"]: x["tests"].get(PAIRS_POOLED) for x in paired or []}
    # the report's setting names (a multi-regime sweep prefixes the regime), by run
    setting_of = {row["name"]: row["setting"] for row in table["rows"]}
    bare = {setting_of.get(r["name"]): r["setting"] for r in runs}
    ood = {r["name"]: _read_json(Path(r["out_dir"]) / "ood.json") for r in runs}
    ce = {r["seed"]: ood[r["name"]] for r in runs if r["loss"] == "ce"}
    params = vst.get("params") or {}
    rows = []
    for d in deltas:
        n_b, n_s = params.get("base"), params.get(d["surrogate"])
        mine = [r for r in runs if setting_of.get(r["name"]) == d["setting"] and r["seed"] in ce]
        o = {}
        for corpus in sorted({c for x in ood.values() for c in x}):
            pairs = [
                (r["seed"], ce[r["seed"]][corpus], ood[r["name"]][corpus])
                for r in mine
                if corpus in ood[r["name"]] and corpus in ce[r["seed"]]
            ]  # (seed, CE entry, LSAP entry)
            ds = [b_["pairs_average"] - a_["pairs_average"] for _, a_, b_ in pairs]
            if ds:
                test = ood_paired({s_: a_ for s_, a_, _ in pairs}, {s_: b_ for s_, _, b_ in pairs})
                o[corpus] = {
                    "mean": sum(ds) / len(ds),
                    "min": min(ds),
                    "max": max(ds),
                    "n": len(ds),
                    "test": _test_fields(test),
                }
        rows.append(
            {
                "regime": v,
                "setting": d["setting"],
                "surrogate": d["surrogate"],
                "n": d["n"],
                "base_params": n_b,
                "surrogate_params": n_s,
                "surrogate_ratio": n_s / n_b if n_b and n_s else None,
                **{k: d.get(k) for k in ("strength", "strength_ci")},
                "overlap": overlap.get(bare.get(d["setting"], d["setting"])),
                "pairs": d.get("pairs_average"),
                "ood": o,
                "pairs_test": _test_fields(in_domain.get(d["setting"])),
                "corpus": vst.get("corpus"),
            }
        )
    return rows


def _read_json(p: Path) -> dict:
    return json.loads(p.read_text()) if p.is_file() else {}


def _test_fields(t: dict | None) -> dict | None:
    return {k: t[k] for k in ("delta", "p", "ci", "survives", "b", "c", "n")} if t else None


def _rng(d, scale=100.0, test: dict | None = None):
    """'mean [min, max]' over seeds, then the pooled sign test's p, in bold when p < 0.05."""
    if not d:
        return "n/a"
    cell = f"{d['mean'] * scale:+.2f} [{d['min'] * scale:+.2f}, {d['max'] * scale:+.2f}]"
    test = test if test is not None else d.get("test")
    if not test:
        return cell
    p = f"p {test['p']:.2g}"
    if "delta" in test and abs(test["delta"] - d["mean"]) * scale >= 0.05:
        # tasks of unequal size: the test pools examples, the cell averages tasks
        p = f"pooled {test['delta'] * scale:+.2f}, {p}"
    return f"{cell}, **{p}**" if test["survives"] else f"{cell}, {p}"


def _write_summary(
    out: Path, spec: dict, rows: list[dict], axis: dict | None, write_report_md: bool
) -> list[str]:
    from lsap.eval.strength import ci_text
    from lsap.utils.io import atomic_write_json, atomic_write_text

    title = (axis or {}).get("title") or spec.get("description") or spec["name"]
    corpora = sorted({c for r in rows for c in r["ood"]})
    lines = [
        f"# Sweep {spec['name']}: {title}",
        "",
        "Δ = LSAP − CE on minimal pairs (points), paired by seed, mean [min, max] over seeds, at each "
        "regime's matched-FLOPs budget (the surrogate's inference charged). Strength = the surrogate's "
        "held-out bits per byte / the CE base's [95% interval, documents resampled]. Overlap = share of the base's held-out tokens inside "
        "the (kept) Σ∩. Out-of-domain: minimal pairs from held-out documents of other corpora. "
        "p: exact two-sided sign test on the pairs where CE and LSAP disagree, pooled over seeds and "
        "pair tasks (`lsap.eval.stats`); **bold** when p < 0.05. Where the tasks differ in size the cell's Δ "
        "(mean of task accuracies) and the test's pooled Δ (over examples) differ: then both are shown.",
        "",
        "| regime | setting | N_b | N_s/N_b | strength | overlap | seeds | Δ in-domain | "
        + " | ".join(f"Δ {c}" for c in corpora)
        + (" |" if corpora else "|"),
        "|---" * (8 + len(corpora)) + "|",
    ]
    for r in rows:
        f = lambda x, p: "n/a" if x is None else p.format(x)
        lines.append(
            f"| {r['regime'] or r['corpus'] or '-'} | {r['setting']} | {f(r['base_params'], '{:,.0f}')} | "
            f"{f(r['surrogate_ratio'], '{:.2f}')} | {f(r['strength'], '{:.3f}')}{ci_text(r.get('strength_ci'))} | "
            f"{f(r['overlap'], '{:.1%}')} | {r['n']} | {_rng(r['pairs'], test=r.get('pairs_test'))} | "
            + " | ".join(_rng(r["ood"].get(c)) for c in corpora)
            + (" |" if corpora else "|")
        )
    strengths = [r["strength"] for r in rows if r["strength"] is not None]
    drift = strengths and (max(strengths) - min(strengths)) > 0.1
    if drift and (axis or {}).get("x") == "base_params":
        lines += [
            "",
            f"Note: the strength ratio drifts across regimes ({min(strengths):.3f} … {max(strengths):.3f}), "
            "so a trend in Δ mixes scale with surrogate strength.",
        ]
    files = ["summary.md", "summary.json"]
    x = (axis or {}).get("x")
    if x and any(r[x] is not None and r["pairs"] for r in rows):
        from lsap.experiments.plots import axis_plot
        from lsap.utils.errors import ReportError

        try:
            files.append(axis_plot(rows, x, title, out))
        except ReportError:  # no matplotlib: the summary still stands
            pass
    md = "\n".join(lines) + "\n"
    atomic_write_text(out / "summary.md", md)
    atomic_write_json(out / "summary.json", {"spec": spec["name"], "axis": axis, "rows": rows})
    if write_report_md:
        atomic_write_text(
            out / "report.md",
            md
            + "\nPer-regime reports: "
            + ", ".join(f"[{v}]({v}/report.md)" for v in sorted({r["regime"] for r in rows}))
            + "\n",
        )
        files.append("report.md")
    return files


def _write(path: Path, obj) -> None:
    from lsap.utils.io import atomic_write_json

    atomic_write_json(path, obj)


def _use_stores(cfgs: dict, root: Path, log) -> None:
    """Build one target store per surrogate and map (k = max k, min α = min α of its runs)
    and point those runs at it (surrogate.source=store)."""
    from lsap.surrogate.store_build import build_store

    by_sur: dict[tuple, list] = {}
    for c in cfgs.values():
        if c.loss == "lsap":
            by_sur.setdefault((c.surrogate.model, c.data.dir, c.surrogate.vocab_map), []).append(c)
    for (spec_s, _, _), cs in by_sur.items():
        k = max(c.lsap.k for c in cs)
        min_alpha = min(c.lsap.alpha for c in cs)
        c0 = cs[0]
        key = hashlib.sha256(
            json.dumps(
                [spec_s, c0.data.dir, c0.data.seq_len, k, min_alpha, c0.surrogate.vocab_map]
            ).encode()
        ).hexdigest()[:10]
        d = root / f"store-{key}"
        log(f"[sweep] target store for {spec_s} (k {k}, α ≥ {min_alpha}) → {d}")
        build_store(
            spec_s,
            c0.data.dir,
            c0.data.seq_len,
            d,
            k=k,
            min_alpha=min_alpha,
            vocab_map=c0.surrogate.vocab_map or None,
            batch_size=c0.train.micro_batch_size,
            progress=False,
        )
        for c in cs:
            c.surrogate.source = "store"
            c.surrogate.store_dir = str(d)
