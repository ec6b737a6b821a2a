"""The surrogate's inference precision (`surrogate.dtype`, `lsap store build --dtype`).

bfloat16 means the body runs in bf16 while the LM head keeps fp32 weights (its own copy
when tied to the input embedding), and the logits, softmax and p > α threshold stay in
fp32 (`lsap.method.targets`). Measured on SmolLM2-135M
(benchmarks/results/surrogate-bf16-cpu-2026-12-04): a bf16 body changes 3.03 % of the
selected candidates at α = 0.05, a bf16 head a further ~1.2 %. Families lsap cannot split
into body and head (`surrogate_body_and_head` is None) run wholly in the dtype asked for.
"""

from __future__ import annotations

import torch


def _head_input_to_its_dtype(head, args):
    (x,) = args
    return (x.to(head.weight.dtype),)


def cast_for_inference(model: torch.nn.Module, dtype: torch.dtype) -> torch.nn.Module:
    """Cast a (float32-loaded) surrogate to `dtype` for inference, keeping a splittable
    model's LM head in fp32. A full `model(...)` forward still works: the head casts its
    bf16 input to fp32 (a pre-hook), so its logits are fp32."""
    from lsap.method.targets import surrogate_body_and_head

    split = surrogate_body_and_head(model) if dtype != torch.float32 else None
    if split is None:
        return model.to(dtype)
    _, head = split
    w32 = head.weight.detach().float().clone()  # untie: the embedding goes to bf16, the head not
    model.to(dtype)
    head.weight = torch.nn.Parameter(w32, requires_grad=False)
    if head.bias is not None:
        head.bias = torch.nn.Parameter(head.bias.detach().float(), requires_grad=False)
    head.register_forward_pre_hook(_head_input_to_its_dtype)
    return model


def head_dtype(model: torch.nn.Module) -> str:
    """The dtype of the weights whose logits decide p > α ("float32", "bfloat16")."""
    from lsap.method.targets import surrogate_body_and_head

    split = surrogate_body_and_head(model)
    w = split[1].weight if split else next(model.parameters())
    return str(w.dtype).removeprefix("torch.")
