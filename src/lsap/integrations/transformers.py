"""LSAP in Hugging Face `transformers.Trainer`: `LSAPTrainer` (+ `WindowDataset`).

    from lsap.integrations.transformers import LSAPTrainer

    trainer = LSAPTrainer(model=model, args=TrainingArguments(...), train_dataset=ds,
                          processing_class=tokenizer, surrogate="smollm2", k=15, alpha=0.05)
    trainer.train()

What it changes in `Trainer` and why (transformers ≥ 4.48; written against 5.x):

- Targets. `get_batch_samples` (Trainer prefetches the micro-batches of one optimizer
  step there) asks the `TargetSource` for every micro-batch's `AuxTargets` before the
  first backward, because Z needs the step's V. Sources: a frozen `surrogate` + vocabulary
  map (`OnlineTargets`; a spec string loads both with `load_surrogate_with_map` against
  `processing_class`), a `target_store` (`StoredTargets`, an `lsap store build` directory;
  train_dataset must be a `WindowDataset`, whose shards and seq_len the store is checked
  against exactly as `lsap train` checks it, and whose batches carry `window_ids`), or
  any `targets=`. All but `targets=` are built by `lsap.surrogate.sources.TargetSpec`.
- The normaliser. `num_items_in_batch` — Trainer's own per-step count of labels, summed
  over the accumulated micro-batches and gathered over processes — becomes the step's
  global Z = `normalizer(N, V, normalization, λ)`: N labelled positions and V auxiliary
  targets over every micro-batch and process. `compute_loss` returns the micro-batch's
  (CE_sum + λ·aux_sum) / Z (× the number of processes, since DDP averages gradients), and
  `loss_is_scaled_for_ga = True` tells `training_step` not to divide again. So
  accumulation and data parallelism never reweight tokens (the global Z is used whether
  or not `average_tokens_across_devices` is set).
- The loss. `lsap_linear_loss` from the decoder's last hidden state and the output head
  weight, chunked over positions: no [N, V] logits. The hidden state is taken with a
  forward hook on the decoder while the (possibly DDP-wrapped) model runs with
  `logits_to_keep=1`, so wrappers see an ordinary forward.
- Labels follow transformers' causal-LM convention (`labels` aligned with `input_ids`,
  shifted inside; -100 ignored; or a collator's `shift_labels`): position i predicts
  labels[i+1], the last position predicts nothing and is not run. Pad on the right.
- Logging. Every Trainer log line gains `ce` (nats/label), `aux` (nats/aux target),
  `aux_per_token` and `lam`, summed over the steps since the previous log (all processes).
- FLOPs. `floating_point_ops` adds the source's surrogate FLOPs per input token (2·N_s,
  METHOD §5; a store charges them per trained token too) to Trainer's 6·N·tokens.
- Evaluation is plain cross-entropy (Trainer's own `compute_loss`).

Not supported: FSDP / DeepSpeed ZeRO-3 (the head weight is read outside the model's
forward) and DataParallel (n_gpu > 1 in one process); use `lsap train` for FSDP.
"""

from __future__ import annotations

import inspect
import os
from collections.abc import Callable, Iterator

import numpy as np
import torch
import transformers

from lsap.data.shards import Batch
from lsap.method.choices import NORMALIZATIONS
from lsap.method.loss import lsap_linear_loss, normalizer
from lsap.method.schedules import LambdaSchedule
from lsap.method.targets import IGNORE, AuxTargets
from lsap.surrogate.sources import TargetSource

_AUX = ("lsap_aux_ids", "lsap_aux_mask", "lsap_aux_weight")


class WindowDataset(torch.utils.data.IterableDataset):
    """lsap token shards as an endless stream of training windows, in `SequenceLoader`'s order.

    Yields {"input_ids": int64 [T+1], "labels": the same, "window_ids": j}: window j is
    tokens [jT, jT + T + 1), epochs visit windows in `default_rng([seed, epoch])` order,
    exactly as `lsap.data.shards.SequenceLoader` does (which also drops an epoch's last
    incomplete global batch; this stream does not). `window_ids` key a target store.
    epochs: None streams forever (training with `max_steps`); 1 gives a finite pass
    (an evaluation set: `WindowDataset(dir, T, split="val", epochs=1)`).
    """

    def __init__(
        self, data, seq_len: int, seed: int = 0, split: str = "train", epochs: int | None = None
    ):
        from lsap.data.shards import TokenShards

        self.shards = data if isinstance(data, TokenShards) else TokenShards(data, split)
        self.seq_len, self.seed, self.epochs = int(seq_len), int(seed), epochs
        self.n_windows = self.shards.n_windows(self.seq_len)

    def __iter__(self) -> Iterator[dict]:
        T, epoch = self.seq_len, 0
        while self.epochs is None or epoch < self.epochs:
            for w in np.random.default_rng([self.seed, epoch]).permutation(self.n_windows):
                ids = torch.from_numpy(self.shards.window(w, T))
                yield {"input_ids": ids, "labels": ids, "window_ids": int(w)}
            epoch += 1


def _lam_schedule(lam) -> Callable[[int, int], float]:
    """λ as (step, total_steps) → float: a number, a `LambdaSchedule`-like callable of the
    step, or a ("cosine", lam0, lam_min) tuple resolved against Trainer's max_steps."""
    from lsap.surrogate.sources import check_method_numbers

    if isinstance(lam, (int, float)):
        check_method_numbers(lam=lam)
        return lambda step, total: float(lam)
    if isinstance(lam, tuple):
        kind, lam0, lam_min = lam
        check_method_numbers(lam=lam0)
        check_method_numbers(lam=lam_min)
        return lambda step, total: LambdaSchedule(kind, float(lam0), float(lam_min), total)(step)
    if callable(lam):

        def checked(step, total):
            value = float(lam(step))
            check_method_numbers(lam=value)
            return value

        return checked
    raise TypeError(
        f"lam must be a number, a callable of the step or ('cosine', lam0, lam_min); got {lam!r}"
    )


class LSAPTrainer(transformers.Trainer):
    """`transformers.Trainer` with the LSAP loss (METHOD §4); see the module doc.

    One of: `surrogate` (a frozen causal LM with `vocab_map`, or a spec string for
    `lsap.surrogate.load.load_surrogate_with_map`; `vocab_map` may then be a saved map dir),
    `target_store` (a directory or `TargetStore`), or `targets` (any `TargetSource`).
    k, alpha: METHOD §3. lam: λ — a number, a callable of the optimizer step, or
    ("cosine", λ0, λ_min) over the run. normalization: "targets" (Z = N + V), "tokens"
    (N) or "weighted" (N + λV). aux_weighting "prob": the weight-by-p ablation.
    gold_outside: "keep" | "skip". chunk_size: positions per head chunk.
    allow_small_intersection: train even when Σ∩ holds (almost) only special tokens.
    """

    loss_is_scaled_for_ga = True

    def __init__(
        self,
        *args,
        surrogate=None,
        vocab_map=None,
        target_store=None,
        targets: TargetSource | None = None,
        k: int = 15,
        alpha: float = 0.05,
        lam=1.0,
        normalization: str = "targets",
        aux_weighting: str = "none",
        gold_outside: str = "keep",
        surrogate_batch_size: int = 0,
        chunk_size: int = 1024,
        allow_small_intersection: bool = False,
        **kwargs,
    ):
        super().__init__(*args, **kwargs)
        if normalization not in NORMALIZATIONS:
            raise ValueError(
                f"normalization must be one of {NORMALIZATIONS}, got {normalization!r}"
            )
        if aux_weighting not in ("none", "prob"):
            raise ValueError(f"aux_weighting must be 'none' or 'prob', got {aux_weighting!r}")
        if self.args.n_gpu > 1:
            raise ValueError(
                "LSAPTrainer does not support DataParallel (n_gpu > 1 in one process); use torchrun"
            )
        self.normalization, self.aux_weighting, self.chunk_size = (
            normalization,
            aux_weighting,
            int(chunk_size),
        )
        self._lam = _lam_schedule(lam)
        self.targets = targets or self._build_source(
            surrogate,
            vocab_map,
            target_store,
            k,
            alpha,
            gold_outside,
            surrogate_batch_size,
            allow_small_intersection,
        )
        self._sums = torch.zeros(
            4, dtype=torch.float64, device=self.args.device
        )  # ce, aux, N, V since the last log
        self._last_lam = self.current_lam()
        self._hidden = None

    # ------------------------------------------------------------------ building
    def _build_source(
        self, surrogate, vocab_map, target_store, k, alpha, gold_outside, batch_size, allow_small
    ):
        """A `lsap.surrogate.sources.TargetSpec` from the trainer's arguments, built like
        `lsap train` builds its own, so a store is checked against the train dataset's shards
        and seq_len exactly as `lsap train` checks it."""
        from lsap.surrogate.sources import TargetSpec

        if (surrogate is None) == (target_store is None):
            raise ValueError(
                "pass exactly one of surrogate= (with vocab_map=), target_store= or targets="
            )
        common = dict(
            vocab_map=vocab_map,
            k=k,
            alpha=alpha,
            gold_outside=gold_outside,
            allow_small_intersection=allow_small,
        )
        if target_store is not None:
            ds = self.train_dataset
            spec = TargetSpec(
                store=target_store,
                batch_size=batch_size or self.args.per_device_train_batch_size,
                **common,
            )
            return spec.build(
                device=self.args.device,
                shards=getattr(ds, "shards", None),
                seq_len=getattr(ds, "seq_len", None),
            )
        if isinstance(surrogate, (str, os.PathLike)) and self.processing_class is None:
            raise ValueError(
                "a surrogate spec needs processing_class= (the base tokenizer) for the map"
            )
        return TargetSpec(surrogate=surrogate, batch_size=batch_size, **common).build(
            device=self.args.device,
            base_tokenizer=self.processing_class,
            base_vocab_size=self.model.config.vocab_size,
        )

    def current_lam(self) -> float:
        return self._lam(self.state.global_step, max(int(self.state.max_steps or 0), 1))

    # ------------------------------------------------------------------ layout
    @staticmethod
    def _lsap_layout(inputs: dict):
        """transformers' layout → lsap's: inputs x [B, T], next-token labels y [B, T], attention mask."""
        ids = inputs["input_ids"]
        attn = inputs.get("attention_mask")
        if "shift_labels" in inputs:
            return ids, inputs["shift_labels"], attn
        labels = inputs["labels"]
        return ids[:, :-1], labels[:, 1:], (attn[:, :-1] if attn is not None else None)

    # ------------------------------------------------------------------ targets and Z
    def get_batch_samples(self, epoch_iterator, num_batches, device):
        batch_samples = []
        for _ in range(num_batches):
            try:
                batch_samples.append(next(epoch_iterator))
            except StopIteration:
                break
        if (
            not batch_samples
            or "labels" not in batch_samples[0]
            and "shift_labels" not in batch_samples[0]
        ):
            return batch_samples, None
        lam = self.current_lam()
        counts = torch.zeros(2, dtype=torch.float64, device=device)
        for inputs in batch_samples:
            x, y, _ = self._lsap_layout(inputs)
            x, y = x.to(device), y.to(device)
            windows = inputs.get("window_ids")
            windows = torch.as_tensor(windows).cpu() if windows is not None else None
            aux: AuxTargets = self.targets(Batch(x, y, windows))
            inputs["lsap_aux_ids"], inputs["lsap_aux_mask"] = aux.ids, aux.mask
            if self.aux_weighting == "prob":
                inputs["lsap_aux_weight"] = aux.probs
            counts += torch.stack([(y != IGNORE).sum(), aux.count]).double()
        if self.accelerator.num_processes > 1:
            counts = self.accelerator.reduce(counts, reduction="sum")
        self._last_lam = lam
        return batch_samples, normalizer(counts[0], counts[1], self.normalization, lam).clamp_min(
            1.0
        )

    # ------------------------------------------------------------------ loss
    def _decoder(self, model):
        lm = self.accelerator.unwrap_model(model)
        decoder = lm.get_decoder() if hasattr(lm, "get_decoder") else lm.model
        head = lm.get_output_embeddings()
        if getattr(head, "bias", None) is not None:
            raise ValueError("LSAPTrainer needs an output head without bias")
        return lm, decoder, head

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        if "lsap_aux_ids" not in inputs:  # evaluation, or batches that bypassed get_batch_samples
            inputs = {k: v for k, v in inputs.items() if k not in (*_AUX, "window_ids")}
            return super().compute_loss(model, inputs, return_outputs=return_outputs)
        aux_ids, aux_mask = inputs["lsap_aux_ids"], inputs["lsap_aux_mask"]
        aux_weight = inputs.get("lsap_aux_weight")
        x, y, attn = self._lsap_layout(inputs)
        lm, decoder, head = self._decoder(model)

        def grab(_module, _args, output):
            self._hidden = output[0] if isinstance(output, tuple) else output.last_hidden_state

        kw = {"attention_mask": attn} if attn is not None else {}
        if "logits_to_keep" in inspect.signature(lm.forward).parameters:
            kw["logits_to_keep"] = (
                1  # the head runs on one position; the loss uses its weight directly
            )
        handle = decoder.register_forward_hook(grab)
        try:
            outputs = model(input_ids=x, use_cache=False, **kw)
        finally:
            handle.remove()
        hidden, self._hidden = self._hidden, None
        # as lsap's LossModule: under Trainer's autocast (bf16=True) the head matmul runs in bf16
        # inside the loss, LSE and gradients in fp32 per chunk
        out = lsap_linear_loss(
            hidden,
            head.weight,
            y,
            aux_ids,
            aux_mask,
            lam=self._last_lam,
            aux_weight=aux_weight,
            chunk_size=self.chunk_size,
        )
        self._sums += (
            torch.stack([out.ce_sum, out.aux_sum, out.n_labels, out.n_aux])
            .double()
            .to(self._sums.device)
        )
        z = (
            num_items_in_batch
            if num_items_in_batch is not None
            else normalizer(out.n_labels, out.n_aux, self.normalization, self._last_lam).clamp_min(
                1
            )
        )
        # DDP averages gradients over processes; Z is already global, so undo the average.
        z = z.to(out.loss.dtype) if torch.is_tensor(z) else float(z)
        loss = out.loss * (self.accelerator.num_processes / z)
        return (loss, outputs) if return_outputs else loss

    # ------------------------------------------------------------------ logging and FLOPs
    def log(self, logs: dict, start_time: float | None = None) -> None:
        if (
            "loss" in logs
        ):  # a training log line: every process gets here (the reduce is collective)
            sums = self._sums
            if self.accelerator.num_processes > 1:
                sums = self.accelerator.reduce(sums.clone(), reduction="sum")
            ce, aux, n, v = (float(t) for t in sums)
            if n > 0:
                logs.update(
                    ce=ce / n, aux=aux / v if v else 0.0, aux_per_token=v / n, lam=self._last_lam
                )
            self._sums.zero_()
        super().log(logs, start_time)

    def floating_point_ops(self, inputs: dict) -> int:
        """Trainer's 6·N·tokens plus the surrogate's FLOPs per token (online or stored)."""
        base = super().floating_point_ops(inputs)
        ids = inputs.get("input_ids")
        return int(base + (self.targets.flops_per_token * ids.numel() if ids is not None else 0))

    def _set_signature_columns_if_needed(self):
        super()._set_signature_columns_if_needed()
        for extra in ("window_ids", "shift_labels"):  # keep them in datasets.Dataset columns
            if extra not in self._signature_columns:
                self._signature_columns.append(extra)
