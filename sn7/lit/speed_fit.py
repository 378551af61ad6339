"""Fit a time-budget recipe to this machine: the first candidate that still trains enough steps.

A time-budget recipe (experiment=cpu_best: 28 minutes) takes as many steps as the machine allows:
~620 on a 2-core EPYC with native bf16, ~110 on an AVX2-only CPU at fp32 (15 s a step), too few
for the same network to learn. `speed_fit` times a few training steps of each candidate (config
overrides, costliest first) on this machine, at the run's precision and batch, and keeps the first
whose projected steps within the budget reach `min_steps`; when none does, the cheapest. The
choice and every measurement go to the log and to train_summary.json, so a results row says which
recipe its machine ran.

Projected steps = budget seconds x `train_share` / measured seconds per step: `train_share` is the
part of the budget spent in training steps (validation and checkpoints take the rest).
"""

from __future__ import annotations

import logging
import statistics
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field

import torch

from sn7.errors import ConfigError
from sn7.utils.hardware import autocast

log = logging.getLogger(__name__)

Candidate = dict[str, object]  # dotted config key -> value, e.g. {"model.upscale": 1}


@dataclass(frozen=True)
class SpeedFitSettings:
    """cfg.speed_fit: what a run must reach, and the recipes it may fall back to."""

    candidates: tuple[Candidate, ...]
    min_steps: int
    budget_minutes: float
    train_share: float = 0.85
    timed_steps: int = 2  # after one warm-up step

    @classmethod
    def from_config(cls, node: Mapping) -> SpeedFitSettings:
        values = dict(node)
        known = {"candidates", "min_steps", "budget_minutes", "train_share", "timed_steps"}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ConfigError(f"speed_fit: unknown keys {unknown}; known: {sorted(known)}")
        candidates = tuple(dict(c or {}) for c in values.pop("candidates", None) or ())
        if not candidates:
            raise ConfigError("speed_fit.candidates: give at least one (e.g. [{}]: the recipe)")
        settings = cls(candidates=candidates, **values)
        if int(settings.min_steps) < 1 or float(settings.budget_minutes) <= 0:
            raise ConfigError(
                f"speed_fit: min_steps={settings.min_steps} must be >= 1 and "
                f"budget_minutes={settings.budget_minutes} > 0"
            )
        if not 0 < float(settings.train_share) <= 1 or int(settings.timed_steps) < 1:
            raise ConfigError(
                f"speed_fit: train_share={settings.train_share} must be in (0, 1], "
                f"timed_steps={settings.timed_steps} >= 1"
            )
        return settings


@dataclass
class SpeedFit:
    """What speed_fit measured and chose (train_summary.json's `speed_fit`)."""

    chosen: Candidate
    fits: bool  # False: no candidate reached min_steps; the cheapest was taken
    min_steps: int
    budget_minutes: float
    measured: list[dict] = field(default_factory=list)  # overrides, s_per_step, projected_steps

    def as_dict(self) -> dict:
        return asdict(self)


def choose(settings: SpeedFitSettings, seconds_per_step: Callable[[Candidate], float]) -> SpeedFit:
    """Time the candidates in order; the first whose projection reaches min_steps wins (the rest
    are not timed), else the last (cheapest)."""
    budget_s = 60 * float(settings.budget_minutes) * float(settings.train_share)
    measured = []
    for candidate in settings.candidates:
        s = float(seconds_per_step(candidate))
        projected = int(budget_s / s) if s > 0 else 10**9
        measured.append(
            {"overrides": candidate, "s_per_step": round(s, 3), "projected_steps": projected}
        )
        log.info(
            "speed_fit: %s: %.2f s a step -> ~%d steps in %.0f min",
            candidate or "the recipe",
            s,
            projected,
            settings.budget_minutes,
        )
        if projected >= settings.min_steps:
            return SpeedFit(
                candidate, True, int(settings.min_steps), settings.budget_minutes, measured
            )
    log.warning(
        "speed_fit: no candidate reaches %d steps in %.0f min on this machine; taking the "
        "cheapest, %s",
        settings.min_steps,
        settings.budget_minutes,
        settings.candidates[-1],
    )
    return SpeedFit(
        settings.candidates[-1], False, int(settings.min_steps), settings.budget_minutes, measured
    )


def time_training_step(
    model: torch.nn.Module,
    loss_of: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    optimizer: torch.optim.Optimizer,
    batch_shape: Sequence[int],
    precision: str,
    channels_last: bool = False,
    timed_steps: int = 2,
) -> float:
    """Median seconds of a training step (`loss_of(x, target)`: forward and loss; backward,
    optimizer step) on a random (B, C, H, W) batch at `precision`, after one warm-up step. The
    model is trained on noise for those steps: build a fresh one for the run."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(*batch_shape, generator=g)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    b, _, h, w = batch_shape
    target = (torch.rand(b, h, w, generator=g) < 0.3).long()
    model.train()
    times = []
    for _ in range(timed_steps + 1):
        start = time.perf_counter()
        optimizer.zero_grad(set_to_none=True)
        with autocast(precision):
            loss = loss_of(x, target)
        loss.backward()
        optimizer.step()
        times.append(time.perf_counter() - start)
    return statistics.median(times[1:])
