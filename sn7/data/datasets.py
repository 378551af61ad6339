"""Map-style datasets of crops, built from manifest rows. Each sample is a dict:
{"image": float32 (C, S, S), "mask": uint8 (S, S) with 0/1/255, "tile": int, "window": (row, col)}.

Images are read window by window from the GeoTIFF (no full-tile decode per crop); masks are small
(1 byte/pixel) and are held in memory after one PNG decode each.
"""

from __future__ import annotations

import os
from collections.abc import Callable

import numpy as np
import pandas as pd
import torch
from rasterio.windows import Window
from torch.utils.data import Dataset

from sn7.constants import BUILDING, IGNORE
from sn7.data.input_spec import InputSpec
from sn7.data.raster_io import open_dataset, read_png, read_raster
from sn7.data.tile_stats import tile_stats
from sn7.data.windows import window_starts

_MAX_POSITIVES = 20_000  # building pixels remembered per tile for positive-biased sampling


class _TileCrops(Dataset):
    """Shared machinery: per-process open rasters, in-memory masks, crop reading + padding."""

    def __init__(self, rows: pd.DataFrame, spec: InputSpec, crop_size: int):
        self.rows = rows.reset_index(drop=True)
        self.spec = spec
        self.crop = int(crop_size)
        self.masks = [read_png(p) for p in self.rows["mask"]]
        self.stats = [tile_stats(p, spec) if spec.per_tile else None for p in self.rows["image"]]
        self._sources: dict[int, object] = {}
        self._pid = None

    def _source(self, tile: int):
        if self._pid != os.getpid():  # forked into a DataLoader worker: never share GDAL handles
            self._sources, self._pid = {}, os.getpid()
        if tile not in self._sources:
            self._sources[tile] = open_dataset(self.rows.at[tile, "image"])
        return self._sources[tile]

    def read_crop(self, tile: int, row: int, col: int) -> tuple[np.ndarray, np.ndarray]:
        """uint8 (C, S, S) image and (S, S) mask; parts outside the tile are no-data/ignore."""
        mask_full = self.masks[tile]
        h, w = mask_full.shape
        s = self.crop
        r0, c0 = max(row, 0), max(col, 0)
        r1, c1 = min(row + s, h), min(col + s, w)
        window = Window(c0, r0, c1 - c0, r1 - r0)
        image = read_raster(
            self.rows.at[tile, "image"], self.spec.bands, window, self._source(tile)
        )
        if (r1 - r0, c1 - c0) == (s, s):
            return image, mask_full[r0:r1, c0:c1].copy()
        out_img = np.zeros((image.shape[0], s, s), np.uint8)
        out_mask = np.full((s, s), IGNORE, np.uint8)
        out_img[:, r0 - row : r1 - row, c0 - col : c1 - col] = image
        out_mask[r0 - row : r1 - row, c0 - col : c1 - col] = mask_full[r0:r1, c0:c1]
        return out_img, out_mask

    def sample(self, tile: int, row: int, col: int, image, mask) -> dict:
        return {
            "image": torch.from_numpy(self.spec.normalize(image, self.stats[tile])),
            "mask": torch.from_numpy(mask),
            "tile": tile,
            "window": torch.tensor([row, col]),
        }

    def __del__(self):
        for src in self._sources.values():
            src.close()


class RandomCropDataset(_TileCrops):
    """Random training crops; `pos_fraction` of them centred (with jitter) on a building pixel.

    `fixed=True` makes a crop (and its augmentation) a function of its index alone, so every
    epoch sees the same crops: what Lightning's `overfit_batches` expects of a dataset.
    """

    def __init__(
        self,
        rows: pd.DataFrame,
        spec: InputSpec,
        crop_size: int,
        length: int,
        pos_fraction: float = 0.5,
        augment: Callable | None = None,
        seed: int = 0,
        fixed: bool = False,
    ):
        super().__init__(rows, spec, crop_size)
        self.length = int(length)
        self.fixed = bool(fixed)
        self.pos_fraction = float(pos_fraction)
        self.augment = augment
        self.seed = seed
        self._rng: np.random.Generator | None = None
        self._rng_pid = None
        rng = np.random.default_rng(seed)
        self.positives = []
        for mask in self.masks:
            flat = np.flatnonzero(mask.ravel() == BUILDING)
            if flat.size > _MAX_POSITIVES:
                flat = rng.choice(flat, _MAX_POSITIVES, replace=False)
            self.positives.append(flat.astype(np.int64))
        self.tiles_with_positives = [i for i, p in enumerate(self.positives) if p.size]

    @property
    def rng(self) -> np.random.Generator:
        # One generator per process, seeded from torch's per-worker seed (which Lightning's
        # seed_everything(workers=True) makes reproducible and different in every worker).
        if self._rng is None or self._rng_pid != os.getpid():
            seed = (torch.initial_seed() + self.seed) % 2**32
            self._rng, self._rng_pid = np.random.default_rng(seed), os.getpid()
            if self.augment is not None:
                self.augment.set_seed(int(seed))
        return self._rng

    def _rng_for(self, index: int) -> np.random.Generator:
        if not self.fixed:
            return self.rng
        rng = np.random.default_rng([self.seed, index])
        if self.augment is not None:
            self.augment.set_seed(int(rng.integers(2**31)))
        return rng

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int) -> dict:
        rng, s = self._rng_for(index), self.crop
        if self.tiles_with_positives and rng.random() < self.pos_fraction:
            tile = int(rng.choice(self.tiles_with_positives))
            flat = int(rng.choice(self.positives[tile]))
            h, w = self.masks[tile].shape
            cy, cx = divmod(flat, w)
            jitter = rng.integers(-s // 4, s // 4 + 1, size=2)
            row = int(np.clip(cy - s // 2 + jitter[0], 0, max(h - s, 0)))
            col = int(np.clip(cx - s // 2 + jitter[1], 0, max(w - s, 0)))
        else:
            tile = int(rng.integers(len(self.rows)))
            h, w = self.masks[tile].shape
            row = int(rng.integers(max(h - s, 0) + 1))
            col = int(rng.integers(max(w - s, 0) + 1))
        image, mask = self.read_crop(tile, row, col)
        if self.augment is not None:
            image, mask = self.augment(image, mask)
        return self.sample(tile, row, col, image, mask)


class GridCropDataset(_TileCrops):
    """Deterministic crops covering every tile (validation in the training loop)."""

    def __init__(
        self, rows: pd.DataFrame, spec: InputSpec, crop_size: int, stride: int | None = None
    ):
        super().__init__(rows, spec, crop_size)
        overlap = self.crop - int(stride or crop_size)
        per_tile = [
            [
                (tile, r, c)
                for r in window_starts(mask.shape[0], self.crop, overlap)
                for c in window_starts(mask.shape[1], self.crop, overlap)
            ]
            for tile, mask in enumerate(self.masks)
        ]
        # Round-robin over tiles, so `limit_val_batches` still sees every tile.
        rounds = max(len(crops) for crops in per_tile)
        self.index = [crops[k] for k in range(rounds) for crops in per_tile if k < len(crops)]

    def __len__(self) -> int:
        return len(self.index)

    def __getitem__(self, index: int) -> dict:
        tile, row, col = self.index[index]
        return self.sample(tile, row, col, *self.read_crop(tile, row, col))
