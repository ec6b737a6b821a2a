"""`lsap sweep`: expansion, a toy 2×2 grid end to end (report + Δ table + figure), and a
sweep killed mid-way that resumes without redoing finished runs."""

from __future__ import annotations

import json

import pytest

from lsap.experiments import sweep as sw
from lsap.utils.errors import SweepError

TOY = """
regime: quickstart
regime_settings: {{corpus: pydoc-topics, surrogate_tokenizer_corpus: shakespeare, ce_tokens: 6000,
                  surrogate_multiples: [1, 2], vocab_size: 320, tokenizer_docs: 60, seq_len: 32,
                  batch_size: 8, cache: "{cache}"}}
seeds: [0]
base: ["surrogate.model=@2x", "train.eval_batches=4"]
grid:
  lsap.alpha: [0.01, 0.2]
  lsap.lam: [1.0, 0.3]
store: true
eval: {{tasks: pairs, max_examples: 30, targets: "@2x"}}
"""


def test_expand_grid_extra_and_names(tmp_path):
    p = tmp_path / "s.yaml"
    p.write_text(
        "seeds: [0, 1]\ngrid: {lsap.alpha: [0.01, 0.05], lsap.lam: [1.0]}\n"
        "extra: [{lsap.lambda_schedule: cosine}]\nbudget_flops: 1e9\n"
    )
    plan = sw.expand(sw.load_spec(p))
    names = [r["name"] for r in plan]
    assert names == [
        "ce-s0",
        "lsap-a0.01-lam1.0-s0",
        "lsap-a0.05-lam1.0-s0",
        "lsap-schedcosine-s0",
        "ce-s1",
        "lsap-a0.01-lam1.0-s1",
        "lsap-a0.05-lam1.0-s1",
        "lsap-schedcosine-s1",
    ]
    assert plan[1]["overrides"] == {"lsap.alpha": 0.01, "lsap.lam": 1.0} and plan[0]["loss"] == "ce"


def test_bad_specs_are_refused(tmp_path):
    p = tmp_path / "s.yaml"
    p.write_text("grid: {lsap.alpha: 0.05}\n")
    with pytest.raises(SweepError, match="non-empty lists"):
        sw.load_spec(p)
    p.write_text("grd: {}\n")
    with pytest.raises(SweepError, match="unknown keys"):
        sw.load_spec(p)
    with pytest.raises(SweepError, match="packaged sweeps: .*strength"):
        sw.load_spec(tmp_path / "nope.yaml")
    for name in ("strength", "alpha-lambda", "toy"):  # every shipped spec loads and expands
        assert sw.expand(sw.load_spec(name))


# slow (CI's -m slow runs it): five toy runs of the default 2.1M base plus a target store and two
# sweep passes, the heaviest default test measured (2925 s of test_sweep.py's 4078 s wall, ~72% of its
# 872 CPU-s, on the contended 2-core CPU, 2026-12-04). test_toy_overlap_axis_end_to_end_with_
# out_of_domain_pairs keeps a sweep end to end (runs, store, report, summary) in the default suite.
@pytest.mark.slow
def test_toy_sweep_report_and_resume_after_a_kill(tmp_path, monkeypatch, capsys):
    import lsap.eval.run

    spec = tmp_path / "toy.yaml"
    spec.write_text(TOY.format(cache=tmp_path / "cache"))
    out = tmp_path / "out"
    real = lsap.eval.run.evaluate_run
    calls = []

    def dies_on_third(*a, **k):  # the sweep is "killed" while evaluating its third run
        calls.append(a[0])
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real(*a, **k)

    monkeypatch.setattr(lsap.eval.run, "evaluate_run", dies_on_third)
    with pytest.raises(KeyboardInterrupt):
        sw.run_sweep(spec, out)
    state = json.loads((out / "sweep.json").read_text())
    assert [r.get("status") for r in state["runs"]][:3] == ["done", "done", None]
    finished = [r["out_dir"] for r in state["runs"][:2]]
    stamps = {d: open(f"{d}/DONE").read() for d in finished}
    capsys.readouterr()

    monkeypatch.setattr(lsap.eval.run, "evaluate_run", real)
    sw.run_sweep(spec, out)
    log = capsys.readouterr().out
    assert (
        log.count("finished earlier, reused") >= 3
    )  # the two evaluated runs and the trained third
    assert log.count("checkpoint(s) already evaluated") >= 2  # their eval.json kept (same eval set)
    for d in finished:
        assert open(f"{d}/DONE").read() == stamps[d]  # not retrained
    rep = json.loads((out / "report.json").read_text())
    assert len(rep["rows"]) == 5 and {r["loss"] for r in rep["rows"]} == {"Cross Entropy", "LSAP"}
    assert len(rep["deltas"]) == 4 and all(d["n"] == 1 for d in rep["deltas"])
    assert all(r["pairs_average"] is not None and r["by_m"] for r in rep["rows"])
    for f in ("report.md", "delta_vs_strength.png", "score_vs_flops.png"):
        assert (out / f).is_file()
    assert "LSAP − CE at matched FLOPs" in (out / "report.md").read_text()
    # another spec in the same output directory is refused
    spec.write_text(TOY.format(cache=tmp_path / "cache").replace("0.2]", "0.3]"))
    with pytest.raises(SweepError, match="another sweep"):
        sw.run_sweep(spec, out)


# ---- the four new axes (c)–(f): specs, refusals, restriction, a toy axis end to end --------

NEW_AXES = ("base-size", "surrogate-size", "overlap", "domain")


@pytest.mark.parametrize("name", NEW_AXES + ("strength", "alpha-lambda", "toy"))
def test_every_packaged_spec_expands_dry_run(name, tmp_path):
    res = sw.run_sweep(name, tmp_path / name, dry_run=True, log=lambda m: None)
    plan = res["runs"]
    assert plan and not (tmp_path / name).exists()  # a dry run builds and writes nothing
    seeds = {r["seed"] for r in plan if r["loss"] == "lsap"}
    if name in NEW_AXES:
        assert (
            len(seeds) >= 3 and sw.load_spec(name)["eval"]["ood"]
        )  # ≥ 3 seeds, out-of-domain pairs
        assert (
            "Time on a 2-core CPU"
            in (__import__("lsap.config").config.PACKAGED / "sweeps" / f"{name}.yaml").read_text()
        )


def test_new_axes_plan_what_the_issue_asks():
    from lsap.experiments.regime import Settings
    from lsap.method.flops import count_params
    from lsap.model import model_config

    c = sw.load_spec("base-size")
    sizes = {}
    for v, st in sw.variants(c).items():
        s = Settings(**st)
        nb = count_params(model_config("olmo2-tiny", vocab_size=4096, **s.base_shape))
        ns = count_params(model_config("olmo2-tiny", vocab_size=4096, **s.surrogate_shape))
        sizes[v] = (nb, s.ce_tokens / nb)
        assert 0.5 <= ns / nb <= 0.7  # a ~0.6x surrogate per size
    assert max(n for n, _ in sizes.values()) / min(n for n, _ in sizes.values()) >= 8
    tpp = [t for _, t in sizes.values()]
    assert max(tpp) / min(tpp) < 1.01  # same tokens per parameter
    d = sw.expand(sw.load_spec("surrogate-size"))
    head = [r for r in d if r["setting"] == "lsap-sur16x-a0.05"]
    assert sorted(r["seed"] for r in head) == [0, 1, 2, 3, 4]  # the headline: 5 seeds
    assert sorted(r["seed"] for r in d if r["loss"] == "ce") == [0, 1, 2, 3, 4]
    e = sw.load_spec("overlap")
    assert e["grid"]["lsap.intersection_keep"] == [1.0, 0.7, 0.4, 0.2]
    f = sw.variants(sw.load_spec("domain"))
    assert {Settings(**s).corpus for s in f.values()} == {"python-docs", "linux-docs"}


@pytest.mark.parametrize(
    "text,match",
    [
        (
            "regime: quickstart\nregimes: {a: {hiden: 1}}\ngrid: {lsap.alpha: [0.05]}\n",
            r"regimes.a: unknown settings \['hiden'\]",
        ),
        ("regime: quickstart\nregimes: {'a b': {}}\ngrid: {lsap.alpha: [0.05]}\n", "may hold only"),
        (
            "regimes: {a: {}}\ngrid: {lsap.alpha: [0.05]}\nbudget_flops: 1e9\n",
            "regimes needs regime",
        ),
        (
            "regime: quickstart\nregime_settings: {ce_tokenz: 1}\ngrid: {lsap.alpha: [0.05]}\n",
            r"unknown keys \['ce_tokenz'\]",
        ),
        (
            "regime: quickstart\ngrid: {lsap.alpha: [0.05]}\neval: {odd: [x]}\n",
            r"eval: unknown keys \['odd'\]",
        ),
        (
            "regime: quickstart\ngrid: {lsap.alpha: [0.05]}\neval: {ood: [no-such-corpus]}\n",
            "eval.ood: unknown dataset",
        ),
        (
            "grid: {lsap.alpha: [0.05]}\nbudget_flops: 1e9\neval: {ood: [shakespeare]}\n",
            "eval.ood needs a regime",
        ),
        ("regime: quickstart\ngrid: {lsap.alpha: [0.05]}\naxis: {x: params}\n", "axis must be"),
        (
            "regime: quickstart\ngrid: {lsap.alpha: [0.05]}\nheadline: {seeds: [3]}\n",
            "headline must be",
        ),
        (
            "regime: quickstart\ngrid: {lsap.alpha: [0.05]}\nheadline: {overrides: {lsap.alpha: 0.2}, seeds: [3]}\n",
            "headline setting lsap-a0.2 is not in the grid",
        ),
        ("regime: quickstart\ngrid: {lsap.alpah: [0.05]}\n", "run lsap-alpah0.05-s0: .*alpah"),
        (
            "regime: quickstart\ngrid: {lsap.intersection_keep: [1.5]}\n",
            "intersection_keep must lie in",
        ),
        (
            "regime: quickstart\ngrid: {surrogate.model: ['@32x']}\n",
            "'@32x': the regime has surrogates @1x, @4x, @16x",
        ),
        ("regime: quickstart\nseeds: []\ngrid: {lsap.alpha: [0.05]}\n", "seeds must be"),
    ],
)
def test_bad_axis_specs_are_refused_by_name(tmp_path, text, match):
    p = tmp_path / "bad.yaml"
    p.write_text(text)
    with pytest.raises(SweepError, match=match):
        sw.run_sweep(p, tmp_path / "out", dry_run=True, log=lambda m: None)


def _toy_map(n_base=40, n_sur=50):
    import torch

    from lsap.method.vocab import ABSENT, VocabMap

    g = torch.Generator().manual_seed(3)
    b2s = torch.full((n_base,), ABSENT, dtype=torch.long)
    s2b = torch.full((n_sur,), ABSENT, dtype=torch.long)
    sur_ids = torch.randperm(n_sur - 1, generator=g)[:30].tolist()  # 49 is the role pair's
    for b, s in zip(range(2, 32), sur_ids):  # 30 pairs, base ids 2..31
        b2s[b], s2b[s] = s, b
    b2s[0], s2b[49] = 49, 0  # a role pair (eos), always kept
    return VocabMap(b2s, s2b, "hb", "hs", n_base, n_sur, {"eos": (0, 49)}, {})


def test_restrict_intersection_keeps_a_seeded_bijection_and_the_share_is_right():
    import torch

    from lsap.method.vocab import ABSENT, VocabError, restrict_intersection

    full = _toy_map()
    assert full.size == 31
    r = restrict_intersection(full, 0.5, seed=1)
    again = restrict_intersection(full, 0.5, seed=1)
    other = restrict_intersection(full, 0.5, seed=2)
    b2s, s2b = r.base_to_surrogate, r.surrogate_to_base
    kept = torch.nonzero(b2s != ABSENT).flatten().tolist()
    assert (
        0 in kept and 5 < len(kept) < 28
    )  # specials always kept; about half of the 30 string pairs
    for b in kept:  # a bijection on the kept set, and the pairs are the original ones
        assert int(s2b[b2s[b]]) == b and int(b2s[b]) == int(full.base_to_surrogate[b])
    assert int((s2b != ABSENT).sum()) == len(
        kept
    )  # the surrogate's view lost the dropped tokens too
    assert torch.equal(again.base_to_surrogate, b2s) and not torch.equal(
        other.base_to_surrogate, b2s
    )
    assert r.meta["restricted"] == {"keep_fraction": 0.5, "seed": 1, "from_size": 31}
    assert torch.equal(restrict_intersection(full, 1.0).base_to_surrogate, full.base_to_surrogate)
    # x = share of the base's held-out tokens inside the kept Σ∩, by hand
    ids = torch.tensor([0, 2, 3, 3, 5, 7, 11, 33, 35, 2])
    want = sum(1 for i in ids.tolist() if i in set(kept)) / len(ids)
    assert r.report(ids)["corpus_share_in_intersection"] == pytest.approx(want)
    with pytest.raises(VocabError, match="keep_fraction"):
        restrict_intersection(full, 0.0)


TOY_AXIS = """
regime: quickstart
regime_settings: {{corpus: pydoc-topics, surrogate_tokenizer_corpus: "{ood}", ce_tokens: 3000,
                  surrogate_multiples: [2], vocab_size: 300, tokenizer_docs: 40, seq_len: 32,
                  batch_size: 8, cache: "{cache}",
                  base_shape: {{hidden_size: 32, intermediate_size: 64, num_hidden_layers: 1,
                               num_attention_heads: 2, num_key_value_heads: 2}},
                  surrogate_shape: {{hidden_size: 32, intermediate_size: 64, num_hidden_layers: 1,
                                    num_attention_heads: 2, num_key_value_heads: 2}}}}
seeds: [0]
base: ["surrogate.model=@2x", "train.eval_batches=2"]
grid:
  lsap.intersection_keep: [1.0, 0.3]
store: true
eval: {{tasks: pairs, max_examples: 20, ood: ["{ood}"]}}
axis: {{x: overlap, title: toy overlap}}
"""


def test_toy_overlap_axis_end_to_end_with_out_of_domain_pairs(tmp_path):
    """One new axis (vocabulary overlap) on a tiny model: restricted maps, x recorded,
    in-domain and out-of-domain Δ side by side in summary.md, plus the figure."""
    import random

    rnd = random.Random(0)
    words = (
        "the cat dog runs quickly over a small red house and then sleeps near green trees".split()
    )
    ood = tmp_path / "other.txt"
    ood.write_text(
        "\n\n\n".join(
            ". ".join(
                " ".join(rnd.choice(words) for _ in range(rnd.randint(6, 10))).capitalize()
                for _ in range(6)
            )
            + "."
            for _ in range(200)
        )
    )
    spec = tmp_path / "axis.yaml"
    spec.write_text(TOY_AXIS.format(cache=tmp_path / "cache", ood=ood))
    out = tmp_path / "out"
    res = sw.run_sweep(spec, out, log=lambda m: None)
    st = json.loads((out / "sweep.json").read_text())
    x = st["overlap"][""]
    assert x["lsap-keep0.3"] < x["lsap-keep1.0"] <= 1.0
    keep = [r for r in st["runs"] if r["setting"] == "lsap-keep0.3"][0]
    from lsap.config import load_run_config

    cfg = load_run_config(keep["out_dir"])
    assert "keep0.3-seed0" in cfg.surrogate.vocab_map and cfg.lsap.intersection_keep == 1.0
    rows = {r["setting"]: r for r in res["summary"]}
    assert set(rows) == {"lsap-keep1.0", "lsap-keep0.3"}
    for r in rows.values():
        assert (
            r["pairs"] is not None and set(r["ood"]) == {str(ood)} and r["ood"][str(ood)]["n"] == 1
        )
    md = (out / "summary.md").read_text()
    assert "Δ in-domain" in md and f"Δ {ood}" in md and "30" not in md.split("\n")[0]
    assert (out / "delta_vs_overlap.png").is_file() and (out / "report.md").is_file()
    ood_json = json.loads((__import__("pathlib").Path(keep["out_dir"]) / "ood.json").read_text())
    assert 0 <= ood_json[str(ood)]["pairs_average"] <= 1
    # the out-of-domain sign test, recounted by hand from the two runs' per-example results
    from lsap.eval.stats import sign_test
    from lsap.eval.tasks import PAIR_TASKS, unpack_scores

    ce_run = [r for r in st["runs"] if r["loss"] == "ce"][0]
    ce_json = json.loads((__import__("pathlib").Path(ce_run["out_dir"]) / "ood.json").read_text())
    b = c = n = 0
    for t, metric in PAIR_TASKS.items():
        a_ = unpack_scores(ce_json[str(ood)]["examples"][t])[metric]
        l_ = unpack_scores(ood_json[str(ood)]["examples"][t])[metric]
        assert a_.mean() == pytest.approx(ce_json[str(ood)]["tasks"][t])
        b += int((~a_ & l_).sum())
        c += int((a_ & ~l_).sum())
        n += len(a_)
    test = rows["lsap-keep0.3"]["ood"][str(ood)]["test"]
    assert (test["b"], test["c"], test["n"]) == (b, c, n) and test["p"] == pytest.approx(
        sign_test(b, c)
    )
    assert rows["lsap-keep0.3"]["pairs_test"]["n"] > 0
    assert ", p " in md or ", **p " in md


def test_summary_rows_match_runs_to_the_reports_setting_names(tmp_path):
    """A multi-regime sweep's report names settings with the regime prefixed
    ("linux-docs-lsap-a0.05") while each run records its bare setting ("lsap-a0.05"): the
    out-of-domain columns and their sign test must still find the runs (they came out empty)."""
    import numpy as np

    from lsap.eval.stats import sign_test
    from lsap.eval.tasks import PAIR_TASKS, pack_scores

    rng = np.random.default_rng(0)
    runs, table_rows, truth = [], [], {}
    for seed in (0, 1):
        for loss in ("ce", "lsap"):
            name = (
                f"linux-docs-{loss}-s{seed}" if loss == "ce" else f"linux-docs-lsap-a0.05-s{seed}"
            )
            d = tmp_path / name
            d.mkdir()
            entry = {"tasks": {}, "examples": {}}
            for t, metric in PAIR_TASKS.items():
                ok = rng.random(50) < (0.6 if loss == "ce" else 0.7)
                truth[(loss, seed, t)] = ok
                sc = {
                    "correct": ok,
                    "correct_norm": ok,
                    "same_tokens": np.ones(50, bool),
                    "ll": np.zeros((50, 2)),
                }
                entry["tasks"][t], entry["examples"][t] = float(ok.mean()), pack_scores(sc)
            entry["pairs_average"] = sum(entry["tasks"].values()) / len(entry["tasks"])
            (d / "ood.json").write_text(json.dumps({"shakespeare": entry}))
            runs.append(
                {
                    "name": name,
                    "out_dir": str(d),
                    "seed": seed,
                    "loss": loss,
                    "setting": "ce" if loss == "ce" else "lsap-a0.05",
                }
            )
            table_rows.append(
                {
                    "run": name,  # the run's directory name
                    "name": name,  # its sweep name (what _summary_rows matches runs by)
                    "seed": seed,
                    "loss": "LSAP" if loss == "lsap" else "Cross Entropy",
                    "setting": "linux-docs-ce" if loss == "ce" else "linux-docs-lsap-a0.05",
                    "surrogate": None,
                    "pairs_average": 0.5,
                    "scores": {},
                }
            )
    rows = sw._summary_rows(
        "linux-docs", {}, runs, {"rows": table_rows, "tasks": []}, {"lsap-a0.05": 0.95}
    )
    assert [r["setting"] for r in rows] == ["linux-docs-lsap-a0.05"] and rows[0]["overlap"] == 0.95
    got = rows[0]["ood"]["shakespeare"]
    b = sum(
        int((~truth[("ce", s, t)] & truth[("lsap", s, t)]).sum())
        for s in (0, 1)
        for t in PAIR_TASKS
    )
    c = sum(
        int((truth[("ce", s, t)] & ~truth[("lsap", s, t)]).sum())
        for s in (0, 1)
        for t in PAIR_TASKS
    )
    assert got["n"] == 2 and (got["test"]["b"], got["test"]["c"]) == (b, c)
    assert got["test"]["p"] == pytest.approx(sign_test(b, c)) and got["test"]["n"] == 2 * 50 * len(
        PAIR_TASKS
    )


def test_settings_with_one_config_are_refused_naming_both(tmp_path):
    """lsap.alpha 0.05 and lsap.lam 1.0 are both the defaults: one run config, two names
    (it was one shared run reported as two settings)."""
    p = tmp_path / "s.yaml"
    p.write_text(
        "base: [data.dir=/d, surrogate.model=/s]\ngrid: {lsap.alpha: [0.05, 0.2]}\n"
        "extra: [{lsap.lam: 1.0}]\nbudget_flops: 1e9\n"
    )
    spec = sw.load_spec(p)
    with pytest.raises(SweepError, match="settings lsap-a0.05 and lsap-lam1.0 give the same run"):
        sw.check_plan(spec, sw.expand(spec))
    with pytest.raises(SweepError, match="lsap-a0.05 and lsap-lam1.0"):  # the CLI's dry run too
        sw.run_sweep(p, tmp_path / "out", dry_run=True, log=lambda m: None)


def test_values_distinct_after_character_24_give_distinct_names(tmp_path):
    p = tmp_path / "s.yaml"
    long = "/data/models/surrogates/checkpoint-"
    p.write_text(f"grid: {{surrogate.model: ['{long}1000', '{long}2000']}}\nbudget_flops: 1e9\n")
    names = [r["name"] for r in sw.expand(sw.load_spec(p))]
    assert len(set(names)) == len(names) == 3, names
    p.write_text("grid: {lsap.alpha: [0.05]}\nextra: [{lsap.alpha: 0.05}]\nbudget_flops: 1e9\n")
    with pytest.raises(SweepError, match=r"same run name \(lsap-a0.05-s0\)"):
        sw.expand(sw.load_spec(p))


@pytest.mark.parametrize("b", ["lots", ".inf", ".nan", "-1e18", "true"])
def test_budget_flops_must_be_a_finite_number(tmp_path, b):
    p = tmp_path / "s.yaml"
    p.write_text(f"grid: {{lsap.alpha: [0.05]}}\nbudget_flops: {b}\n")
    with pytest.raises(SweepError, match="budget_flops must be a finite number of FLOPs"):
        sw.load_spec(p)
    p.write_text("grid: {lsap.alpha: [0.05}\n")
    with pytest.raises(SweepError, match="not valid YAML"):
        sw.load_spec(p)


def test_a_budget_of_no_step_is_named(tiny_world, tmp_path):
    """budget_flops: 1 was refused as a bad train.ckpt_at (the CE runs' matched step 0)."""
    p = tmp_path / "s.yaml"
    p.write_text(
        f"base: [data.dir={tiny_world['data']}, surrogate.model={tiny_world['surrogate']}, "
        "data.seq_len=32, model.preset=olmo2-tiny]\ngrid: {lsap.alpha: [0.05]}\nbudget_flops: 1\n"
    )
    with pytest.raises(SweepError, match="budget_flops 1 buys no training step"):
        sw.run_sweep(p, tmp_path / "out", log=lambda m: None)
