"""A test-only callback for DDP runs (tests/test_train.py): it lives in its own module so the
processes DDP spawns can import it (test modules are imported under pytest-only names).

Each rank counts its own val pixels at p >= 0.5 and logs `rank + 1` with sync_dist=True; after
validation it writes `rank<r>.json` with its counts and the metrics it sees logged, so the test
can check that what was logged is the all-rank result. With a TimeBudget callback (scheduler=
time_onecycle) it also records the budget's clock after each training step: broadcast from rank 0,
it must be the same number on every rank."""

from __future__ import annotations

import json
from pathlib import Path

import pytorch_lightning as pl

from sn7.constants import IGNORE
from sn7.lit.time_budget import TimeBudget


class RankProbe(pl.Callback):
    def __init__(self, out_dir: str):
        self.out_dir = Path(out_dir)
        self.counts = [0, 0, 0]
        self.clock: float | None = None

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        budgets = [c for c in trainer.callbacks if isinstance(c, TimeBudget)]
        if budgets:
            self.clock = budgets[0].elapsed_seconds

    def on_validation_epoch_start(self, trainer, pl_module) -> None:
        self.counts = [0, 0, 0]

    def on_validation_batch_end(
        self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0
    ) -> None:
        prob, mask = outputs["prob"].cpu(), batch["mask"].cpu()
        valid = mask != IGNORE
        pred, truth = (prob >= 0.5) & valid, (mask == 1) & valid
        new = [(pred & truth).sum(), (pred & ~truth).sum(), (~pred & truth).sum()]
        self.counts = [a + int(b) for a, b in zip(self.counts, new, strict=True)]

    def on_validation_epoch_end(self, trainer, pl_module) -> None:
        pl_module.log("probe/rank", float(trainer.global_rank + 1), sync_dist=True)

    def on_validation_end(self, trainer, pl_module) -> None:
        logged = {k: float(v) for k, v in trainer.callback_metrics.items() if v.numel() == 1}
        record = {
            "rank": trainer.global_rank,
            "counts": self.counts,
            "logged": logged,
            "clock": self.clock,
        }
        self.out_dir.mkdir(parents=True, exist_ok=True)
        (self.out_dir / f"rank{trainer.global_rank}.json").write_text(json.dumps(record))
