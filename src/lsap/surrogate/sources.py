"""Where a run's auxiliary targets come from: the `TargetSource` contract, the online
source, and the one factory every caller builds a source with.

- `OnlineTargets`: the frozen surrogate run on every batch (`lsap.method.targets.propose_targets`).
- `StoredTargets`: a finished target store (`lsap.surrogate.store`) read by window id.
- `TargetSpec(...).build(...)`: the one factory (the trainer through `TargetSpec.from_config`
  in `build_target_source(cfg, ...)`, `LSAPTrainer`, `lsap eval`). Whatever the caller, a store is refused by
  `TargetStore.check_run` unless it was built for the run's data, seq_len, k, α,
  surrogate and map, the Σ∩ map is checked for a degenerate intersection, and the run's
  `gold_outside` rule is applied by the source.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

import torch

from lsap.method.targets import AuxTargets, propose_targets
from lsap.method.vocab import VocabMap
from lsap.utils.errors import ConfigError, StoreError, TrainingError
from lsap.utils.logging import get_logger

log = get_logger(__name__)

if TYPE_CHECKING:
    from lsap.data.shards import Batch


class TargetSource(Protocol):
    """`source(batch) -> AuxTargets`.

    vmap: the Σ∩ map (base side = the run's model vocabulary).
    flops_per_token: surrogate FLOPs charged per trained base token (METHOD §5).
    paid: whether those FLOPs are spent during training (online) or were spent once
        when the store was built (they are charged per token either way).
    record: what to write next to the run (e.g. the store's provenance), or None.
    Implementations apply the run's `gold_outside` policy themselves, so every source
    returns targets under the same rules.
    """

    vmap: VocabMap
    flops_per_token: float
    paid: bool

    def __call__(self, batch: Batch) -> AuxTargets: ...

    def record(self) -> dict | None: ...


class OnlineTargets:
    """The frozen surrogate run on every batch (`propose_targets`, in chunks of
    `batch_size` rows; 0 = the whole micro-batch at once)."""

    paid = True

    def __init__(
        self,
        surrogate,
        vmap: VocabMap,
        k: int,
        alpha: float,
        *,
        pad_id: int = 0,
        batch_size: int = 0,
        gold_outside: str = "keep",
        flops_per_token: float = 0.0,
    ):
        self.surrogate, self.vmap, self.k, self.alpha = surrogate, vmap, k, alpha
        self.pad_id, self.batch_size, self.gold_outside = pad_id, batch_size, gold_outside
        self.flops_per_token = float(flops_per_token)

    @property
    def device(self) -> torch.device:
        """Where the surrogate runs (its parameters; else the map's tables)."""
        params = getattr(self.surrogate, "parameters", None)
        p = next(iter(params()), None) if callable(params) else None
        return p.device if p is not None else self.vmap.base_to_surrogate.device

    def __call__(self, batch: Batch) -> AuxTargets:
        # Batches may arrive on another device (OLMo-core hands train_batch CPU tensors and
        # lets the model move them): the targets are computed where the surrogate lives.
        dev = self.device
        x, y = batch.input_ids.to(dev), batch.labels.to(dev)
        bs = self.batch_size or x.shape[0]
        out = AuxTargets.cat(
            [
                propose_targets(
                    self.surrogate,
                    x[i : i + bs],
                    y[i : i + bs],
                    self.vmap,
                    self.k,
                    self.alpha,
                    pad_id=self.pad_id,
                )
                for i in range(0, x.shape[0], bs)
            ]
        )
        return out.drop_gold_outside(y, self.vmap) if self.gold_outside == "skip" else out

    def record(self) -> None:
        return None


def _warn(msg: str) -> None:
    log.warning(msg)


def check_intersection(vmap: VocabMap, allow_small: bool, warn=_warn) -> None:
    """Refuse a Σ∩ too small to teach anything, unless `allow_small` (then warn)."""
    weak = vmap.weakness()
    if weak is None:
        return
    if not allow_small:
        raise TrainingError(
            f"{weak}. Check the tokenizer pair with `lsap vocab`, or set "
            "lsap.allow_small_intersection=true to train anyway"
        )
    warn(f"[lsap] warning: {weak} (lsap.allow_small_intersection=true)")


def check_method_numbers(*, k=None, alpha=None, keep_fraction=None, lam=None) -> None:
    """Refuse numbers that would train something else than LSAP without a word: α outside
    [0, 1) keeps no candidate (plain CE labelled LSAP), λ < 0 maximises the auxiliary NLL,
    NaN/inf anywhere poisons the loss. ConfigError (one line, exit 2)."""
    import math
    import numbers

    def finite(name, v):
        if isinstance(v, bool) or not isinstance(v, numbers.Real) or not math.isfinite(v):
            raise ConfigError(f"{name} must be a finite number, got {v!r}")

    if k is not None and (isinstance(k, bool) or not isinstance(k, numbers.Integral) or k < 1):
        raise ConfigError(f"k must be a whole number >= 1, got {k!r}")
    if alpha is not None:
        finite("alpha", alpha)
        if not 0.0 <= alpha < 1.0:
            raise ConfigError(f"alpha must lie in [0, 1) (a probability threshold), got {alpha!r}")
    if keep_fraction is not None:
        finite("keep_fraction", keep_fraction)
        if not 0.0 < keep_fraction <= 1.0:
            raise ConfigError(f"keep_fraction must lie in (0, 1], got {keep_fraction!r}")
    if lam is not None:
        finite("lam", lam)
        if lam < 0:
            raise ConfigError(
                f"lam (λ) must be >= 0 (λ < 0 maximises the auxiliary loss), got {lam!r}"
            )


@dataclass(frozen=True)
class TargetSpec:
    """What a run's targets are, built once: exactly one of `surrogate` or `store`.
    Validated on construction (exactly one source; k, α, keep_fraction by
    `check_method_numbers`); `.build(...)` takes what only the running process knows.

    surrogate: a spec string (loaded with its map to the base tokenizer by
    `load_surrogate_with_map`; `vocab_map` an optional saved map dir) or a loaded frozen
    causal LM (then `vocab_map` is required: a `VocabMap` or a saved map dir).
    store: a store directory or `TargetStore`; refused (StoreError, naming the
    `lsap store build` that repairs it) unless built for the train shards and seq_len, k, α,
    `store_surrogate` (a spec whose weights must match; None: not checked) and `vocab_map`
    (None: not checked).
    batch_size: surrogate rows per forward online (0: the whole batch); with a store, what an
    online run would use, so that check_run can say where stored targets may differ. dtype:
    the surrogate's (online) or an online run's (store). keep_fraction / seed: the
    intersection ablation (online only).

    Built by `from_config` (`lsap train`, the OLMo-core example), `LSAPTrainer` (its
    arguments) and `lsap eval` (`_load_targets`).
    """

    k: int
    alpha: float
    gold_outside: str = "keep"
    surrogate: Any = None
    store: Any = None
    vocab_map: Any = None
    keep_fraction: float = 1.0
    seed: int = 0
    dtype: Any = "auto"
    batch_size: int = 0
    store_surrogate: str | None = None
    allow_small_intersection: bool = False

    def __post_init__(self):
        if (self.surrogate is None) == (self.store is None):
            raise ValueError("pass exactly one of surrogate= or store=")
        check_method_numbers(k=self.k, alpha=self.alpha, keep_fraction=self.keep_fraction)

    @classmethod
    def from_config(cls, cfg) -> TargetSpec | None:
        """A run's spec from its `Config` (`LSAPCfg` + `SurrogateCfg`); None for loss=ce."""
        if cfg.loss != "lsap":
            return None
        S, L = cfg.surrogate, cfg.lsap
        common = dict(
            k=L.k,
            alpha=L.alpha,
            gold_outside=L.gold_outside,
            dtype=S.dtype,
            vocab_map=S.vocab_map or None,
            keep_fraction=L.intersection_keep,
            allow_small_intersection=L.allow_small_intersection,
        )
        if S.source == "store":
            return cls(
                store=S.store_dir,
                store_surrogate=S.model,
                batch_size=S.batch_size or cfg.train.micro_batch_size,
                **common,
            )
        return cls(surrogate=S.model, seed=L.intersection_seed, batch_size=S.batch_size, **common)

    def build(
        self,
        *,
        device: str | torch.device = "cpu",
        base_tokenizer=None,
        base_vocab_size: int | None = None,
        shards=None,
        seq_len: int | None = None,
        window_layout: str = "lsap",
        warn=_warn,
    ) -> TargetSource:
        """The source. base_tokenizer / base_vocab_size: for a surrogate spec's map.
        shards / seq_len: the run's train shards, a store is checked against. window_layout:
        the windows the trainer's loader produces ("lsap": `lsap train`, LSAPTrainer; "olmo":
        OLMo-core's instances); a store of the other layout is refused by name."""
        from lsap.surrogate.load import inference_device_dtype

        device = torch.device(device)
        _, dtype = inference_device_dtype(device, self.dtype)
        if self.store is not None:
            source = self._stored(device, dtype, shards, seq_len, window_layout)
        elif isinstance(self.surrogate, (str, os.PathLike)):
            source = self._online_spec(device, dtype, base_tokenizer, base_vocab_size)
        else:
            source = self._online_model(device)
        check_intersection(source.vmap, self.allow_small_intersection, warn)
        return source

    def _stored(self, device, dtype, shards, seq_len, window_layout):
        from lsap.surrogate.store import TargetStore

        if self.keep_fraction < 1.0:
            raise StoreError(
                "lsap.intersection_keep < 1 with a target store: build the store with `--map` of the "
                "ablation map and set surrogate.vocab_map to that map instead"
            )
        if shards is None or seq_len is None:
            raise StoreError(
                "a target store needs the run's train shards and seq_len to check what it was built "
                "for (LSAPTrainer: train_dataset=WindowDataset(data_dir, seq_len))"
            )
        st = self.store if isinstance(self.store, TargetStore) else TargetStore(self.store)
        vm = self.vocab_map
        run_map = VocabMap.load(vm) if isinstance(vm, (str, os.PathLike)) else vm
        st.check_run(
            shards,
            seq_len,
            self.k,
            self.alpha,
            surrogate=self.store_surrogate or None,
            vmap=run_map,
            dtype=str(dtype).removeprefix("torch."),
            batch_size=self.batch_size,
            window_layout=window_layout,
        )
        vmap = st.load_vocab_map().to(device)
        return StoredTargets(st, vmap, self.k, self.alpha, gold_outside=self.gold_outside)

    def _online_spec(self, device, dtype, base_tokenizer, base_vocab_size):
        from lsap.method.flops import inference_flops_per_token
        from lsap.surrogate.load import load_surrogate_with_map

        if base_tokenizer is None:
            raise ValueError("a surrogate spec needs the base tokenizer for the vocabulary map")
        sw = load_surrogate_with_map(
            self.surrogate,
            base_tokenizer,
            base_vocab_size,
            vocab_map=self.vocab_map or None,
            keep_fraction=self.keep_fraction,
            seed=self.seed,
            dtype=dtype,
            device=device,
        )
        return OnlineTargets(
            sw.model,
            sw.vmap,
            self.k,
            self.alpha,
            pad_id=sw.pad_id,
            batch_size=self.batch_size,
            gold_outside=self.gold_outside,
            flops_per_token=inference_flops_per_token(sw.model.config),
        )

    def _online_model(self, device):
        from lsap.method.flops import inference_flops_per_token

        if self.vocab_map is None:
            raise ValueError(
                "a surrogate model needs vocab_map= (a VocabMap or a saved map directory)"
            )
        vm = self.vocab_map
        vmap = vm if isinstance(vm, VocabMap) else VocabMap.load(vm)
        model = self.surrogate
        return OnlineTargets(
            model,
            vmap.to(device),
            self.k,
            self.alpha,
            pad_id=getattr(model.config, "pad_token_id", None) or 0,
            batch_size=self.batch_size,
            gold_outside=self.gold_outside,
            flops_per_token=inference_flops_per_token(model.config),
        )


def build_target_source(
    cfg,
    base_tokenizer,
    base_vocab_size: int,
    shards,
    device: str | torch.device = "cpu",
    warn=_warn,
    window_layout: str = "lsap",
) -> TargetSource | None:
    """A run's `TargetSource` from its `Config`: `TargetSpec.from_config(cfg).build(...)`
    (None for loss=ce). window_layout: "olmo" for OLMo-core's train module (its instances
    key the store)."""
    spec = TargetSpec.from_config(cfg)
    if spec is None:
        return None
    return spec.build(
        device=device,
        base_tokenizer=base_tokenizer,
        base_vocab_size=base_vocab_size,
        shards=shards,
        seq_len=cfg.data.seq_len,
        window_layout=window_layout,
        warn=warn,
    )


class StoredTargets:
    """`TargetSource` reading a finished store: the targets `OnlineTargets` would
    propose for the same windows (see the module doc for float16 exactness), keyed by
    `Batch.window_ids`. flops_per_token: the store's 2·N_s (charged per trained token,
    paid once at build time: `paid` is False)."""

    paid = False

    def __init__(self, store, vmap, k: int, alpha: float, *, gold_outside: str = "keep"):
        self.store, self.vmap, self.k, self.alpha, self.gold_outside = (
            store,
            vmap,
            k,
            alpha,
            gold_outside,
        )
        self.flops_per_token = float(store.manifest["flops"]["per_token"])

    def __call__(self, batch) -> AuxTargets:
        out = self.store.lookup(batch.window_ids, self.k, self.alpha, device=batch.input_ids.device)
        return (
            out.drop_gold_outside(batch.labels, self.vmap) if self.gold_outside == "skip" else out
        )

    def record(self) -> dict:
        """targets.json of a run trained from this store: where the surrogate compute went."""
        m = self.store.manifest
        return {
            "store_dir": str(self.store.dir.resolve()),
            "build_flops": m["flops"]["build_flops"],
            "surrogate_flops_per_token": m["flops"]["per_token"],
            "surrogate": m["surrogate"]["spec"],
            "k": m["k"],
            "min_alpha": m["min_alpha"],
            "seq_len": m["seq_len"],
            "positions": m["positions"],
            "note": "flops_surrogate in metrics charges 2·N_s per trained token (paper accounting); "
            "the surrogate compute actually paid is this store's build_flops, once per sweep",
        }
