"""Rasterizing a tile's labels into a 0 / 1 / 255 mask (sn7.data.masks), and bad rasters."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import rasterio

from sn7.constants import BUILDING, IGNORE
from sn7.data.layout import LABEL_SOURCES, discover_images
from sn7.data.masks import RasterizeSettings, burn, rasterize_tile
from sn7.data.raster_io import read_raster
from sn7.errors import DataError
from sn7.testing.synthetic import make_sn7_root

SOURCES = sorted(LABEL_SOURCES)


def iou(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a == BUILDING, b == BUILDING
    union = (a | b).sum()
    return float((a & b).sum() / union) if union else 1.0


def test_synthetic_root_holds_every_special_case(synthetic_root):
    """Guards the fixture: the exact-mask tests below are only as good as what it contains."""
    tiles = discover_images(synthetic_root.root)
    truths = [synthetic_root.tiles[t.key] for t in tiles]
    assert any(not t.buildings for t in truths)  # an empty FeatureCollection
    assert any(len(t.buildings) >= 10 for t in truths)
    assert any((read_raster(t.image, [4])[0] == 0).any() for t in tiles)  # alpha = 0
    assert any(t.udm_raster is not None for t in tiles)
    assert any(
        t.udm_vectors is not None and b'"Polygon"' in t.udm_vectors.read_bytes() for t in tiles
    )


@pytest.mark.parametrize("label_source", SOURCES)
def test_masks_are_exact_for_every_label_source(synthetic_root, label_source):
    for tile in discover_images(synthetic_root.root, label_source=label_source):
        truth = synthetic_root.tiles[tile.key]
        result = rasterize_tile(tile, RasterizeSettings())
        assert result.mask.dtype == np.uint8
        np.testing.assert_array_equal(result.mask, truth.mask, err_msg=tile.key)
        assert result.n_buildings == len(truth.buildings)


def test_ignore_pixels_are_never_background(synthetic_root):
    """alpha = 0, UDM polygons and UDM rasters become 255, and stats count only valid pixels."""
    for tile in discover_images(synthetic_root.root):
        result = rasterize_tile(tile, RasterizeSettings())
        alpha = read_raster(tile.image, [4])[0]
        assert (result.mask[alpha == 0] == IGNORE).all()
        if tile.udm_raster is not None:
            flagged = read_raster(tile.udm_raster, [1])[0] > 0
            assert flagged.any() and (result.mask[flagged] == IGNORE).all()
        valid = result.mask != IGNORE
        assert result.valid_frac == pytest.approx(valid.mean())
        expected_frac = (result.mask == BUILDING).sum() / valid.sum()
        assert result.building_frac == pytest.approx(expected_frac)


def test_udm_polygon_is_ignore(synthetic_root):
    clouded = [t for t in discover_images(synthetic_root.root) if t.date == "2018-04"]
    assert clouded
    for tile in clouded:
        with_udm = rasterize_tile(tile, RasterizeSettings()).mask
        without = rasterize_tile(replace(tile, udm_vectors=None), RasterizeSettings()).mask
        # the cloud covers the top-left third (32x42 px of 96x128) and nothing else
        changed = with_udm != without
        assert changed.any() and (with_udm[changed] == IGNORE).all()
        assert (with_udm[:32, :42] == IGNORE).all()
        assert (with_udm[32:, :] != IGNORE).all() and (with_udm[:, 42:] != IGNORE).all()


def test_alpha_band_none_uses_every_pixel(synthetic_root):
    blank = next(t for t in discover_images(synthetic_root.root) if t.date == "2018-03")
    no_udm = replace(blank, udm_raster=None)
    mask = rasterize_tile(no_udm, RasterizeSettings(alpha_band=None)).mask
    assert set(np.unique(mask)) <= {0, 1}
    assert (rasterize_tile(no_udm, RasterizeSettings()).mask == IGNORE).any()


@pytest.mark.parametrize("size", [(1023, 64), (64, 1023), (1023, 1023)], ids=str)
def test_odd_tile_sizes(tmp_path, size):
    n = 40 if size == (1023, 1023) else 8
    truth = make_sn7_root(
        tmp_path, aois=1, months=1, size=size, n_buildings=n, blank_months=["2018_01"]
    )
    for label_source in SOURCES:
        (tile,) = discover_images(tmp_path, label_source=label_source)
        mask = rasterize_tile(tile, RasterizeSettings()).mask
        assert mask.shape == size
        np.testing.assert_array_equal(mask, truth.tiles[tile.key].mask, err_msg=label_source)


@pytest.mark.shared
def test_label_sources_agree_on_the_real_sample(shared_sample):
    by_source = {source: discover_images(shared_sample, label_source=source) for source in SOURCES}
    keys = [t.key for t in by_source["labels"]]
    assert len(keys) >= 2
    for i, key in enumerate(keys):
        masks = {s: rasterize_tile(by_source[s][i], RasterizeSettings()).mask for s in SOURCES}
        assert all(by_source[s][i].key == key for s in SOURCES)
        assert masks["labels"].shape == (1023, 1024)
        assert 0.005 < (masks["labels"] == BUILDING).mean() < 0.2  # README: about 3% and 7%
        assert iou(masks["labels"], masks["labels_match"]) >= 0.98, key
        assert iou(masks["labels"], masks["labels_match_pix"]) >= 0.98, key


def test_burn_without_geometries():
    assert not burn([], (5, 7)).any()
    assert burn([], (5, 7)).shape == (5, 7)


# --- bad rasters: each a DataError that names the file ----------------------------------------


@pytest.fixture
def tile(tmp_path):
    make_sn7_root(tmp_path, aois=1, months=1, size=(64, 64), n_buildings=3)
    (tile,) = discover_images(tmp_path)
    return tile


def _rewrite_deflate_tiled(path):
    """Re-encode like the shipped data/sample (DEFLATE, 16-px tiles), so truncation hits a tile."""
    with rasterio.open(path) as src:
        profile, data = dict(src.profile), src.read()
    profile.update(compress="deflate", tiled=True, blockxsize=16, blockysize=16)
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(data)


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        ("truncate", "corrupt or truncated"),
        ("truncate-deflate", "corrupt or truncated"),
        ("truncate-header", "not a readable GeoTIFF"),
        ("zero-bytes", "empty"),
        ("png-bytes", "not a readable GeoTIFF"),
        ("text", "not a readable GeoTIFF"),
        ("missing", "not found"),
    ],
)
def test_bad_image_is_a_data_error_naming_the_file(tile, damage, message):
    image = tile.image
    if damage == "truncate-deflate":
        _rewrite_deflate_tiled(image)
    data = image.read_bytes()
    if damage.startswith("truncate"):
        image.write_bytes(data[:40] if damage == "truncate-header" else data[: len(data) * 2 // 3])
    elif damage == "zero-bytes":
        image.write_bytes(b"")
    elif damage == "png-bytes":
        image.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 64)
    elif damage == "text":
        image.write_text("this is not a GeoTIFF\n")
    elif damage == "missing":
        image.unlink()
    with pytest.raises(DataError, match=message) as exc:
        rasterize_tile(tile, RasterizeSettings())
    assert exc.value.path == image
    assert str(image) in str(exc.value)


def test_image_with_too_few_bands(tile):
    with rasterio.open(tile.image) as src:
        profile, data = dict(src.profile), src.read([1, 2, 3])
    profile.update(count=3)
    with rasterio.open(tile.image, "w", **profile) as dst:
        dst.write(data)
    with pytest.raises(DataError, match=r"has 3 band\(s\)") as exc:
        rasterize_tile(tile, RasterizeSettings())
    assert exc.value.path == tile.image


def test_bad_udm_raster_is_a_data_error_naming_it(tmp_path):
    make_sn7_root(
        tmp_path, aois=1, months=1, size=(64, 64), n_buildings=3, udm_raster_months=["2018_01"]
    )
    (tile,) = discover_images(tmp_path)
    udm = tile.udm_raster
    data = udm.read_bytes()
    udm.write_bytes(data[: len(data) // 2])
    with pytest.raises(DataError) as exc:
        rasterize_tile(tile, RasterizeSettings())
    assert exc.value.path == udm

    with rasterio.open(tile.image) as src:
        profile = dict(src.profile)
    profile.update(count=1, width=32)
    with rasterio.open(udm, "w", **profile) as dst:
        dst.write(np.zeros((1, 64, 32), np.uint8))
    with pytest.raises(
        DataError, match=r"UDM raster is \(32, 64\) but the image is \(64, 64\)"
    ) as exc:
        rasterize_tile(tile, RasterizeSettings())
    assert exc.value.path == udm


def test_geo_labels_on_an_image_without_crs(tile):
    with rasterio.open(tile.image) as src:
        profile, data = dict(src.profile), src.read()
    profile.update(crs=None)
    with rasterio.open(tile.image, "w", **profile) as dst:
        dst.write(data)
    with pytest.raises(DataError, match="has no CRS") as exc:
        rasterize_tile(tile, RasterizeSettings())
    assert exc.value.path == tile.labels
    pix = replace(
        tile,
        labels=tile.labels.parents[1] / "labels_match_pix" / tile.labels.name,
        label_space="pixel",
    )
    assert rasterize_tile(pix, RasterizeSettings()).mask.any()
