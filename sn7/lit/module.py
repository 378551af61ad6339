"""The LightningModule: model + loss + metrics + optimisation for binary building segmentation.

Its hyperparameters hold the model config (with `_target_`), the input spec and the loss, so a
checkpoint alone rebuilds the plain `nn.Module` (see sn7.inference.checkpoint) without this class.
Pixel metrics come from sn7.metrics.pixel, the code evaluate uses (p >= threshold is positive), so
val/iou here and evaluate's crop IoU at 0.5 are the same number. TensorBoard images and PR curves
are drawn by sn7.lit.callbacks.TensorBoardPanels.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch
from hydra.utils import instantiate

from sn7.data.input_spec import InputSpec
from sn7.lit.time_budget import TimeBudget
from sn7.metrics.pixel import best_row, counts_from, sweep_metric, sweep_rows, threshold_grid
from sn7.models.heads import BUILDING_CH, building_probability
from sn7.utils.config import to_container

CHECKPOINT_FORMAT = "sn7-segmentation/1"
THRESHOLD = 0.5  # of train/ and val/ iou, precision, recall, f1 (val/best_* sweep the grid)
SCORES = ("iou", "precision", "recall", "f1")


class SegmentationTask(pl.LightningModule):
    def __init__(
        self,
        model: dict,
        loss: dict,
        optimizer: dict,
        scheduler: dict | None,
        input_spec: dict,
        channels_last: bool = False,
        run_config: dict | None = None,
    ):
        super().__init__()
        # plain containers only: checkpoints must open with torch.load(weights_only=True)
        model, loss, optimizer, scheduler, input_spec, run_config = (
            to_container(c) for c in (model, loss, optimizer, scheduler, input_spec, run_config)
        )
        self.save_hyperparameters()
        self.spec = InputSpec.from_dict(input_spec)
        self.model = instantiate(model)
        self.loss_fn = instantiate(loss)
        self.thresholds = threshold_grid()
        if THRESHOLD not in self.thresholds:
            raise ValueError(f"the threshold grid must hold {THRESHOLD}: {self.thresholds}")
        self.train_counts = sweep_metric([THRESHOLD])
        self.val_sweep = sweep_metric(self.thresholds)
        # (T, 4) TP, FP, FN, TN per threshold of the last validation, summed over processes:
        # what callbacks (TensorBoardPanels' PR curve) read after on_validation_epoch_end
        self.val_counts: np.ndarray | None = None
        if channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        # one training crop: Lightning's model summary counts FLOPs and sizes on it (else "0")
        size = self.spec.crop_size
        self.example_input_array = torch.zeros(1, self.spec.in_channels, size, size)

    def outputs(self, x: torch.Tensor) -> torch.Tensor:
        """(B, K, H, W): every output head's logits (sn7.models.heads)."""
        if self.hparams.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return self.model(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, H, W): the building head's logits."""
        return self.outputs(x)[:, BUILDING_CH]

    def _step(self, batch: dict) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Loss over all heads, and the probability map later stages read (metrics score it)."""
        logits = self.outputs(batch["image"])
        target = batch["mask"].long()
        prob = building_probability(logits.detach())
        return self.loss_fn(logits, target), prob, target

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        loss, prob, target = self._step(batch)
        self.train_counts.update(prob, target)
        n = batch["image"].shape[0]
        self.log("train/loss", loss, on_step=True, on_epoch=False, prog_bar=True, batch_size=n)
        self.log("train/loss_epoch", loss, on_step=False, on_epoch=True, batch_size=n)
        return loss

    def on_train_epoch_end(self) -> None:
        counts = counts_from(self.train_counts)
        self.train_counts.reset()
        self._log_scores("train/", sweep_rows([THRESHOLD], counts)[0])

    def validation_step(self, batch: dict, batch_idx: int) -> dict:
        loss, prob, target = self._step(batch)
        self.val_sweep.update(prob, target)
        n = batch["image"].shape[0]
        self.log("val/loss", loss, on_epoch=True, batch_size=n, sync_dist=True)
        return {"prob": prob}  # for callbacks (TensorBoardPanels draws the first batch)

    def on_validation_epoch_end(self) -> None:
        self.val_counts = counts_from(self.val_sweep)
        self.val_sweep.reset()
        rows = sweep_rows(self.thresholds, self.val_counts)
        self._log_scores("val/", rows[self.thresholds.index(THRESHOLD)], prog_bar=True)
        best = best_row(rows)
        self.log("val/best_iou", best["iou"], prog_bar=True)
        self.log("val/best_threshold", best["threshold"])
        self.log("hp/val_best_iou", best["iou"])

    def _log_scores(self, prefix: str, row: dict, prog_bar: bool = False) -> None:
        """IoU (on the progress bar if asked), precision, recall, F1 of one sweep row; the
        counts behind them are already summed over processes (counts_from)."""
        for name in SCORES:
            self.log(prefix + name, float(row[name]), prog_bar=prog_bar and name == "iou")

    def configure_optimizers(self) -> Any:
        optimizer = instantiate(self.hparams.optimizer)(params=self.parameters())
        sched = self.hparams.scheduler
        if not sched or not sched.get("scheduler"):
            return optimizer
        kwargs = {}
        if sched.get("total_steps_arg"):
            kwargs[sched["total_steps_arg"]] = int(self.trainer.estimated_stepping_batches)
        if sched.get("clock_arg"):  # a time-budget schedule reads the TimeBudget callback
            kwargs[sched["clock_arg"]] = TimeBudget.of(self.trainer)
        scheduler = instantiate(sched["scheduler"])(optimizer, **kwargs)
        return {
            "optimizer": optimizer,
            "lr_scheduler": {"scheduler": scheduler, "interval": sched.get("interval", "step")},
        }

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        checkpoint["sn7_format"] = CHECKPOINT_FORMAT
