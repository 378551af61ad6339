"""Valid pixels from the alpha band (sn7.data.raster_io.read_valid), shared by masks, per-tile
statistics and inference."""

from __future__ import annotations

import numpy as np
import pytest
import rasterio
from affine import Affine

from sn7.data.raster_io import open_raster, read_valid
from sn7.errors import DataError


@pytest.fixture
def tile(tmp_path):
    data = np.full((4, 8, 12), 100, np.uint8)
    data[3, :, :4] = 0  # alpha 0: the left third is outside the mosaic
    path = tmp_path / "t.tif"
    profile = {"driver": "GTiff", "width": 12, "height": 8, "count": 4, "dtype": "uint8"}
    with rasterio.open(path, "w", **profile, transform=Affine.identity()) as dst:
        dst.write(data)
    return path


def test_alpha_zero_is_invalid(tile):
    valid = read_valid(tile, 4)
    assert valid.shape == (8, 12) and valid.dtype == bool
    assert not valid[:, :4].any() and valid[:, 4:].all()
    with open_raster(tile) as src:
        np.testing.assert_array_equal(read_valid(tile, 4, src=src), valid)
        assert read_valid(tile, 4, src=src, out_shape=(2, 3)).tolist() == [[False, True, True]] * 2


def test_without_alpha_band_everything_is_valid(tile):
    assert read_valid(tile, None).all() and read_valid(tile, None).shape == (8, 12)
    assert read_valid(tile, None, out_shape=(2, 3)).shape == (2, 3)


def test_a_missing_alpha_band_names_the_file(tile):
    with pytest.raises(DataError, match=r"t\.tif"):
        read_valid(tile, 5)
