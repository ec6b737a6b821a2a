"""Model presets (OLMo2 base models, surrogate shapes) and meta-device construction.

The base model `B` is an OLMo2 decoder from `transformers` (`Olmo2ForCausalLM`): SwiGLU
MLP, RoPE, QK-norm, norms after attention and MLP ("reordered norm"), no biases, an
untied output head. Presets name a shape; the vocabulary size is a parameter so the
small presets can pair with a small tokenizer (with a 100k vocabulary the embedding
and head dominate every preset below `olmo2-1b`).

| preset        | d    | layers | heads (kv) | MLP   | source                                      |
|---------------|------|--------|------------|-------|---------------------------------------------|
| olmo2-tiny    | 64   | 2      | 4 (4)      | 256   | tests / CPU smoke runs                      |
| olmo2-small   | 256  | 4      | 8 (8)      | 768   | OLMo-core `olmo2_30M` shape                 |
| olmo2-60m     | 384  | 8      | 8 (8)      | 1536  | OLMo-core `olmo2_60M` shape                 |
| olmo2-1b      | 2048 | 16     | 16 (16)    | 8192  | allenai/OLMo-2-0425-1B (the paper's base)   |
| qwen3-0.6b    | 1024 | 28     | 16 (8)     | 3072  | Qwen/Qwen3-0.6B (the paper's surrogate)     |
| smollm2-135m  | 576  | 30     | 9 (3)      | 1536  | HuggingFaceTB/SmolLM2-135M(-Instruct)       |

All OLMo2 presets default to the dolma2 vocabulary padded to 100,352 entries; pass
`vocab_size=` to use another tokenizer. `build_model` instantiates on the meta device
(no memory, no init cost), then materialises on the target device and runs the
model's own initialisation (normal(0, initializer_range) for linears and embeddings,
ones for RMSNorm weights, RoPE inverse frequencies recomputed) under a fixed seed.
"""

from __future__ import annotations

import copy
from typing import Any

import torch

from lsap.utils.errors import ConfigError

# Dolma2 tokenizer (cl100k_base ranks + specials): 100,278 entries padded to 100,352.
DOLMA2_VOCAB_SIZE = 100_352
_DOLMA2_SPECIAL = {"bos_token_id": 100_257, "eos_token_id": 100_257, "pad_token_id": 100_277}

# family -> (config class name, its default config kwargs). Kept as plain data so that
# importing this module does not import transformers' model zoo.
_OLMO2_COMMON: dict[str, Any] = {
    "vocab_size": DOLMA2_VOCAB_SIZE,
    "hidden_act": "silu",
    "attention_bias": False,
    "attention_dropout": 0.0,
    "initializer_range": 0.02,
    "rms_norm_eps": 1e-6,
    "rope_theta": 500_000.0,
    "max_position_embeddings": 4096,
    "tie_word_embeddings": False,
    "use_cache": False,  # pretraining never decodes; saves building KV caches
    **_DOLMA2_SPECIAL,
}

PRESETS: dict[str, tuple[str, dict[str, Any]]] = {
    "olmo2-tiny": (
        "olmo2",
        {
            **_OLMO2_COMMON,
            "hidden_size": 64,
            "intermediate_size": 256,
            "num_hidden_layers": 2,
            "num_attention_heads": 4,
            "num_key_value_heads": 4,
            "max_position_embeddings": 1024,
        },
    ),
    "olmo2-small": (
        "olmo2",
        {
            **_OLMO2_COMMON,
            "hidden_size": 256,
            "intermediate_size": 768,
            "num_hidden_layers": 4,
            "num_attention_heads": 8,
            "num_key_value_heads": 8,
            "max_position_embeddings": 2048,
        },
    ),
    "olmo2-60m": (
        "olmo2",
        {
            **_OLMO2_COMMON,
            "hidden_size": 384,
            "intermediate_size": 1536,
            "num_hidden_layers": 8,
            "num_attention_heads": 8,
            "num_key_value_heads": 8,
        },
    ),
    "olmo2-1b": (
        "olmo2",
        {
            **_OLMO2_COMMON,
            "hidden_size": 2048,
            "intermediate_size": 8192,
            "num_hidden_layers": 16,
            "num_attention_heads": 16,
            "num_key_value_heads": 16,
        },
    ),
    # Surrogate shapes (public config.json values); used for FLOPs and for tests.
    "qwen3-0.6b": (
        "qwen3",
        {
            "vocab_size": 151_936,
            "hidden_size": 1024,
            "intermediate_size": 3072,
            "num_hidden_layers": 28,
            "num_attention_heads": 16,
            "num_key_value_heads": 8,
            "head_dim": 128,
            "hidden_act": "silu",
            "max_position_embeddings": 40_960,
            "rms_norm_eps": 1e-6,
            "rope_theta": 1_000_000.0,
            "tie_word_embeddings": True,
            "attention_bias": False,
            "initializer_range": 0.02,
            "bos_token_id": 151_643,
            "eos_token_id": 151_645,
            "use_cache": False,
        },
    ),
    "smollm2-135m": (
        "llama",
        {
            "vocab_size": 49_152,
            "hidden_size": 576,
            "intermediate_size": 1536,
            "num_hidden_layers": 30,
            "num_attention_heads": 9,
            "num_key_value_heads": 3,
            "head_dim": 64,
            "hidden_act": "silu",
            "max_position_embeddings": 8192,
            "rms_norm_eps": 1e-5,
            "rope_theta": 100_000.0,
            "tie_word_embeddings": True,
            "attention_bias": False,
            "mlp_bias": False,
            "initializer_range": 0.041666666666666664,
            "bos_token_id": 1,
            "eos_token_id": 2,
            "pad_token_id": 2,
            "use_cache": False,
        },
    ),
}


def _config_class(family: str):
    import transformers

    return {
        "olmo2": transformers.Olmo2Config,
        "qwen3": transformers.Qwen3Config,
        "llama": transformers.LlamaConfig,
    }[family]


def model_config(preset: str, vocab_size: int | None = None, **overrides: Any):
    """The `transformers` config of a named preset.

    vocab_size: replaces the preset's vocabulary (e.g. a small tokenizer's size). Special
        token ids that no longer fit are dropped (set to None) rather than left dangling,
        because OLMo2 zeroes the embedding row at `pad_token_id`.
    overrides: any config field, e.g. `num_hidden_layers=1`, `initializer_range=0.01`.
    Raises ConfigError (a ValueError) for an unknown preset, listing the known ones.
    """
    if preset not in PRESETS:
        raise ConfigError(f"unknown model preset {preset!r}; known presets: {', '.join(PRESETS)}")
    family, kwargs = PRESETS[preset]
    kwargs = copy.deepcopy(kwargs)
    if vocab_size is not None:
        vocab_size = int(vocab_size)
        if vocab_size <= 0:
            raise ConfigError(f"vocab_size must be positive, got {vocab_size}")
        kwargs["vocab_size"] = vocab_size
        for key in ("bos_token_id", "eos_token_id", "pad_token_id"):
            if kwargs.get(key) is not None and kwargs[key] >= vocab_size:
                kwargs[key] = None
    kwargs.update(overrides)
    config = _config_class(family)(**kwargs)
    config.architectures = [f"{type(config).__name__.removesuffix('Config')}ForCausalLM"]
    return config


def load_model_config(spec: str, vocab_size: int | None = None):
    """A preset name, a `config.json` path, or an HF model directory → a config
    (`vocab_size`: overrides the vocabulary size).

    Never touches the network: hub ids are not accepted here (use a preset or a path).
    """
    import os

    if spec in PRESETS:
        return model_config(spec, vocab_size=vocab_size)
    path = spec
    if os.path.isdir(path):
        path = os.path.join(path, "config.json")
    if os.path.isfile(path):
        from transformers import AutoConfig

        config = AutoConfig.from_pretrained(os.path.dirname(os.path.abspath(path)))
        if vocab_size is not None:
            config.vocab_size = int(vocab_size)
        return config
    raise ConfigError(
        f"{spec!r} is neither a model preset ({', '.join(PRESETS)}) "
        "nor a config.json / HF model directory"
    )


def build_meta_model(config):
    """The causal LM of `config` on the meta device: shapes only, no memory, no init."""
    from transformers import AutoModelForCausalLM

    with torch.device("meta"):
        return AutoModelForCausalLM.from_config(config)


def build_model(
    config, device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32, seed: int = 0
):
    """Instantiate `config` as a freshly initialised causal LM.

    Built on the meta device first, so a 1B model costs no CPU-side allocation before it
    is placed; then `to_empty(device)` allocates uninitialised storage and the model's own
    `init_weights()` fills it (normal(0, config.initializer_range) for linears/embeddings,
    ones for norms, RoPE `inv_freq` recomputed, tied weights re-tied).

    Initialisation runs in float32 under `torch.manual_seed(seed)` inside a forked RNG, so
    the same seed gives the same weights and the caller's RNG stream is left untouched.
    Parameters are then cast to `dtype`; floating buffers (RoPE frequencies) stay float32
    since rounding them to bf16 would shift positions.
    """
    device = torch.device(device)
    model = build_meta_model(config)
    model.to_empty(device=device)
    fork_devices = [device] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=fork_devices):
        torch.manual_seed(seed)
        model.init_weights()
    if dtype != torch.float32:
        buffers = {n: b.detach().clone() for n, b in model.named_buffers()}
        model.to(dtype)
        for name, value in buffers.items():
            owner, _, attr = name.rpartition(".")
            module = model.get_submodule(owner) if owner else model
            module._buffers[attr] = value
    return model
