"""`lsap quickstart`: the whole method, end to end, on one CPU, offline.

Mirrors the paper's regime at toy scale (see README "Quickstart"):

1. text: the base trains on the Python 3.11 manual (`python-docs`); the surrogate was
   pretrained on *different* text, the Linux kernel documentation (`linux-docs`).
2. tokenizers: two byte-level BPEs, each trained on its own corpus, the surrogate's
   with digits split — different vocabularies, as OLMo2's and Qwen3's are.
3. surrogate: an OLMo2-shaped model about half the base's parameters, pretrained once
   with CE on more tokens than the base will see, then cached and treated as given
   (`--surrogate smollm2` swaps in SmolLM2-135M-Instruct through the same code path).
4. the vocabulary map between the two tokenizers, with its report.
5. the base trained twice from the same init and data order, CE and LSAP (α 0.05,
   k 15, λ 1), to the same FLOPs budget — the surrogate's inference FLOPs included.
6. held-out loss, bits per byte and the offline zero-shot tasks on every checkpoint;
   `lsap report` at matched FLOPs (Table-2 style) and the Figure-2-style plots.

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

    prepare(str(tok_dir), corpus, out, val_fraction=0.1, seed=0, train_part=tuple(part) if part else None)
    return out


def _run_cfg(name: str, out: Path, data: Path, shape: dict, s: Settings, extra: list[str]):
    from lsap.config import load_config

    return load_config(None, [
        f"name={name}", f"out_dir={out}", f"data.dir={data}", f"data.seq_len={s.seq_len}",
        "model.preset=olmo2-tiny", f"train.batch_size={s.batch_size}", f"train.micro_batch_size={s.batch_size}",
        "optim.lr=2e-3", "optim.warmup_steps=20", "optim.min_lr_ratio=0.1", "train.log_every=25",
        "train.eval_batches=20", *[f"model.overrides.{k}={v}" for k, v in shape.items()], *extra])


def base_overrides(s: Settings) -> list[str]:
    """The config keys every base run of the regime shares (shape, data, optimizer)."""
    return [f"data.seq_len={s.seq_len}", "model.preset=olmo2-tiny", f"train.batch_size={s.batch_size}",
            f"train.micro_batch_size={s.batch_size}", "optim.lr=2e-3", "optim.warmup_steps=20",
            "optim.min_lr_ratio=0.1", "train.log_every=25", "train.eval_batches=20",
            *[f"model.overrides.{k}={v}" for k, v in BASE_SHAPE.items()]]


def _train(cfg) -> Path:
    from lsap.checkpoint import latest
    from lsap.train import Trainer

    done = Path(cfg.out_dir) / "DONE"
    if done.is_file():
        print(f"  {cfg.out_dir}: finished earlier, reused", flush=True)
        return Path(cfg.out_dir)
    resume = latest(cfg.out_dir) is not None
    Trainer(cfg, resume=resume).run()
    done.write_text(time.strftime("%Y-%m-%d %H:%M:%S"))
    return Path(cfg.out_dir)


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
    from lsap.surrogate import cache_root, load_surrogate
    from lsap.tokenizer import padded_vocab_size
    from lsap.vocab import VocabMap

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
    smodel, stok = load_surrogate(surrogates[strongest])
    map_dir = cache / f"map-{tkey}-{hashlib.sha256(strongest.encode()).hexdigest()[:6]}" if pretrain \
        else cache / f"map-{tkey}-{hashlib.sha256(s.surrogate.encode()).hexdigest()[:8]}"
    from lsap.data import TokenShards

    val = TokenShards(base_data, "val")
    if (map_dir / "vocab_map.json").is_file():
        vmap = VocabMap.load(map_dir, base=base_tok, surrogate=stok)
    else:
        vmap = VocabMap.from_tokenizers(base_tok, stok, base_vocab_size=padded_vocab_size(base_tok),
                                        surrogate_vocab_size=max(smodel.config.vocab_size, len(stok)))
        vmap.save(map_dir)
    rep = vmap.report(val.tokens(0, min(len(val), 200_000)), top_missing=5, base_tokenizer=base_tok)
    print(f"  |Σ_b|={rep['base_vocab']:,}  |Σ_s|={rep['surrogate_vocab']:,}  |Σ∩|={rep['intersection']:,} "
          f"({rep['intersection_over_base']:.1%} of base, {rep['intersection_over_surrogate']:.1%} of surrogate); "
          f"held-out base tokens inside Σ∩: {rep['corpus_share_in_intersection']:.1%}")
    print("  most frequent base tokens outside Σ∩: "
          + ", ".join(f"{m['token']!r}×{m['count']}" for m in rep["top_missing"]), flush=True)
    del smodel

    bpb = {name: None for name in surrogates}
    if sur_data is not None:
        bpb = _surrogate_bpb(surrogates, sur_data, cache / f"surrogate-bpb-{tkey}.json", s)
        print("  surrogate held-out bits per byte on the base's held-out documents: "
              + ", ".join(f"{n} {v:.3f}" for n, v in bpb.items()), flush=True)
    return Regime(base_tok_dir, base_data, surrogates, bpb, map_dir, budget, strongest)


def _surrogate_bpb(surrogates: dict, sur_data: Path, path: Path, s: Settings) -> dict:
    """Held-out bits per byte of each surrogate checkpoint (cached by model path)."""
    from lsap.evaluate import heldout_loss
    from lsap.surrogate import load_surrogate

    known = json.loads(path.read_text()) if path.is_file() else {}
    out = {}
    for name, spec in surrogates.items():
        if spec not in known:
            model, _ = load_surrogate(spec)
            known[spec] = heldout_loss(model, sur_data, seq_len=s.seq_len, batch_size=s.batch_size,
                                       max_batches=40)["val_bpb"]
            path.write_text(json.dumps(known, indent=2))
        out[name] = known[spec]
    return out


def run(s: Settings) -> Path:
    from lsap.cli import main as cli
    from lsap.flops import FlopsLedger, count_params
    from lsap.model import model_config
    from lsap.surrogate import cache_root
    from lsap.tokenizer import padded_vocab_size
    from lsap.vocab import VocabMap

    t_start = time.time()
    out = Path(s.out)
    cache = Path(s.cache) if s.cache else cache_root() / "quickstart"
    out.mkdir(parents=True, exist_ok=True)
    (out / "settings.json").write_text(json.dumps(asdict(s), indent=2))

    _say(f"1/6 tokenizers and token shards (cache: {cache})")
    tkey = s.key("vocab_size", "tokenizer_docs")
    base_tok_dir = cache / f"tok-{s.base_corpus}-{tkey}"
    base_tok = _tokenizer([s.base_corpus], base_tok_dir, s, split_digits=False)
    base_data = _prepare(base_tok_dir, s.base_corpus, cache / f"data-{s.base_corpus}-{tkey}")

    pretrain = s.surrogate == "pretrain"
    _say("2/6 surrogate: " + ("pretrained once on a different corpus, then cached" if pretrain
                              else f"{s.surrogate} (given, frozen)"))
    if pretrain:
        # Like a real surrogate's tokenizer (trained on broad text), the surrogate's BPE
        # sees both corpora, with another pre-tokenizer (digits split) so the two
        # vocabularies differ; its *model* never sees the base's training text.
        sur_tok_dir = cache / f"tok-{s.surrogate_corpus}+{s.base_corpus}-digits-{tkey}"
        _tokenizer([s.surrogate_corpus, s.base_corpus], sur_tok_dir, s, split_digits=True)
        sur_data = _prepare(sur_tok_dir, s.surrogate_corpus, cache / f"data-{s.surrogate_corpus}-{tkey}")
        skey = s.key("vocab_size", "tokenizer_docs", "seq_len", "batch_size", "surrogate_tokens")
        sur_run = _train(_run_cfg("surrogate", cache / f"surrogate-{skey}", sur_data, SURROGATE_SHAPE, s,
                                  [f"train.max_tokens={s.surrogate_tokens}", "train.eval_every=0"]))
        surrogate_spec = str(_last_model(sur_run))
    else:
        surrogate_spec = s.surrogate

    _say("3/6 vocabulary map between the base tokenizer and the surrogate's")
    from lsap.data import TokenShards
    from lsap.surrogate import load_surrogate

    smodel, stok = load_surrogate(surrogate_spec)
    vmap = VocabMap.from_tokenizers(base_tok, stok, base_vocab_size=padded_vocab_size(base_tok),
                                    surrogate_vocab_size=max(smodel.config.vocab_size, len(stok)))
    val = TokenShards(base_data, "val")
    rep = vmap.report(val.tokens(0, min(len(val), 200_000)), top_missing=5, base_tokenizer=base_tok)
    map_dir = out / "vocab_map"
    vmap.save(map_dir)
    print(f"  |Σ_b|={rep['base_vocab']:,}  |Σ_s|={rep['surrogate_vocab']:,}  |Σ∩|={rep['intersection']:,} "
          f"({rep['intersection_over_base']:.1%} of base, {rep['intersection_over_surrogate']:.1%} of surrogate); "
          f"held-out base tokens inside Σ∩: {rep['corpus_share_in_intersection']:.1%}")
    print("  most frequent base tokens outside Σ∩: "
          + ", ".join(f"{m['token']!r}×{m['count']}" for m in rep["top_missing"]), flush=True)

    base_cfg = model_config("olmo2-tiny", vocab_size=padded_vocab_size(base_tok), **BASE_SHAPE)
    nb, ns = count_params(base_cfg), count_params(smodel.config)
    ledger = FlopsLedger.from_configs(base_cfg, smodel.config)  # 6·N_b and 2·N_s per token
    ce_per_token = ledger.base_flops_per_token
    lsap_per_token = ce_per_token + ledger.surrogate_flops_per_token
    budget = ce_per_token * s.ce_tokens
    del smodel
    lsap_tokens = budget / lsap_per_token
    _say(f"4/6 FLOPs budget {budget:.3g} (= 6·N_b·{s.ce_tokens:.3g} tokens; N_b={nb / 1e6:.2f}M, "
         f"N_s={ns / 1e6:.2f}M): CE trains {s.ce_tokens:,.0f} tokens, LSAP {lsap_tokens:,.0f} "
         f"({1 - lsap_tokens / s.ce_tokens:.1%} fewer; the surrogate's 2·N_s per token is charged)")

    tokens_per_step = s.batch_size * s.seq_len
    steps_ce = int(budget // (tokens_per_step * ce_per_token))
    steps_lsap = int(budget // (tokens_per_step * lsap_per_token))
    every = max(steps_ce // s.checkpoints, 1)
    runs = []
    for seed in s.seeds:
        common = [f"train.max_flops={budget}", f"train.ckpt_every={every}", f"train.eval_every={every}",
                  f"train.seed={seed}", f"model.init_seed={seed}"]
        _say(f"5/6 training the base with CE (seed {seed})")
        # an extra CE checkpoint at LSAP's last step: the matched-tokens view
        runs.append(_train(_run_cfg(f"ce-s{seed}", out / f"ce-s{seed}", base_data, BASE_SHAPE, s,
                                    common + [f"train.ckpt_at=[{steps_lsap}]"])))
        _say(f"5/6 training the base with LSAP α={s.alpha} k={s.k} λ=1 (seed {seed})")
        runs.append(_train(_run_cfg(f"lsap-s{seed}", out / f"lsap-s{seed}", base_data, BASE_SHAPE, s, common + [
            "loss=lsap", f"surrogate.model={surrogate_spec}", f"surrogate.vocab_map={map_dir}",
            f"lsap.alpha={s.alpha}", f"lsap.k={s.k}"])))

    _say("6/6 evaluation (held-out loss, bits per byte, offline zero-shot tasks) and report")
    for r in runs:
        cli(["eval", str(r), "--tasks", "offline", "--max-examples", str(s.eval_examples)])
    cli(["report", *map(str, runs), "--out", str(out)])
    _summary(out, runs, time.time() - t_start, s.surrogate)
    return out


def _summary(out: Path, runs: list[Path], wall: float, surrogate: str) -> None:
    rep = json.loads((out / "report.json").read_text())
    groups = {g["loss"]: g for g in rep.get("spread", [])}
    print(f"\n[quickstart] done in {wall / 60:.1f} min. Report: {out / 'report.md'} (+ PNG plots in {out})")
    ce, ls = groups.get("Cross Entropy"), groups.get("LSAP")
    if not (ce and ls and ce["val_loss"] and ls["val_loss"]):
        return
    d = ls["val_loss"]["mean"] - ce["val_loss"]["mean"]
    overlap = not (ls["val_loss"]["max"] < ce["val_loss"]["min"] or ce["val_loss"]["max"] < ls["val_loss"]["min"])
    print(f"  at matched FLOPs ({rep['budget']:.3g}): held-out loss CE {_range(ce['val_loss'])} vs LSAP "
          f"{_range(ls['val_loss'])} over {ce['n']}/{ls['n']} seeds; "
          f"avg zero-shot score CE {_range(ce['average'], 100, '.1f')} vs LSAP {_range(ls['average'], 100, '.1f')}")
    if min(ce["n"], ls["n"]) < 2:
        verdict = f"{d:+.3f} nats (LSAP − CE) with one seed: no spread measured, so no claim"
    elif overlap:
        verdict = "no difference beyond the seed-to-seed spread"
    elif d < 0:
        verdict = f"LSAP is better by {-d:.3f} nats, outside the seed spread"
    else:
        verdict = f"LSAP does NOT beat CE at this scale: {d:.3f} nats worse, outside the seed spread"
    print(f"  verdict on held-out loss: {verdict}.")
    if surrogate != "pretrain":
        print("  note: this surrogate is far larger than the base, so its inference FLOPs eat most of the budget; "
              "see the matched-tokens table in the report for the per-token view.")


def _range(v, scale=1.0, f=".4f"):
    if not v:
        return "n/a"
    return f"{v['mean'] * scale:{f}} [{v['min'] * scale:{f}}, {v['max'] * scale:{f}}]"


