"""Per-tile band statistics for per-tile normalisation (InputSpec.normalization = "per_tile").

Training crops and inference windows must be normalised with the same numbers, so both take them
from here: a 1/4-decimated read of the whole tile, valid (alpha > 0) pixels only.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from sn7.data.input_spec import InputSpec, TileStats
from sn7.data.raster_io import open_raster, read_raster, read_valid

DECIMATION = 4
_MIN_STD = 0.01  # a flat tile (all one colour) must not blow up the input


def tile_stats(path: str | Path, spec: InputSpec) -> TileStats:
    """Mean and std (x/255 units) of each model band over the tile's valid pixels."""
    with open_raster(path) as src:
        shape = (max(1, src.height // DECIMATION), max(1, src.width // DECIMATION))
        pixels = read_raster(path, spec.bands, src=src, out_shape=shape).astype(np.float32) / 255
        valid = read_valid(path, spec.alpha_band, src=src, out_shape=shape)
    if not valid.any():  # nothing to measure: fall back to the fixed values
        return np.asarray(spec.mean, np.float32), np.asarray(spec.std, np.float32)
    values = pixels[:, valid]
    return values.mean(axis=1), np.maximum(values.std(axis=1), _MIN_STD)
