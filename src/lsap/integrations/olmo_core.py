"""LSAP inside OLMo-core (`ai2-olmo-core`, the engine that trained OLMo2): `LSAPTrainModule`.

    from lsap.integrations.olmo_core import LSAPTrainModule, plan

    model = TransformerConfig.olmo2_1B(vocab_size=100_352).build(init_device="meta")
    module = LSAPTrainModule(model, AdamWConfig(lr=4e-4), rank_microbatch_size=4 * 1024,
                             max_sequence_length=1024, targets=source, lam=LambdaSchedule(),
                             dp_config=TransformerDataParallelConfig(name="fsdp"), ...)
    trainer = TrainerConfig(..., max_duration=Duration.steps(plan(...).total_steps)).build(module, loader)
    trainer.fit()

OLMo-core's loop (`Trainer.fit`), data loading, parallelism (FSDP2 / HSDP / DDP),
checkpoints (torch.distributed.checkpoint), callbacks and metrics run unchanged. What
this module changes, and why:

- The head. `use_lsap_head(model)` turns the model's `LMHead` into an `LSAPLMHead` (same
  parameters, so checkpoints and HF conversion are untouched). When its labels carry
  auxiliary targets — int64 [B, T, 1 + K]: the gold label, then K base ids, `ignore_index`
  in unused slots (`pack_labels`) — it computes `lsap_linear_loss` from the normed hidden
  states and the (FSDP-unsharded) head weight, chunked: no [B·T, V] logits, with
  OLMo-core's z-loss from the same log-sum-exp. Plain [B, T] labels take OLMo-core's own
  path (evaluation). The targets ride in `labels` because that is the tensor the
  Transformer already carries to the head (and shards with it under CP/TP).
- The step (`LSAPTrainModule.train_batch`, the train module's own extension point). It asks
  the `TargetSource` (`lsap.surrogate.sources.OnlineTargets`: the frozen surrogate on each rank; or
  `lsap.surrogate.sources.StoredTargets`, keyed by OLMo-core's instance `index`) for every
  micro-batch's targets before the first backward, because Z needs the step's V; reduces
  N and V over micro-batches and data-parallel ranks (one all-reduce of two numbers);
  and passes `loss_div_factor = Z / dp_world_size`: every rank's micro-batch loss is
  (CE_sum + λ·aux_sum + m·Σ LSE²) / Z × dp_world_size, and FSDP's (and DDP's) gradient
  averaging divides by dp_world_size again. So accumulation and data parallelism never
  reweight tokens. λ(t) is `lsap.method.schedules.LambdaSchedule` at the step.
- Logging, through OLMo-core's `record_metric` (console, W&B, Comet): `train/CE loss`
  (nats per label, as OLMo-core's), `train/LSAP loss` (what is optimised), `train/LSAP aux`
  (nats per auxiliary target), `train/LSAP aux per token` (V/N), `train/LSAP lambda`,
  `train/Z loss` with z-loss on, and cumulative `throughput/LSAP FLOPs {base,surrogate,total}`
  (METHOD §5: 6·N_b per trained token + the source's 2·N_s, charged per trained token
  whether online or from a store).
- The budget. `plan(...)` is `lsap.method.flops.plan_steps` with those FLOPs per token: a run
  at the paper's 2.3165e20 FLOPs is `Duration.steps(plan(...).total_steps)`.

With λ = 0 and `normalization="tokens"` (or "weighted") a step is OLMo-core's CE step
(Z = N; tests/test_olmo_core.py checks losses and grad norms to fp32 rounding). One
difference on purpose: OLMo-core divides by each rank's own label count (exact only when
ranks hold equally many labels); here Z is global.

`aux_weighting="prob"` (the weight-by-surrogate-p ablation, as `lsap train`): each auxiliary
NLL is weighted by its surrogate probability through `lsap_linear_loss(aux_weight=...)`;
Z still counts targets (V unweighted), as in `lsap train`.

Not supported (refused): tensor / context / pipeline parallelism, a head with a bias,
`logits_to_keep`.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.distributed as dist
from olmo_core.data.utils import get_labels, split_batch
from olmo_core.distributed.utils import get_local_tensor, get_world_size
from olmo_core.nn.lm_head import LMHead
from olmo_core.optim import SkipStepOptimizer
from olmo_core.train.common import ReduceType
from olmo_core.train.train_module import TransformerTrainModule

from lsap.data.shards import Batch
from lsap.method.choices import NORMALIZATIONS
from lsap.method.flops import Budget, FlopsLedger, plan_steps
from lsap.method.loss import lsap_linear_loss, normalizer
from lsap.method.schedules import LambdaSchedule
from lsap.method.targets import AuxTargets
from lsap.surrogate.sources import TargetSource
from lsap.utils.errors import ConfigError, StoreError

__all__ = [
    "LSAPLMHead",
    "LSAPTrainModule",
    "use_lsap_head",
    "pack_labels",
    "base_flops_per_token",
    "plan",
]


class LSAPLMHead(LMHead):
    """OLMo-core's `LMHead` with the LSAP loss for packed labels [B, T, 1 + K].

    lam: λ for the next forward (set per step by `LSAPTrainModule`). chunk_size: rows per
    chunk of `lsap_linear_loss`. No parameters of its own."""

    lam: float = 0.0
    chunk_size: int = 1024
    aux_weight: torch.Tensor | None = None  # [B, T, K] for the next forward (prob ablation)

    def forward(
        self,
        x,
        *,
        labels=None,
        ignore_index: int = -100,
        loss_reduction="mean",
        z_loss_multiplier=None,
        loss_div_factor=None,
        return_logits=None,
        logits_to_keep=0,
    ):
        if labels is None or labels.dim() == x.dim() - 1:  # plain labels: OLMo-core's own head
            return super().forward(
                x,
                labels=labels,
                ignore_index=ignore_index,
                loss_reduction=loss_reduction,
                z_loss_multiplier=z_loss_multiplier,
                loss_div_factor=loss_div_factor,
                return_logits=return_logits,
                logits_to_keep=logits_to_keep,
            )
        if (
            loss_reduction != "sum"
            or return_logits
            or (isinstance(logits_to_keep, int) and logits_to_keep != 0)
            or not isinstance(logits_to_keep, int)
        ):
            raise ValueError(
                "LSAPLMHead with auxiliary targets needs loss_reduction='sum', no logits and "
                "no logits_to_keep"
            )
        if self.w_out.bias is not None:
            raise ConfigError(
                "LSAP's head loss has no bias term; build the model with lm_head bias=False (OLMo2's)"
            )
        if self.tp_enabled or self.cp_enabled:
            raise ConfigError(
                "LSAPLMHead does not support tensor/context parallelism; use FSDP/HSDP/DDP"
            )
        h = self.norm(x) if self.norm is not None else x
        labels = get_local_tensor(labels)
        w = self.aux_weight
        if w is not None:
            if w.shape != labels[..., 1:].shape:
                raise ValueError(
                    f"aux_weight {tuple(w.shape)} does not match the packed targets "
                    f"{tuple(labels[..., 1:].shape)}"
                )
            w = w.to(labels.device)
        out = lsap_linear_loss(
            get_local_tensor(h),
            get_local_tensor(self.w_out.weight),
            labels[..., 0],
            labels[..., 1:],
            labels[..., 1:] != ignore_index,
            lam=self.lam,
            ignore_index=ignore_index,
            chunk_size=self.chunk_size,
            z_loss=float(z_loss_multiplier or 0.0),
            aux_weight=w,
        )
        div = 1.0 if loss_div_factor is None else loss_div_factor
        # loss: (ce + λ·aux + m·z) / div, to backprop; ce_sum, aux_sum, z_sum: detached sums
        # (aux unscaled by λ, z unscaled by m), which `LSAPTrainModule` reduces itself.
        return out._replace(loss=out.loss / div)


def use_lsap_head(model) -> LSAPLMHead:
    """Turn `model.lm_head` (an OLMo-core `LMHead`) into an `LSAPLMHead` in place and
    return it. Call before the model is parallelised (`LSAPTrainModule` does)."""
    head = model.lm_head
    if type(head) is LMHead:
        head.__class__ = LSAPLMHead
    elif not isinstance(head, LSAPLMHead):
        raise ConfigError(
            f"LSAP needs OLMo-core's default LMHead, the model has {type(head).__name__}"
        )
    return head


def pack_labels(
    labels: torch.Tensor, aux: AuxTargets | None, ignore_index: int = -100
) -> torch.Tensor:
    """labels [B, T] + targets (ids/mask [B, T, K]) → int64 [B, T, 1 + K]: the gold label,
    then the selected auxiliary ids, `ignore_index` in unused slots (K = 0 without targets)."""
    if aux is None:
        return labels[..., None]
    ids = torch.where(aux.mask, aux.ids.to(labels.device), ignore_index).to(labels.dtype)
    if ids.shape[:2] != labels.shape:
        raise StoreError(
            f"targets {tuple(ids.shape[:2])} do not match the batch {tuple(labels.shape)}: "
            "was the store built with the OLMo-core window layout and this sequence length?"
        )
    return torch.cat([labels[..., None], ids], dim=-1)


def base_flops_per_token(model) -> float:
    """6·N_b FLOPs per trained token (METHOD §5): every parameter of the OLMo-core model,
    whose embedding and output head are separate matrices."""
    return 6.0 * sum(p.numel() for p in model.parameters())


def plan(
    model,
    global_batch_tokens: int,
    targets: TargetSource | None = None,
    *,
    max_steps: int = 0,
    max_tokens: float = 0,
    max_flops: float = 0,
) -> Budget:
    """`lsap.method.flops.plan_steps` for an OLMo-core run: steps from the budget at 6·N_b (+ the
    source's 2·N_s) FLOPs per trained token."""
    fpt = base_flops_per_token(model) + (targets.flops_per_token if targets is not None else 0.0)
    return plan_steps(
        global_batch_tokens, fpt, max_steps=max_steps, max_tokens=max_tokens, max_flops=max_flops
    )


def _check_store(targets, seq_len: int) -> None:
    store = getattr(targets, "store", None)  # a StoredTargets source
    if store is None:
        return
    layout = getattr(store, "window_layout", None) or store.manifest.get("window_layout", "lsap")
    if layout != "olmo":
        raise StoreError(
            f"{store.dir}: built with window_layout {layout!r}; OLMo-core's instances need the "
            "'olmo' layout — rebuild with `lsap store build ... --window-layout olmo`"
        )
    if int(store.seq_len) != int(seq_len):
        raise StoreError(
            f"{store.dir}: built for seq_len {store.seq_len}, this run uses {seq_len}; "
            f"rebuild with `lsap store build ... --seq-len {seq_len} --window-layout olmo`"
        )


class LSAPTrainModule(TransformerTrainModule):
    """OLMo-core's `TransformerTrainModule` training with the LSAP loss (see the module doc).

    targets: the run's `TargetSource` (None: plain CE through the same head).
    lam: a `LambdaSchedule` (or a constant λ). Its step is OLMo-core's `global_step - 1`.
    normalization: Z = "targets" (N + V), "tokens" (N) or "weighted" (N + λ·V).
    chunk_size: rows per chunk of the head loss. aux_weighting: "none" (the method) or "prob"
    (the ablation: aux NLLs weighted by surrogate p). Other arguments: `TransformerTrainModule`'s
    (`z_loss_multiplier` included).
    """

    def __init__(
        self,
        model,
        optim,
        rank_microbatch_size: int,
        max_sequence_length: int,
        *,
        targets: TargetSource | None = None,
        lam: LambdaSchedule | float = 1.0,
        normalization: str = "targets",
        chunk_size: int = 1024,
        aux_weighting: str = "none",
        **kwargs: Any,
    ):
        if normalization not in NORMALIZATIONS:
            raise ConfigError(
                f"normalization must be one of {NORMALIZATIONS}, got {normalization!r}"
            )
        if aux_weighting not in ("none", "prob"):
            raise ConfigError(f"aux_weighting must be 'none' or 'prob', got {aux_weighting!r}")
        self.aux_weighting = aux_weighting
        for unsupported in ("tp_config", "cp_config", "ep_config"):
            if kwargs.get(unsupported) is not None:
                raise ConfigError(
                    f"LSAPTrainModule does not support {unsupported} (use FSDP/HSDP/DDP)"
                )
        self.lsap_head = use_lsap_head(model)
        self.lsap_head.chunk_size = int(chunk_size)
        _check_store(targets, max_sequence_length)
        self.targets = targets
        self.lam = (
            lam if isinstance(lam, LambdaSchedule) else LambdaSchedule("constant", float(lam))
        )
        self.normalization = normalization
        self.ledger = FlopsLedger(
            base_flops_per_token(model), targets.flops_per_token if targets else 0.0
        )
        super().__init__(model, optim, rank_microbatch_size, max_sequence_length, **kwargs)

    # ------------------------------------------------------------------ targets
    def _aux(self, mb: dict[str, Any]) -> AuxTargets | None:
        if self.targets is None:
            return None
        index = mb.get("index")
        if index is None and getattr(self.targets, "store", None) is not None:
            raise StoreError(
                "a target store is keyed by OLMo-core's instance index, but the batch has no 'index' "
                "(use OLMo-core's NumpyFSLDataset / NumpyDataLoader)"
            )
        window_ids = (
            index.cpu()
            if index is not None
            else torch.zeros(mb["input_ids"].shape[0], dtype=torch.long)
        )
        return self.targets(Batch(mb["input_ids"], mb["labels"], window_ids))

    def _global_counts(self, n: torch.Tensor, v: torch.Tensor) -> tuple[float, float]:
        t = torch.stack([n, v]).to(self.device, torch.float64)
        if self.dp_process_group is not None or dist.is_initialized():
            dist.all_reduce(t, group=self.dp_process_group)
        return float(t[0]), float(t[1])

    # ------------------------------------------------------------------ the step
    def train_batch(self, batch: dict[str, Any], dry_run: bool = False):
        self._set_model_mode("train")
        ignore = self.label_ignore_index
        if "labels" not in batch:
            batch["labels"] = get_labels(batch, label_ignore_index=ignore)
        labels = batch["labels"]
        step = max(self.trainer.global_step - 1, 0)
        lam = float(self.lam(step))
        seq_len = batch["input_ids"].shape[1]
        if self.rank_microbatch_size < seq_len:
            raise RuntimeError(
                f"Microbatch size ({self.rank_microbatch_size}) is too small relative to "
                f"sequence length ({seq_len})"
            )
        micro_batches = split_batch(batch, self.rank_microbatch_size // seq_len)
        del batch

        # 1. every micro-batch's targets before the first backward: Z needs the step's V.
        n_local = (labels != ignore).sum()
        v_local, weights = self._pack_targets(micro_batches, labels.device, ignore, dry_run)
        self.record_metric(
            "train/masked labels (%)", (labels.numel() - n_local) / labels.numel(), ReduceType.mean
        )

        # 2. one global Z per optimizer step (micro-batches and data-parallel ranks).
        N, V = self._global_counts(n_local, v_local)
        Z = float(normalizer(N, V, self.normalization, lam))
        dp_ws = get_world_size(self.dp_process_group) if dist.is_initialized() else 1
        div = torch.tensor(
            max(Z, 1.0) / dp_ws, device=self.device
        )  # FSDP/DDP average gradients over dp ranks
        self.lsap_head.lam = lam

        # 3. OLMo-core's micro-batch loop, with the LSAP head loss.
        acc = {k: torch.zeros((), device=self.device) for k in ("ce", "aux", "z")}
        for i, mb in enumerate(micro_batches):
            with self._train_microbatch_context(i, len(micro_batches)):
                input_ids, mlabels, model_kwargs = self._prepare_batch(mb)
                self.lsap_head.aux_weight = weights[i]
                out = self.model_forward(
                    input_ids,
                    labels=mlabels,
                    ignore_index=ignore,
                    loss_reduction="sum",
                    z_loss_multiplier=self.z_loss_multiplier,
                    loss_div_factor=div,
                    return_logits=False,
                    **model_kwargs,
                )
                acc["ce"] += get_local_tensor(out.ce_sum)
                acc["aux"] += get_local_tensor(out.aux_sum)
                acc["z"] += get_local_tensor(out.z_sum)
                out.loss.backward()
        self.lsap_head.aux_weight = None
        self.model.post_batch(dry_run=dry_run)
        if dry_run:
            self.model.reset_auxiliary_metrics()
            return

        self._record_step(acc, N, V, Z, lam)

    def _pack_targets(self, micro_batches, device, ignore: int, dry_run: bool):
        """Every micro-batch's targets packed into its labels (in place); returns the local
        target count V and the per-micro-batch probability weights (None: unweighted)."""
        v_local = torch.zeros((), dtype=torch.long, device=device)
        weights: list[torch.Tensor | None] = []
        for mb in micro_batches:
            aux = None if dry_run else self._aux(mb)
            if aux is not None:
                aux = AuxTargets(
                    aux.ids,
                    aux.mask & (mb["labels"] != ignore)[..., None].to(aux.mask.device),
                    aux.probs,
                )
                v_local = v_local + aux.count.to(v_local.device)
            prob = aux is not None and self.aux_weighting == "prob"
            weights.append(torch.where(aux.mask, aux.probs, 0.0).float() if prob else None)
            mb["labels"] = pack_labels(mb["labels"], aux, ignore)
        return v_local, weights

    def _record_step(self, acc: dict, N: float, V: float, Z: float, lam: float) -> None:
        """4. metrics: local sums over global counts, summed over ranks; FLOPs."""
        Nd = max(N, 1.0)
        ce = acc["ce"] / Nd
        if isinstance(self.optim, SkipStepOptimizer):
            ce_all = ce.clone()
            if dist.is_initialized():
                dist.all_reduce(ce_all, group=self.dp_process_group)
            self.optim.latest_loss = ce_all
        self.record_ce_loss(ce, ReduceType.sum)
        m = float(self.z_loss_multiplier or 0.0)
        self.record_metric(
            "LSAP loss",
            (acc["ce"] + lam * acc["aux"] + m * acc["z"]) / max(Z, 1.0),
            ReduceType.sum,
            namespace="train",
        )
        self.record_metric("LSAP aux", acc["aux"] / max(V, 1.0), ReduceType.sum, namespace="train")
        self.record_metric("LSAP aux per token", V / Nd, ReduceType.mean, namespace="train")
        self.record_metric("LSAP lambda", lam, ReduceType.mean, namespace="train")
        if m:
            self.record_metric("Z loss", m * acc["z"] / Nd, ReduceType.sum, namespace="train")
            self.record_metric("Z loss unscaled", acc["z"] / Nd, ReduceType.sum, namespace="train")
        # FLOPs: a pure function of the step (fixed-size batches), so it survives a resume.
        tokens = self.trainer.global_step * self.trainer.global_batch_size
        self.ledger.load_state_dict(
            {"base_flops": 0.0, "surrogate_flops": 0.0, "tokens": 0, "surrogate_tokens": 0}
        )
        self.ledger.add(tokens, tokens if self.targets is not None else 0)
        for name, val in (
            ("base", self.ledger.base_flops),
            ("surrogate", self.ledger.surrogate_flops),
            ("total", self.ledger.total),
        ):
            self.record_metric(f"LSAP FLOPs {name}", val, None, namespace="throughput")
        for metric_name, (metric_val, reduction) in self.model.compute_auxiliary_metrics(
            reset=True
        ).items():
            self.record_metric(metric_name, metric_val, reduction, namespace="train")
