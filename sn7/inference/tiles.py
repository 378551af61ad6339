"""Reading one full tile for inference: model bands, valid-pixel mask, georeferencing."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from sn7.data.input_spec import InputSpec
from sn7.data.raster_io import RasterInfo, info_of, open_raster, read_raster, read_valid
from sn7.data.tile_stats import tile_stats


@dataclass
class TileInput:
    pixels: np.ndarray  # (C, H, W) uint8, the model's bands
    valid: np.ndarray  # (H, W) bool, alpha > 0 (all True when there is no alpha band)
    info: RasterInfo
    model_input: np.ndarray  # (C, H, W) float32, normalised exactly as in training


def read_tile(path: str | Path, spec: InputSpec) -> TileInput:
    path = Path(path)
    with open_raster(path) as src:
        info = info_of(src, path)
        pixels = read_raster(path, spec.bands, src=src)
        alpha = spec.alpha_band
        if alpha is not None and alpha > src.count:  # e.g. a plain RGB image: valid everywhere
            alpha = None
        valid = read_valid(path, alpha, src=src)
    stats = tile_stats(path, spec) if spec.per_tile else None
    return TileInput(pixels, valid, info, spec.normalize(pixels, stats))
