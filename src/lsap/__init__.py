"""lsap — surrogate-assisted language-model pretraining.

The public API, importable from `lsap` itself (resolved lazily, so `import lsap` and
`lsap --help` stay fast; each name lives in the module shown):

    from lsap import VocabMap, lsap_loss, AuxTargets, build_target_source, Trainer
"""

from __future__ import annotations

import importlib

from lsap.utils.errors import LsapError

__version__ = "0.1.0"

_EXPORTS = {
    # configuration
    "Config": "config",
    "load_config": "config",
    # vocabulary map Σ∩ (METHOD §1)
    "VocabMap": "method.vocab",
    # auxiliary targets (METHOD §2–§3) and where they come from
    "AuxTargets": "method.targets",
    "TargetSource": "surrogate.sources",
    "OnlineTargets": "surrogate.sources",
    "TargetSpec": "surrogate.sources",
    "build_target_source": "surrogate.sources",
    "translate_inputs": "method.targets",
    "select_aux_targets": "method.targets",
    "propose_targets": "method.targets",
    "drop_gold_outside": "method.targets",
    "StoredTargets": "surrogate.sources",
    "TargetStore": "surrogate.store",
    "build_store": "surrogate.store_build",
    "load_surrogate": "surrogate.load",
    "load_surrogate_with_map": "surrogate.load",
    # the loss (METHOD §4)
    "lsap_loss": "method.loss",
    "lsap_linear_loss": "method.loss",
    "LSAPLossOutput": "method.loss",
    "normalizer": "method.loss",
    "LambdaSchedule": "method.schedules",
    "LRSchedule": "method.schedules",
    # data, models, FLOPs, training
    "Batch": "data.shards",
    "SequenceLoader": "data.shards",
    "TokenShards": "data.shards",
    "prepare": "data.shards",
    "load_tokenizer": "data.tokenizer",
    "model_config": "model",
    "build_model": "model",
    "FlopsLedger": "method.flops",
    "matched_flops": "method.flops",
    "Trainer": "train.loop",
    "build_components": "train.loop",  # (not `train`: that name is the package lsap.train)
    # evaluation and reports
    "heldout_nll": "eval.metrics",
    "vocab_report": "data.vocab_report",
    "corpus_ids": "data.corpora",
}

__all__ = ["LsapError", "__version__", *sorted(_EXPORTS)]


def __getattr__(name: str):
    if name in _EXPORTS:
        value = getattr(importlib.import_module(f"lsap.{_EXPORTS[name]}"), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'lsap' has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(__all__))
