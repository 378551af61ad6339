"""Training to a wall-time budget: a one-cycle lr whose x-axis is the spent fraction of the budget.

A one-cycle schedule sized in steps (OneCycleLR over `estimated_stepping_batches`) anneals at a
fixed step count; under a time cap a slower machine is stopped before the lr has come down and a
faster one finishes with time unused. Here the schedule reads `TimeBudget.fraction` (training time
/ budget) instead, so the lr anneals exactly when the budget ends on any machine and a faster
machine simply takes more steps. `TimeBudget` is the clock (kept in checkpoints, so a resumed run
continues the schedule) and the stopping rule; `TimeOneCycleLR` is the schedule reading it.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass

import pytorch_lightning as pl
import torch
from torch.optim.lr_scheduler import LambdaLR

from sn7.errors import ConfigError

log = logging.getLogger(__name__)


def _cos_anneal(start: float, end: float, pct: float) -> float:
    """Cosine from `start` (pct 0) to `end` (pct 1), as torch's OneCycleLR anneals."""
    return end + (start - end) / 2.0 * (math.cos(math.pi * pct) + 1.0)


@dataclass(frozen=True)
class OneCycleShape:
    """torch's OneCycleLR (cosine, two phases) on a [0, 1] axis instead of a step count: warm-up
    from max_lr/div_factor to max_lr over [0, pct_start], then anneal to
    max_lr/(div_factor*final_div_factor) at 1. Factors are relative to max_lr."""

    pct_start: float = 0.3
    div_factor: float = 25.0
    final_div_factor: float = 1e4

    def __post_init__(self):
        if not 0.0 <= self.pct_start < 1.0:
            raise ConfigError(f"pct_start must be in [0, 1), got {self.pct_start}")
        if self.div_factor <= 0 or self.final_div_factor <= 0:
            raise ConfigError(
                f"div_factor and final_div_factor must be > 0, got "
                f"{self.div_factor} and {self.final_div_factor}"
            )

    def _phase(self, fraction: float) -> tuple[bool, float]:
        """(in warm-up?, progress 0..1 within that phase)."""
        f = min(max(float(fraction), 0.0), 1.0)
        if f < self.pct_start:
            return True, f / self.pct_start
        return False, (f - self.pct_start) / (1.0 - self.pct_start)

    def lr_factor(self, fraction: float) -> float:
        warm_up, pct = self._phase(fraction)
        initial = 1.0 / self.div_factor
        if warm_up:
            return _cos_anneal(initial, 1.0, pct)
        return _cos_anneal(1.0, initial / self.final_div_factor, pct)

    def momentum(self, fraction: float, base: float, peak: float) -> float:
        """Momentum mirrors the lr (high while the lr is low), as in OneCycleLR."""
        warm_up, pct = self._phase(fraction)
        return _cos_anneal(peak, base, pct) if warm_up else _cos_anneal(base, peak, pct)


class TimeBudget(pl.Callback):
    """Count training wall time against a budget; stop training when it is spent.

    The count starts at the first training batch (set-up, the sanity check and data loader start
    are free) and, by default, includes validation and checkpoint writes: `trainer.max_time`, the
    hard cap, counts them too, so a budget a little under the cap ends before the cap on any
    machine. `pause_for_validation=True` leaves validation and checkpoint writes out (a budget of
    pure training time; keep max_time well above it then). The count is updated before every
    optimizer step (so the schedule stepped right after it sees the time of that step) and, under
    DDP, rank 0's count is broadcast so every rank uses the same lr and stops at the same step.
    `clock` (seconds, monotonic) can be replaced in tests.
    """

    def __init__(
        self,
        budget_minutes: float,
        pause_for_validation: bool = False,
        clock: Callable[[], float] = time.monotonic,
    ):
        if not budget_minutes or budget_minutes <= 0:
            raise ConfigError(f"budget_minutes must be > 0, got {budget_minutes}")
        self.budget_seconds = 60.0 * float(budget_minutes)
        self.pause_for_validation = pause_for_validation
        self.elapsed_seconds = 0.0
        self._clock = clock
        self._since: float | None = None  # start of the stretch being counted; None = paused

    @property
    def fraction(self) -> float:
        """Spent share of the budget, 0..1: the schedule's position."""
        return min(self.elapsed_seconds / self.budget_seconds, 1.0)

    @staticmethod
    def of(trainer: pl.Trainer) -> TimeBudget:
        """The trainer's TimeBudget callback: the clock a time-budget schedule reads."""
        found = [c for c in trainer.callbacks if isinstance(c, TimeBudget)]
        if len(found) != 1:
            raise ConfigError(
                f"a time-budget lr schedule needs exactly one TimeBudget callback, found "
                f"{len(found)}; scheduler=time_onecycle adds it as callbacks.time_budget"
            )
        return found[0]

    def _count(self) -> float:
        now = self._clock()
        if self._since is not None:
            self.elapsed_seconds += now - self._since
        return now

    def _pause(self) -> None:
        self._count()
        self._since = None

    def on_fit_start(self, trainer, pl_module) -> None:
        self._since = None
        epoch_limit = trainer.max_epochs not in (-1, None) and not trainer.fast_dev_run
        if epoch_limit and trainer.is_global_zero:
            log.warning(
                "trainer.max_epochs=%s may end training before the %.1f-min time budget does "
                "(the lr would not have annealed); trainer.max_epochs=-1 leaves it to the budget",
                trainer.max_epochs,
                self.budget_seconds / 60,
            )

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self._since = self._count()

    def on_before_optimizer_step(self, trainer, pl_module, optimizer) -> None:
        self._since = self._count()
        self.elapsed_seconds = float(trainer.strategy.broadcast(self.elapsed_seconds, src=0))
        if self.elapsed_seconds >= self.budget_seconds and not trainer.should_stop:
            trainer.should_stop = True
            if trainer.is_global_zero:
                log.info(
                    "time budget of %.1f min spent at step %d: stopping",
                    self.budget_seconds / 60,
                    trainer.global_step + 1,
                )

    def on_validation_start(self, trainer, pl_module) -> None:
        if self.pause_for_validation:
            self._pause()

    def on_save_checkpoint(self, trainer, pl_module, checkpoint) -> None:
        if self.pause_for_validation:
            self._pause()  # counting resumes at the next training batch

    def on_train_end(self, trainer, pl_module) -> None:
        self._pause()

    def state_dict(self) -> dict:
        return {"elapsed_seconds": self.elapsed_seconds, "budget_seconds": self.budget_seconds}

    def load_state_dict(self, state_dict: dict) -> None:
        self.elapsed_seconds = float(state_dict["elapsed_seconds"])
        saved = float(state_dict.get("budget_seconds", self.budget_seconds))
        if not math.isclose(saved, self.budget_seconds):
            log.warning(
                "resuming a %.1f-min time budget as %.1f min: the schedule jumps to %.0f %%",
                saved / 60,
                self.budget_seconds / 60,
                100 * self.fraction,
            )


class TimeOneCycleLR(LambdaLR):
    """One-cycle lr (and, like OneCycleLR, momentum/beta1) as a function of `clock.fraction`.

    Step it every optimizer step (`interval: step`); the optimizer's lr is max_lr. `clock` is any
    object with a `fraction` in [0, 1], normally the TimeBudget callback. The clock is not part of
    the scheduler's state_dict: the callback checkpoints its own time.
    """

    def __init__(
        self,
        optimizer: torch.optim.Optimizer,
        clock: TimeBudget,
        pct_start: float = 0.3,
        div_factor: float = 25.0,
        final_div_factor: float = 1e4,
        cycle_momentum: bool = True,
        base_momentum: float = 0.85,
        max_momentum: float = 0.95,
    ):
        self.shape = OneCycleShape(pct_start, div_factor, final_div_factor)
        self.clock = clock
        self.momentum_range = (base_momentum, max_momentum) if cycle_momentum else None
        if cycle_momentum and not {"momentum", "betas"} & set(optimizer.defaults):
            raise ConfigError(
                f"cycle_momentum needs an optimizer with momentum or betas, not "
                f"{type(optimizer).__name__}; set cycle_momentum: false"
            )
        super().__init__(optimizer, lambda _step: self.shape.lr_factor(self.clock.fraction))

    def step(self, epoch: int | None = None) -> None:
        super().step(epoch)
        if self.momentum_range is not None:
            m = self.shape.momentum(self.clock.fraction, *self.momentum_range)
            for group in self.optimizer.param_groups:
                if "betas" in group:
                    group["betas"] = (m, *group["betas"][1:])
                else:
                    group["momentum"] = m

    def state_dict(self) -> dict:
        # The clock and the shape come from the run's callback and config, not the checkpoint; what
        # stays is plain data that Lightning's weights_only checkpoint loading accepts.
        state = super().state_dict()
        for key in ("clock", "shape"):
            state.pop(key, None)
        return state
