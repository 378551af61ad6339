"""Crop datasets (sn7.data.datasets): windowed reads, padding at tile edges, positive-biased
random crops, full-coverage grid crops, reproducibility."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import rasterio
import torch

import sn7.data.datasets as datasets
from sn7.constants import IGNORE
from sn7.data.datasets import GridCropDataset, RandomCropDataset
from sn7.data.input_spec import InputSpec
from sn7.data.raster_io import write_png
from sn7.data.transforms import Augment
from sn7.data.windows import window_starts

SPEC = InputSpec(
    bands=(1, 2, 3, 4), mean=(0.3, 0.3, 0.3, 0.0), std=(0.2, 0.2, 0.2, 1.0), alpha_band=4
)


@pytest.fixture(scope="module")
def tiles(synthetic_root, tmp_path_factory):
    """Manifest-like rows (image, mask PNG) for every synthetic tile, plus the truth per row.

    The masks are the generator's expected masks, so these tests do not depend on prepare."""
    out = tmp_path_factory.mktemp("dataset_masks")
    rows, truth = [], []
    for i, tile in enumerate(synthetic_root.tiles.values()):
        png = out / f"{i}.png"
        write_png(png, tile.mask)
        rows.append({"aoi": tile.aoi, "stem": tile.stem, "image": str(tile.image), "mask": png})
        with rasterio.open(tile.image) as src:
            truth.append((src.read(), tile.mask))
    return pd.DataFrame(rows), truth


def test_crop_starts_cover_the_side_and_end_flush():
    assert window_starts(96, 64) == [0, 32]
    assert window_starts(128, 64) == [0, 64]
    assert window_starts(130, 64, overlap=16) == [0, 48, 66]  # stride 48
    assert window_starts(64, 64) == [0]
    assert window_starts(50, 64) == [0]  # smaller than a crop: one padded crop


@pytest.mark.parametrize(("crop", "stride"), [(64, None), (64, 40), (32, None), (112, None)])
def test_grid_crops_cover_every_pixel_of_every_tile(tiles, crop, stride):
    rows, truth = tiles
    ds = GridCropDataset(rows, SPEC, crop, stride=stride)
    covered = [np.zeros(mask.shape, bool) for _, mask in truth]
    for tile, r, c in ds.index:
        covered[tile][max(r, 0) : r + crop, max(c, 0) : c + crop] = True
    assert all(c.all() for c in covered)
    # round robin: the first crops visit every tile once
    assert sorted(t for t, _, _ in ds.index[: len(rows)]) == list(range(len(rows)))
    assert len(set(ds.index)) == len(ds.index)


def test_grid_crops_hold_the_right_pixels(tiles):
    rows, truth = tiles
    ds = GridCropDataset(rows, SPEC, 64)
    assert len(ds) == len(rows) * 2 * 2  # 96 x 128 tiles -> rows [0, 32], cols [0, 64]
    for i in range(len(ds)):
        sample = ds[i]
        tile, (r, c) = sample["tile"], sample["window"].tolist()
        image, mask = truth[tile]
        assert sample["image"].dtype == torch.float32 and sample["image"].shape == (4, 64, 64)
        assert sample["mask"].dtype == torch.uint8 and sample["mask"].shape == (64, 64)
        np.testing.assert_array_equal(sample["mask"].numpy(), mask[r : r + 64, c : c + 64])
        expected = SPEC.normalize(image[:, r : r + 64, c : c + 64])
        np.testing.assert_allclose(sample["image"].numpy(), expected, rtol=0, atol=1e-6)


def test_crops_beyond_the_tile_are_padded_as_no_data(tiles):
    """A crop larger than the tile (or hanging over an edge) is filled with alpha 0 and label 255
    outside the tile, whatever side it hangs over."""
    rows, truth = tiles
    ds = GridCropDataset(rows, SPEC, 112)  # tiles are 96 x 128: 16 rows of padding at the bottom
    image, mask = truth[0]
    raw, raw_mask = ds.read_crop(0, 0, 0)
    assert raw.shape == (4, 112, 112) and raw_mask.shape == (112, 112)
    np.testing.assert_array_equal(raw[:, :96], image[:, :96, :112])
    np.testing.assert_array_equal(raw_mask[:96], mask[:96, :112])
    assert (raw[:, 96:] == 0).all()  # alpha 0 and black colour
    assert (raw_mask[96:] == IGNORE).all()

    raw, raw_mask = ds.read_crop(0, -10, 100)  # over the top, bottom and right edges
    np.testing.assert_array_equal(raw[:, 10:106, :28], image[:, :, 100:])
    np.testing.assert_array_equal(raw_mask[10:106, :28], mask[:, 100:])
    outside = np.ones((112, 112), bool)
    outside[10:106, :28] = False
    assert (raw[3][outside] == 0).all() and (raw_mask[outside] == IGNORE).all()

    sample = ds[0]  # normalised: padded alpha is 0, padded colour is (0 - mean) / std
    assert (sample["mask"][96:] == IGNORE).all()
    assert torch.all(sample["image"][3, 96:] == 0)
    assert torch.allclose(sample["image"][0, 96:], torch.tensor(-0.3 / 0.2))


def test_images_are_read_window_by_window(tiles, monkeypatch):
    rows, _ = tiles
    windows = []
    real = datasets.read_raster

    def recording(path, bands, window, src=None):
        windows.append((path, tuple(bands), window))
        return real(path, bands, window, src)

    monkeypatch.setattr(datasets, "read_raster", recording)
    ds = GridCropDataset(rows, SPEC, 64)
    for i in range(len(rows)):
        ds[i]
    assert len(windows) == len(rows)
    for _, bands, window in windows:
        assert bands == (1, 2, 3, 4)
        assert window is not None and (window.height, window.width) == (64, 64)

    windows.clear()
    GridCropDataset(rows, SPEC, 112).read_crop(0, -10, 100)
    ((_, _, window),) = windows
    assert (window.row_off, window.col_off, window.height, window.width) == (0, 100, 96, 28)


def test_bands_follow_the_spec(tiles):
    rows, truth = tiles
    spec = InputSpec(bands=(3, 1), mean=(0.0, 0.0), std=(1.0, 1.0), alpha_band=4)
    sample = GridCropDataset(rows, spec, 64)[0]
    image, _ = truth[0]
    expected = image[[2, 0], :64, :64].astype(np.float32) / 255
    np.testing.assert_allclose(sample["image"].numpy(), expected, atol=1e-6)


def draws(ds: RandomCropDataset, n: int, monkeypatch) -> list[tuple[int, int, int]]:
    """Crop positions of `n` samples, without reading pixels (fast)."""
    monkeypatch.setattr(
        ds, "read_crop", lambda tile, r, c: (np.zeros((4, ds.crop, ds.crop), np.uint8), None)
    )
    monkeypatch.setattr(ds, "sample", lambda tile, r, c, image, mask: (tile, r, c))
    return [ds[i] for i in range(n)]


def test_pos_fraction_one_always_shows_buildings(tiles):
    rows, truth = tiles
    torch.manual_seed(0)
    ds = RandomCropDataset(rows, SPEC, 32, length=300, pos_fraction=1.0, seed=1)
    empty = {i for i, (_, mask) in enumerate(truth) if not (mask == 1).any()}
    assert empty  # the synthetic root has a month without buildings
    for i in range(len(ds)):
        sample = ds[i]
        assert (sample["mask"] == 1).any(), f"crop {i} at {sample['window'].tolist()}"
        assert sample["tile"] not in empty
        r, c = sample["window"].tolist()
        assert 0 <= r <= 96 - 32 and 0 <= c <= 128 - 32


def test_pos_fraction_zero_is_uniform(tiles, monkeypatch):
    rows, _ = tiles
    torch.manual_seed(0)
    ds = RandomCropDataset(rows, SPEC, 32, length=4000, pos_fraction=0.0, seed=2)
    got = np.array(draws(ds, 4000, monkeypatch))
    counts = np.bincount(got[:, 0], minlength=len(rows))
    expected = len(got) / len(rows)
    assert (np.abs(counts - expected) < 0.2 * expected).all(), counts  # empty tiles included
    for axis, top in ((1, 96 - 32), (2, 128 - 32)):
        pos = got[:, axis]
        assert pos.min() == 0 and pos.max() == top  # both ends reachable
        hist = np.bincount(pos * 4 // (top + 1), minlength=4)  # quarters of the range
        assert (np.abs(hist - len(got) / 4) < 0.1 * len(got) / 4).all(), hist


def test_positive_bias_raises_the_share_of_building_crops(tiles, monkeypatch):
    rows, truth = tiles

    def building_share(pos_fraction: float) -> float:
        torch.manual_seed(0)
        ds = RandomCropDataset(rows, SPEC, 16, length=600, pos_fraction=pos_fraction, seed=3)
        with monkeypatch.context() as m:
            got = draws(ds, 600, m)
        return np.mean([(truth[t][1][r : r + 16, c : c + 16] == 1).any() for t, r, c in got])

    uniform, half, always = building_share(0.0), building_share(0.5), building_share(1.0)
    assert always == 1.0
    assert uniform < half < always
    assert half == pytest.approx((1 + uniform) / 2, abs=0.08)


def test_random_crops_are_reproducible_for_a_seed(tiles, augment_cfg):
    rows, _ = tiles
    aug_cfg = augment_cfg(affine_p=0.5, brightness_contrast_p=0.5)

    def run(seed: int, torch_seed: int = 0) -> list[dict]:
        torch.manual_seed(torch_seed)  # what seed_everything does; workers derive from it
        ds = RandomCropDataset(
            rows, SPEC, 32, length=6, pos_fraction=0.5, seed=seed, augment=Augment(aug_cfg, 3, 4)
        )
        return [ds[i] for i in range(len(ds))]

    a, b = run(5), run(5)
    for x, y in zip(a, b, strict=True):
        assert x["tile"] == y["tile"]
        assert torch.equal(x["window"], y["window"])
        assert torch.equal(x["image"], y["image"]) and torch.equal(x["mask"], y["mask"])

    def positions(samples):
        return [(s["tile"], *s["window"].tolist()) for s in samples]

    assert positions(run(6)) != positions(a)
    assert positions(run(5, torch_seed=1)) != positions(a)


def test_random_crops_have_the_sample_layout(tiles):
    rows, _ = tiles
    torch.manual_seed(0)
    ds = RandomCropDataset(rows, SPEC, 48, length=5, seed=0)
    assert len(ds) == 5
    sample = ds[3]
    assert set(sample) == {"image", "mask", "tile", "window"}
    assert sample["image"].shape == (4, 48, 48) and sample["image"].dtype == torch.float32
    assert sample["mask"].shape == (48, 48) and sample["mask"].dtype == torch.uint8
    assert set(torch.unique(sample["mask"]).tolist()) <= {0, 1, IGNORE}


def test_fixed_crops_depend_on_the_index_alone(tiles, augment_cfg):
    """fixed=True (used for Lightning's overfit_batches): index i gives the same crop and the same
    augmentation every time it is read, in any process; other indices give other crops."""
    rows, _ = tiles
    aug_cfg = augment_cfg(affine_p=1.0, brightness_contrast_p=1.0)

    def make() -> RandomCropDataset:
        return RandomCropDataset(
            rows, SPEC, 32, length=8, seed=4, augment=Augment(aug_cfg, 3, 4), fixed=True
        )

    torch.manual_seed(0)
    ds = make()
    first = [ds[i] for i in range(4)]
    torch.manual_seed(1)  # another worker / another run seed
    again = [make()[i] for i in reversed(range(4))][::-1]
    for a, b in zip(first, again, strict=True):
        assert a["tile"] == b["tile"] and torch.equal(a["window"], b["window"])
        assert torch.equal(a["image"], b["image"]) and torch.equal(a["mask"], b["mask"])
    assert torch.equal(ds[2]["image"], first[2]["image"])  # a second epoch
    positions = {(s["tile"], *s["window"].tolist()) for s in first}
    assert len(positions) > 1
