"""`lsap quickstart`: the whole method, end to end, on one CPU, offline.

Mirrors the paper's regime at toy scale (see README "Quickstart"): a surrogate
*smaller* than the base but much *stronger per token* on the base's domain.

1. text: one domain, the Python 3.11 manual (`python-docs`), split by document into
   held-out (10%), the base's training part (30% of the rest) and the surrogate's part
   (the other 70%): disjoint training text, one held-out set.
2. tokenizers: two byte-level BPEs, the surrogate's also trained on other text
   (`linux-docs`) and with digits split — different vocabularies, as OLMo2's and Qwen3's are.
3. surrogate: OLMo2-shaped, ~0.6× the base's parameters, pretrained once on its own part
   for 16× the tokens the base will see (checkpoints at 1×, 4×, 16× for `lsap sweep`),
   cached and treated as given; its held-out bits per byte is measured and printed
   (`--surrogate smollm2` swaps in SmolLM2-135M-Instruct through the same code path).
4. the vocabulary map between the two tokenizers, with its report.
5. the base trained from the same init and data order, CE and LSAP (α 0.05, k 15,
   λ 1), to the same FLOPs budget — the surrogate's inference FLOPs charged — per seed.
6. minimal pairs (zero-shot, the paper's kind of metric), held-out loss, bits per byte,
   top-1/top-5 and their split by the number of auxiliary targets per position; a
   Table-2-style report at matched FLOPs with seed spread, paired Δ and plots.

Every stage is cached or resumable: a second run reuses tokenizers, shards and the
surrogate, and an interrupted run continues where it stopped.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

BASE_SHAPE = dict(hidden_size=128, intermediate_size=512, num_hidden_layers=4, num_attention_heads=4,
                  num_key_value_heads=4)
SURROGATE_SHAPE = dict(hidden_size=96, intermediate_size=384, num_hidden_layers=3, num_attention_heads=4,
                       num_key_value_heads=4)


@dataclass
class Settings:
    out: str = "runs/quickstart"
    cache: str = ""  # default: $LSAP_CACHE/quickstart
    surrogate: str = "pretrain"  # pretrain | smollm2 | any load_surrogate spec
    corpus: str = "python-docs"  # the base's domain: training, held-out and surrogate text all come from it
    base_part: list = field(default_factory=lambda: [0.0, 0.3])  # the base's share of the training documents
    surrogate_part: list = field(default_factory=lambda: [0.3, 1.0])  # the surrogate's (disjoint)
    surrogate_tokenizer_corpus: str = "linux-docs"  # extra text for the surrogate's BPE only
    vocab_size: int = 4096
    tokenizer_docs: int = 3000  # documents used to train each tokenizer
    seq_len: int = 128
    batch_size: int = 16
    ce_tokens: float = 4.0e5  # the FLOPs budget = what CE needs for this many tokens
    surrogate_multiples: list = field(default_factory=lambda: [1, 4, 16])  # surrogate checkpoints, × ce_tokens
    alpha: float = 0.05
    k: int = 15
    seeds: list = field(default_factory=lambda: [0, 1])  # ≥ 2, so the report shows seed spread
    checkpoints: int = 3  # per run, evenly spaced (Figure 2 points)
    eval_examples: int = 500

    def key(self, *names: str) -> str:
        d = asdict(self)
        return hashlib.sha256(json.dumps({n: d[n] for n in names}, sort_keys=True).encode()).hexdigest()[:10]


def _say(msg: str) -> None:
    print(f"\n[quickstart] {msg}", flush=True)


def _tokenizer(corpora: list[str], out: Path, s: Settings, split_digits: bool, part=None):
    """A BPE trained on the first `tokenizer_docs` training documents of each corpus
    (of `part` of the training pool, for the regime's corpus)."""
    from lsap.data import in_part, is_val, iter_documents
    from lsap.tokenizer import load_tokenizer, train_bpe

    if (out / "tokenizer.json").is_file():
        return load_tokenizer(str(out))

    def docs():
        for corpus in corpora:
            p = part if corpus == s.corpus else None
            train_docs = (d for i, d in enumerate(iter_documents(corpus))
                          if not is_val(i, 0, 0.1) and in_part(i, 0, p))
            yield from (d for _, d in zip(range(s.tokenizer_docs), train_docs))  # never held-out docs

    return train_bpe(docs(), s.vocab_size, out, split_digits=split_digits)


def _prepare(tok_dir: Path, corpus: str, out: Path, part=None) -> Path:
    from lsap.data import prepare

    m = prepare(str(tok_dir), corpus, out, val_fraction=0.1, seed=0, train_part=tuple(part) if part else None,
                progress=False)
    sp = m["splits"]
    print(f"  {out.name}: train {sp['train']['tokens']:,} tokens ({sp['train']['documents']} documents), "
          f"held-out {sp['val']['tokens']:,} ({sp['val']['documents']})", flush=True)
    return out


def _run_cfg(name: str, out: Path, data: Path, shape: dict, s: Settings, extra: list[str]):
    from lsap.config import load_config

    return load_config(None, [f"name={name}", f"out_dir={out}", f"data.dir={data}", *shared_overrides(s, shape),
                              *extra])


def shared_overrides(s: Settings, shape: dict) -> list[str]:
    """The config keys every run of the regime shares (sequence, batch, optimizer, logging) with a model shape."""
    return [f"data.seq_len={s.seq_len}", "model.preset=olmo2-tiny", f"train.batch_size={s.batch_size}",
            f"train.micro_batch_size={s.batch_size}", "optim.lr=2e-3", "optim.warmup_steps=20",
            "optim.min_lr_ratio=0.1", "train.log_every=25", "train.eval_batches=20",
            *[f"model.overrides.{k}={v}" for k, v in shape.items()]]


def base_overrides(s: Settings) -> list[str]:
    """The config keys every base run of the regime shares (shape, data, optimizer)."""
    return shared_overrides(s, BASE_SHAPE)


def _train(cfg) -> Path:
    from lsap.train import train

    return train(cfg, resume="auto", log=lambda m: print(m, flush=True), quiet=True)


def _last_model(run: Path) -> Path:
    from lsap.checkpoint import latest

    return latest(run) / "model"


@dataclass
class Regime:
    """What the paper-like regime provides to the quickstart and to `lsap sweep`."""
    base_tokenizer: Path
    base_data: Path
    surrogates: dict  # name ("1x", "4x", "16x" or the given spec) → model spec
    surrogate_bpb: dict  # name → held-out bits per byte on the base's held-out documents (None if unknown)
    vocab_map: Path
    budget: float  # FLOPs: 6·N_b·ce_tokens
    strongest: str


def build_regime(s: Settings) -> Regime:
    """Tokenizers, disjoint token shards, the surrogate (pretrained once, checkpoints at
    `surrogate_multiples` × the base's tokens), the vocabulary map and the surrogates'
    held-out bits per byte. Everything is cached under `cache`; a second call is quick."""
    from lsap.flops import FlopsLedger
    from lsap.model import model_config
    from lsap.surrogate import cache_root, load_surrogate_with_map
    from lsap.tokenizer import padded_vocab_size

    cache = Path(s.cache) if s.cache else cache_root() / "quickstart"
    _say(f"1/6 tokenizers and token shards (cache: {cache})")
    tkey = s.key("corpus", "base_part", "surrogate_part", "vocab_size", "tokenizer_docs")
    base_tok_dir = cache / f"tok-base-{s.corpus}-{tkey}"
    base_tok = _tokenizer([s.corpus], base_tok_dir, s, split_digits=False, part=s.base_part)
    base_data = _prepare(base_tok_dir, s.corpus, cache / f"data-base-{tkey}", s.base_part)
    base_cfg = model_config("olmo2-tiny", vocab_size=padded_vocab_size(base_tok), **BASE_SHAPE)
    base_flops_per_token = FlopsLedger.from_configs(base_cfg, None).base_flops_per_token
    budget = base_flops_per_token * s.ce_tokens

    pretrain = s.surrogate == "pretrain"
    if pretrain:
        # The surrogate's BPE sees broader text (its corpus part + other text) with digits
        # split, so the two vocabularies differ as OLMo2's and Qwen3's do; its *model* sees
        # only its own part of the base's domain: disjoint from the base's training and
        # held-out documents, and many times more tokens than the base will train on.
        sur_tok_dir = cache / f"tok-surrogate-{tkey}"
        _tokenizer([s.corpus, s.surrogate_tokenizer_corpus], sur_tok_dir, s, split_digits=True,
                   part=s.surrogate_part)
        sur_data = _prepare(sur_tok_dir, s.corpus, cache / f"data-surrogate-{tkey}", s.surrogate_part)
        mults = sorted(set(int(m) for m in s.surrogate_multiples))
        tokens_per_step = s.batch_size * s.seq_len
        at = [int(m * s.ce_tokens // tokens_per_step) for m in mults]
        skey = s.key("corpus", "base_part", "surrogate_part", "vocab_size", "tokenizer_docs", "seq_len",
                     "batch_size", "ce_tokens", "surrogate_multiples")
        _say(f"2/6 surrogate: pretrained once on its own {s.surrogate_part[1] - s.surrogate_part[0]:.0%} "
             f"of {s.corpus}'s training documents, {mults[-1]}× the base's {s.ce_tokens:,.0f} tokens "
             f"(checkpoints at {', '.join(f'{m}×' for m in mults)}), then cached")
        sur_run = _train(_run_cfg("surrogate", cache / f"surrogate-{skey}", sur_data, SURROGATE_SHAPE, s,
                                  [f"train.max_tokens={mults[-1] * s.ce_tokens}", "train.eval_every=0",
                                   f"train.ckpt_at={at[:-1]}"]))
        surrogates = {f"{m}x": str(sur_run / "checkpoints" / f"step_{a:08d}" / "model") for m, a in zip(mults, at)}
        surrogates[f"{mults[-1]}x"] = str(_last_model(sur_run))
        strongest = f"{mults[-1]}x"
    else:
        _say(f"2/6 surrogate: {s.surrogate} (given, frozen)")
        sur_data = None
        surrogates, strongest = {s.surrogate: s.surrogate}, s.surrogate

    _say("3/6 vocabulary map between the base tokenizer and the surrogate's")
    map_dir = cache / f"map-{tkey}-{hashlib.sha256((strongest if pretrain else s.surrogate).encode()).hexdigest()[:6]}"
    from lsap.data import TokenShards

    val = TokenShards(base_data, "val")
    have = (map_dir / "vocab_map.json").is_file()
    sw = load_surrogate_with_map(surrogates[strongest], base_tok, padded_vocab_size(base_tok),
                                 vocab_map=map_dir if have else None)
    vmap = sw.vmap
    if not have:
        vmap.save(map_dir)
    rep = vmap.report(val.tokens(0, min(len(val), 200_000)), top_missing=5, base_tokenizer=base_tok)
    print(f"  |Σ_b|={rep['base_vocab']:,}  |Σ_s|={rep['surrogate_vocab']:,}  |Σ∩|={rep['intersection']:,} "
          f"({rep['intersection_over_base']:.1%} of base, {rep['intersection_over_surrogate']:.1%} of surrogate); "
          f"held-out base tokens inside Σ∩: {rep['corpus_share_in_intersection']:.1%}")
    print("  most frequent base tokens outside Σ∩: "
          + ", ".join(f"{m['token']!r}×{m['count']}" for m in rep["top_missing"]), flush=True)
    del sw

    bpb = {name: None for name in surrogates}
    if sur_data is not None:
        bpb = _surrogate_bpb(surrogates, sur_data, cache / f"surrogate-bpb-{tkey}.json", s)
        print("  surrogate held-out bits per byte on the base's held-out documents: "
              + ", ".join(f"{n} {v:.3f}" for n, v in bpb.items()), flush=True)
    return Regime(base_tok_dir, base_data, surrogates, bpb, map_dir, budget, strongest)


def _surrogate_bpb(surrogates: dict, sur_data: Path, path: Path, s: Settings) -> dict:
    """Bits per byte of each surrogate checkpoint on the complete held-out documents its CE base
    is scored on too (`lsap.metrics.strength_documents`; cached by model path)."""
    from lsap.metrics import STRENGTH_BYTES, bpb_on_documents, strength_documents
    from lsap.surrogate import load_surrogate
    from lsap.tokenizer import load_tokenizer

    known = json.loads(path.read_text()) if path.is_file() else {}
    docs, tok, out = None, None, {}
    for name, spec in surrogates.items():
        key = f"{spec}|docs:{STRENGTH_BYTES}"  # older entries (first windows, whole-split bytes) are not reused
        if key not in known:
            if docs is None:
                docs = strength_documents(sur_data)
                tok = load_tokenizer(json.loads((sur_data / "manifest.json").read_text())["tokenizer"]["spec"])
            model, _ = load_surrogate(spec)
            known[key] = bpb_on_documents(model, tok, docs, seq_len=s.seq_len)["bpb"]
            path.write_text(json.dumps(known, indent=2))
        out[name] = known[key]
    return out


def run(s: Settings) -> Path:
    from lsap.evaluate import evaluate_run
    from lsap.flops import FlopsLedger, count_params
    from lsap.model import model_config
    from lsap.report import make_report
    from lsap.surrogate import load_surrogate
    from lsap.tokenizer import load_tokenizer, padded_vocab_size

    from lsap.errors import ConfigError
    from lsap.loggers import quiet_libraries

    quiet_libraries()
    t_start = time.time()
    m = s.surrogate
    if m != "pretrain" and (m.startswith((".", "/", "~")) or m.endswith(".gguf")) and not Path(m).expanduser().exists():
        raise ConfigError(f"--surrogate {m!r}: no such file or directory (pretrain, smollm2, a local HF "
                          "directory, a .gguf file or a hub id)")
    out = Path(s.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "settings.json").write_text(json.dumps(asdict(s), indent=2))
    reg = build_regime(s)
    surrogate_spec = reg.surrogates[reg.strongest]

    base_tok = load_tokenizer(str(reg.base_tokenizer))
    smodel, _ = load_surrogate(surrogate_spec)
    base_cfg = model_config("olmo2-tiny", vocab_size=padded_vocab_size(base_tok), **BASE_SHAPE)
    nb, ns = count_params(base_cfg), count_params(smodel.config)
    ledger = FlopsLedger.from_configs(base_cfg, smodel.config)  # 6·N_b and 2·N_s per token
    del smodel
    ce_per_token = ledger.base_flops_per_token
    lsap_per_token = ce_per_token + ledger.surrogate_flops_per_token
    budget = reg.budget
    lsap_tokens = budget / lsap_per_token
    _say(f"4/6 FLOPs budget {budget:.3g} (= 6·N_b·{s.ce_tokens:.3g} tokens; N_b={nb / 1e6:.2f}M, "
         f"N_s={ns / 1e6:.2f}M = {ns / nb:.2f}× the base): CE trains {s.ce_tokens:,.0f} tokens, LSAP "
         f"{lsap_tokens:,.0f} ({1 - lsap_tokens / s.ce_tokens:.1%} fewer; the surrogate's 2·N_s per token is charged)")

    tokens_per_step = s.batch_size * s.seq_len
    steps_ce = int(budget // (tokens_per_step * ce_per_token))
    steps_lsap = int(budget // (tokens_per_step * lsap_per_token))
    every = max(steps_ce // s.checkpoints, 1)
    runs = []
    for seed in s.seeds:
        common = [f"data.dir={reg.base_data}", f"train.max_flops={budget}", f"train.ckpt_every={every}",
                  f"train.eval_every={every}", f"train.seed={seed}", f"model.init_seed={seed}"]
        _say(f"5/6 training the base with CE (seed {seed})")
        # an extra CE checkpoint at LSAP's last step: the matched-tokens view
        runs.append(_train(_base_cfg(f"ce-s{seed}", out / f"ce-s{seed}", s, common + [f"train.ckpt_at=[{steps_lsap}]"])))
        _say(f"5/6 training the base with LSAP α={s.alpha} k={s.k} λ=1 (seed {seed})")
        runs.append(_train(_base_cfg(f"lsap-s{seed}", out / f"lsap-s{seed}", s, common + [
            "loss=lsap", f"surrogate.model={surrogate_spec}", f"surrogate.vocab_map={reg.vocab_map}",
            f"lsap.alpha={s.alpha}", f"lsap.k={s.k}"])))

    _say("6/6 evaluation (minimal pairs; held-out loss, bpb, top-1/5, split by the surrogate's targets) and report")
    targets = {"surrogate": surrogate_spec, "vocab_map": str(reg.vocab_map), "k": s.k, "alpha": s.alpha}
    for r in runs:
        evaluate_run(r, tasks="pairs", max_examples=s.eval_examples, targets=targets)
    make_report([str(r) for r in runs], out, flops=budget, strength=reg.surrogate_bpb, surrogates=reg.surrogates)
    _summary(out, time.time() - t_start, s, reg)
    return out


def _base_cfg(name: str, out: Path, s: Settings, extra: list[str]):
    from lsap.config import load_config

    return load_config(None, [f"name={name}", f"out_dir={out}", *base_overrides(s), *extra])


def _summary(out: Path, wall: float, s: Settings, reg: Regime) -> None:
    rep = json.loads((out / "report.json").read_text())
    groups = {g["loss"]: g for g in rep.get("spread", [])}
    print(f"\n[quickstart] done in {wall / 60:.1f} min. Report: {out / 'report.md'} (+ PNG plots in {out})")
    ce, ls = groups.get("Cross Entropy"), groups.get("LSAP")
    if not (ce and ls):
        return
    sur_bpb = reg.surrogate_bpb.get(reg.strongest)
    ce_bpb = ce["doc_bpb"]["mean"] if ce.get("doc_bpb") else None  # the same documents as sur_bpb
    if sur_bpb and ce_bpb:
        print(f"  surrogate strength: {sur_bpb:.3f} bits/byte on the base's held-out text vs the CE base's "
              f"{ce_bpb:.3f} at the budget ({'stronger' if sur_bpb < ce_bpb else 'WEAKER'}: the paper's regime "
              f"needs a surrogate stronger per token than its base)")
    print(f"  at matched FLOPs ({rep['budget']:.3g}), mean [min, max] over {ce['n']} seeds, CE vs LSAP:")
    print(f"    minimal pairs (zero-shot, the paper's kind of metric): {_range(ce['pairs_average'], 100, '.2f')} vs "
          f"{_range(ls['pairs_average'], 100, '.2f')} %")
    print(f"    held-out loss (nats/token): {_range(ce['val_loss'])} vs {_range(ls['val_loss'])}; top-1: "
          f"{_range(ce['val_top1'], 100, '.1f')} vs {_range(ls['val_top1'], 100, '.1f')} %")
    d = next((x for x in rep.get("deltas") or []), None)
    p = d and d.get("pairs_average")
    if not p:
        verdict = "no paired minimal-pair result"
    elif d["n"] < 2:
        verdict = f"{p['mean'] * 100:+.2f} points (LSAP − CE) with one seed: no spread measured, so no claim"
    elif p["min"] > 0:
        verdict = (f"LSAP is better by {p['mean'] * 100:.2f} points on average, on every seed "
                   f"(per-seed Δ {p['min'] * 100:+.2f} … {p['max'] * 100:+.2f})")
    elif p["max"] < 0:
        verdict = (f"LSAP is worse by {-p['mean'] * 100:.2f} points on average, on every seed "
                   f"(per-seed Δ {p['min'] * 100:+.2f} … {p['max'] * 100:+.2f})")
    else:
        verdict = (f"no difference beyond the seed spread (per-seed Δ {p['min'] * 100:+.2f} … "
                   f"{p['max'] * 100:+.2f} points)")
    print(f"  verdict on minimal pairs: {verdict}.")
    print("  note: LSAP's objective moves probability from the gold token to the surrogate's targets, so held-out "
          "loss and top-1 rise for LSAP by construction (METHOD §5b); they are not the verdict.")
    if s.surrogate != "pretrain":
        print("  note: this surrogate is far larger than the base, so its inference FLOPs eat most of the budget; "
              "see the matched-tokens table in the report for the per-token view.")


def _range(v, scale=1.0, f=".4f"):
    if not v:
        return "n/a"
    return f"{v['mean'] * scale:{f}} [{v['min'] * scale:{f}}, {v['max'] * scale:{f}}]"
