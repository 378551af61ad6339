"""The LightningDataModule: prepare artifacts -> AOI split -> crop datasets -> loaders."""

from __future__ import annotations

import pytorch_lightning as pl
import torch
from omegaconf import DictConfig, OmegaConf
from torch.utils.data import DataLoader

from sn7.checks import check_training_data
from sn7.data.datasets import GridCropDataset, RandomCropDataset
from sn7.data.input_spec import InputSpec
from sn7.data.prepared import ensure_prepared, load_prepared
from sn7.data.transforms import build_augment, check_augment
from sn7.errors import ConfigError
from sn7.utils.config import to_container


def one_thread_worker(worker_id: int) -> None:
    """DataLoader workers get one thread each: on 2 cores, more would starve the training step.

    OpenCV's limit is set in the parent instead (see `_loader`): cv2.setNumThreads in a forked
    worker deadlocks when the parent has already used OpenCV's thread pool."""
    torch.set_num_threads(1)


class SN7DataModule(pl.LightningDataModule):
    def __init__(self, data: DictConfig, split: DictConfig, subset: DictConfig, augment, seed: int):
        super().__init__()
        check_training_data(data)
        check_augment(augment)
        # resolved now: interpolations like ${paths.cache_dir} point outside these nodes
        parts = {"data": data, "split": split, "subset": subset, "augment": augment}
        self.cfg = OmegaConf.create({k: to_container(v) for k, v in parts.items()} | {"seed": seed})
        self.spec = InputSpec.from_data_cfg(data)
        self.train_set: RandomCropDataset | None = None
        self.val_set: GridCropDataset | None = None

    def prepare_data(self) -> None:
        ensure_prepared(self.cfg, quiet=False)  # reads fresh artifacts; one process under DDP

    def setup(self, stage: str | None = None) -> None:
        if self.train_set is not None:
            return
        data = self.cfg.data
        prepared = load_prepared(data.work_dir)
        train_rows, val_rows = prepared.rows("train"), prepared.rows("val")
        if train_rows.empty or val_rows.empty:
            raise ConfigError(
                f"the split leaves {len(train_rows)} train and {len(val_rows)} val (selection) "
                "images; training needs both (at least 2 AOIs, or training AOIs with more than "
                "split.val_months months; see split.test_aois / split.val_aois / split.folds)"
            )
        smallest = int(min(prepared.manifest["height"].min(), prepared.manifest["width"].min()))
        if data.crop_size > smallest:
            raise ConfigError(
                f"data.crop_size={data.crop_size} exceeds the smallest tile side ({smallest} px)"
            )
        augment = build_augment(self.cfg.augment, self.spec.alpha_channel, self.spec.in_channels)
        # Lightning's overfit_batches repeats the first batches every epoch; random crops must then
        # depend on their index alone, or each epoch would bring new crops and nothing to overfit.
        overfit = self.trainer is not None and bool(self.trainer.overfit_batches)
        self.train_set = RandomCropDataset(
            train_rows,
            self.spec,
            data.crop_size,
            length=data.samples_per_epoch,
            pos_fraction=data.pos_fraction,
            augment=augment,
            seed=self.cfg.seed,
            fixed=overfit,
        )
        self.val_set = GridCropDataset(val_rows, self.spec, data.crop_size)

    def _loader(self, dataset, batch_size: int, train: bool) -> DataLoader:
        workers = int(self.cfg.data.num_workers)
        if workers > 0:
            import cv2

            # inherited by the forked workers; the main process does no OpenCV work while
            # workers augment
            cv2.setNumThreads(1)
        return DataLoader(
            dataset,
            batch_size=batch_size,
            shuffle=False,  # train crops are drawn at random by the dataset itself
            drop_last=train,
            num_workers=workers,
            persistent_workers=workers > 0 and bool(self.cfg.data.persistent_workers),
            worker_init_fn=one_thread_worker if workers > 0 else None,
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader(self.train_set, self.cfg.data.batch_size, train=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader(self.val_set, self.cfg.data.val_batch_size, train=False)
