"""One source of truth for a training run: nested dataclasses, YAML, dotlist overrides.

    cfg = load_config("configs/quickstart-lsap.yaml", ["lsap.alpha=0.01", "train.max_steps=50"])

Unknown keys are errors with a suggestion; the resolved config is written to every run
directory and checkpoint (`to_yaml`). Field comments are the documentation.
"""

from __future__ import annotations

import dataclasses
import difflib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml


@dataclass
class ModelCfg:
    preset: str = "olmo2-tiny"  # lsap.model preset (olmo2-tiny/small/60m/1b)
    vocab_size: int | None = None  # None: the tokenizer's size rounded up to a multiple of 128
    overrides: dict = field(default_factory=dict)  # any transformers config field
    init_seed: int = 0


@dataclass
class DataCfg:
    dir: str = ""  # prepared token shards (`lsap prepare --out DIR`)
    seq_len: int = 256  # paper: 1024


@dataclass
class SurrogateCfg:
    model: str = ""  # hub id, local HF dir, .gguf file, or 'smollm2'
    source: str = "online"  # online | cache
    cache_dir: str = ""  # with source=cache: the `lsap cache build` output
    vocab_map: str = ""  # saved VocabMap dir; empty: built from the two tokenizers
    dtype: str = "auto"  # auto (bf16 on GPU, fp32 on CPU) | bfloat16 | float32
    batch_size: int = 0  # surrogate forward micro-batch (0: the training micro-batch)


@dataclass
class LSAPCfg:
    k: int = 15  # top-k candidates per position (paper: 15)
    alpha: float = 0.05  # keep candidates with p > alpha (paper: 0.01 / 0.05 / 0.2)
    lambda_schedule: str = "constant"  # constant | cosine (the paper's "anneal")
    lam: float = 1.0  # λ0
    lam_min: float = 0.0  # cosine end value
    normalization: str = "targets"  # targets: Z = N + V | tokens: Z = N
    aux_weighting: str = "none"  # none | prob (ablation: weight aux NLLs by surrogate p)
    gold_outside: str = "keep"  # keep (paper) | skip: no aux targets where the gold token is outside Σ∩
    intersection_keep: float = 1.0  # keep this random share of Σ∩ (ablation)
    intersection_seed: int = 0


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
    max_tokens: float = 0
    max_flops: float = 0  # base + surrogate FLOPs (METHOD §5): matched-FLOPs runs
    log_every: int = 10
    eval_every: int = 0  # 0: only at the end
    eval_batches: int = 20
    ckpt_every: int = 0  # 0: only at the end
    ckpt_at: list = field(default_factory=list)  # extra steps to checkpoint (e.g. another run's token count)
    keep_checkpoints: int = 0  # 0: keep all (reports want every FLOPs point)
    seed: int = 0
    device: str = "auto"  # auto | cpu | cuda
    precision: str = "auto"  # auto (bf16 autocast on GPU, fp32 on CPU) | fp32 | bf16
    distributed: str = "ddp"  # ddp | fsdp (under torchrun)
    loss_impl: str = "linear"  # linear (chunked, no [N,V] logits) | logits
    compile: bool = False  # torch.compile the decoder blocks and the loss chunk
    activation_checkpointing: bool = False  # recompute each decoder block in backward (less memory)
    fsdp_mixed_precision: str = "none"  # none | bf16 (FSDP2: bf16 params in compute, fp32 gradient reduce)


@dataclass
class Config:
    name: str = "run"
    out_dir: str = "runs/run"
    loss: str = "ce"  # ce | lsap
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


class ConfigError(ValueError):
    pass


_CHOICES = {
    "loss": ("ce", "lsap"),
    "surrogate.source": ("online", "cache"),
    "surrogate.dtype": ("auto", "bfloat16", "float32"),
    "lsap.lambda_schedule": ("constant", "cosine"),
    "lsap.normalization": ("targets", "tokens"),
    "lsap.aux_weighting": ("none", "prob"),
    "lsap.gold_outside": ("keep", "skip"),
    "train.device": ("auto", "cpu", "cuda"),
    "train.precision": ("auto", "fp32", "bf16"),
    "train.distributed": ("ddp", "fsdp"),
    "train.loss_impl": ("linear", "logits"),
    "train.fsdp_mixed_precision": ("none", "bf16"),
}


def _build(cls, data: dict, prefix: str = ""):
    if not isinstance(data, dict):
        raise ConfigError(f"{prefix.rstrip('.') or 'config'} must be a mapping, got {data!r}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    kwargs = {}
    for key, value in data.items():
        if key not in fields:
            close = difflib.get_close_matches(key, list(fields), n=1)
            hint = f"; did you mean {prefix + close[0]!r}?" if close else f"; valid: {', '.join(fields)}"
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
    """YAML reads '1e30' and '26e9' as strings (YAML 1.1 wants a dot); accept them as numbers."""
    kinds = str(ftype).replace(" ", "").split("|")
    if value is None and "None" in kinds:
        return None
    try:
        if "float" in kinds and isinstance(value, (str, int)) and not isinstance(value, bool):
            return float(value)
        if "int" in kinds and isinstance(value, (str, float)) and not isinstance(value, bool):
            f = float(value)
            if f != int(f):
                raise ValueError
            return int(f)
    except ValueError:
        raise ConfigError(f"{key}={value!r} is not a {' or '.join(kinds)}") from None
    if "bool" in kinds and not isinstance(value, bool):
        raise ConfigError(f"{key}={value!r} is not true/false")
    return value


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
        _set(out, key.strip(), yaml.safe_load(raw) if raw != "" else "")
    return out


def _merge(a: dict, b: dict) -> dict:
    out = dict(a)
    for k, v in b.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) and k != "overrides" else v
    return out


def validate(cfg: Config) -> Config:
    flat = {"loss": cfg.loss, **{f"{s}.{k}": v for s in ("surrogate", "lsap", "train")
                                  for k, v in dataclasses.asdict(getattr(cfg, s)).items()}}
    for key, allowed in _CHOICES.items():
        if flat[key] not in allowed:
            raise ConfigError(f"{key}={flat[key]!r} is not one of {allowed}")
    t = cfg.train
    for name in ("max_steps", "max_tokens", "max_flops"):
        if getattr(t, name) < 0:
            raise ConfigError(f"train.{name} must be ≥ 0")
    if not (t.max_steps or t.max_tokens or t.max_flops):
        raise ConfigError("no budget: set train.max_steps, train.max_tokens or train.max_flops (> 0)")
    if t.batch_size <= 0 or t.micro_batch_size <= 0:
        raise ConfigError("train.batch_size and train.micro_batch_size must be > 0")
    if t.fsdp_mixed_precision != "none" and t.distributed != "fsdp":
        raise ConfigError(f"train.fsdp_mixed_precision={t.fsdp_mixed_precision!r} needs train.distributed=fsdp "
                          "(with ddp, train.precision=bf16 gives bf16 autocast)")
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
    if cfg.loss == "lsap" and cfg.surrogate.source == "cache" and not cfg.surrogate.cache_dir:
        raise ConfigError("surrogate.source=cache needs surrogate.cache_dir")
    if not cfg.data.dir:
        raise ConfigError("data.dir is empty: point it at `lsap prepare` output")
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
    raise ConfigError(f"config file {p} not found" + (f"; packaged presets close to it: {', '.join(close)}"
                                                      if close else f"; packaged presets: {', '.join(packaged_configs())}"))


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> Config:
    """YAML file (optional) + dotlist overrides → validated `Config`."""
    data: dict = {}
    if path is not None:
        p = resolve_config_path(path)
        data = yaml.safe_load(p.read_text()) or {}
    data = _merge(data, parse_overrides(overrides or []))
    return validate(_build(Config, data))
