"""The allowed values the method owns, as Literals (torch-free, so `lsap.config` can import
them without loading torch). `lsap.config`'s dataclasses annotate with these; the loss and
the schedules validate against the tuples. method/ imports nothing from the rest of lsap."""

from __future__ import annotations

from typing import Literal, get_args

# How the auxiliary term is normalised (METHOD §3).
Normalization = Literal["targets", "tokens", "weighted"]
# λ(t): constant, or cosine (the paper's "anneal").
LambdaScheduleKind = Literal["constant", "cosine"]

# Surrogate tokens that separate documents in pretraining data, in order of preference; else
# the tokenizer's eos. Instruct models (the paper's Qwen3-0.6B) declare a chat eos
# ('<|im_end|>') while their pretraining documents end with '<|endoftext|>'. The one list:
# `lsap.data.tokenizer.document_separator` and `lsap.method.vocab` both read it.
DOC_SEPARATORS = ("<|endoftext|>", "<|end_of_text|>", "</s>", "<eos>", "<|eos|>")

NORMALIZATIONS = get_args(Normalization)
LAMBDA_SCHEDULES = get_args(LambdaScheduleKind)
