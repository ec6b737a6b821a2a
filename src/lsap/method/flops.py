"""FLOP accounting for matched-compute comparisons (METHOD §5).

Conventions
-----------
N (parameters): every parameter of the causal LM, counted on a meta-device instance of
its config (shapes only), with the output head counted as its own V×d matrix even when
it is tied to the input embedding. Why count the tied head again: the FLOPs of a
forward pass are those of its matmuls, and the logits matmul h·Wᵀ (d → V) costs 2·V·d
per token whether or not W is shared with the embedding lookup. The embedding lookup
itself is a gather (no FLOPs) but is kept in N, following the paper's figures (which
fit N_b = 1.485e9 for OLMo2-1B, embedding included).

Training (base model B): 6·N_b per token. The forward pass does one multiply-add (2
FLOPs) per weight per token; the backward pass does two matmuls of the same size (the
gradient w.r.t. the activations and w.r.t. the weights), 4 FLOPs: 2 + 4 = 6
(Kaplan et al. 2020; Hoffmann et al. 2022).

Inference (frozen surrogate S): 2·N_s per surrogate token — forward only, no backward.

Attention (optional, off by default since the paper's figures fit 6N/2N): the
score and value matmuls QKᵀ and AV are not weight matmuls, so 6N misses them. We use
the PaLM convention (Chowdhery et al. 2022, App. B): training adds 12·L·H·Q·T FLOPs per
token, L layers, H query heads, Q head dim, T sequence length (forward 2·2·L·H·Q·T for
the two matmuls, ×3 for forward+backward; full T, no causal halving). Inference adds
the forward third: 4·L·H·Q·T.

Matched FLOPs. A CE run of `D` base tokens costs C = 6·N_b·D. LSAP also runs S on the
same text, so each base token costs 6·N_b + 2·N_s·r, r = surrogate tokens per base
token (the paper's accounting uses r = 1). At the same C LSAP sees
D_lsap = C / (6·N_b + 2·N_s·r) tokens: OLMo2-1B + Qwen3-0.6B gives
6·1.485e9 / (6·1.485e9 + 2·0.752e9) ≈ 0.856, i.e. ≈ 14.4% fewer tokens.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass

__all__ = [
    "Budget",
    "plan_steps",
    "count_params",
    "train_flops_per_token",
    "inference_flops_per_token",
    "attention_flops_per_token",
    "tokens_at_matched_flops",
    "matched_flops",
    "FlopsLedger",
    "PEAK_BF16_DENSE_FLOPS",
    "peak_flops_for_device",
    "mfu",
]


def _config_key(config) -> str:
    return json.dumps(config.to_dict(), sort_keys=True, default=str)


_PARAM_COUNTS: dict[tuple[str, bool], int] = {}


def count_params(config, untied_head: bool = True) -> int:
    """Number of parameters N of `config`'s causal LM, from a meta-device instance.

    untied_head: count a tied output head again as its own (V × d) matrix (the FLOPs
        convention); False gives the stored parameter count.
    Cached per config content, so repeated calls are free.
    """
    key = (_config_key(config), bool(untied_head))
    if key not in _PARAM_COUNTS:
        from lsap.model import build_meta_model

        model = build_meta_model(config)
        # parameters() de-duplicates shared tensors, so a tied head appears once (as the
        # embedding); add it back as its own matmul when asked to.
        n = sum(p.numel() for p in model.parameters())
        if untied_head:
            head, emb = model.get_output_embeddings(), model.get_input_embeddings()
            if head is not None and emb is not None and head.weight is emb.weight:
                n += head.weight.numel()
        _PARAM_COUNTS[key] = int(n)
    return _PARAM_COUNTS[key]


def attention_flops_per_token(config, seq_len: int, training: bool = True) -> float:
    """PaLM attention term: 12·L·H·Q·T per token when training, 4·L·H·Q·T for inference."""
    n_layers = config.num_hidden_layers
    n_heads = config.num_attention_heads
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // n_heads
    per = 12 if training else 4
    return float(per * n_layers * n_heads * head_dim * int(seq_len))


def train_flops_per_token(config, seq_len: int | None = None) -> float:
    """6·N_b (+ 12·L·H·Q·T when `seq_len` is given) FLOPs per trained base token."""
    flops = 6.0 * count_params(config, untied_head=True)
    if seq_len:
        flops += attention_flops_per_token(config, seq_len, training=True)
    return flops


def inference_flops_per_token(config, seq_len: int | None = None) -> float:
    """2·N_s (+ 4·L·H·Q·T when `seq_len` is given) FLOPs per surrogate forward token."""
    flops = 2.0 * count_params(config, untied_head=True)
    if seq_len:
        flops += attention_flops_per_token(config, seq_len, training=False)
    return flops


def tokens_at_matched_flops(
    budget_flops: float,
    base_cfg,
    surrogate_cfg=None,
    *,
    seq_len: int | None = None,
    surrogate_tokens_per_base_token: float = 1.0,
) -> float:
    """Base tokens a run can train on for `budget_flops`.

    CE (surrogate_cfg None): C / (6·N_b). LSAP: C / (6·N_b + 2·N_s·r),
    r = `surrogate_tokens_per_base_token` (1.0 in the paper's accounting).
    `seq_len` switches the attention terms on for both models.
    """
    per_token = train_flops_per_token(base_cfg, seq_len)
    if surrogate_cfg is not None:
        per_token += surrogate_tokens_per_base_token * inference_flops_per_token(
            surrogate_cfg, seq_len
        )
    return float(budget_flops) / per_token


def matched_flops(
    base: str = "olmo2-1b",
    surrogate: str | None = "qwen3-0.6b",
    *,
    tokens: float | None = None,
    flops: float | None = None,
    base_vocab_size: int | None = None,
    surrogate_vocab_size: int | None = None,
    surrogate_tokens_per_base_token: float = 1.0,
    seq_len: int | None = None,
) -> dict:
    """FLOPs of a CE run and the LSAP tokens it buys at matched FLOPs (`lsap flops`).

    `base` / `surrogate`: preset names or config.json / HF directories (`surrogate` None or
    "none": a CE-only report). The budget is `flops`, or the FLOPs of a CE run of `tokens`
    base tokens (default 26e9, the paper's). Returns the report as a flat dict.
    """
    from lsap.model import load_model_config

    if tokens is not None and flops is not None:
        raise ValueError("give tokens or flops, not both")
    base_cfg = load_model_config(base, base_vocab_size)
    sur_cfg = None
    if surrogate and surrogate.lower() != "none":
        sur_cfg = load_model_config(surrogate, surrogate_vocab_size)
    r = surrogate_tokens_per_base_token
    base_fpt = train_flops_per_token(base_cfg, seq_len)
    sur_fpt = inference_flops_per_token(sur_cfg, seq_len) if sur_cfg is not None else 0.0
    lsap_fpt = base_fpt + r * sur_fpt
    if flops is not None:
        budget = float(flops)
        ce_tokens = tokens_at_matched_flops(budget, base_cfg, seq_len=seq_len)
    else:
        ce_tokens = float(tokens if tokens is not None else 26e9)
        budget = ce_tokens * base_fpt
    lsap_tokens = tokens_at_matched_flops(
        budget, base_cfg, sur_cfg, seq_len=seq_len, surrogate_tokens_per_base_token=r
    )
    return {
        "base": base,
        "surrogate": surrogate if sur_cfg is not None else None,
        "base_params": count_params(base_cfg),
        "base_params_stored": count_params(base_cfg, untied_head=False),
        "surrogate_params": count_params(sur_cfg) if sur_cfg is not None else 0,
        "surrogate_params_stored": count_params(sur_cfg, untied_head=False)
        if sur_cfg is not None
        else 0,
        "base_flops_per_token": base_fpt,
        "surrogate_flops_per_token": sur_fpt,
        "surrogate_tokens_per_base_token": r,
        "lsap_flops_per_token": lsap_fpt,
        "attention_seq_len": seq_len,
        "budget_flops": budget,
        "ce_tokens": ce_tokens,
        "ce_flops": ce_tokens * base_fpt,
        "lsap_tokens_at_matched_flops": lsap_tokens,
        "lsap_token_reduction": 1.0 - lsap_tokens / ce_tokens,
        "lsap_flops_at_ce_tokens": ce_tokens * lsap_fpt,
    }


@dataclass
class FlopsLedger:
    """Cumulative FLOPs of a run, base and surrogate separately.

    base_flops_per_token: 6·N_b (see `train_flops_per_token`).
    surrogate_flops_per_token: 2·N_s, or 0 for a CE run.
    Counters are Python floats/ints: exact for token counts up to 2**53 and with
    ~1e-16 relative error on FLOPs, far below anything we compare.
    Surrogate FLOPs are charged when surrogate tokens are processed, whether online or
    while building an offline target cache, so matched-FLOPs comparisons stay honest.
    """

    base_flops_per_token: float
    surrogate_flops_per_token: float = 0.0
    base_flops: float = 0.0
    surrogate_flops: float = 0.0
    tokens: int = 0
    surrogate_tokens: int = 0

    @classmethod
    def from_configs(cls, base_cfg, surrogate_cfg=None, seq_len: int | None = None) -> FlopsLedger:
        return cls(
            base_flops_per_token=train_flops_per_token(base_cfg, seq_len),
            surrogate_flops_per_token=(
                inference_flops_per_token(surrogate_cfg, seq_len)
                if surrogate_cfg is not None
                else 0.0
            ),
        )

    def add(self, base_tokens: int, surrogate_tokens: int = 0) -> None:
        """Charge `base_tokens` trained base tokens and `surrogate_tokens` surrogate forward tokens."""
        if base_tokens < 0 or surrogate_tokens < 0:
            raise ValueError("token counts must be non-negative")
        self.tokens += int(base_tokens)
        self.surrogate_tokens += int(surrogate_tokens)
        self.base_flops += self.base_flops_per_token * base_tokens
        self.surrogate_flops += self.surrogate_flops_per_token * surrogate_tokens

    @property
    def total(self) -> float:
        """base_flops + surrogate_flops."""
        return self.base_flops + self.surrogate_flops

    def state_dict(self) -> dict:
        return asdict(self)

    def load_state_dict(self, state: dict) -> None:
        for key, value in state.items():
            if key not in self.__dataclass_fields__:
                raise KeyError(f"unknown FlopsLedger field {key!r}")
            setattr(self, key, type(getattr(self, key))(value))


# Peak dense bf16 tensor-core FLOP/s per GPU, without sparsity (vendor datasheets).
# Order matters: the first substring found in the device name wins.
PEAK_BF16_DENSE_FLOPS: dict[str, float] = {
    "H100 PCIe": 756e12,
    "H100 NVL": 835e12,
    "H100": 989e12,  # SXM
    "H200": 989e12,  # also matches GH200 (same Hopper tensor cores)
    "A100": 312e12,
    "L40S": 362e12,
    "A10G": 70e12,
}


def peak_flops_for_device(device=None) -> float | None:
    """Peak bf16 dense FLOP/s of a CUDA device from its name; None on CPU or unknown GPUs."""
    import torch

    if device is None:
        if not torch.cuda.is_available():
            return None
        device = torch.device("cuda", torch.cuda.current_device())
    device = torch.device(device)
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    for key in PEAK_BF16_DENSE_FLOPS:  # specific names ("H100 PCIe") precede "H100"
        if key in name:
            return PEAK_BF16_DENSE_FLOPS[key]
    return None


def mfu(flops_per_sec: float, peak_flops: float | None) -> float | None:
    """Model FLOPs utilisation: achieved model FLOP/s over the hardware peak (None if unknown)."""
    if not peak_flops:
        return None
    return float(flops_per_sec) / float(peak_flops)


@dataclass
class Budget:
    """How many optimizer steps a run takes, and which limit decided it."""

    total_steps: int
    tokens_per_step: int
    flops_per_step: float
    limited_by: str


def plan_steps(
    tokens_per_step: int,
    flops_per_token: float,
    *,
    max_steps: int = 0,
    max_tokens: float = 0,
    max_flops: float = 0,
) -> Budget:
    """The one budget rule: steps = the smallest of max_steps, ⌊max_tokens / tokens per
    step⌋ and ⌊max_flops / FLOPs per step⌋ (zeros ignored). FLOPs per step =
    tokens_per_step · flops_per_token, where flops_per_token is what the run is charged
    per trained token (6·N_b + the surrogate's 2·N_s for LSAP, METHOD §5). Used by
    `lsap train`, the sweep and the quickstart, so all three agree to the step."""
    flops_per_step = float(tokens_per_step) * float(flops_per_token)
    options = []
    if max_steps:
        options.append((int(max_steps), "max_steps"))
    if max_tokens:
        options.append((int(max_tokens // tokens_per_step), "max_tokens"))
    if max_flops:
        options.append((int(max_flops // flops_per_step), "max_flops"))
    if not options:
        raise ValueError("no budget: set one of max_steps, max_tokens, max_flops")
    steps, by = min(options)
    return Budget(steps, int(tokens_per_step), flops_per_step, by)
