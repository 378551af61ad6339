"""Per-tile normalisation: statistics of valid pixels only, and the same model input for a
training crop and for the full tile at inference."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from sn7.data.datasets import GridCropDataset
from sn7.data.input_spec import InputSpec
from sn7.data.prepared import prepare
from sn7.data.tile_stats import tile_stats
from sn7.errors import ConfigError
from sn7.inference.tiles import read_tile
from sn7.testing.synthetic import make_sn7_root

SPEC = InputSpec(
    bands=(1, 2, 3, 4),
    mean=(0.3, 0.3, 0.3, 0.0),
    std=(0.2, 0.2, 0.2, 1.0),
    alpha_band=4,
    crop_size=32,
    normalization="per_tile",
)


@pytest.fixture(scope="module")
def blank_root(tmp_path_factory):
    """A tile whose right quarter has alpha = 0 (and black pixels there)."""
    return make_sn7_root(
        tmp_path_factory.mktemp("stats"), aois=2, months=1, size=(64, 96), blank_months=["2018_01"]
    )


def test_stats_use_only_valid_pixels(blank_root):
    tile = next(iter(blank_root.tiles.values()))
    mean, std = tile_stats(tile.image, SPEC)
    import rasterio

    with rasterio.open(tile.image) as src:
        pixels = src.read(out_shape=(4, 16, 24)).astype(np.float32) / 255
    valid = pixels[3] > 0
    assert not valid.all()  # the blank strip is there
    np.testing.assert_allclose(mean[:3], pixels[:3, valid].mean(axis=1), rtol=1e-5)
    np.testing.assert_allclose(std[:3], pixels[:3, valid].std(axis=1), rtol=1e-5)


def test_per_tile_input_is_standardised_and_alpha_untouched(blank_root):
    tile = next(iter(blank_root.tiles.values()))
    x = read_tile(tile.image, SPEC).model_input
    alpha = x[3]
    assert set(np.unique(alpha)) <= {0.0, 1.0}
    assert abs(float(x[0][alpha > 0].mean())) < 0.1  # roughly centred (stats are decimated)


def test_training_crop_and_inference_tile_get_the_same_input(blank_root, prepare_cfg, tmp_path):
    prepared = prepare(prepare_cfg(blank_root.root, tmp_path / "work"), quiet=True)
    rows = pd.DataFrame(prepared.manifest)
    crops = GridCropDataset(rows, SPEC, crop_size=32)
    sample = crops[0]
    row, col = sample["window"].tolist()
    full = read_tile(rows.at[sample["tile"], "image"], SPEC).model_input
    np.testing.assert_allclose(sample["image"].numpy(), full[:, row : row + 32, col : col + 32])


def test_per_tile_needs_stats_and_unknown_modes_are_errors():
    with pytest.raises(ValueError, match="band statistics"):
        SPEC.normalize(np.zeros((4, 2, 2), np.uint8))
    with pytest.raises(ConfigError, match="normalization"):
        InputSpec(bands=(1,), mean=(0.0,), std=(1.0,), normalization="global")
