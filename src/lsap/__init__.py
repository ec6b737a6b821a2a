"""lsap — surrogate-assisted language-model pretraining.

The public API, importable from `lsap` itself (resolved lazily, so `import lsap` and
`lsap --help` stay fast; each name lives in the module shown):

    from lsap import VocabMap, lsap_loss, AuxTargets, build_target_source, Trainer
"""

from __future__ import annotations

import importlib

from lsap.errors import LsapError

__version__ = "0.1.0"

_EXPORTS = {
    # configuration
    "Config": "config", "load_config": "config",
    # vocabulary map Σ∩ (METHOD §1)
    "VocabMap": "vocab",
    # auxiliary targets (METHOD §2–§3) and where they come from
    "AuxTargets": "targets", "TargetSource": "sources", "OnlineTargets": "sources", "target_source": "sources",
    "build_target_source": "sources",
    "translate_inputs": "targets", "select_aux_targets": "targets", "propose_targets": "targets",
    "drop_gold_outside": "targets",
    "StoredTargets": "store", "TargetStore": "store", "build_store": "store_build",
    "load_surrogate": "surrogate", "load_surrogate_with_map": "surrogate",
    # the loss (METHOD §4)
    "lsap_loss": "loss", "lsap_linear_loss": "loss", "LSAPLossOutput": "loss", "normalizer": "loss",
    "LambdaSchedule": "schedules", "LRSchedule": "schedules",
    # data, models, FLOPs, training
    "Batch": "data", "SequenceLoader": "data", "TokenShards": "data", "prepare": "data",
    "load_tokenizer": "tokenizer", "model_config": "model", "build_model": "model",
    "FlopsLedger": "flops", "matched_flops": "flops",
    "Trainer": "train", "build_components": "train",  # (not `train`: that name is the module lsap.train)
    # evaluation and reports
    "heldout_nll": "metrics", "vocab_report": "vocab", "corpus_ids": "corpora",
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
