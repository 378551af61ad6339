"""Callbacks sn7 adds to Lightning's own."""

from __future__ import annotations

from pathlib import Path

import pytorch_lightning as pl


class PeriodicCheckpoint(pl.Callback):
    """Write `<dirpath>/<filename>` every `every_n_steps` optimizer steps.

    Lightning's ModelCheckpoint saves last.ckpt at validation; on a CPU an epoch can take many
    minutes, so a job killed mid-epoch would lose it all. This keeps last.ckpt at most N steps old
    (writes are atomic, see AtomicCheckpointIO); resuming from it continues at that step.
    """

    def __init__(self, dirpath: str, every_n_steps: int = 25, filename: str = "last.ckpt"):
        if every_n_steps < 1:
            raise ValueError(f"every_n_steps must be >= 1, got {every_n_steps}")
        self.path = Path(dirpath) / filename
        self.every_n_steps = int(every_n_steps)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        step = trainer.global_step
        if step > 0 and step % self.every_n_steps == 0 and not trainer.sanity_checking:
            trainer.save_checkpoint(self.path)
