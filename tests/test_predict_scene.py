"""predict on scenes over predict.max_scene_px: window by window, equal to the whole-image path."""

from __future__ import annotations

from pathlib import Path

import geopandas as gpd
import numpy as np
import pytest
import rasterio
from affine import Affine

import sn7.inference.scene
import sn7.predict_scene
from sn7.predict import predict
from tests.test_predict import predict_cfg

TRANSFORM = Affine(0.6, 0.0, 13_000_000.0, 0.0, -0.6, 4_000_000.0)


def write_scene(path: Path, height: int = 700, width: int = 900, seed: int = 3) -> Path:
    """A 4-band uint8 scene: rectangles (band 1 ~ 200) on ground (~ 70), some touching, some
    across the 128-row blocks the tests force, and an alpha = 0 corner."""
    rng = np.random.default_rng(seed)
    data = np.zeros((4, height, width), np.uint8)
    band = rng.normal(70, 12, (height, width))
    for _ in range(160):
        r, c = rng.integers(0, height - 40), rng.integers(0, width - 40)
        h, w = rng.integers(4, 40), rng.integers(4, 40)
        band[r : r + h, c : c + w] = rng.normal(200, 15, (h, w))
    band[300:560, 100:108] = 190  # a tall one, across blocks
    data[0] = np.clip(band, 0, 255)
    data[1] = data[2] = 90
    data[3] = 255
    data[3, :80, :150] = 0
    profile = dict(driver="GTiff", width=width, height=height, count=4, dtype="uint8",
                   crs="EPSG:3857", transform=TRANSFORM)  # fmt: skip
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(data)
    return path


@pytest.fixture(scope="module")
def scene_runs(tmp_path_factory, stub_checkpoint):
    tmp = tmp_path_factory.mktemp("scene")
    image = write_scene(tmp / "scene.tif")
    ckpt = stub_checkpoint(tmp / "soft.ckpt", gain=12.0)
    common = ["infer.window=256", "infer.overlap=32", "predict.gallery=false"]
    runs = {}
    for track in ("aggregate", "match"):
        for name, limit in (("whole", 10**9), ("windowed", 10_000)):
            out = tmp / f"{track}_{name}"
            with pytest.MonkeyPatch.context() as mp:
                mp.setattr(sn7.predict_scene, "BLOCK_ROWS", 128)
                cfg = predict_cfg(ckpt, image, out, *common, f"track={track}",
                                  f"predict.max_scene_px={limit}")  # fmt: skip
                predict(cfg)
            runs[track, name] = out
    return runs


def buildings(out: Path) -> gpd.GeoDataFrame:
    return gpd.read_file(out / "scene_buildings.geojson")


def matched_iou(windowed: gpd.GeoDataFrame, whole: gpd.GeoDataFrame):
    """Per windowed building, its best IoU with a whole-image building; and the matched pairs."""
    matched = gpd.sjoin(windowed, whole, predicate="intersects", lsuffix="w", rsuffix="o")
    pairs = matched.assign(
        iou=[
            windowed.geometry[i].intersection(whole.geometry[j]).area
            / windowed.geometry[i].union(whole.geometry[j]).area
            for i, j in zip(matched.index, matched["index_o"], strict=True)
        ]
    )
    return pairs.groupby(level=0)["iou"].max().reindex(windowed.index, fill_value=0), pairs


@pytest.mark.parametrize("track", ["match", "aggregate"])
def test_windowed_buildings_equal_the_whole_image(scene_runs, track):
    """The same buildings, columns and values; aggregate always splits touching buildings by
    the watershed, which floods one mask component at a time in both paths."""
    whole, windowed = (
        buildings(scene_runs[track, "whole"]),
        buildings(scene_runs[track, "windowed"]),
    )
    assert len(windowed) == len(whole) > 50
    assert windowed.crs == whole.crs
    assert list(windowed.columns) == list(whole.columns)
    best, pairs = matched_iou(windowed, whole)
    assert best.min() > 1 - 1e-9
    same = pairs[pairs["iou"] > 1 - 1e-9]
    assert len(same) == len(whole)
    for column in ("area_m2", "area_px", "mean_prob", "first_seen", "is_new"):
        np.testing.assert_array_equal(
            same[f"{column}_w"].to_numpy(), same[f"{column}_o"].to_numpy()
        )
    assert sorted(windowed["building_id"]) == list(range(1, len(windowed) + 1))


@pytest.mark.parametrize("kind", ["prob", "mask"])
def test_windowed_geotiffs_equal_the_whole_image(scene_runs, kind):
    with (
        rasterio.open(scene_runs["aggregate", "whole"] / f"scene_{kind}.tif") as a,
        rasterio.open(scene_runs["aggregate", "windowed"] / f"scene_{kind}.tif") as b,
    ):
        np.testing.assert_array_equal(a.read(), b.read())
        np.testing.assert_array_equal(a.read_masks(1), b.read_masks(1))
        for key in ("crs", "transform", "dtype", "nodata", "tiled", "compress", "blockxsize"):
            assert a.profile.get(key) == b.profile.get(key), key


def test_float32_probabilities_match(tmp_path, stub_checkpoint):
    image = write_scene(tmp_path / "scene.tif", 300, 260)
    ckpt = stub_checkpoint(tmp_path / "soft.ckpt", gain=12.0)
    arrays = []
    for name, limit in (("whole", 10**9), ("windowed", 1000)):
        cfg = predict_cfg(ckpt, image, tmp_path / name, "predict.prob_dtype=float32",
                          "predict.gallery=false", f"predict.max_scene_px={limit}")  # fmt: skip
        predict(cfg)
        with rasterio.open(tmp_path / name / "scene_prob.tif") as src:
            arrays.append(src.read(1))
    np.testing.assert_array_equal(arrays[0], arrays[1])  # NaN where alpha = 0, in both


def test_an_error_mid_scene_leaves_no_output(tmp_path, stub_checkpoint, monkeypatch):
    image = write_scene(tmp_path / "scene.tif", 300, 260)
    ckpt = stub_checkpoint(tmp_path / "stub.ckpt")
    out = tmp_path / "out"
    real = sn7.inference.scene.clean_rows
    calls = []

    def failing(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:  # after the first block of every output was written
            raise OSError("disk full")
        return real(*args, **kwargs)

    monkeypatch.setattr(sn7.predict_scene, "clean_rows", failing)
    monkeypatch.setattr(sn7.predict_scene, "BLOCK_ROWS", 128)
    cfg = predict_cfg(ckpt, image, out, "predict.gallery=false", "predict.max_scene_px=1000")
    with pytest.raises(OSError, match="disk full"):
        predict(cfg)
    assert len(calls) == 2
    assert sorted(p.name for p in out.iterdir()) == []  # no partial file, no temp file
