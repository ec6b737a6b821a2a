"""One source of truth for a training run: nested dataclasses, YAML, dotlist overrides.

    cfg = load_config("configs/quickstart-lsap.yaml", ["lsap.alpha=0.01", "train.max_steps=50"])

Unknown keys are errors with a suggestion; the resolved config is written to every run
directory and checkpoint (`to_yaml`). Field comments are the documentation.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, get_args, get_origin, get_type_hints

import yaml

from lsap.method.choices import (  # noqa: F401  (owned by the method; re-exported)
    LAMBDA_SCHEDULES,
    NORMALIZATIONS,
    LambdaScheduleKind,
    Normalization,
)

# Allowed values: the one source. Validation reads these annotations; the method's own
# (Normalization, LambdaScheduleKind) live in lsap.method.choices, which loss.py and
# schedules.py read; the rest read the tuples below instead of spelling them again.
LossKind = Literal["ce", "lsap"]
SurrogateSource = Literal["online", "store"]
InferenceDtype = Literal["auto", "bfloat16", "float32"]
AuxWeighting = Literal["none", "prob"]
GoldOutside = Literal["keep", "skip"]
Device = Literal["auto", "cpu", "cuda"]
Precision = Literal["auto", "fp32", "bf16"]
Distributed = Literal["ddp", "fsdp"]
LossImpl = Literal["linear", "logits"]
FsdpMixedPrecision = Literal["none", "bf16"]
LoggerName = Literal["jsonl", "tensorboard", "wandb"]

INFERENCE_DTYPES = get_args(InferenceDtype)
LOGGERS = get_args(LoggerName)


@dataclass
class ModelCfg:
    preset: str = "olmo2-tiny"  # lsap.model preset (olmo2-tiny/small/60m/1b)
    vocab_size: int | None = None  # None: the tokenizer's size rounded up to a multiple of 128
    overrides: dict = field(
        default_factory=dict
    )  # transformers config fields; CLI keys merge into the YAML's
    init_seed: int = 0


@dataclass
class DataCfg:
    dir: str = ""  # prepared token shards (`lsap prepare --out DIR`)
    seq_len: int = 256  # paper: 1024


@dataclass
class SurrogateCfg:
    model: str = ""  # hub id, local HF dir, .gguf file, or 'smollm2'
    source: SurrogateSource = "online"
    store_dir: str = ""  # with source=store: the `lsap store build` output
    vocab_map: str = ""  # saved VocabMap dir; empty: built from the two tokenizers
    dtype: InferenceDtype = "auto"  # auto: bf16 on GPU, fp32 on CPU
    batch_size: int = 0  # surrogate forward micro-batch (0: the training micro-batch)


@dataclass
class LSAPCfg:
    k: int = 15  # top-k candidates per position (paper: 15)
    alpha: float = 0.05  # keep candidates with p > alpha (paper: 0.01 / 0.05 / 0.2)
    lambda_schedule: LambdaScheduleKind = "constant"  # cosine: the paper's "anneal"
    lam: float = 1.0  # λ0
    lam_min: float = 0.0  # cosine end value
    normalization: Normalization = (
        "targets"  # Z = N + V | tokens: N | weighted: N + λ(t)·V (λ=0 is CE exactly)
    )
    aux_weighting: AuxWeighting = "none"  # prob: ablation, weight aux NLLs by surrogate p
    gold_outside: GoldOutside = (
        "keep"  # keep (paper) | skip: no aux targets where the gold token is outside Σ∩
    )
    intersection_keep: float = 1.0  # keep this random share of Σ∩ (ablation)
    intersection_seed: int = 0
    allow_small_intersection: bool = (
        False  # train even if Σ∩ holds only specials or < 1% of the base vocab
    )


@dataclass
class OptimCfg:
    lr: float = 4e-4  # peak (paper: 4e-4)
    betas: list = field(default_factory=lambda: [0.9, 0.95])
    eps: float = 1e-8
    weight_decay: float = 0.1  # on ≥2-D weights only
    warmup_steps: int = 100
    min_lr_ratio: float = 0.1  # cosine floor as a fraction of lr
    grad_clip: float = 1.0  # 0 disables


@dataclass
class TrainCfg:
    batch_size: int = 16  # global sequences per optimizer step
    micro_batch_size: int = 16  # per rank per forward
    max_steps: int = 0  # budgets: the smallest positive one ends the run
    max_tokens: float = 0.0
    max_flops: float = 0.0  # base + surrogate FLOPs (METHOD §5): matched-FLOPs runs
    log_every: int = 10
    eval_every: int = 0  # 0: only at the end
    eval_batches: int = 20
    ckpt_every: int = 0  # 0: only at the end
    ckpt_at: list = field(
        default_factory=list
    )  # extra steps to checkpoint (e.g. another run's token count)
    keep_checkpoints: int = -1  # -1 auto: all below 1 GiB each, else newest 2 + ckpt_at; 0: all
    seed: int = 0
    device: Device = "auto"
    precision: Precision = "auto"  # auto: bf16 autocast on GPU, fp32 on CPU
    distributed: Distributed = "ddp"  # under torchrun
    loss_impl: LossImpl = "linear"  # linear: chunked, no [N,V] logits
    label_smoothing: float = (
        0.0  # ε of CE label smoothing (baseline arm; CE runs only, dense logits)
    )
    skip_nonfinite_steps: int = (
        0  # skip up to N steps whose loss / grad norm is NaN or inf (0: stop at the first)
    )
    dist_timeout_s: float = (
        600.0  # a collective waiting longer ends the job (a stalled or dead rank)
    )
    compile: bool = False  # torch.compile the decoder blocks and the loss chunk
    activation_checkpointing: bool = False  # recompute each decoder block in backward (less memory)
    fsdp_mixed_precision: FsdpMixedPrecision = (
        "none"  # bf16 (FSDP2): bf16 params in compute, fp32 gradient reduce
    )
    loggers: list[LoggerName] = field(
        default_factory=lambda: ["jsonl"]
    )  # + tensorboard, wandb (lsap.train.loggers);
    # metrics.jsonl is always written (resume, eval and report read it)


@dataclass
class Config:
    name: str = "run"
    out_dir: str = "runs/run"
    loss: LossKind = "ce"
    model: ModelCfg = field(default_factory=ModelCfg)
    data: DataCfg = field(default_factory=DataCfg)
    surrogate: SurrogateCfg = field(default_factory=SurrogateCfg)
    lsap: LSAPCfg = field(default_factory=LSAPCfg)
    optim: OptimCfg = field(default_factory=OptimCfg)
    train: TrainCfg = field(default_factory=TrainCfg)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)


from lsap.config_checks import _check_paths, check_model_overrides  # noqa: E402,F401
from lsap.utils.errors import ConfigError  # noqa: E402,F401  (re-exported)


def _choices(cls, prefix: str = "") -> dict[str, tuple]:
    """{'lsap.normalization': ('targets', 'tokens', 'weighted'), ...} from the Literal annotations."""
    out = {}
    for name, hint in get_type_hints(cls).items():
        if dataclasses.is_dataclass(hint):
            out.update(_choices(hint, f"{prefix}{name}."))
        elif get_origin(hint) is Literal:
            out[prefix + name] = get_args(hint)
        elif (
            get_origin(hint) is list and get_args(hint) and get_origin(get_args(hint)[0]) is Literal
        ):
            out[prefix + name + "[]"] = get_args(get_args(hint)[0])  # every element
    return out


def _build(cls, data: dict, prefix: str = ""):
    if not isinstance(data, dict):
        raise ConfigError(f"{prefix.rstrip('.') or 'config'} must be a mapping, got {data!r}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    kwargs = {}
    for key, value in data.items():
        if key not in fields:
            close = difflib.get_close_matches(key, list(fields), n=1)
            hint = (
                f"; did you mean {prefix + close[0]!r}?"
                if close
                else f"; valid: {', '.join(fields)}"
            )
            raise ConfigError(f"unknown config key {prefix + key!r}{hint}")
        ftype = fields[key].type
        if isinstance(ftype, str):
            ftype = globals().get(ftype, ftype)
        if dataclasses.is_dataclass(ftype):
            kwargs[key] = _build(ftype, value, f"{prefix}{key}.")
        else:
            kwargs[key] = _coerce(value, ftype, prefix + key)
    return cls(**kwargs)


def _coerce(value: Any, ftype: Any, key: str) -> Any:
    """A value read from YAML or the command line → the field's type, or a ConfigError
    naming the key and the type it wants. YAML reads '1e30' and '26e9' as strings
    (YAML 1.1 wants a dot): accepted as numbers; numbers for a text key become text."""
    kinds = str(ftype).replace(" ", "").split("|")
    if value is None and "None" in kinds:
        return None
    container = any(k.startswith(("list", "dict")) for k in kinds)
    want = _type_name(ftype, kinds)
    if container:
        if isinstance(value, (list, dict)) and not isinstance(
            value, dict if kinds[0].startswith("list") else list
        ):
            return value
        if (
            isinstance(value, str) and kinds[0].startswith("list") and value
        ):  # train.loggers=tensorboard
            return value
        raise ConfigError(f"{key}={value!r} is not {want}")
    if value is None or isinstance(value, (list, dict, tuple, set)):
        got = (
            "empty (null)"
            if value is None
            else "a list"
            if isinstance(value, (list, tuple, set))
            else "a mapping"
        )
        raise ConfigError(f"{key}={value!r} is {got}; {key} takes {want}")
    if "bool" in kinds:
        if not isinstance(value, bool):
            raise ConfigError(f"{key}={value!r} is not true/false")
        return value
    if isinstance(value, bool):
        raise ConfigError(f"{key}={value!r} is true/false; {key} takes {want}")
    try:
        if "float" in kinds and isinstance(value, (str, int, float)):
            value = float(value)
            if not math.isfinite(value):  # .nan / .inf: refused here, not by the NaN guard
                want = "a finite number"
                raise ValueError
            return value
        if "int" in kinds and isinstance(value, (str, float)):
            f = float(value)
            if f != int(f):
                raise ValueError
            return int(f)
    except (ValueError, OverflowError):
        raise ConfigError(f"{key}={value!r} is not {want}") from None
    if "str" in kinds and isinstance(value, (int, float)):
        return str(value)  # name=2024, data.dir=1
    return value


def _type_name(ftype: Any, kinds: list[str]) -> str:
    """'an int', 'a number', 'text', 'true/false', 'one of (...)', 'a list', 'a mapping', joined by 'or'."""
    if get_origin(ftype) is Literal:
        return f"one of {get_args(ftype)}"
    names = {
        "int": "an integer",
        "float": "a number",
        "str": "text",
        "bool": "true/false",
        "None": "null",
        "dict": "a mapping",
    }
    return " or ".join(names.get(k, "a list" if k.startswith("list") else k) for k in kinds)


def _set(d: dict, dotted: str, value: Any) -> None:
    parts = dotted.split(".")
    for p in parts[:-1]:
        d = d.setdefault(p, {})
        if not isinstance(d, dict):
            raise ConfigError(f"cannot set {dotted!r}: {p!r} is not a section")
    d[parts[-1]] = value


def parse_overrides(overrides: list[str]) -> dict:
    """['lsap.alpha=0.01', 'train.max_steps=5'] → nested dict (values parsed as YAML)."""
    out: dict = {}
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override {item!r} must look like key.sub=value")
        key, raw = item.split("=", 1)
        try:
            value = yaml.safe_load(raw) if raw != "" else ""
        except yaml.YAMLError as e:
            why = str(getattr(e, "problem", None) or e).splitlines()[0]
            raise ConfigError(f"override {item!r}: not a YAML value ({why}); quote it") from None
        _set(out, key.strip(), value)
    return out


def _merge(a: dict, b: dict) -> dict:
    """Merge b into a, key by key (also inside `model.overrides`: the CLI adds to the YAML's)."""
    out = dict(a)
    for k, v in b.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def validate(cfg: Config, deep: bool = False) -> Config:
    """Ranges, types and choices of every key; `deep` also checks that input paths exist,
    out_dir is writable, and `model.overrides` keys exist (imports transformers).
    Each problem is one ConfigError naming the key.
    """
    if isinstance(cfg.train.loggers, str):  # train.loggers=tensorboard
        cfg.train.loggers = [cfg.train.loggers]
    for key, allowed in _choices(Config).items():
        value = cfg
        for part in key.removesuffix("[]").split("."):
            value = getattr(value, part)
        if key.endswith("[]"):
            if not isinstance(value, list) or any(v not in allowed for v in value):
                raise ConfigError(f"{key[:-2]}={value!r}: every entry must be one of {allowed}")
        elif value not in allowed:
            raise ConfigError(f"{key}={value!r} is not one of {allowed}")
    t = cfg.train
    for name in ("max_steps", "max_tokens", "max_flops"):
        if getattr(t, name) < 0:
            raise ConfigError(f"train.{name} must be ≥ 0")
    if not (t.max_steps or t.max_tokens or t.max_flops):
        raise ConfigError(
            "no budget: set train.max_steps, train.max_tokens or train.max_flops (> 0)"
        )
    if t.batch_size <= 0 or t.micro_batch_size <= 0:
        raise ConfigError("train.batch_size and train.micro_batch_size must be > 0")
    if t.fsdp_mixed_precision != "none" and t.distributed != "fsdp":
        raise ConfigError(
            f"train.fsdp_mixed_precision={t.fsdp_mixed_precision!r} needs train.distributed=fsdp "
            "(with ddp, train.precision=bf16 gives bf16 autocast)"
        )
    if cfg.data.seq_len <= 0:
        raise ConfigError("data.seq_len must be > 0")
    L = cfg.lsap
    if not 0.0 <= L.alpha < 1.0:
        raise ConfigError(f"lsap.alpha must lie in [0, 1), got {L.alpha}")
    if L.k < 1:
        raise ConfigError(f"lsap.k must be ≥ 1, got {L.k}")
    if not 0.0 < L.intersection_keep <= 1.0:
        raise ConfigError(f"lsap.intersection_keep must lie in (0, 1], got {L.intersection_keep}")
    if cfg.loss == "lsap" and not cfg.surrogate.model and cfg.surrogate.source == "online":
        raise ConfigError("loss=lsap needs surrogate.model (hub id, local dir, .gguf or 'smollm2')")
    if cfg.loss == "lsap" and cfg.surrogate.source == "store" and not cfg.surrogate.store_dir:
        raise ConfigError("surrogate.source=store needs surrogate.store_dir")
    if not cfg.data.dir:
        raise ConfigError("data.dir is empty: point it at `lsap prepare` output")
    if L.lam < 0 or L.lam_min < 0:
        raise ConfigError(f"lsap.lam and lsap.lam_min must be ≥ 0, got {L.lam} and {L.lam_min}")
    o = cfg.optim
    if not (
        isinstance(o.betas, (list, tuple))
        and len(o.betas) == 2
        and all(
            isinstance(b, (int, float)) and not isinstance(b, bool) and 0 <= b < 1 for b in o.betas
        )
    ):
        raise ConfigError(f"optim.betas must be a pair [beta1, beta2] in [0, 1), got {o.betas!r}")
    for key, value, ok, want in (
        ("optim.lr", o.lr, o.lr > 0, "> 0"),
        ("optim.eps", o.eps, o.eps > 0, "> 0"),
        ("optim.weight_decay", o.weight_decay, o.weight_decay >= 0, "≥ 0"),
        ("optim.warmup_steps", o.warmup_steps, o.warmup_steps >= 0, "≥ 0"),
        ("optim.min_lr_ratio", o.min_lr_ratio, 0 <= o.min_lr_ratio <= 1, "in [0, 1]"),
        ("optim.grad_clip", o.grad_clip, o.grad_clip >= 0, "≥ 0 (0 disables)"),
        ("train.seed", t.seed, t.seed >= 0, "≥ 0"),
        ("train.log_every", t.log_every, t.log_every >= 1, "≥ 1"),
        ("train.eval_every", t.eval_every, t.eval_every >= 0, "≥ 0"),
        ("train.eval_batches", t.eval_batches, t.eval_batches >= 1, "≥ 1"),
        ("train.ckpt_every", t.ckpt_every, t.ckpt_every >= 0, "≥ 0"),
        ("train.keep_checkpoints", t.keep_checkpoints, t.keep_checkpoints >= -1, "≥ -1 (-1: auto)"),
        ("train.skip_nonfinite_steps", t.skip_nonfinite_steps, t.skip_nonfinite_steps >= 0, "≥ 0"),
        ("train.dist_timeout_s", t.dist_timeout_s, t.dist_timeout_s > 0, "> 0"),
        ("surrogate.batch_size", cfg.surrogate.batch_size, cfg.surrogate.batch_size >= 0, "≥ 0"),
        (
            "model.vocab_size",
            cfg.model.vocab_size,
            cfg.model.vocab_size is None or cfg.model.vocab_size > 0,
            "> 0",
        ),
    ):
        if not ok:
            raise ConfigError(f"{key} must be {want}, got {value!r}")
    if not isinstance(t.ckpt_at, list) or not all(isinstance(s, int) and s > 0 for s in t.ckpt_at):
        raise ConfigError(f"train.ckpt_at must be a list of positive steps, got {t.ckpt_at!r}")
    if not isinstance(cfg.model.overrides, dict):
        raise ConfigError(
            f"model.overrides must be a mapping of transformers config fields, got {cfg.model.overrides!r}"
        )
    for k, v in cfg.model.overrides.items():
        if isinstance(v, float) and not math.isfinite(v):
            raise ConfigError(f"model.overrides.{k}={v!r} is not a finite number")
    if deep:
        _check_paths(cfg)  # first: it needs no import of torch / transformers
        check_model_overrides(cfg.model.preset, cfg.model.overrides)
    return cfg


PACKAGED = Path(__file__).parent / "configs"


def packaged_configs() -> list[str]:
    return sorted(p.stem for p in PACKAGED.glob("*.yaml"))


def resolve_config_path(path: str | Path) -> Path:
    """A YAML path, or the name of a packaged preset (`paper-lsap-a0.05`)."""
    p = Path(path)
    if p.is_file():
        return p
    named = PACKAGED / f"{Path(path).name.removesuffix('.yaml')}.yaml"
    if named.is_file() and not p.parent.name:
        return named
    close = difflib.get_close_matches(str(path), packaged_configs(), n=3)
    raise ConfigError(
        f"config file {p} not found"
        + (
            f"; packaged presets close to it: {', '.join(close)}"
            if close
            else f"; packaged presets: {', '.join(packaged_configs())}"
        )
    )


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> Config:
    """YAML file (optional) + dotlist overrides → validated `Config`."""
    data: dict = {}
    if path is not None:
        p = resolve_config_path(path)
        try:
            data = yaml.safe_load(p.read_text()) or {}
        except yaml.YAMLError as e:
            m = getattr(e, "problem_mark", None)
            where = f" at line {m.line + 1}, column {m.column + 1}" if m else ""
            raise ConfigError(f"{p}: not valid YAML{where} ({getattr(e, 'problem', e)})") from None
    data = _merge(data, parse_overrides(overrides or []))
    return validate(_build(Config, data))


def load_run_config(run_dir: str | Path) -> Config:
    """The resolved `Config` a run was trained with (RUN/config.yaml, or the newest
    checkpoint's copy). Readers of finished runs (eval, report, sweep) use this instead
    of re-stating defaults: a default changed later cannot change what a run *was*."""
    d = Path(run_dir)
    candidates = [d / "config.yaml"] + sorted(
        (d / "checkpoints").glob("step_*[0-9]/config.yaml"), reverse=True
    )
    for c in candidates:
        if c.is_file():
            data = yaml.safe_load(c.read_text()) or {}
            return validate(_build(Config, data))
    raise ConfigError(f"{d} holds no config.yaml (not a run directory written by `lsap train`?)")
