"""What `lsap train` prints on rank 0: the header, a progress bar, and one line per logged step,
evaluation and checkpoint, each led by `stamp` (UTC time and the run's directory name), e.g.
``12:03:44 ce-s0-ab12 step 100/400 | loss 5.1234 | …``. The metric files are not touched here.
"""

from __future__ import annotations

import sys
import time

from lsap import distributed
from lsap.config import Config


def header(cfg: Config, c, d: distributed.Dist) -> str:
    """The run's first line; `c`: its `lsap.train.loop.Components`."""
    n_params = sum(p.numel() for p in c.lm.parameters())
    vmap = c.targets.vmap if c.targets is not None else None
    return (
        f"lsap train: {cfg.name} | loss={cfg.loss} | {cfg.model.preset} ({n_params / 1e6:.2f}M params) | "
        f"{c.budget.total_steps} steps × {c.budget.tokens_per_step:,} tokens (limited by {c.budget.limited_by}) | "
        f"{c.ledger.base_flops_per_token + c.ledger.surrogate_flops_per_token:.3g} FLOPs/token | "
        f"world={d.world_size} accum={c.accum} device={d.device}"
        + (
            f" | k={cfg.lsap.k} α={cfg.lsap.alpha} λ={cfg.lsap.lambda_schedule}:{cfg.lsap.lam} "
            f"Z={cfg.lsap.normalization} |Σ∩|={vmap.size}"
            if vmap is not None
            else ""
        )
    )


def step_line(row: dict, total: int, c, lsap: bool, eta: float) -> str:
    return (
        f"step {row['step']}/{total} | loss {row['loss']:.4f} | ce {row['ce']:.4f}"
        + (
            f" | aux {row['aux']:.3f} | aux/tok {row['aux_per_token']:.2f} | λ {row['lam']:.3f}"
            if lsap
            else ""
        )
        + f" | lr {row['lr']:.2e} | gnorm {row['grad_norm']:.2f} | {row['tok_s']:,.0f} tok/s"
        + (f" | MFU {row['mfu']:.1%}" if row["mfu"] else "")
        + f" | {c.ledger.total:.3g} FLOPs | eta {fmt_time(eta)}"
    )


def fmt_time(s: float) -> str:
    s = int(max(s, 0))
    return f"{s // 3600}h{s % 3600 // 60:02d}m" if s >= 3600 else f"{s // 60}m{s % 60:02d}s"


class Console:
    """What the loop prints on rank 0: the header, a progress bar (`lsap.utils.progress.Progress`),
    step / val / checkpoint lines, and tok/s over the steps since the last step line."""

    def __init__(self, trainer, stream):  # an lsap.train.loop.Trainer (no import: no cycle)
        from lsap.utils.progress import Progress

        self.tr, self.main = trainer, trainer.main
        c = trainer.c
        if self.main:
            print(header(trainer.cfg, c, trainer.d), flush=True)
        # stdout by default, with the step lines (stderr stays for errors: one line each)
        stream = sys.stdout if stream is None else stream
        self.bar = Progress(
            c.budget.total_steps,
            f"train {trainer.cfg.name}",
            unit="step",
            initial=trainer.step,
            stream=stream,
            enabled=self.main,
        )
        # lines on the bar's own stream go through it, so a terminal's bar stays one line
        self._print = self.bar.write if stream is sys.stdout else (lambda m: print(m, flush=True))
        self.t0, self.n = time.perf_counter(), 0

    def tokens(self, n: int) -> None:
        self.n += n

    def tok_s(self) -> float:
        return self.n / max(time.perf_counter() - self.t0, 1e-9)

    def step(self, row: dict) -> None:
        tr = self.tr
        total = tr.c.budget.total_steps
        eta = (total - tr.step) * tr.wall / max(tr.step, 1)
        if self.main:
            self.bar.set_postfix(f"loss {row['loss']:.3f} | {row['tok_s']:,.0f} tok/s")
            self._print(step_line(row, total, tr.c, tr.c.targets is not None, eta))
        self.t0, self.n = time.perf_counter(), 0

    def advance(self) -> None:
        self.bar.update(1)

    def say(self, msg: str) -> None:
        if self.main:
            self._print(msg)

    def resume_clock(self) -> None:
        if not self.n:
            self.t0 = time.perf_counter()

    def close(self) -> None:
        self.bar.close()
