"""Mask -> building polygons (sn7.inference.vectorize), checked by rasterizing them back."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from rasterio import features
from scipy import ndimage

from sn7.inference.vectorize import mean_inside, vectorize


def rasterize(polygons, shape) -> np.ndarray:
    """Pixel-space polygons -> bool mask (pixel centre rule), independent of vectorize."""
    if not polygons:
        return np.zeros(shape, bool)
    return features.rasterize([(p, 1) for p in polygons], out_shape=shape).astype(bool)


@settings(max_examples=150, deadline=None)
@given(arrays(bool, st.tuples(st.integers(1, 24), st.integers(1, 24))))
def test_rasterizing_the_polygons_gives_the_mask_back(mask):
    components = vectorize(mask)
    back = rasterize(components.polygons, mask.shape)
    np.testing.assert_array_equal(back, mask)  # pixel-edge polygons: exact
    labels, n = ndimage.label(mask)  # 4-connected components
    assert len(components.polygons) == n
    for polygon, component in zip(components.polygons, components.ids, strict=True):
        assert polygon.is_valid
        assert polygon.area == (components.labels == component).sum()
        np.testing.assert_array_equal(rasterize([polygon], mask.shape), labels == component)


def test_synthetic_buildings_come_back_as_their_footprints(synthetic_root):
    clear = [t for t in synthetic_root.tiles.values() if not (t.mask == 255).any()]
    tile = max(clear, key=lambda t: len(t.buildings))
    assert len(tile.buildings) >= 3
    polygons = vectorize(tile.mask == 1).polygons
    assert len(polygons) == len(tile.buildings)
    for truth in tile.buildings:  # rectangles and L-shapes with vertices on pixel edges
        assert sum(p.symmetric_difference(truth).area == 0 for p in polygons) == 1


def test_diagonal_neighbours_are_separate_buildings():
    mask = np.array([[1, 0, 0], [0, 1, 0], [0, 0, 1]], bool)
    assert len(vectorize(mask).polygons) == 3


def test_a_courtyard_is_a_hole():
    mask = np.ones((5, 5), bool)
    mask[2, 2] = False
    (polygon,) = vectorize(mask).polygons
    assert len(polygon.interiors) == 1
    assert polygon.area == 24


def test_min_area_drops_small_components_from_polygons_and_labels():
    mask = np.zeros((12, 20), bool)
    mask[0, 0] = True  # 1 px
    mask[3, 0:3] = True  # 3 px
    mask[6:8, 0:2] = True  # 4 px: kept at min_area=4 (area >= min_area)
    mask[0:3, 10:13] = True  # 9 px
    probs = np.zeros(mask.shape, np.float32)
    probs[6:8, 0:2] = [[0.6, 0.8], [0.7, 0.9]]
    probs[0:3, 10:13] = 0.5

    components = vectorize(mask, min_area=4)
    assert sorted(p.area for p in components.polygons) == [4, 9]
    kept = components.labels > 0
    assert kept.sum() == 13
    assert not kept[0, 0] and not kept[3, 0:3].any()
    np.testing.assert_array_equal(np.unique(components.labels[kept]), np.sort(components.ids))
    areas = [p.area for p in components.polygons]
    means = dict(zip(areas, mean_inside(components.polygons, probs), strict=True))
    assert means[4] == pytest.approx(0.75)
    assert means[9] == pytest.approx(0.5)

    assert len(vectorize(mask).polygons) == 4
    assert len(vectorize(mask, min_area=10).polygons) == 0


def test_empty_mask():
    components = vectorize(np.zeros((8, 8), bool), min_area=4)
    assert components.polygons == []
    assert mean_inside(components.polygons, np.ones((8, 8))).shape == (0,)
    assert not components.labels.any()
