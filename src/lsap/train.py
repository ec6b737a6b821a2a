"""The training loop: build, step, log, evaluate, checkpoint — no math of its own.

The loss is `lsap.loss` (sum-reduced); each optimizer step divides the gradients once
by the step's global Z (labels + auxiliary targets, all-reduced over ranks and
micro-batches), so accumulation and data parallelism never reweight tokens.
"""

from __future__ import annotations

import dataclasses
import json
import math
import random
import sys
import shutil
import time
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from lsap import checkpoint, distributed
from lsap.config import Config, resume_differences, validate
from lsap.flops import Budget, FlopsLedger, mfu, peak_flops_for_device, plan_steps, train_flops_per_token
from lsap.loss import lsap_linear_loss, lsap_loss, normalizer
from lsap.schedules import LambdaSchedule, LRSchedule
from lsap.errors import TrainingError  # noqa: F401  (re-exported)
from lsap.targets import IGNORE


class LossModule(torch.nn.Module):
    """Causal LM + LSAP loss in one forward, so DDP/FSDP wrap one module.

    impl "linear": final hidden states and the head weight go to `lsap_linear_loss`
    (no [N, V] logits); "logits": the model's logits go to `lsap_loss`.
    Returns (loss_sum, ce_sum, aux_sum, n_labels, n_aux): sums and counts; the trainer
    divides by the step's global Z.
    """

    def __init__(self, lm: torch.nn.Module, impl: str = "linear", *, compile_loss: bool = False):
        super().__init__()
        self.lm, self.impl = lm, impl
        self.chunk_impl = "compile" if compile_loss else "eager"

    def forward(self, input_ids, labels, aux_ids=None, aux_mask=None, aux_weight=None, lam: float = 0.0):
        kw = dict(lam=lam, aux_weight=aux_weight)
        if self.impl == "linear":
            hidden = self.lm.model(input_ids=input_ids).last_hidden_state
            # Under autocast the head matmul runs in bf16 inside the loss (LSE and grads in
            # fp32 per chunk); hidden (the fp32 residual stream) and the fp32 weight get
            # their gradients back in fp32.
            out = lsap_linear_loss(hidden, self.lm.lm_head.weight, labels, aux_ids, aux_mask, **kw,
                                   impl=self.chunk_impl)
        else:
            logits = self.lm(input_ids=input_ids).logits
            with torch.autocast(logits.device.type, enabled=False):
                out = lsap_loss(logits, labels, aux_ids, aux_mask, **kw)
        return out.loss, out.ce_sum, out.aux_sum, out.n_labels, out.n_aux


def plan_budget(cfg: Config, ledger: FlopsLedger) -> Budget:
    """Steps from the smallest positive budget among max_steps / max_tokens / max_flops."""
    t = cfg.train
    b = plan_steps(t.batch_size * cfg.data.seq_len,
                   ledger.base_flops_per_token + ledger.surrogate_flops_per_token,
                   max_steps=t.max_steps, max_tokens=t.max_tokens, max_flops=t.max_flops)
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

    shards: object  # lsap.data.TokenShards, the train split
    val: object | None  # the val split, None when it is shorter than one window
    tokenizer: object
    model_config: object
    lm: torch.nn.Module
    targets: object | None  # a `lsap.targets.TargetSource`; None for CE
    ledger: FlopsLedger
    budget: Budget
    accum: int  # micro-batches per optimizer step on each rank
    module: LossModule
    wrapped: torch.nn.Module  # `module` under DDP / FSDP (itself on one process)
    opt: torch.optim.Optimizer
    lr_at: LRSchedule
    lam_at: LambdaSchedule | None
    loader: object  # lsap.data.SequenceLoader
    autocast: bool


def build_components(cfg: Config, d: distributed.Dist) -> Components:
    """Data, tokenizer, model, target source, ledger, budget, wrapping, optimizer, schedules and
    loader from a validated config, in this order (torchtitan / OLMo-core style: the trainer
    builds nothing). Rank 0 writes the run's vocabulary map (and a store's provenance) to out_dir."""
    from lsap.data import SequenceLoader, TokenShards
    from lsap.model import build_model, model_config
    from lsap.tokenizer import load_tokenizer, padded_vocab_size

    dev = d.device
    autocast = (cfg.train.precision == "bf16") or (cfg.train.precision == "auto" and dev.type == "cuda")

    # ---- data and tokenizer --------------------------------------------------
    shards = TokenShards(cfg.data.dir, "train")
    tokenizer = load_tokenizer(shards.manifest["tokenizer"]["spec"])
    shards.check_tokenizer(tokenizer)
    val = None
    if "val" in shards.manifest["splits"] and shards.manifest["splits"]["val"]["tokens"] > cfg.data.seq_len:
        val = TokenShards(cfg.data.dir, "val")

    # ---- base model ----------------------------------------------------------
    vsize = cfg.model.vocab_size or padded_vocab_size(tokenizer)
    specials = {f"{r}_token_id": getattr(tokenizer, f"{r}_token_id", None) for r in ("bos", "eos", "pad")}
    overrides = {**{k: v for k, v in specials.items() if v is not None}, **cfg.model.overrides}
    mconf = model_config(cfg.model.preset, vocab_size=vsize, **overrides)
    shards.check_vocab(vsize)
    lm = build_model(mconf, device=dev, seed=cfg.model.init_seed)

    # ---- auxiliary targets (None for CE) --------------------------------------
    targets = build_run_targets(cfg, tokenizer, vsize, shards, d)
    # A stored source is still charged per trained token (see lsap.store: compute accounting).
    ledger = FlopsLedger(train_flops_per_token(mconf), targets.flops_per_token if targets is not None else 0.0)
    budget = plan_budget(cfg, ledger)

    # ---- parallelism, optimizer, schedules -----------------------------------
    t = cfg.train
    per_step = t.micro_batch_size * d.world_size
    if t.batch_size % per_step:
        raise TrainingError(
            f"train.batch_size={t.batch_size} must be a multiple of micro_batch_size × world_size = {per_step}"
        )
    module = LossModule(lm, t.loss_impl, compile_loss=t.compile)
    # torchtitan's order: activation checkpointing, compile, then sharding.
    blocks = list(lm.model.layers)
    if t.activation_checkpointing:
        distributed.checkpoint_blocks(blocks)
    if t.compile:
        distributed.compile_blocks(blocks)
    if dev.type == "cuda":
        distributed.enable_tf32()
    wrapped = distributed.wrap(module, d, t.distributed, layers=blocks, mixed_precision=t.fsdp_mixed_precision)
    decay = [p for p in module.parameters() if p.dim() >= 2]
    no_decay = [p for p in module.parameters() if p.dim() < 2]
    o = cfg.optim
    # fused (one kernel for all tensors) on CUDA; foreach (batched ops) elsewhere
    fused = dev.type == "cuda"
    opt = torch.optim.AdamW(
        [{"params": decay, "weight_decay": o.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=o.lr, betas=tuple(o.betas), eps=o.eps, fused=fused, foreach=None if fused else True,
    )
    total = budget.total_steps
    lr_at = LRSchedule(o.lr, min(o.warmup_steps, max(total - 1, 0)), total, o.min_lr_ratio)
    L = cfg.lsap
    lam_at = LambdaSchedule(L.lambda_schedule, L.lam, L.lam_min, total) if cfg.loss == "lsap" else None
    loader = SequenceLoader(shards, cfg.data.seq_len, t.micro_batch_size, d.rank, d.world_size, seed=t.seed)
    return Components(shards=shards, val=val, tokenizer=tokenizer, model_config=mconf, lm=lm, targets=targets,
                      ledger=ledger, budget=budget, accum=t.batch_size // per_step, module=module, wrapped=wrapped,
                      opt=opt, lr_at=lr_at, lam_at=lam_at, loader=loader, autocast=autocast)


def build_run_targets(cfg: Config, tokenizer, base_vocab: int, shards, d: distributed.Dist):
    """`lsap.surrogate.build_target_source` with the trainer's checks; its map (and a store's
    provenance) saved with the run by rank 0. None for CE."""
    from lsap.store import StoreError
    from lsap.surrogate import SurrogateError, build_target_source

    try:
        source = build_target_source(cfg, tokenizer, base_vocab, shards, d.device)
    except SurrogateError as e:
        raise TrainingError(str(e)) from e
    except (StoreError, FileNotFoundError) as e:
        if cfg.surrogate.source != "store":
            raise
        raise TrainingError(f"surrogate.store_dir: {e}") from e
    if source is None:
        return None
    _check_intersection(cfg, source.vmap, d.is_main)
    if d.is_main:
        out = Path(cfg.out_dir)
        out.mkdir(parents=True, exist_ok=True)
        source.vmap.save(out / "vocab_map")
        record = source.record()
        if record is not None:
            (out / "cache.json").write_text(json.dumps(record, indent=2) + "\n")
    return source


def _check_intersection(cfg: Config, vmap, main: bool) -> None:
    weak = vmap.weakness()
    if weak is None:
        return
    if not cfg.lsap.allow_small_intersection:
        raise TrainingError(f"{weak}. Check the tokenizer pair with `lsap vocab`, or set "
                            "lsap.allow_small_intersection=true to train anyway")
    if main:
        print(f"[lsap] warning: {weak} (lsap.allow_small_intersection=true)", file=sys.stderr, flush=True)


# --------------------------------------------------------------------------- the loop
def _rng_state() -> dict:
    s = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        s["cuda"] = torch.cuda.get_rng_state_all()
    return s


def _set_rng_state(s: dict) -> None:
    random.setstate(s["python"])
    np.random.set_state(s["numpy"])
    torch.set_rng_state(s["torch"])
    if "cuda" in s and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(s["cuda"])


def _fmt_time(s: float) -> str:
    s = int(max(s, 0))
    return f"{s // 3600}h{s % 3600 // 60:02d}m" if s >= 3600 else f"{s // 60}m{s % 60:02d}s"


class Trainer:
    """The loop (step, log, evaluate, checkpoint, resume) over what `build_components` built
    from the config; `Trainer(cfg).run()` trains to the budget. The components stay reachable
    as attributes (`self.lm`, `self.opt`, `self.loader`, ...) and as `self.components`."""

    def __init__(self, cfg: Config, resume: bool = False):
        self.lock = None
        try:
            self._build(cfg, resume)
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        """Close the trackers and release out_dir's lock (`run` does it at the end; a failed build at once)."""
        if getattr(self, "loggers", None) is not None:
            self.loggers.close()
            self.loggers = None
        if self.lock is not None:
            self.lock.release()
            self.lock = None

    def _build(self, cfg: Config, resume: bool) -> None:
        self.cfg = validate(cfg, deep=True)  # every user error before anything is built
        self.d = distributed.init(cfg.train.device, timeout_s=cfg.train.dist_timeout_s)
        self.out = Path(cfg.out_dir)
        self.ckpt_root = self.out / "checkpoints"
        self.main = self.d.is_main
        self._lock_out_dir()
        self.skipped = 0  # non-finite steps skipped (train.skip_nonfinite_steps)
        self.components = c = build_components(self.cfg, self.d)
        for f in dataclasses.fields(c):  # the loop reads them as attributes (self.lm, self.opt, ...)
            setattr(self, f.name, getattr(c, f.name))
        self.vmap = self.targets.vmap if self.targets is not None else None
        t = cfg.train
        self.step = 0
        self.wall = 0.0
        self.loggers, self.resumed_at = None, None
        random.seed(t.seed)
        np.random.seed(t.seed)
        torch.manual_seed(t.seed)
        if self.main:
            for p in checkpoint.clean_stale(self.ckpt_root):
                print(f"[lsap] removed {p}: a checkpoint whose writer was killed", flush=True)
        if resume and checkpoint.latest(self.ckpt_root) is None:
            if self.main:
                print(f"[lsap] warning: --resume: no finished checkpoint under {self.ckpt_root}; starting at step 0",
                      file=sys.stderr, flush=True)
            resume = False
        if resume:
            self._resume()
            self.resumed_at = self.step
        elif self.main and checkpoint.latest(self.ckpt_root) is not None:
            raise TrainingError(f"{self.out} already has checkpoints; pass --resume to continue it or pick a new out_dir")
        elif self.main and (self.out / "metrics.jsonl").exists():
            (self.out / "metrics.jsonl").unlink()  # lines of a run that left no checkpoint: redone from step 0
        if self.main:
            self.out.mkdir(parents=True, exist_ok=True)
            (self.out / "config.yaml").write_text(cfg.to_yaml())
        self.peak = peak_flops_for_device(self.d.device) if self.d.device.type == "cuda" else None

    def _lock_out_dir(self) -> None:
        """Rank 0 locks out_dir (`lsap.lock`); every rank learns whether it got it."""
        from lsap.errors import LockError
        from lsap.lock import DirLock

        err = None
        if self.main:
            try:
                self.lock = DirLock(self.out, "lsap train").acquire()
            except LockError as e:
                err = e
        if self.d.enabled:
            failed = self.d.all_reduce_sum(torch.tensor([float(err is not None)], device=self.d.device))
            if err is None and float(failed) > 0:
                raise TrainingError(f"rank 0 could not lock {self.out}; see its message")
        if err is not None:
            raise err

    # ------------------------------------------------------------------ step
    def train_step(self) -> dict:
        d, dev = self.d, self.d.device
        lam = self.lam_at(self.step) if self.lam_at else 0.0
        lr = self.lr_at(self.step)
        for g in self.opt.param_groups:
            g["lr"] = lr
        micro = []
        n = torch.zeros(2, dtype=torch.float64, device=dev)
        weighted = self.cfg.lsap.aux_weighting == "prob"
        for _ in range(self.accum):
            batch = self.loader.next_batch().to(dev)
            aux = self.targets(batch) if self.targets is not None else None
            micro.append((batch.input_ids, batch.labels, *(
                (aux.ids, aux.mask, aux.probs if weighted else None) if aux is not None else (None, None, None))))
            n[0] += (batch.labels != IGNORE).sum()
            if aux is not None:
                n[1] += aux.count
        d.all_reduce_sum(n)
        z = float(normalizer(n[0], n[1], self.cfg.lsap.normalization, lam)) if self.targets is not None else float(n[0])
        parts = torch.zeros(3, dtype=torch.float64, device=dev)
        fsdp = d.enabled and self.cfg.train.distributed == "fsdp"
        for i, (x, y, ids, mask, w) in enumerate(micro):
            last = i == len(micro) - 1
            if fsdp:
                self.wrapped.set_requires_gradient_sync(last)
                sync = nullcontext()
            else:
                sync = self.wrapped.no_sync() if d.enabled and not last else nullcontext()
            with sync, torch.autocast(dev.type, dtype=torch.bfloat16, enabled=self.autocast):
                loss, ce, aux, _, _ = self.wrapped(x, y, ids, mask, w, lam)
                # DDP/FSDP average gradients over ranks; ×world turns that into a sum.
                (loss * (d.world_size / max(z, 1.0))).backward()
            parts += torch.stack([loss.detach(), ce, aux]).double()
        d.all_reduce_sum(parts)
        gn = torch.nn.utils.clip_grad_norm_(self.module.parameters(), self.cfg.optim.grad_clip or float("inf"))
        gn = gn.full_tensor() if hasattr(gn, "full_tensor") else gn  # FSDP2: the global norm
        loss = float(parts[0]) / max(z, 1.0)
        # NaN/inf guard before the update: a bad step never reaches the weights, so every
        # checkpoint stays finite. Ranks agree (the loss is all-reduced; so is the flag).
        bad = torch.tensor([float(not (math.isfinite(loss) and math.isfinite(float(gn))))], device=dev)
        d.all_reduce_sum(bad)
        tokens = self.budget.tokens_per_step
        self.ledger.add(tokens, tokens if self.targets is not None else 0)
        self.step += 1
        if float(bad) > 0:
            self.opt.zero_grad(set_to_none=True)
            last = self._latest_checkpoint()
            if self.skipped >= self.cfg.train.skip_nonfinite_steps:
                raise TrainingError(
                    f"non-finite loss ({loss}) or gradient norm ({float(gn)}) at step {self.step}; last checkpoint: "
                    f"{last or 'none'} (finite: this step did not update the weights). Lower optim.lr, check "
                    "the data, or skip such steps with train.skip_nonfinite_steps=N"
                )
            self.skipped += 1
            if self.main:
                print(f"[lsap] warning: step {self.step}: non-finite loss ({loss}) or gradient norm ({float(gn)}); "
                      f"step skipped ({self.skipped}/{self.cfg.train.skip_nonfinite_steps})", file=sys.stderr,
                      flush=True)
        else:
            self.opt.step()
            self.opt.zero_grad(set_to_none=True)
        nl = float(n[0])
        return {"step": self.step, "loss": loss, "ce": float(parts[1]) / max(nl, 1.0),
                "aux": float(parts[2]) / max(float(n[1]), 1.0) if n[1] > 0 else 0.0,
                "aux_per_token": float(n[1]) / max(nl, 1.0), "lam": lam, "lr": lr,
                "grad_norm": float(gn), "z": z, **({"skipped": True} if float(bad) > 0 else {})}

    # ------------------------------------------------------------------ evaluation
    @torch.no_grad()
    def evaluate(self) -> dict:
        """val_loss (and val_bpb) by `lsap.metrics.heldout_nll`, the wrapped module run on every rank."""
        from lsap.metrics import bits_per_byte, heldout_nll, scored_bytes

        if self.val is None:
            return {}
        dev = self.d.device

        def score(x, y):
            with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=self.autocast):
                _, ce, _, nl, _ = self.wrapped(x.to(dev), y.to(dev))
            return ce, nl

        self.module.eval()
        nll_sum, count = heldout_nll(self.val, self.cfg.data.seq_len, self.cfg.train.micro_batch_size,
                                     self.cfg.train.eval_batches, score)
        self.module.train()
        if count == 0:
            return {}
        val_loss = nll_sum / count
        out = {"val_loss": val_loss}
        n_bytes = scored_bytes(self.val, self.cfg.data.seq_len, self.cfg.train.micro_batch_size,
                               self.cfg.train.eval_batches, self.tokenizer)
        if n_bytes:
            out["val_bpb"] = bits_per_byte(nll_sum, n_bytes)
        return out

    # ------------------------------------------------------------------ checkpoints
    def _latest_checkpoint(self) -> Path | None:
        return checkpoint.latest(self.ckpt_root)

    def _state_dicts(self):
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_state_dict

        opts = StateDictOptions(full_state_dict=True, cpu_offload=True)
        return get_state_dict(self.module, self.opt, options=opts)

    def counters(self) -> dict:
        L = self.ledger
        return {"step": self.step, "tokens": L.tokens, "flops_base": L.base_flops,
                "flops_surrogate": L.surrogate_flops,
                "flops_surrogate_paid": L.surrogate_flops if self.targets is not None and self.targets.paid else 0.0,
                "flops": L.total, "wall_s": self.wall}

    def _data_identity(self) -> list[str]:
        return [s.get("sha256", "") for s in self.shards.info["shards"]]

    def save_checkpoint(self) -> Path:
        msd, osd = self._state_dicts()  # collective under FSDP: every rank calls it
        final = self.ckpt_root / f"step_{self.step:08d}"
        if self.main:
            bad = [k for k, v in msd.items() if v.is_floating_point() and not bool(torch.isfinite(v).all())]
            if bad:  # never write (and so never name as "last") a checkpoint that cannot be trained from
                raise TrainingError(f"step {self.step}: non-finite weights in {bad[0]} (and {len(bad) - 1} more); "
                                    f"not saved. Last finite checkpoint: {self._latest_checkpoint() or 'none'}")
            lm_sd = {k.removeprefix("lm."): v for k, v in msd.items()}

            def write(tmp: Path) -> None:
                self.lm.save_pretrained(tmp / "model", state_dict=lm_sd)
                self.tokenizer.save_pretrained(tmp / "model")
                torch.save({"optimizer": osd, "loader": self.loader.state_dict(), "ledger": self.ledger.state_dict(),
                            "rng": _rng_state(), "step": self.step, "wall": self.wall, "skipped": self.skipped,
                            "data_sha256": self._data_identity()}, tmp / "trainer.pt")
                (tmp / "config.yaml").write_text(self.cfg.to_yaml())

            final = checkpoint.save(self.ckpt_root, self.step, write, self.counters())
            self._prune()
        self.d.barrier()
        return final

    def _prune(self) -> None:
        checkpoint.prune(self.ckpt_root, self.cfg.train.keep_checkpoints)

    def _resume(self) -> None:
        """Continue from the newest readable finished checkpoint, refusing config changes by key."""
        import yaml
        from torch.distributed.checkpoint.state_dict import StateDictOptions, set_state_dict

        for last in reversed(checkpoint.list_checkpoints(self.ckpt_root)):
            saved = yaml.safe_load((last / "config.yaml").read_text()) if (last / "config.yaml").is_file() else None
            if saved is not None:
                diffs = resume_differences(saved, self.cfg.to_dict())
                if diffs:
                    raise TrainingError(
                        f"--resume: {last} was trained with another config: {'; '.join(diffs)}. Resume with the "
                        "checkpoint's values, or start a new out_dir (only budgets, logging, eval and checkpoint "
                        "cadence, placement and precision may change on resume)")
            try:
                lm_sd, st = checkpoint.load(last)
            except Exception as e:  # noqa: BLE001 — a torn file raises many types
                if self.main:
                    print(f"[lsap] warning: checkpoint {last} is unreadable ({type(e).__name__}: {str(e)[:200]}); "
                          "falling back to the previous one", file=sys.stderr, flush=True)
                continue
            break
        else:
            raise TrainingError(f"--resume: no readable finished checkpoint under {self.ckpt_root}; "
                                "start without --resume in a new out_dir")
        if st.get("data_sha256") and st["data_sha256"] != self._data_identity():
            raise TrainingError(f"--resume: {last} was trained on other token shards than {self.cfg.data.dir} "
                                "(shard sha256 differ); point data.dir at the run's data")
        msd = {f"lm.{k}": v for k, v in lm_sd.items()}
        expected = self.module.state_dict()
        for k in expected.keys() - msd.keys():  # save_pretrained drops tied copies (lm_head = embeddings)
            if getattr(self.model_config, "tie_word_embeddings", False) and k == "lm.lm_head.weight":
                msd[k] = msd["lm.model.embed_tokens.weight"]
        missing, unexpected = expected.keys() - msd.keys(), msd.keys() - expected.keys()
        if missing or unexpected:
            raise TrainingError(f"--resume: {last} does not fit the model: missing {sorted(missing)[:3]}, "
                                f"unexpected {sorted(unexpected)[:3]}")
        set_state_dict(self.module, self.opt, model_state_dict=msd, optim_state_dict=st["optimizer"],
                       options=StateDictOptions(full_state_dict=True, strict=True))
        self.loader.load_state_dict(st["loader"])
        self.ledger.load_state_dict(st["ledger"])
        _set_rng_state(st["rng"])
        self.step, self.wall = int(st["step"]), float(st["wall"])
        self.skipped = int(st.get("skipped", 0))
        if self.main:
            m = self.out / "metrics.jsonl"
            if m.exists():  # drop lines logged after the checkpoint (they will be redone) and a torn last line
                keep = []
                for ln in m.read_text().splitlines():
                    if not ln.strip():
                        continue
                    try:
                        row = json.loads(ln)
                    except json.JSONDecodeError:
                        print(f"[lsap] {m}: dropped a torn line ({ln[:60]!r})", file=sys.stderr, flush=True)
                        continue
                    if row["step"] <= self.step:
                        keep.append(ln)
                m.write_text("".join(ln + "\n" for ln in keep))
            print(f"resumed from {last} (step {self.step})", flush=True)

    # ------------------------------------------------------------------ loop
    def log(self, row: dict) -> None:
        """One metrics row to metrics.jsonl and every tracker in train.loggers (rank 0)."""
        if not self.main:
            return
        if self.loggers is None:
            self._open_loggers()
        self.loggers.log(row)

    def _open_loggers(self) -> None:
        from lsap.loggers import Loggers

        # on resume, trackers drop what was logged after the checkpoint (it is redone)
        self.loggers = Loggers(self.cfg.train.loggers, self.out, self.cfg.to_dict(),
                               resume_step=None if self.resumed_at is None else self.resumed_at + 1)

    def run(self) -> Path:
        try:
            return self._run()
        finally:
            self.close()

    def _run(self) -> Path:
        from tqdm.auto import tqdm

        cfg, t = self.cfg, self.cfg.train
        if self.main and self.loggers is None:  # a tracker that is not installed fails before any step
            self._open_loggers()
        total = self.budget.total_steps
        if self.main:
            n_params = sum(p.numel() for p in self.lm.parameters())
            print(f"lsap train: {cfg.name} | loss={cfg.loss} | {cfg.model.preset} ({n_params / 1e6:.2f}M params) | "
                  f"{total} steps × {self.budget.tokens_per_step:,} tokens (limited by {self.budget.limited_by}) | "
                  f"{self.ledger.base_flops_per_token + self.ledger.surrogate_flops_per_token:.3g} FLOPs/token | "
                  f"world={self.d.world_size} accum={self.accum} device={self.d.device}"
                  + (f" | k={cfg.lsap.k} α={cfg.lsap.alpha} λ={cfg.lsap.lambda_schedule}:{cfg.lsap.lam} "
                     f"Z={cfg.lsap.normalization} |Σ∩|={self.vmap.size}" if self.vmap is not None else ""), flush=True)
        bar = tqdm(total=total, initial=self.step, disable=True if not self.main else None,  # None: off when not a TTY
                   unit="step", dynamic_ncols=True)
        window_t, window_tok = time.perf_counter(), 0
        eval_every, ckpt_every = t.eval_every or total, t.ckpt_every or total
        while self.step < total:
            t0 = time.perf_counter()
            row = self.train_step()
            self.wall += time.perf_counter() - t0
            window_tok += self.budget.tokens_per_step
            bar.update(1)
            if self.step % t.log_every == 0 or self.step == total:
                dt = time.perf_counter() - window_t
                tps = window_tok / max(dt, 1e-9)
                row.update(self.counters(), kind="train", tok_s=tps,
                           mfu=mfu(tps * self.budget.flops_per_step / self.budget.tokens_per_step / self.d.world_size, self.peak))
                self.log(row)
                eta = (total - self.step) * self.wall / max(self.step, 1)
                msg = (f"step {self.step}/{total} | loss {row['loss']:.4f} | ce {row['ce']:.4f}"
                       + (f" | aux {row['aux']:.3f} | aux/tok {row['aux_per_token']:.2f} | λ {row['lam']:.3f}"
                          if self.vmap is not None else "")
                       + f" | lr {row['lr']:.2e} | gnorm {row['grad_norm']:.2f} | {tps:,.0f} tok/s"
                       + (f" | MFU {row['mfu']:.1%}" if row["mfu"] else "")
                       + f" | {self.ledger.total:.3g} FLOPs | eta {_fmt_time(eta)}")
                if self.main:
                    bar.set_postfix(loss=f"{row['loss']:.3f}", tok_s=f"{tps:,.0f}")
                    tqdm.write(msg)
                window_t, window_tok = time.perf_counter(), 0
            if self.step % eval_every == 0 or self.step == total:
                ev = self.evaluate()
                if ev:
                    self.log({"kind": "val", **self.counters(), **ev})
                    if self.main:
                        tqdm.write(f"step {self.step} | val loss {ev['val_loss']:.4f}"
                                   + (f" | val bpb {ev['val_bpb']:.4f}" if "val_bpb" in ev else ""))
            if self.step % ckpt_every == 0 or self.step == total or self.step in t.ckpt_at:
                path = self.save_checkpoint()
                if self.main:
                    tqdm.write(f"checkpoint: {path}")
            window_t = window_t if window_tok else time.perf_counter()  # tok/s excludes eval and saving
        bar.close()
        return self.out


def train(cfg: Config, resume: bool = False) -> Path:
    try:
        trainer = Trainer(cfg, resume=resume)
        return trainer.run()
    except RuntimeError as e:  # gloo / nccl: a collective that waited past train.dist_timeout_s
        if isinstance(e, TrainingError) or not distributed.is_timeout(e):
            raise
        raise TrainingError(f"a collective timed out after train.dist_timeout_s={cfg.train.dist_timeout_s:g}s: "
                            f"another rank stalled or died (rank {distributed.rank_from_env()}; "
                            f"{str(e).splitlines()[0][:200]})") from e
    finally:
        distributed.shutdown()


def train_once(cfg: Config, log=print, quiet: bool = False) -> Path:
    """Train `cfg` to its budget exactly once: a run marked DONE is reused, a run with a
    finished checkpoint resumes from it, anything else (re)starts. For pipelines that
    rerun after an interruption (`lsap quickstart`, `lsap sweep`). `quiet`: the trainer's
    output goes to OUT/train.log and `log` gets one summary line."""
    import contextlib

    from lsap.checkpoint import latest

    out = Path(cfg.out_dir)
    if (out / "DONE").is_file():
        log(f"  {out}: finished earlier, reused")
        return out
    resume = latest(out) is not None
    if not resume and out.exists():  # killed before its first checkpoint: nothing to keep
        shutil.rmtree(out)
    t0 = time.perf_counter()
    if quiet:
        out.mkdir(parents=True, exist_ok=True)
        with open(out / "train.log", "a") as f, contextlib.redirect_stdout(f), contextlib.redirect_stderr(f):
            Trainer(cfg, resume=resume).run()
    else:
        Trainer(cfg, resume=resume).run()
    (out / "DONE").write_text(time.strftime("%Y-%m-%d %H:%M:%S") + "\n")
    if quiet:
        rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines() if x.strip()]
        tr = [r for r in rows if r.get("kind") == "train"]
        va = [r for r in rows if r.get("kind") == "val"]
        last = tr[-1] if tr else {}
        log(f"  {cfg.name}: {last.get('step', '?')} steps, {last.get('tokens', 0):,} tokens, "
            f"{last.get('flops', 0):.3g} FLOPs, train loss {last.get('loss', float('nan')):.4f}"
            + (f", val loss {va[-1]['val_loss']:.4f}" if va else "")
            + f" ({time.perf_counter() - t0:.0f}s; log: {out / 'train.log'})")
    return out
