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
    eval: {tasks: pairs, max_examples: 1000, targets: "@16x", alpha: 0.05, k: 15}

Values starting with "@" name a regime surrogate. Every run trains with
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
import itertools
import json
import re
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

from lsap.config import ConfigError, load_config


from lsap.errors import SweepError  # noqa: F401  (re-exported)


SPEC_KEYS = {"name", "regime", "regime_settings", "base", "budget_flops", "seeds", "baseline", "grid", "extra",
             "store", "eval", "description"}


def load_spec(path: str | Path) -> dict:
    """Read and check a sweep spec (a path, or the name of a packaged one in configs/sweeps)."""
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
    spec = yaml.safe_load(p.read_text()) or {}
    if not isinstance(spec, dict):
        raise SweepError(f"{p}: a sweep spec is a mapping")
    unknown = set(spec) - SPEC_KEYS
    if unknown:
        raise SweepError(f"{p}: unknown keys {sorted(unknown)}; valid: {sorted(SPEC_KEYS)}")
    spec.setdefault("name", p.stem)
    spec.setdefault("seeds", [0])
    spec.setdefault("baseline", True)
    spec.setdefault("grid", {})
    spec.setdefault("extra", [])
    if not isinstance(spec["extra"], list) or not all(isinstance(x, dict) and x for x in spec["extra"]):
        raise SweepError(f"{p}: extra must be a list of settings (mappings of config keys to values)")
    spec.setdefault("base", [])
    spec.setdefault("store", False)
    spec.setdefault("eval", {})
    if not isinstance(spec["grid"], dict) or not all(isinstance(v, list) and v for v in spec["grid"].values()):
        raise SweepError(f"{p}: grid must map config keys to non-empty lists of values")
    if not spec["grid"] and not spec["extra"] and not spec["baseline"]:
        raise SweepError(f"{p}: nothing to run (empty grid and baseline: false)")
    return spec


def _fmt(v: Any) -> str:
    s = str(v).lstrip("@")
    return re.sub(r"[^A-Za-z0-9.]+", "_", s)[:24]


def _setting_name(combo: dict) -> str:
    short = {"surrogate.model": "sur", "lsap.alpha": "a", "lsap.lam": "lam", "lsap.lambda_schedule": "sched",
             "lsap.normalization": "Z", "lsap.gold_outside": "gold", "lsap.k": "k"}
    return "lsap-" + "-".join(f"{short.get(k, k.split('.')[-1])}{_fmt(v)}" for k, v in combo.items())


def expand(spec: dict) -> list[dict]:
    """The plan: [{"name", "setting", "seed", "loss", "overrides": {key: value}}], CE first per seed."""
    keys = list(spec["grid"])
    combos = [dict(zip(keys, vals)) for vals in itertools.product(*(spec["grid"][k] for k in keys))] if keys else []
    combos += [dict(x) for x in spec.get("extra", [])]
    plan = []
    for seed in spec["seeds"]:
        if spec["baseline"]:
            plan.append({"name": f"ce-s{seed}", "setting": "ce", "seed": seed, "loss": "ce", "overrides": {}})
        for c in combos:
            name = _setting_name(c)
            plan.append({"name": f"{name}-s{seed}", "setting": name, "seed": seed, "loss": "lsap", "overrides": c})
    names = [r["name"] for r in plan]
    if len(set(names)) != len(names):
        raise SweepError("two grid settings give the same run name; make the values distinct")
    return plan


def _resolve(value: Any, surrogates: dict) -> Any:
    if isinstance(value, str) and value.startswith("@"):
        key = value[1:]
        if key not in surrogates:
            raise SweepError(f"{value!r}: the regime has surrogates {', '.join('@' + k for k in surrogates)}")
        return surrogates[key]
    return value


def _resolve_item(item: str, surrogates: dict) -> str:
    key, sep, value = str(item).partition("=")
    return f"{key}={_resolve(value, surrogates)}" if sep and value.startswith("@") else str(item)


def run_sweep(spec_path: str | Path, out: str | Path, *, runs_root: str | Path | None = None,
              dry_run: bool = False, log=print) -> dict:
    """Expand, train (resumably), evaluate and report a sweep; returns the report dict."""
    from lsap import report as rep
    from lsap.evaluate import evaluate_run
    from lsap.train import train

    from lsap.loggers import quiet_libraries

    quiet_libraries()
    spec = load_spec(spec_path)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    plan = expand(spec)

    # ---- the regime (cached data, surrogates, budget) --------------------------------
    surrogates: dict = {}
    surrogate_bpb: dict = {}
    base = list(spec["base"])
    budget = float(spec.get("budget_flops") or 0)
    regime = None
    if spec.get("regime"):
        if spec["regime"] != "quickstart":
            raise SweepError(f"regime {spec['regime']!r}: only 'quickstart' is built in (or leave it out and give "
                             "data.dir / surrogate.model in base and grid)")
        from lsap import quickstart as qs

        try:
            settings = qs.Settings(**(spec.get("regime_settings") or {}))
        except TypeError as e:
            raise SweepError(f"regime_settings: {e}") from None
        regime = qs.build_regime(settings)
        surrogates = {k: v for k, v in regime.surrogates.items()}
        surrogate_bpb = dict(regime.surrogate_bpb)
        base = qs.base_overrides(settings) + [f"data.dir={regime.base_data}",
                                              f"surrogate.vocab_map={regime.vocab_map}"] + base
        budget = budget or regime.budget
    if budget <= 0:
        raise SweepError("no budget: set budget_flops (or use a regime)")

    # ---- configs (validated before anything trains) -------------------------------
    runs_dir = Path(runs_root) if runs_root else out / "runs"
    base = [_resolve_item(b, surrogates) for b in base]
    cfgs = {}
    for r in plan:
        ov = {k: _resolve(v, surrogates) for k, v in r["overrides"].items()}
        items = base + [f"{k}={v}" for k, v in ov.items()] + [
            f"loss={r['loss']}", f"train.max_flops={budget}", f"train.seed={r['seed']}",
            f"model.init_seed={r['seed']}", "train.ckpt_every=0", "train.eval_every=0"]
        try:
            cfg = load_config(None, items)
        except ConfigError as e:
            raise SweepError(f"run {r['name']}: {e}") from None
        if cfg.loss == "ce":  # surrogate keys do not change a CE run: one CE run serves every sweep
            from lsap.config import SurrogateCfg, LSAPCfg

            cfg.surrogate, cfg.lsap = SurrogateCfg(), LSAPCfg()
        h = hashlib.sha256(cfg.to_yaml().encode()).hexdigest()[:12]
        cfg.name, cfg.out_dir = r["name"], str(runs_dir / f"{r['loss']}-{h}")
        cfgs[r["name"]] = cfg
    lsap_cfgs = [c for c in cfgs.values() if c.loss == "lsap"]
    if lsap_cfgs:  # the CE runs also checkpoint at the LSAP runs' token count
        from lsap.flops import FlopsLedger
        from lsap.model import model_config
        from lsap.surrogate import load_surrogate
        from lsap.tokenizer import load_tokenizer, padded_vocab_size
        from lsap.data import TokenShards

        c0 = lsap_cfgs[0]
        tok = load_tokenizer(TokenShards(c0.data.dir, "train").manifest["tokenizer"]["spec"])
        bcfg = model_config(c0.model.preset, vocab_size=c0.model.vocab_size or padded_vocab_size(tok),
                            **c0.model.overrides)
        steps_at = set()
        for spec_s in sorted({c.surrogate.model for c in lsap_cfgs}):
            smodel, _ = load_surrogate(spec_s)
            led = FlopsLedger.from_configs(bcfg, smodel.config)
            per_step = c0.train.batch_size * c0.data.seq_len * (led.base_flops_per_token + led.surrogate_flops_per_token)
            steps_at.add(int(budget // per_step))
            del smodel
        for c in cfgs.values():
            if c.loss == "ce":
                c.train.ckpt_at = sorted(steps_at)

    state_path = out / "sweep.json"
    state = {"spec": spec, "spec_hash": hashlib.sha256(json.dumps(spec, sort_keys=True, default=str).encode()).hexdigest(),
             "budget_flops": budget, "surrogates": surrogates, "surrogate_bpb": surrogate_bpb,
             "runs": [{**r, "out_dir": cfgs[r["name"]].out_dir} for r in plan]}
    if state_path.is_file():
        old = json.loads(state_path.read_text())
        if old.get("spec_hash") != state["spec_hash"]:
            raise SweepError(f"{out} holds another sweep (spec changed); use a new output directory")
    _write(state_path, state)
    log(f"[sweep] {spec['name']}: {len(plan)} runs ({len(spec['seeds'])} seeds × "
        f"{len(plan) // max(len(spec['seeds']), 1)} settings) to {budget:.3g} FLOPs each → {out}")
    if dry_run:
        for r in plan:
            log(f"  {r['name']}: " + " ".join(f"{k}={v}" for k, v in r["overrides"].items()))
        return state

    # ---- target stores: one surrogate pass per surrogate ---------------------------
    if spec.get("store") and lsap_cfgs:
        _use_stores(cfgs, runs_dir / "stores", log)

    # ---- train, evaluate ------------------------------------------------------------
    ev = dict(spec.get("eval") or {})
    tgt = ev.get("targets")
    targets = None
    if tgt:
        targets = {"surrogate": _resolve(tgt, surrogates), "vocab_map": str(regime.vocab_map) if regime else
                   ev.get("vocab_map"), "k": int(ev.get("k", 15)), "alpha": float(ev.get("alpha", 0.05))}
    t0 = time.time()
    for i, r in enumerate(plan):
        cfg = cfgs[r["name"]]
        log(f"\n[sweep] run {i + 1}/{len(plan)}: {r['name']} ({time.time() - t0:.0f}s elapsed)")
        train(cfg, resume="auto", log=log, quiet=True)
        evaluate_run(cfg.out_dir, tasks=ev.get("tasks", "pairs"), max_examples=int(ev.get("max_examples", 1000)),
                     targets=targets, log=log)
        r["status"] = "done"
        _write(state_path, {**state, "runs": [{**x, "out_dir": cfgs[x["name"]].out_dir} for x in plan]})

    result = report_sweep(out)
    log(f"\n[sweep] done in {(time.time() - t0) / 60:.1f} min: {out / 'report.md'}")
    return result


def report_sweep(out: str | Path) -> dict:
    """(Re)write a sweep's report from its sweep.json and the runs' eval.json files, at the
    sweep's FLOPs budget (`lsap sweep SPEC --report-only`)."""
    from lsap import report as rep

    out = Path(out)
    path = out / "sweep.json"
    if not path.is_file():
        raise SweepError(f"{out}: no sweep.json (run the sweep first)")
    st = json.loads(path.read_text())
    runs = [r for r in st["runs"] if r.get("status") == "done"]
    if not runs:
        raise SweepError(f"{out}: no finished runs yet")
    return rep.make_report([r["out_dir"] for r in runs], out, flops=st["budget_flops"],
                           strength=st.get("surrogate_bpb") or {}, surrogates=st.get("surrogates") or {},
                           names=[r["name"] for r in runs])


def _write(path: Path, obj) -> None:
    from lsap.io import atomic_write_json

    atomic_write_json(path, obj)


def _use_stores(cfgs: dict, root: Path, log) -> None:
    """Build one target store per surrogate (k = max k, min α = min α of its runs) and
    point those runs at it (surrogate.source=store)."""
    from lsap.store import build_store

    by_sur: dict[str, list] = {}
    for c in cfgs.values():
        if c.loss == "lsap":
            by_sur.setdefault(c.surrogate.model, []).append(c)
    for spec_s, cs in by_sur.items():
        k = max(c.lsap.k for c in cs)
        min_alpha = min(c.lsap.alpha for c in cs)
        c0 = cs[0]
        key = hashlib.sha256(json.dumps([spec_s, c0.data.dir, c0.data.seq_len, k, min_alpha,
                                         c0.surrogate.vocab_map]).encode()).hexdigest()[:10]
        d = root / f"store-{key}"
        log(f"[sweep] target store for {spec_s} (k {k}, α ≥ {min_alpha}) → {d}")
        build_store(spec_s, c0.data.dir, c0.data.seq_len, d, k=k, min_alpha=min_alpha,
                    vocab_map=c0.surrogate.vocab_map or None, batch_size=c0.train.micro_batch_size, progress=False)
        for c in cs:
            c.surrogate.source = "store"
            c.surrogate.store_dir = str(d)


def strength_rows(table: dict, strength: dict, surrogates: dict) -> list[dict]:
    """Δ(LSAP − CE) per LSAP setting, paired by seed, with the surrogate's strength.

    Returns [{"setting", "surrogate", "strength" (surrogate bpb / CE bpb), metric: {mean, min, max}}]."""
    ce = {r["seed"]: r for r in table["rows"] if r["loss"] != "LSAP"}
    by_setting: dict[str, list] = {}
    for r in table["rows"]:
        if r["loss"] == "LSAP" and r["seed"] in ce:
            by_setting.setdefault(r["setting"], []).append(r)
    ce_bpb = [r["doc_bpb"] for r in ce.values() if r.get("doc_bpb") is not None]  # same documents as the surrogate
    ce_bpb_mean = sum(ce_bpb) / len(ce_bpb) if ce_bpb else None
    name_of = {v: k for k, v in surrogates.items()}
    out = []
    for setting, rows in by_setting.items():
        sur = rows[0].get("surrogate")
        name = name_of.get(sur, sur)
        bpb = strength.get(name) if name is not None else None
        row = {"setting": setting, "surrogate": name, "n": len(rows),
               "strength": bpb / ce_bpb_mean if bpb and ce_bpb_mean else None}
        for m in ("pairs_average", "average", "val_loss", "val_top1"):
            ds = [r[m] - ce[r["seed"]][m] for r in rows if r.get(m) is not None and ce[r["seed"]].get(m) is not None]
            row[m] = {"mean": sum(ds) / len(ds), "min": min(ds), "max": max(ds)} if ds else None
        row["tasks"] = {}
        for t in table.get("tasks", []):
            ds = [r["scores"][t] - ce[r["seed"]]["scores"][t] for r in rows
                  if r["scores"].get(t) is not None and ce[r["seed"]]["scores"].get(t) is not None]
            row["tasks"][t] = {"mean": sum(ds) / len(ds), "min": min(ds), "max": max(ds)} if ds else None
        out.append(row)
    return out
