"""The paper-like regime shared by `lsap quickstart` and `lsap sweep`.

One domain (`corpus`: an offline corpus name, the user's own text file/folder, or
hf:NAME) split by document into held-out (10%), the base's training part and the
surrogate's part (disjoint); two BPE tokenizers (the surrogate's also trained on other
text, digits split); an OLMo2-shaped surrogate pretrained once on its own part to
`surrogate_multiples` × the base's tokens (checkpoints "1x", "4x", "16x"), plus optional
surrogates of other sizes trained on the same tokens (`extra_surrogates`); the
vocabulary map; each surrogate's held-out bits per byte. Everything is cached under
`cache` and keyed by the settings that shape it, so a second call is quick and another
setting never reuses a stale artefact.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path

from lsap.utils.logging import get_logger

log = get_logger(__name__)

BASE_SHAPE = dict(
    hidden_size=128,
    intermediate_size=512,
    num_hidden_layers=4,
    num_attention_heads=4,
    num_key_value_heads=4,
)
SURROGATE_SHAPE = dict(
    hidden_size=96,
    intermediate_size=384,
    num_hidden_layers=3,
    num_attention_heads=4,
    num_key_value_heads=4,
)


@dataclass
class Settings:
    out: str = "runs/quickstart"
    cache: str = ""  # default: $LSAP_CACHE/quickstart
    surrogate: str = "pretrain"  # pretrain | smollm2 | any load_surrogate spec
    corpus: str = "python-docs"  # the base's domain (`--data`): a corpus name, a local text file/folder, hf:NAME
    base_part: list = field(
        default_factory=lambda: [0.0, 0.3]
    )  # the base's share of the training documents
    surrogate_part: list = field(default_factory=lambda: [0.3, 1.0])  # the surrogate's (disjoint)
    surrogate_tokenizer_corpus: str = "linux-docs"  # extra text for the surrogate's BPE only
    vocab_size: int = 4096
    tokenizer_docs: int = 3000  # documents used to train each tokenizer
    seq_len: int = 128
    batch_size: int = 16
    ce_tokens: float = 4.0e5  # the FLOPs budget = what CE needs for this many tokens
    surrogate_multiples: list = field(
        default_factory=lambda: [1, 4, 16]
    )  # surrogate checkpoints, × ce_tokens
    alpha: float = 0.05
    k: int = 15
    # 5: the fewest with which the seed-level test (t over per-seed Δ, all seeds agreeing) reaches
    # p < 0.05 more often than not at the Δ measured here (`lsap.experiments.quickstart.SEED_POWER`)
    seeds: list = field(default_factory=lambda: [0, 1, 2, 3, 4])
    checkpoints: int = 3  # per run, evenly spaced (Figure 2 points)
    eval_examples: int = 500
    base_shape: dict = field(
        default_factory=lambda: dict(BASE_SHAPE)
    )  # model.overrides of every base run
    surrogate_shape: dict = field(
        default_factory=lambda: dict(SURROGATE_SHAPE)
    )  # the pretrained surrogate's
    # more pretrained surrogates, name → shape, each trained on the same tokens as the main one (its last
    # multiple): the surrogate-size axis. Named "@<name>" in sweep specs.
    extra_surrogates: dict = field(default_factory=dict)

    def key(self, *names: str) -> str:
        d = asdict(self)
        return hashlib.sha256(
            json.dumps({n: d[n] for n in names}, sort_keys=True).encode()
        ).hexdigest()[:10]


def _shape_key(shape: dict, default: dict) -> str:
    """'' for the default shape (so existing caches stay valid), else '-<hash>'."""
    if dict(shape) == default:
        return ""
    return "-" + hashlib.sha256(json.dumps(shape, sort_keys=True).encode()).hexdigest()[:6]


def _corpus_label(corpus: str) -> str:
    return (
        re.sub(r"[^A-Za-z0-9.-]+", "_", Path(corpus).name if "/" in corpus else corpus)[:32]
        or "data"
    )


def say(msg: str) -> None:
    log.info(f"[quickstart] {msg}")


def _tokenizer(corpora: list[str], out: Path, s: Settings, split_digits: bool, part=None):
    """A BPE trained on the first `tokenizer_docs` training documents of each corpus
    (of `part` of the training pool, for the regime's corpus)."""
    from lsap.data.shards import in_part, is_val, iter_documents
    from lsap.data.tokenizer import load_tokenizer, train_bpe

    if (out / "tokenizer.json").is_file():
        return load_tokenizer(str(out))

    def docs():
        for corpus in corpora:
            p = part if corpus == s.corpus else None
            train_docs = (
                d
                for i, d in enumerate(iter_documents(corpus))
                if not is_val(i, 0, 0.1) and in_part(i, 0, p)
            )
            yield from (
                d for _, d in zip(range(s.tokenizer_docs), train_docs)
            )  # never held-out docs

    return train_bpe(docs(), s.vocab_size, out, split_digits=split_digits)


def prepare_shards(tok_dir: Path, corpus: str, out: Path, part=None, quiet: bool = False) -> Path:
    """Token shards of `corpus` with the tokenizer in `tok_dir` (cached: a finished
    directory is reused by `lsap.data.shards.prepare`)."""
    from lsap.data.shards import prepare

    m = prepare(
        str(tok_dir),
        corpus,
        out,
        val_fraction=0.1,
        seed=0,
        train_part=tuple(part) if part else None,
        progress=False,
    )
    sp = m["splits"]
    if not quiet:
        log.info(
            f"  {out.name}: train {sp['train']['tokens']:,} tokens ({sp['train']['documents']} documents), "
            f"held-out {sp['val']['tokens']:,} ({sp['val']['documents']})"
        )
    return out


def run_cfg(name: str, out: Path, data: Path, shape: dict, s: Settings, extra: list[str]):
    from lsap.config import load_config

    return load_config(
        None,
        [f"name={name}", f"out_dir={out}", f"data.dir={data}", *shared_overrides(s, shape), *extra],
    )


def shared_overrides(s: Settings, shape: dict) -> list[str]:
    """The config keys every run of the regime shares (sequence, batch, optimizer, logging) with a model shape."""
    return [
        f"data.seq_len={s.seq_len}",
        "model.preset=olmo2-tiny",
        f"train.batch_size={s.batch_size}",
        f"train.micro_batch_size={s.batch_size}",
        "optim.lr=2e-3",
        "optim.warmup_steps=20",
        "optim.min_lr_ratio=0.1",
        "train.log_every=25",
        "train.eval_batches=20",
        *[f"model.overrides.{k}={v}" for k, v in shape.items()],
    ]


def base_overrides(s: Settings) -> list[str]:
    """The config keys every base run of the regime shares (shape, data, optimizer)."""
    return shared_overrides(s, s.base_shape)


def train(cfg, progress_desc: str | None = None) -> Path:
    """Train `cfg` resumably and quietly (the trainer's output goes to OUT/train.log);
    with `progress_desc`, the trainer's moving progress line (step / total, tokens/s,
    ETA) goes to the terminal (stderr) meanwhile."""
    import sys

    from lsap.train.loop import train as train_run

    if progress_desc:
        log.info(progress_desc.strip())
    return train_run(
        cfg, resume="auto", log=log.info, quiet=True, progress=sys.stderr if progress_desc else None
    )


def last_model(run: Path) -> Path:
    from lsap.train.checkpoint import latest

    return latest(run) / "model"


def cache_dir(s: Settings) -> Path:
    from lsap.surrogate.load import cache_root

    return Path(s.cache) if s.cache else cache_root() / "quickstart"


def tokenizer_key(s: Settings) -> str:
    return s.key("corpus", "base_part", "surrogate_part", "vocab_size", "tokenizer_docs")


@dataclass
class Regime:
    """What the paper-like regime provides to the quickstart and to `lsap sweep`."""

    base_tokenizer: Path
    base_data: Path
    surrogates: dict  # name ("1x", "4x", "16x", extra names, or the given spec) → model spec
    surrogate_bpb: (
        dict  # name → held-out bits per byte on the base's held-out documents (None if unknown)
    )
    vocab_map: Path
    budget: float  # FLOPs: 6·N_b·ce_tokens
    strongest: str
    params: dict = field(default_factory=dict)  # "base" and surrogate names → N (FLOPs convention)
    overlap: float | None = None  # share of the base's held-out tokens inside Σ∩


def build_regime(s: Settings) -> Regime:
    """Tokenizers, disjoint token shards, the surrogate (pretrained once, checkpoints at
    `surrogate_multiples` × the base's tokens, plus `extra_surrogates`), the vocabulary
    map and the surrogates' held-out bits per byte. Cached under `cache`."""
    from lsap.data.corpora import check_dataset_spec
    from lsap.data.shards import TokenShards
    from lsap.data.tokenizer import padded_vocab_size
    from lsap.method.flops import FlopsLedger, count_params
    from lsap.model import model_config
    from lsap.surrogate.load import load_surrogate_with_map

    check_dataset_spec(s.corpus)
    cache = cache_dir(s)
    say(f"1/6 tokenizers and token shards (cache: {cache})")
    tkey = tokenizer_key(s)
    label = _corpus_label(s.corpus)
    base_tok_dir = cache / f"tok-base-{label}-{tkey}"
    base_tok = _tokenizer([s.corpus], base_tok_dir, s, split_digits=False, part=s.base_part)
    base_data = prepare_shards(base_tok_dir, s.corpus, cache / f"data-base-{tkey}", s.base_part)
    base_cfg = model_config("olmo2-tiny", vocab_size=padded_vocab_size(base_tok), **s.base_shape)
    base_flops_per_token = FlopsLedger.from_configs(base_cfg, None).base_flops_per_token
    budget = base_flops_per_token * s.ce_tokens
    params = {"base": count_params(base_cfg)}

    pretrain = s.surrogate == "pretrain"
    if pretrain:
        sur_data, surrogates, strongest = _pretrained_surrogates(s, cache, tkey)
        for name, spec in surrogates.items():
            params[name] = count_params(surrogate_config(spec))
    else:
        say(f"2/6 surrogate: {s.surrogate} (given, frozen)")
        sur_data = None
        surrogates, strongest = {s.surrogate: s.surrogate}, s.surrogate

    say("3/6 vocabulary map between the base tokenizer and the surrogate's")
    map_dir = (
        cache
        / f"map-{tkey}-{hashlib.sha256((strongest if pretrain else s.surrogate).encode()).hexdigest()[:6]}"
    )
    val = TokenShards(base_data, "val")
    have = (map_dir / "vocab_map.json").is_file()
    sw = load_surrogate_with_map(
        surrogates[strongest],
        base_tok,
        padded_vocab_size(base_tok),
        vocab_map=map_dir if have else None,
    )
    vmap = sw.vmap
    if not have:
        vmap.save(map_dir)
    if not pretrain:
        params[strongest] = count_params(sw.model.config)
    rep = vmap.report(val.tokens(0, min(len(val), 200_000)), top_missing=5, base_tokenizer=base_tok)
    log.info(
        f"  |Σ_b|={rep['base_vocab']:,}  |Σ_s|={rep['surrogate_vocab']:,}  |Σ∩|={rep['intersection']:,} "
        f"({rep['intersection_over_base']:.1%} of base, {rep['intersection_over_surrogate']:.1%} of surrogate); "
        f"held-out base tokens inside Σ∩: {rep['corpus_share_in_intersection']:.1%}"
    )
    log.info(
        "  most frequent base tokens outside Σ∩: "
        + ", ".join(f"{m['token']!r}×{m['count']}" for m in rep["top_missing"])
    )
    del sw

    bpb = {name: None for name in surrogates}
    if sur_data is not None:
        bpb = _surrogate_bpb(surrogates, sur_data, cache / f"surrogate-bpb-{tkey}.json", s)
        log.info(
            "  surrogate held-out bits per byte on the base's held-out documents: "
            + ", ".join(f"{n} {v:.3f}" for n, v in bpb.items())
        )
    return Regime(
        base_tok_dir,
        base_data,
        surrogates,
        bpb,
        map_dir,
        budget,
        strongest,
        params,
        rep["corpus_share_in_intersection"],
    )


def _pretrained_surrogates(s: Settings, cache: Path, tkey: str) -> tuple[Path, dict, str]:
    """Pretrain the surrogate once (cached): its tokenizer and shards, checkpoints at
    `surrogate_multiples` × the base's tokens, plus `extra_surrogates`. Returns its shards,
    {name: model directory} and the strongest's name."""
    from lsap.method.flops import plan_steps

    # The surrogate's BPE sees broader text (its corpus part + other text) with digits
    # split, so the two vocabularies differ as OLMo2's and Qwen3's do; its *model* sees
    # only its own part of the base's domain: disjoint from the base's training and
    # held-out documents, and many times more tokens than the base will train on.
    sur_tok_dir = cache / f"tok-surrogate-{tkey}"
    _tokenizer(
        [s.corpus, s.surrogate_tokenizer_corpus],
        sur_tok_dir,
        s,
        split_digits=True,
        part=s.surrogate_part,
    )
    sur_data = prepare_shards(
        sur_tok_dir, s.corpus, cache / f"data-surrogate-{tkey}", s.surrogate_part
    )
    mults = sorted(set(int(m) for m in s.surrogate_multiples))
    tokens_per_step = s.batch_size * s.seq_len

    at = [plan_steps(tokens_per_step, 1.0, max_tokens=m * s.ce_tokens).total_steps for m in mults]
    skey = s.key(
        "corpus",
        "base_part",
        "surrogate_part",
        "vocab_size",
        "tokenizer_docs",
        "seq_len",
        "batch_size",
        "ce_tokens",
        "surrogate_multiples",
    )
    skey += _shape_key(s.surrogate_shape, SURROGATE_SHAPE)
    say(
        f"2/6 surrogate: pretrained once on its own {s.surrogate_part[1] - s.surrogate_part[0]:.0%} "
        f"of {s.corpus}'s training documents, {mults[-1]}× the base's {s.ce_tokens:,.0f} tokens "
        f"(checkpoints at {', '.join(f'{m}×' for m in mults)}), then cached"
    )
    sur_run = train(
        run_cfg(
            "surrogate",
            cache / f"surrogate-{skey}",
            sur_data,
            s.surrogate_shape,
            s,
            [
                f"train.max_tokens={mults[-1] * s.ce_tokens}",
                "train.eval_every=0",
                f"train.ckpt_at={at[:-1]}",
            ],
        ),
        progress_desc="  surrogate pretraining",
    )
    surrogates = {
        f"{m}x": str(sur_run / "checkpoints" / f"step_{a:08d}" / "model") for m, a in zip(mults, at)
    }
    surrogates[f"{mults[-1]}x"] = str(last_model(sur_run))
    strongest = f"{mults[-1]}x"
    for name, shape in (s.extra_surrogates or {}).items():
        if name in surrogates:
            from lsap.utils.errors import ConfigError

            raise ConfigError(
                f"extra_surrogates: {name!r} clashes with a checkpoint name; rename it"
            )
        say(f"2/6 surrogate {name!r}: shape {shape}, the same {mults[-1]}× tokens")
        run = train(
            run_cfg(
                f"surrogate-{name}",
                cache / f"surrogate-{skey}{_shape_key(shape, {})}",
                sur_data,
                shape,
                s,
                [f"train.max_tokens={mults[-1] * s.ce_tokens}", "train.eval_every=0"],
            ),
            progress_desc=f"  surrogate {name}",
        )
        surrogates[name] = str(last_model(run))
    return sur_data, surrogates, strongest


def surrogate_config(spec: str):
    """A surrogate's model config without its weights when it is a local HF directory
    (else loaded with the model, e.g. a .gguf file or a hub id)."""
    from lsap import model as M

    if (
        Path(str(spec)).expanduser().is_dir()
        and (Path(str(spec)).expanduser() / "config.json").is_file()
    ):
        load = M.load_model_config
        return load(str(Path(str(spec)).expanduser()))
    from lsap.surrogate.load import load_surrogate

    model, _ = load_surrogate(spec)
    return model.config


def heldout_shards(reg: Regime, s: Settings, corpus: str) -> Path:
    """Another corpus tokenized with the regime's base tokenizer (cached): its held-out
    documents are the out-of-domain evaluation set of the regime's runs."""
    return prepare_shards(
        reg.base_tokenizer,
        corpus,
        cache_dir(s) / f"data-ood-{_corpus_label(corpus)}-{tokenizer_key(s)}",
        None,
        quiet=True,
    )


def _surrogate_bpb(surrogates: dict, sur_data: Path, path: Path, s: Settings) -> dict:
    """Bits per byte of each surrogate checkpoint on the complete held-out documents its CE base
    is scored on too (`lsap.eval.metrics.strength_documents`; cached by model path)."""
    from lsap.data.tokenizer import load_tokenizer
    from lsap.eval.metrics import STRENGTH_BYTES, bpb_on_documents, strength_documents
    from lsap.surrogate.load import load_surrogate
    from lsap.utils.io import atomic_write_json

    known = json.loads(path.read_text()) if path.is_file() else {}
    docs, tok, out = None, None, {}
    for name, spec in surrogates.items():
        key = f"{spec}|docs:{STRENGTH_BYTES}"  # older entries (first windows, whole-split bytes) are not reused
        if key not in known or f"{key}|per_document" not in known:
            if docs is None:
                docs = strength_documents(sur_data)
                tok = load_tokenizer(
                    json.loads((sur_data / "manifest.json").read_text())["tokenizer"]["spec"]
                )
            model, _ = load_surrogate(spec)
            r = bpb_on_documents(model, tok, docs, seq_len=s.seq_len, per_document=True)
            known[key] = r["bpb"]
            known[f"{key}|per_document"] = {
                "doc_nll": [round(x, 4) for x in r["doc_nll"]],
                "doc_bytes": r["doc_bytes"],
            }
            atomic_write_json(path, known)
        out[name] = known[key]
    return out


def surrogate_documents(s: Settings, surrogates: dict) -> dict:
    """name → {"doc_nll", "doc_bytes"}: each surrogate's per-document NLLs on the documents its
    bits per byte was measured on (cached by `_surrogate_bpb`; names without them are left out),
    for the strength interval (`lsap.eval.strength.documents_strength`)."""
    from lsap.eval.metrics import STRENGTH_BYTES

    path = cache_dir(s) / f"surrogate-bpb-{tokenizer_key(s)}.json"
    known = json.loads(path.read_text()) if path.is_file() else {}
    out = {
        n: known.get(f"{spec}|docs:{STRENGTH_BYTES}|per_document") for n, spec in surrogates.items()
    }
    return {n: v for n, v in out.items() if v}


def config_hash(cfg) -> str:
    """12 hex digits of the resolved run config, its name and output directory left out:
    the key of a run directory (`lsap sweep`, `lsap quickstart`), so a changed setting
    never reuses a finished run of another."""
    import copy

    from lsap.config import Config

    c = copy.deepcopy(cfg)
    d = Config()
    c.name, c.out_dir = d.name, d.out_dir
    return hashlib.sha256(c.to_yaml().encode()).hexdigest()[:12]
