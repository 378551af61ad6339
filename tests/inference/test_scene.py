"""Windowed scenes (sn7.inference.scene): strip probabilities and block footprints equal the
whole-image results they replace."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import rasterio
import torch
from scipy import ndimage
from torch import nn

from sn7.data.input_spec import InputSpec
from sn7.data.raster_io import open_raster
from sn7.inference.footprints import FootprintSettings, PostSettings, cut_footprints
from sn7.inference.scene import clean_rows, predict_strips, scene_footprints
from sn7.inference.separation import separate_buildings
from sn7.inference.sliding_window import SlidingWindowPredictor
from sn7.inference.tiles import read_tile

SPEC = InputSpec(bands=(1, 2, 3), mean=(0.3, 0.3, 0.3), std=(0.2, 0.2, 0.2), alpha_band=4)


def write_image(path: Path, height: int, width: int, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    data = rng.integers(0, 256, (4, height, width), dtype=np.uint8)
    data[3] = 255
    data[3, : height // 5, : width // 7] = 0  # a nodata corner
    profile = dict(driver="GTiff", width=width, height=height, count=4, dtype="uint8")
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(data)
    return path


def conv_model() -> nn.Module:
    """A 3x3 conv: a window's output depends on its neighbours and on the zero padding, so
    blending matters (a pixelwise model would hide a wrong blend)."""
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 1, 3, padding=1))


@pytest.mark.parametrize("batch_size", [1, 3])
def test_strip_probabilities_equal_the_whole_image(tmp_path, batch_size):
    height, width = 173, 131  # both > the window, uneven last windows
    path = write_image(tmp_path / "scene.tif", height, width)
    predictor = SlidingWindowPredictor(conv_model(), window=48, overlap=12, batch_size=batch_size)
    tile = read_tile(path, SPEC)
    whole = predictor(tile.model_input)
    rows, valids, tops = [], [], []
    with open_raster(path) as src:
        for top, prob, valid in predict_strips(src, path, SPEC, predictor):
            tops.append(top)
            rows.append(prob)
            valids.append(valid)
    assert len(tops) > 3 and tops == sorted(tops)
    strips = np.concatenate(rows)
    np.testing.assert_array_equal(strips, whole)  # bit for bit: same sums in the same order
    np.testing.assert_array_equal(np.concatenate(valids), tile.valid)


def blob_map(height: int = 300, width: int = 90, seed: int = 1) -> np.ndarray:
    """A probability map with buildings of many shapes, some crossing block seams (blocks of 40
    rows below), one 3 blocks tall, a ring with a building in its courtyard, and touching pairs."""
    rng = np.random.default_rng(seed)
    prob = ndimage.gaussian_filter(rng.random((height, width)), 2.0)
    prob = (prob - prob.min()) / (prob.max() - prob.min())
    prob = np.clip((prob - 0.45) * 4, 0, 1).astype(np.float32)
    prob[30:150, 5:12] = 0.9  # 3 blocks tall
    prob[36:44, 12:20] = 0.7  # touching it, weaker: the watershed splits it off
    prob[160:230, 20:80] = 0.95  # a ring spanning two seams ...
    prob[168:222, 28:72] = 0.05
    prob[190:200, 45:55] = 0.9  # ... with a building in its courtyard (fill_holes merges them)
    prob[238:242, 10:70] = 0.8  # a thin bar right across a seam
    return prob


@pytest.mark.parametrize(
    "post",
    [
        PostSettings(),
        PostSettings(opening=1),
        PostSettings(fill_holes=True),
        PostSettings(opening=1, fill_holes=True, separate=True),
        PostSettings(separate=True, min_distance=1),
    ],
    ids=["plain", "opening", "fill_holes", "all", "separate"],
)
def test_block_footprints_equal_the_whole_map(post):
    prob = blob_map()
    valid = np.ones(prob.shape, bool)
    valid[:20, :30] = False
    settings = FootprintSettings(0.5, post, min_area=4)
    polygons_whole = cut_footprints(prob, valid, settings).polygons

    def read(a, b):
        return prob[a:b], valid[a:b]

    blocks = list(scene_footprints(read, prob.shape[0], settings, post.separate, block_rows=40))
    polygons = [f.polygon for _, found in blocks for f in found]
    assert len(polygons) == len(polygons_whole) > 20
    by_key = {_key(p): p for p in polygons_whole}
    assert len(by_key) == len(polygons_whole)
    for polygon in polygons:
        assert polygon.equals(by_key[_key(polygon)])


def test_a_buildings_split_does_not_depend_on_other_buildings():
    """separate_buildings floods one mask component at a time (skimage's watershed breaks ties
    between equal-depth markers by the order of one queue over all it floods), so each
    component splits alone as it does among all the others: what makes blocks exact."""
    prob = blob_map()
    mask = prob >= 0.5
    together = separate_buildings(prob, mask, 0.6, 2)
    labels, n = ndimage.label(mask)
    assert n > 20
    for label in range(1, n + 1):
        own = labels == label
        alone = separate_buildings(prob, own, 0.6, 2)
        pairs = set(zip(together[own].tolist(), alone[own].tolist(), strict=True))
        assert len(pairs) == len(set(together[own].tolist())) == len(set(alone[own].tolist()))


def _key(polygon):
    return tuple(round(v, 6) for v in (*polygon.bounds, polygon.area))


@pytest.mark.parametrize("post", [PostSettings(opening=2), PostSettings(fill_holes=True)])
def test_clean_rows_equal_the_whole_mask(post):
    prob = blob_map()
    valid = np.ones(prob.shape, bool)

    def read(a, b):
        return prob[a:b], valid[a:b]

    whole = post.clean(prob >= 0.5)
    rows = [
        clean_rows(read, prob.shape[0], r, min(r + 40, 300), 0.5, post, lambda p, v: p)
        for r in range(0, 300, 40)
    ]
    np.testing.assert_array_equal(np.concatenate(rows), whole)
