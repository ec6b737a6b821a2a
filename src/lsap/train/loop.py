"""The training loop: build, step, log, evaluate, checkpoint — no math of its own.

The loss is `lsap.method.loss` (sum-reduced); each optimizer step divides the gradients once
by the step's global Z (labels + auxiliary targets, all-reduced over ranks and
micro-batches), so accumulation and data parallelism never reweight tokens.
"""

from __future__ import annotations

import json
import math
import random
import shutil
import time
from contextlib import nullcontext, redirect_stderr, redirect_stdout
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from lsap import distributed
from lsap.config import Config, validate
from lsap.method.flops import (
    Budget,
    FlopsLedger,
    mfu,
    peak_flops_for_device,
    plan_steps,
    train_flops_per_token,
)
from lsap.method.loss import LSAPLossOutput, lsap_linear_loss, lsap_loss, normalizer
from lsap.method.schedules import LambdaSchedule, LRSchedule
from lsap.method.targets import IGNORE
from lsap.train import checkpoint
from lsap.train.console import Console
from lsap.train.optim import build_optimizer
from lsap.utils.errors import ConfigError, TrainingError
from lsap.utils.io import atomic_write_text
from lsap.utils.logging import get_logger

log = get_logger(__name__)


class LossModule(torch.nn.Module):
    """Causal LM + LSAP loss in one forward, so DDP/FSDP wrap one module.

    impl "linear": final hidden states and the head weight go to `lsap_linear_loss`
    (no [N, V] logits); "logits": the model's logits go to `lsap_loss`.
    Returns `lsap.method.loss.LSAPLossOutput` (sums and counts: the trainer divides by the
    step's global Z).
    """

    def __init__(
        self,
        lm: torch.nn.Module,
        impl: str = "linear",
        *,
        compile_loss: bool = False,
        label_smoothing: float = 0.0,
    ):
        super().__init__()
        self.lm, self.impl, self.label_smoothing = lm, impl, float(label_smoothing)
        self.chunk_impl = "compile" if compile_loss else "eager"

    def forward(
        self, input_ids, labels, aux_ids=None, aux_mask=None, aux_weight=None, lam: float = 0.0
    ):
        kw = dict(lam=lam, aux_weight=aux_weight)
        if self.label_smoothing:
            return self._smoothed(input_ids, labels)
        if self.impl == "linear":
            hidden = self.lm.model(input_ids=input_ids).last_hidden_state
            # Under autocast the head matmul runs in bf16 inside the loss (LSE and grads in
            # fp32 per chunk); hidden (the fp32 residual stream) and the fp32 weight get
            # their gradients back in fp32.
            out = lsap_linear_loss(
                hidden,
                self.lm.lm_head.weight,
                labels,
                aux_ids,
                aux_mask,
                **kw,
                impl=self.chunk_impl,
            )
        else:
            logits = self.lm(input_ids=input_ids).logits
            with torch.autocast(logits.device.type, enabled=False):
                out = lsap_loss(logits, labels, aux_ids, aux_mask, **kw)
        return out

    def _smoothed(self, input_ids, labels):
        """CE with label smoothing ε (torch's definition: (1−ε)·NLL(gold) + ε·mean_v NLL(v)
        over the model's whole vocabulary), a baseline arm; ce_sum stays the plain NLL."""
        logits = self.lm(input_ids=input_ids).logits
        with torch.autocast(logits.device.type, enabled=False):
            flat, lab = logits.float().reshape(-1, logits.shape[-1]), labels.reshape(-1)
            loss = F.cross_entropy(
                flat,
                lab,
                ignore_index=IGNORE,
                reduction="sum",
                label_smoothing=self.label_smoothing,
            )
            ce = F.cross_entropy(flat.detach(), lab, ignore_index=IGNORE, reduction="sum")
        zero = torch.zeros((), device=logits.device)
        return LSAPLossOutput(loss, ce, zero, (lab != IGNORE).sum(), zero.long(), zero)


def plan_budget(cfg: Config, ledger: FlopsLedger) -> Budget:
    """Steps from the smallest positive budget among max_steps / max_tokens / max_flops."""
    t = cfg.train
    b = plan_steps(
        t.batch_size * cfg.data.seq_len,
        ledger.base_flops_per_token + ledger.surrogate_flops_per_token,
        max_steps=t.max_steps,
        max_tokens=t.max_tokens,
        max_flops=t.max_flops,
    )
    if b.total_steps <= 0:
        raise TrainingError(
            f"the budget ({b.limited_by}) is smaller than one optimizer step "
            f"({b.tokens_per_step:,} tokens, {b.flops_per_step:.3g} FLOPs); raise it or shrink the batch"
        )
    return b


# --------------------------------------------------------------------------- building
@dataclass
class Components:
    """Everything a run is built from its config (`build_components`); `Trainer` runs the loop on it."""

    shards: object  # lsap.data.shards.TokenShards, the train split
    val: object | None  # the val split, None when it is shorter than one window
    tokenizer: object
    model_config: object
    lm: torch.nn.Module
    targets: object | None  # a `lsap.surrogate.sources.TargetSource`; None for CE
    ledger: FlopsLedger
    budget: Budget
    accum: int  # micro-batches per optimizer step on each rank
    module: LossModule
    wrapped: torch.nn.Module  # `module` under DDP / FSDP (itself on one process)
    opt: torch.optim.Optimizer
    lr_at: LRSchedule
    lam_at: LambdaSchedule | None
    loader: object  # lsap.data.shards.SequenceLoader
    autocast: bool


def build_components(cfg: Config, d: distributed.Dist) -> Components:
    """Data, tokenizer, model, target source, ledger, budget, wrapping, optimizer, schedules and
    loader from a validated config, in this order (torchtitan / OLMo-core style: the trainer
    builds nothing). Rank 0 writes the run's vocabulary map (and a store's provenance) to out_dir."""
    from lsap.data.shards import SequenceLoader, TokenShards
    from lsap.data.tokenizer import load_tokenizer, padded_vocab_size
    from lsap.model import build_model, model_config

    dev = d.device
    autocast = (cfg.train.precision == "bf16") or (
        cfg.train.precision == "auto" and dev.type == "cuda"
    )

    # ---- data and tokenizer --------------------------------------------------
    shards = TokenShards(cfg.data.dir, "train")
    tokenizer = load_tokenizer(shards.manifest["tokenizer"]["spec"])
    shards.check_tokenizer(tokenizer)
    val = None
    if (
        "val" in shards.manifest["splits"]
        and shards.manifest["splits"]["val"]["tokens"] > cfg.data.seq_len
    ):
        val = TokenShards(cfg.data.dir, "val")

    # ---- base model ----------------------------------------------------------
    vsize = cfg.model.vocab_size or padded_vocab_size(tokenizer)
    specials = {
        f"{r}_token_id": getattr(tokenizer, f"{r}_token_id", None) for r in ("bos", "eos", "pad")
    }
    overrides = {**{k: v for k, v in specials.items() if v is not None}, **cfg.model.overrides}
    mconf = model_config(cfg.model.preset, vocab_size=vsize, **overrides)
    shards.check_vocab(vsize)
    lm = build_model(mconf, device=dev, seed=cfg.model.init_seed)

    # ---- auxiliary targets (None for CE) --------------------------------------
    targets = build_run_targets(cfg, tokenizer, vsize, shards, d)
    # A stored source is still charged per trained token (see lsap.surrogate.store: compute accounting).
    ledger = FlopsLedger(
        train_flops_per_token(mconf), targets.flops_per_token if targets is not None else 0.0
    )
    budget = plan_budget(cfg, ledger)

    # ---- parallelism, optimizer, schedules -----------------------------------
    t = cfg.train
    per_step = t.micro_batch_size * d.world_size
    if t.batch_size % per_step:
        raise TrainingError(
            f"train.batch_size={t.batch_size} must be a multiple of micro_batch_size × world_size = {per_step}"
        )
    if t.label_smoothing and (targets is not None or not 0.0 < t.label_smoothing < 1.0):
        raise ConfigError(
            f"train.label_smoothing={t.label_smoothing} needs a CE run (no surrogate.model) "
            "and 0 < ε < 1; set it to 0 for LSAP runs"
        )
    module = LossModule(lm, t.loss_impl, compile_loss=t.compile, label_smoothing=t.label_smoothing)
    # torchtitan's order: activation checkpointing, compile, then sharding.
    blocks = list(lm.model.layers)
    if t.activation_checkpointing:
        distributed.checkpoint_blocks(blocks)
    if t.compile:
        distributed.compile_blocks(blocks)
    if dev.type == "cuda":
        distributed.enable_tf32()
    wrapped = distributed.wrap(
        module, d, t.distributed, layers=blocks, mixed_precision=t.fsdp_mixed_precision
    )
    o = cfg.optim
    opt = build_optimizer(module, o, dev)  # AdamW; no decay where not decays(p)
    total = budget.total_steps
    lr_at = LRSchedule(o.lr, min(o.warmup_steps, max(total - 1, 0)), total, o.min_lr_ratio)
    L = cfg.lsap
    lam_at = (
        LambdaSchedule(L.lambda_schedule, L.lam, L.lam_min, total) if cfg.loss == "lsap" else None
    )
    loader = SequenceLoader(
        shards, cfg.data.seq_len, t.micro_batch_size, d.rank, d.world_size, seed=t.seed
    )
    return Components(
        shards=shards,
        val=val,
        tokenizer=tokenizer,
        model_config=mconf,
        lm=lm,
        targets=targets,
        ledger=ledger,
        budget=budget,
        accum=t.batch_size // per_step,
        module=module,
        wrapped=wrapped,
        opt=opt,
        lr_at=lr_at,
        lam_at=lam_at,
        loader=loader,
        autocast=autocast,
    )


def build_run_targets(cfg: Config, tokenizer, base_vocab: int, shards, d: distributed.Dist):
    """`lsap.surrogate.sources.build_target_source`; its map (and a store's provenance) saved with the
    run by rank 0. None for CE."""
    from lsap.surrogate.sources import build_target_source

    source = build_target_source(
        cfg,
        tokenizer,
        base_vocab,
        shards,
        d.device,
        warn=lambda m: log.warning(m) if d.is_main else None,
    )
    if source is not None and d.is_main:
        out = Path(cfg.out_dir)
        out.mkdir(parents=True, exist_ok=True)
        source.vmap.save(out / "vocab_map")
        record = source.record()
        if record is not None:
            atomic_write_text(out / "targets.json", json.dumps(record, indent=2) + "\n")
    return source


# --------------------------------------------------------------------------- the loop
def data_identity(shards) -> list[str]:
    """What a checkpoint records of its train data (the shards' sha256), checked on resume."""
    return [s.get("sha256", "") for s in shards.info["shards"]]


def next_micro_batches(c: Components, dev: torch.device, *, weighted: bool):
    """One optimizer step's `c.accum` micro-batches from `c.loader`, each with its auxiliary
    targets (`c.targets`; probabilities only when `weighted`): a list of the LossModule's
    positional inputs, and float64 [labels, auxiliary targets] counts on this rank."""
    micro = []
    n = torch.zeros(2, dtype=torch.float64, device=dev)
    for _ in range(c.accum):
        batch = c.loader.next_batch().to(dev)
        aux = c.targets(batch) if c.targets is not None else None
        micro.append(
            (
                batch.input_ids,
                batch.labels,
                *(
                    (aux.ids, aux.mask, aux.probs if weighted else None)
                    if aux is not None
                    else (None, None, None)
                ),
            )
        )
        n[0] += (batch.labels != IGNORE).sum()
        if aux is not None:
            n[1] += aux.count
    return micro, n


def lock_run_dir(out: str | Path, d: distributed.Dist):
    """Rank 0 takes out_dir's `lsap.utils.lock.DirLock` before anything in it is touched; every
    rank learns whether it got it (a refused lock raises on every rank). None off rank 0."""
    from lsap.utils.errors import LockError
    from lsap.utils.lock import DirLock

    lock, err = None, None
    if d.is_main:
        try:
            lock = DirLock(out, "lsap train").acquire()
        except LockError as e:
            err = e
    if d.enabled:
        failed = d.all_reduce_sum(torch.tensor([float(err is not None)], device=d.device))
        if err is None and float(failed) > 0:
            raise TrainingError(f"rank 0 could not lock {out}; see its message")
    if err is not None:
        raise err
    return lock


class Trainer:
    """The loop (step, log, evaluate, checkpoint) over `Components`: `Trainer(cfg, components,
    dist)` for parts built by hand (a test's tiny model), `Trainer.from_config(cfg, resume=...)`
    for a run directory (locked, resumed or refused, config written, loggers open)."""

    def __init__(self, cfg: Config, components: Components, dist: distributed.Dist):
        self.cfg, self.c, self.d = cfg, components, dist
        self.out = Path(cfg.out_dir)
        self.ckpt_root = self.out / "checkpoints"
        self.main = dist.is_main
        self.step, self.wall, self.skipped = (
            0,
            0.0,
            0,
        )  # skipped: non-finite steps (train.skip_nonfinite_steps)
        self.loggers = self.lock = None
        self.peak = peak_flops_for_device(dist.device) if dist.device.type == "cuda" else None

    @classmethod
    def from_config(
        cls,
        cfg: Config,
        resume: bool = False,
        *,
        dist: distributed.Dist | None = None,
        locked: bool = False,
    ) -> Trainer:
        """Validate, lock out_dir (unless `locked`), say and build, then resume or refuse a checkpoint."""
        cfg = validate(cfg, deep=True)  # every user error before anything is built
        d = dist or distributed.init(cfg.train.device, timeout_s=cfg.train.dist_timeout_s)
        lock = None if locked else lock_run_dir(cfg.out_dir, d)
        try:
            log.info(f"{Path(cfg.out_dir).name}: building the {cfg.loss.upper()} run (model, data)")
            t = cls(cfg, build_components(cfg, d), d)
            t.lock = lock
            t._start(resume)
        except BaseException:
            if lock is not None:
                lock.release()
            raise
        return t

    def _start(self, resume: bool) -> None:
        seed = self.cfg.train.seed
        random.seed(seed)
        np.random.seed(seed)
        torch.manual_seed(seed)
        if self.main:
            for p in checkpoint.clean_stale(self.ckpt_root):
                log.info(f"removed {p}: a checkpoint whose writer was killed")
        has = checkpoint.latest(self.ckpt_root) is not None
        if resume and not has:
            self._warn(
                f"[lsap] warning: --resume: no finished checkpoint under {self.ckpt_root}; starting at step 0"
            )
        if resume and has:
            self._resume()
        elif has and self.main:
            raise TrainingError(
                f"{self.out} already has checkpoints; pass --resume to continue it or pick a new out_dir"
            )
        if self.main:
            self.out.mkdir(parents=True, exist_ok=True)
            atomic_write_text(self.out / "config.yaml", self.cfg.to_yaml())
            from lsap.utils.io import atomic_write_json
            from lsap.utils.provenance import provenance

            atomic_write_json(self.out / "provenance.json", provenance(self.d.device))
            from lsap.train.loggers import (
                Loggers,
            )  # a tracker that is not installed fails before any step

            # metrics.jsonl and the trackers drop what was logged after the checkpoint (it is redone)
            self.loggers = Loggers(
                self.cfg.train.loggers,
                self.out,
                self.cfg.to_dict(),
                resume_step=self.step + 1 if resume and has else None,
            )

    def _warn(self, msg: str) -> None:
        if self.main:
            log.warning(msg)

    def close(self) -> None:
        """Close the trackers and release out_dir's lock (`run` does it at the end)."""
        if self.loggers is not None:
            self.loggers.close()
            self.loggers = None
        if self.lock is not None:
            self.lock.release()
            self.lock = None

    # ------------------------------------------------------------------ step
    def train_step(self) -> dict:
        """One optimizer step over `accum` micro-batches; gradients divided once by the global Z."""
        c, d, dev = self.c, self.d, self.d.device
        lam = c.lam_at(self.step) if c.lam_at else 0.0
        lr = c.lr_at(self.step)
        for g in c.opt.param_groups:
            g["lr"] = lr
        micro, n = next_micro_batches(c, dev, weighted=self.cfg.lsap.aux_weighting == "prob")
        d.all_reduce_sum(n)
        z = (
            float(normalizer(n[0], n[1], self.cfg.lsap.normalization, lam))
            if c.targets is not None
            else float(n[0])
        )
        parts = torch.zeros(3, dtype=torch.float64, device=dev)
        for i, (x, y, ids, mask, w) in enumerate(micro):
            sync = distributed.grad_sync(
                c.wrapped, d, self.cfg.train.distributed, i == len(micro) - 1
            )
            with sync, torch.autocast(dev.type, dtype=torch.bfloat16, enabled=c.autocast):
                out = c.wrapped(x, y, ids, mask, w, lam)
                # DDP/FSDP average gradients over ranks; ×world turns that into a sum.
                (out.loss * (d.world_size / max(z, 1.0))).backward()
            parts += torch.stack([out.loss.detach(), out.ce_sum, out.aux_sum]).double()
        d.all_reduce_sum(parts)
        gn = torch.nn.utils.clip_grad_norm_(
            c.module.parameters(), self.cfg.optim.grad_clip or float("inf")
        )
        gn = gn.full_tensor() if hasattr(gn, "full_tensor") else gn  # FSDP2: the global norm
        loss = float(parts[0]) / max(z, 1.0)
        # NaN/inf guard before the update: a bad step never reaches the weights, so every
        # checkpoint stays finite. Ranks agree (the loss is all-reduced; so is the flag).
        bad = torch.tensor(
            [float(not (math.isfinite(loss) and math.isfinite(float(gn))))], device=dev
        )
        d.all_reduce_sum(bad)
        tokens = c.budget.tokens_per_step
        c.ledger.add(tokens, tokens if c.targets is not None else 0)
        self.step += 1
        if float(bad) > 0:
            c.opt.zero_grad(set_to_none=True)
            if self.skipped >= self.cfg.train.skip_nonfinite_steps:
                raise TrainingError(
                    f"non-finite loss ({loss}) or gradient norm ({float(gn)}) at step {self.step}; last checkpoint: "
                    f"{checkpoint.latest(self.ckpt_root) or 'none'} (finite: this step did not update the weights). "
                    "Lower optim.lr, check the data, or skip such steps with train.skip_nonfinite_steps=N"
                )
            self.skipped += 1
            self._warn(
                f"[lsap] warning: step {self.step}: non-finite loss ({loss}) or gradient norm ({float(gn)}); "
                f"step skipped ({self.skipped}/{self.cfg.train.skip_nonfinite_steps})"
            )
        else:
            c.opt.step()
            c.opt.zero_grad(set_to_none=True)
        nl = float(n[0])
        return {
            "step": self.step,
            "loss": loss,
            "ce": float(parts[1]) / max(nl, 1.0),
            "aux": float(parts[2]) / max(float(n[1]), 1.0) if n[1] > 0 else 0.0,
            "aux_per_token": float(n[1]) / max(nl, 1.0),
            "lam": lam,
            "lr": lr,
            "grad_norm": float(gn),
            "z": z,
            **({"skipped": True} if float(bad) > 0 else {}),
        }

    # ------------------------------------------------------------------ evaluation
    @torch.no_grad()
    def evaluate(self) -> dict:
        """val_loss and val_bpb (`lsap.eval.metrics.val_loss_bpb`), the wrapped module run on every rank."""
        from lsap.eval.metrics import val_loss_bpb

        c, dev = self.c, self.d.device
        if c.val is None:
            return {}

        def score(x, y):
            with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=c.autocast):
                out = c.wrapped(x.to(dev), y.to(dev))
            return out.ce_sum, out.n_labels

        c.module.eval()
        try:
            return val_loss_bpb(
                c.val,
                self.cfg.data.seq_len,
                self.cfg.train.micro_batch_size,
                self.cfg.train.eval_batches,
                score,
                c.tokenizer,
            )
        finally:
            c.module.train()

    # ------------------------------------------------------------------ checkpoints
    def counters(self) -> dict:
        L = self.c.ledger
        return {
            "step": self.step,
            "tokens": L.tokens,
            "flops_base": L.base_flops,
            "flops_surrogate": L.surrogate_flops,
            "flops_surrogate_paid": L.surrogate_flops
            if self.c.targets is not None and self.c.targets.paid
            else 0.0,
            "flops": L.total,
            "wall_s": self.wall,
        }

    def save_checkpoint(self) -> Path:
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_state_dict

        c = self.c
        opts = StateDictOptions(full_state_dict=True, cpu_offload=True)
        msd, osd = get_state_dict(
            c.module, c.opt, options=opts
        )  # collective under FSDP: every rank calls it
        final = self.ckpt_root / f"step_{self.step:08d}"
        if self.main:
            state = {
                "optimizer": osd,
                "loader": c.loader.state_dict(),
                "ledger": c.ledger.state_dict(),
                "rng": checkpoint.rng_state(),
                "step": self.step,
                "wall": self.wall,
                "skipped": self.skipped,
                "data_sha256": data_identity(c.shards),
            }
            final = checkpoint.save_training(
                self.ckpt_root,
                self.step,
                lm=c.lm,
                tokenizer=c.tokenizer,
                state=state,
                model_sd={k.removeprefix("lm."): v for k, v in msd.items()},
                config_yaml=self.cfg.to_yaml(),
                meta=self.counters(),
            )
            t = self.cfg.train
            size = checkpoint.dir_bytes(final)
            keep = checkpoint.resolve_keep(t.keep_checkpoints, size)
            shown = f"{size / 1e9:.2f} GB" if size >= 1e8 else f"{size / 1e6:.1f} MB"
            log.info(
                f"checkpoint {final.name}: {shown} on disk "
                f"(keeping {'all' if keep == 0 else f'the newest {keep} + ckpt_at'})"
            )
            checkpoint.prune(self.ckpt_root, t.keep_checkpoints, protect=t.ckpt_at, ckpt_bytes=size)
        self.d.barrier()
        return final

    def _resume(self) -> None:
        c = self.c
        last, st = checkpoint.restore_training(
            self.ckpt_root,
            config=self.cfg.to_dict(),
            module=c.module,
            opt=c.opt,
            tied=getattr(c.model_config, "tie_word_embeddings", False),
            data_sha256=data_identity(c.shards),
            warn=self._warn,
        )
        c.loader.load_state_dict(st["loader"])
        c.ledger.load_state_dict(st["ledger"])
        self.step, self.wall, self.skipped = (
            int(st["step"]),
            float(st["wall"]),
            int(st.get("skipped", 0)),
        )
        if self.main:
            log.info(f"resumed from {last} (step {self.step})")

    # ------------------------------------------------------------------ loop
    def log(self, row: dict) -> None:
        """One metrics row to metrics.jsonl and every tracker in train.loggers (rank 0)."""
        if self.loggers is not None:
            self.loggers.log(row)

    def run(self, progress=None) -> Path:
        """Train to the budget; `progress`: the stream for the progress line (default stdout: a bar
        in place on a terminal, a line every 10% in a log)."""
        try:
            return self._loop(progress)
        finally:
            self.close()

    def _loop(self, stream) -> Path:
        t, c, total = self.cfg.train, self.c, self.c.budget.total_steps
        con = Console(self, stream)
        eval_every, ckpt_every = t.eval_every or total, t.ckpt_every or total
        while self.step < total:
            t0 = time.perf_counter()
            row = self.train_step()
            self.wall += time.perf_counter() - t0
            con.tokens(c.budget.tokens_per_step)
            if self.step % t.log_every == 0 or self.step == total:
                tps = con.tok_s()
                row.update(
                    self.counters(),
                    kind="train",
                    tok_s=tps,
                    mfu=mfu(
                        tps
                        * c.budget.flops_per_step
                        / c.budget.tokens_per_step
                        / self.d.world_size,
                        self.peak,
                    ),
                )
                self.log(row)
                con.step(row)
            con.advance()
            if self.step % eval_every == 0 or self.step == total:
                ev = self.evaluate()
                if ev:
                    self.log({"kind": "val", **self.counters(), **ev})
                    con.say(
                        f"step {self.step} | val loss {ev['val_loss']:.4f}"
                        + (f" | val bpb {ev['val_bpb']:.4f}" if "val_bpb" in ev else "")
                    )
            if self.step % ckpt_every == 0 or self.step == total or self.step in t.ckpt_at:
                con.say(f"checkpoint: {self.save_checkpoint()}")
            con.resume_clock()  # tok/s excludes eval and saving
        con.close()
        return self.out


# --------------------------------------------------------------------------- the entry point
def _clear_run_dir(out: Path) -> None:
    """Everything but the lock: a run killed before its first checkpoint restarts from step 0."""
    from lsap.utils.lock import LOCK_NAME

    for p in out.iterdir() if out.is_dir() else ():
        if p.name != LOCK_NAME:
            shutil.rmtree(p) if p.is_dir() and not p.is_symlink() else p.unlink()


def _summary(cfg: Config, out: Path, seconds: float) -> str:
    rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines() if x.strip()]
    tr = [r for r in rows if r.get("kind") == "train"]
    va = [r for r in rows if r.get("kind") == "val"]
    last = tr[-1] if tr else {}
    return (
        f"  {cfg.name}: {last.get('step', '?')} steps, {last.get('tokens', 0):,} tokens, "
        f"{last.get('flops', 0):.3g} FLOPs, train loss {last.get('loss', float('nan')):.4f}"
        + (f", val loss {va[-1]['val_loss']:.4f}" if va else "")
        + f" ({seconds:.0f}s; log: {out / 'train.log'})"
    )


def train(
    cfg: Config, resume: bool | str = False, *, quiet: bool = False, log=print, progress=None
) -> Path:
    """Train `cfg` to its budget: `lsap train`, the quickstart and sweeps all come here.

    resume: False (a fresh run; a directory with checkpoints is refused), True (continue
    from the newest readable checkpoint), or "auto" (for pipelines that rerun after an
    interruption: a run marked DONE is reused, one with a finished checkpoint resumes,
    anything else restarts from step 0). out_dir is locked before anything in it is
    touched, so two writers never share a run: the second is refused by name.
    quiet: the trainer's output goes to OUT/train.log and `log` gets one summary line;
    progress: the stream for the progress line (e.g. the terminal while quiet).
    Writes OUT/DONE when the budget is reached.
    """
    cfg = validate(cfg, deep=True)
    d = distributed.init(cfg.train.device, timeout_s=cfg.train.dist_timeout_s)
    out, lock = Path(cfg.out_dir), None
    try:
        lock = lock_run_dir(out, d)
        if resume == "auto":
            if (out / "DONE").is_file():
                log(f"  {out}: finished earlier, reused")
                return out
            resume = checkpoint.latest(out) is not None
            if not resume and d.is_main:
                _clear_run_dir(out)
        elif d.is_main:
            (out / "DONE").unlink(missing_ok=True)  # the run is being (re)written
        t0 = time.perf_counter()
        quiet = quiet and d.is_main
        with open(out / "train.log", "a") if quiet else nullcontext() as f:
            with (
                redirect_stdout(f) if quiet else nullcontext(),
                redirect_stderr(f) if quiet else nullcontext(),
            ):
                Trainer.from_config(cfg, resume=bool(resume), dist=d, locked=True).run(
                    progress=progress
                )
        if d.is_main:
            atomic_write_text(out / "DONE", time.strftime("%Y-%m-%d %H:%M:%S") + "\n")
        if quiet:
            log(_summary(cfg, out, time.perf_counter() - t0))
        return out
    except RuntimeError as e:  # gloo / nccl: a collective that waited past train.dist_timeout_s
        if isinstance(e, TrainingError) or not distributed.is_timeout(e):
            raise
        raise TrainingError(
            f"a collective timed out after train.dist_timeout_s={cfg.train.dist_timeout_s:g}s: "
            f"another rank stalled or died (rank {distributed.rank_from_env()}; "
            f"{str(e).splitlines()[0][:200]})"
        ) from e
    finally:
        if lock is not None:
            lock.release()
        distributed.shutdown()
