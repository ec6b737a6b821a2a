"""The model card (model/README.md) written into every checkpoint's exportable model folder."""

from __future__ import annotations

import yaml


def model_card(config_yaml: str, meta: dict) -> str:
    """What the model is, how it was trained (objective, surrogate, α, k, λ), its FLOPs and
    tokens at this checkpoint, the provenance, and where the full config lives."""
    from lsap.utils.provenance import provenance

    cfg = yaml.safe_load(config_yaml) or {}
    lsap_cfg = cfg.get("lsap") or {}
    objective = str(cfg.get("loss") or "ce")
    surrogate = (cfg.get("surrogate") or {}).get("model")
    lines = [
        "---",
        "library_name: transformers",
        "tags: [lsap, pretraining]",
        "---",
        "",
        f"# {cfg.get('name') or 'lsap checkpoint'} (step {meta.get('step')})",
        "",
        "A causal language model pretrained from scratch with lsap (surrogate-assisted "
        "pretraining: cross-entropy plus, for LSAP runs, an auxiliary loss on a frozen "
        "surrogate's likely next tokens).",
        "",
        "## Training",
        "",
        f"- objective: {objective}",
        f"- surrogate: {surrogate or 'none'}",
        *(
            f"- {k}: {lsap_cfg[k]}"
            for k in ("alpha", "k", "lam", "lambda_schedule")
            if k in lsap_cfg and objective != "ce"
        ),
        f"- data: {(cfg.get('data') or {}).get('dir')}, seq_len {(cfg.get('data') or {}).get('seq_len')}",
        f"- tokens trained: {meta.get('tokens')}",
        f"- FLOPs: {meta.get('flops')} total ({meta.get('flops_base')} base, "
        f"{meta.get('flops_surrogate_paid')} surrogate paid)",
        "- config: `../config.yaml` (the resolved training config of this checkpoint)",
        "",
        "## Provenance",
        "",
        *(f"- {k}: {v}" for k, v in provenance().items()),
        "",
    ]
    return "\n".join(lines)
