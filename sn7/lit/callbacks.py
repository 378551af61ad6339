"""Callbacks sn7 adds to Lightning's own (registered in conf/callbacks/default.yaml)."""

from __future__ import annotations

import numpy as np
import pytorch_lightning as pl
from pytorch_lightning.loggers import TensorBoardLogger

from sn7.metrics.pixel import sweep_rows
from sn7.viz.panels import prediction_panel, rgb_preview


def tensorboard_of(trainer: pl.Trainer) -> TensorBoardLogger | None:
    return next((lg for lg in trainer.loggers if isinstance(lg, TensorBoardLogger)), None)


class TensorBoardPanels(pl.Callback):
    """What TensorBoard shows beyond the logged scalars: the hparams table (the run's whole
    config against hp/val_best_iou), and after each validation a panel of the first val batch's
    first `panel_samples` crops (image | truth | probability | errors) and the PR curve over the
    task's threshold grid. Does nothing without a TensorBoardLogger.

    Reads from the SegmentationTask: `hparams.run_config`, `spec`, the `{"prob": ...}` that
    validation_step returns and the `val_counts` that on_validation_epoch_end leaves behind.
    """

    def __init__(self, panel_samples: int = 4, threshold: float = 0.5):
        if panel_samples < 0:
            raise ValueError(f"panel_samples must be >= 0, got {panel_samples}")
        self.panel_samples = int(panel_samples)
        self.threshold = float(threshold)
        self._panel: tuple | None = None

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        tb = tensorboard_of(trainer)
        if tb is not None:
            params = pl_module.hparams.get("run_config") or dict(pl_module.hparams)
            tb.log_hyperparams(params, {"hp/val_best_iou": 0.0})

    def on_validation_epoch_start(self, trainer, pl_module) -> None:
        self._panel = None

    def on_validation_batch_end(
        self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0
    ) -> None:
        if (
            batch_idx != 0
            or self._panel is not None
            or not self.panel_samples
            or not trainer.is_global_zero
            or tensorboard_of(trainer) is None
            or not isinstance(outputs, dict)
        ):
            return
        k = self.panel_samples
        prob = outputs["prob"]
        self._panel = (batch["image"][:k].cpu(), batch["mask"][:k].cpu(), prob[:k].cpu())

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        # on_validation_end, not _epoch_end: callbacks' epoch-end hooks run before the module's,
        # which sums the counts over processes
        tb = tensorboard_of(trainer)
        if tb is None or trainer.sanity_checking or not trainer.is_global_zero:
            return
        step = trainer.global_step
        counts = getattr(pl_module, "val_counts", None)
        if counts is not None:
            tp, fp, fn, tn = counts.T
            rows = sweep_rows(list(range(len(tp))), counts)  # metrics.pixel's rules, as evaluate
            precision = np.array([r["precision"] for r in rows])
            recall = np.array([r["recall"] for r in rows])
            tb.experiment.add_pr_curve_raw(
                "val/pr_curve", tp, fp, tn, fn, precision, recall, step, len(tp)
            )
        if self._panel is not None:
            rows = []
            for image, target, prob in zip(*self._panel, strict=True):
                # the per-band percentile stretch undoes any normalisation: no need to invert it
                rgb = rgb_preview(image.numpy(), pl_module.spec.rgb_channels)
                rows.append(prediction_panel(rgb, target.numpy(), prob.numpy(), self.threshold))
            panel = np.concatenate(rows, axis=0)
            tb.experiment.add_image("val/panel", panel, step, dataformats="HWC")
            self._panel = None
