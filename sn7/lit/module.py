"""The LightningModule: model + loss + metrics + optimisation for binary building segmentation.

Its hyperparameters hold the model config (with `_target_`), the input spec and the loss, so a
checkpoint alone rebuilds the plain `nn.Module` (see sn7.inference.checkpoint) without this class.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch
from hydra.utils import instantiate
from pytorch_lightning.loggers import TensorBoardLogger
from torchmetrics import MetricCollection
from torchmetrics.classification import (
    BinaryF1Score,
    BinaryJaccardIndex,
    BinaryPrecision,
    BinaryRecall,
)

from sn7.constants import IGNORE
from sn7.data.input_spec import InputSpec
from sn7.lit.time_budget import TimeBudget
from sn7.metrics.pixel import best_row, counts_from, sweep_metric, sweep_rows, threshold_grid
from sn7.utils.config import to_container
from sn7.viz.panels import prediction_panel, rgb_preview

CHECKPOINT_FORMAT = "sn7-segmentation/1"


def _pixel_metrics(prefix: str) -> MetricCollection:
    kw = {"threshold": 0.5, "ignore_index": IGNORE}
    return MetricCollection(
        {
            "iou": BinaryJaccardIndex(**kw),
            "precision": BinaryPrecision(**kw),
            "recall": BinaryRecall(**kw),
            "f1": BinaryF1Score(**kw),
        },
        prefix=prefix,
    )


class SegmentationTask(pl.LightningModule):
    def __init__(
        self,
        model: dict,
        loss: dict,
        optimizer: dict,
        scheduler: dict | None,
        input_spec: dict,
        channels_last: bool = False,
        panel_samples: int = 4,
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
        self.train_metrics = _pixel_metrics("train/")
        self.val_metrics = _pixel_metrics("val/")
        self.val_sweep = sweep_metric(self.thresholds)
        self._panel: tuple | None = None
        if channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.hparams.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return self.model(x)[:, 0]

    def _step(self, batch: dict) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        logits = self(batch["image"])
        target = batch["mask"].long()
        return self.loss_fn(logits, target), logits.detach().float().sigmoid(), target

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        loss, prob, target = self._step(batch)
        self.train_metrics.update(prob, target)
        n = batch["image"].shape[0]
        self.log("train/loss", loss, on_step=True, on_epoch=False, prog_bar=True, batch_size=n)
        self.log("train/loss_epoch", loss, on_step=False, on_epoch=True, batch_size=n)
        self.log_dict(self.train_metrics, on_step=False, on_epoch=True, batch_size=n)
        return loss

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        loss, prob, target = self._step(batch)
        self.val_metrics.update(prob, target)
        self.val_sweep.update(prob, target)
        n = batch["image"].shape[0]
        self.log("val/loss", loss, on_epoch=True, batch_size=n, sync_dist=True)
        if batch_idx == 0:
            k = self.hparams.panel_samples
            self._panel = (batch["image"][:k].cpu(), target[:k].cpu(), prob[:k].cpu())

    def on_validation_epoch_end(self) -> None:
        values = self.val_metrics.compute()
        self.log("val/iou", values.pop("val/iou"), prog_bar=True)
        self.log_dict(values)
        self.val_metrics.reset()
        counts = counts_from(self.val_sweep)
        self.val_sweep.reset()
        rows = sweep_rows(self.thresholds, counts)
        best = best_row(rows)
        self.log("val/best_iou", best["iou"], prog_bar=True)
        self.log("val/best_threshold", best["threshold"])
        self.log("hp/val_best_iou", best["iou"])
        if not self.trainer.sanity_checking:
            self._log_tensorboard(counts)

    def on_train_start(self) -> None:
        if isinstance(self.logger, TensorBoardLogger):
            params = self.hparams.get("run_config") or dict(self.hparams)
            self.logger.log_hyperparams(params, {"hp/val_best_iou": 0.0})

    def _tb(self):
        for logger in self.loggers:
            if isinstance(logger, TensorBoardLogger):
                return logger.experiment
        return None

    def _log_tensorboard(self, counts: np.ndarray) -> None:
        tb = self._tb()
        if tb is None or self.global_rank != 0:
            return
        tp, fp, fn, tn = counts.T
        precision = np.where(tp + fp > 0, tp / np.maximum(tp + fp, 1), 1.0)
        recall = tp / np.maximum(tp + fn, 1)
        tb.add_pr_curve_raw(
            "val/pr_curve", tp, fp, tn, fn, precision, recall, self.global_step, len(tp)
        )
        if self._panel is not None:
            images, targets, probs = self._panel
            rows = []
            for img, target, prob in zip(images, targets, probs, strict=True):
                # the per-band percentile stretch undoes any normalisation: no need to invert it
                rgb = rgb_preview(img.numpy(), self.spec.rgb_channels)
                rows.append(prediction_panel(rgb, target.numpy(), prob.numpy(), 0.5))
            tb.add_image(
                "val/panel", np.concatenate(rows, axis=0), self.global_step, dataformats="HWC"
            )

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
