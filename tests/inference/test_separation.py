"""Touching buildings split by marker-controlled flooding (sn7.inference.separation), and label
images vectorised one polygon per label (sn7.inference.vectorize.vectorize_labels)."""

from __future__ import annotations

import numpy as np
from scipy import ndimage
from shapely.geometry import MultiPolygon, box

from sn7.inference.separation import core_markers, separate_buildings
from sn7.inference.vectorize import mean_inside, vectorize, vectorize_labels


def dumbbell(neck: int) -> np.ndarray:
    """Two 10x10 squares (cols 1-10, 13-22) joined by a bridge `neck` rows high at cols 11-12."""
    mask = np.zeros((12, 24), bool)
    mask[1:11, 1:11] = mask[1:11, 13:23] = True
    mask[5 : 5 + neck, 11:13] = True
    return mask


def test_a_narrow_neck_splits_two_squares_of_equal_probability():
    mask = dumbbell(neck=2)
    labels = separate_buildings(mask * 0.9, mask, seed_threshold=0.6, min_distance=2)
    assert labels.max() == 2
    left, right = labels[1:11, 1:11], labels[1:11, 13:23]
    assert len(np.unique(left)) == 1 and len(np.unique(right)) == 1 and left[0, 0] != right[0, 0]
    np.testing.assert_array_equal(labels > 0, mask)  # no pixel lost or added


def test_a_neck_wider_than_twice_min_distance_stays_one_building():
    mask = dumbbell(neck=6)  # eroding by 2 px leaves the 6-px neck connected
    assert separate_buildings(mask * 0.9, mask, 0.6, min_distance=2).max() == 1
    assert separate_buildings(mask * 0.9, mask, 0.6, min_distance=3).max() == 2


def test_an_l_shape_and_a_long_bar_are_not_split():
    mask = np.zeros((30, 40), bool)
    mask[2:6, 2:30] = True  # 4-px arm
    mask[2:25, 2:9] = True  # 7-px arm
    mask[15:18, 15:38] = True  # 3-px bar, no core pixel farther than 2 px from its edge
    labels = separate_buildings(mask * 0.9, mask, 0.6, min_distance=2)
    assert labels.max() == 2
    np.testing.assert_array_equal(labels > 0, mask)


def test_a_weak_building_without_a_core_is_kept_whole():
    prob = np.zeros((10, 20))
    prob[2:8, 2:8] = 0.9
    prob[2:8, 12:18] = 0.5  # above the mask threshold, under the seed threshold
    labels = separate_buildings(prob, prob >= 0.4, seed_threshold=0.6)
    assert labels.max() == 2 and len(np.unique(labels[2:8, 12:18])) == 1


def test_core_markers_one_per_part_at_least():
    core = np.zeros((10, 20), bool)
    core[1:9, 1:9] = True  # 8x8: distances 1,2,3,4,4,3,2,1 from its edge, so > 2 on a 4x4 middle
    core[2:4, 12:18] = True  # 2 px thin: no pixel deeper than 2, so its deepest pixel marks it
    markers = core_markers(core, min_distance=2)
    assert markers.max() == 2
    assert (markers > 0).sum() == 16 + 1  # the 4x4 middle of the square + one pixel
    assert not (markers > 0)[~core].any()


def test_empty_mask():
    assert separate_buildings(np.zeros((5, 5)), np.zeros((5, 5), bool)).max() == 0


def test_vectorize_labels_keeps_touching_labels_apart():
    labels = np.zeros((6, 10), np.int32)
    labels[1:5, 1:5] = 3
    labels[1:5, 5:9] = 7
    components = vectorize_labels(labels)
    assert list(components.ids) == [3, 7]
    assert components.polygons[0].symmetric_difference(box(1, 1, 5, 5)).area == 0
    assert components.polygons[1].symmetric_difference(box(5, 1, 9, 5)).area == 0
    assert len(vectorize(labels > 0).polygons) == 1  # a mask merges them


def test_vectorize_labels_unions_a_label_in_pieces_and_drops_small_ones():
    labels = np.zeros((6, 10), np.int32)
    labels[0:2, 0:2] = labels[4:6, 8:10] = 1  # one label, two pieces of 4 px
    labels[3, 3] = 2  # 1 px
    components = vectorize_labels(labels, min_area=2)
    assert list(components.ids) == [1]
    assert isinstance(components.polygons[0], MultiPolygon) and components.polygons[0].area == 8
    assert (components.labels == 2).sum() == 0 and (labels == 2).sum() == 1  # input untouched
    means = mean_inside(components.polygons, np.ones(labels.shape))
    np.testing.assert_allclose(means, [1.0])


def test_vectorize_labels_matches_vectorize_on_components():
    rng = np.random.default_rng(0)
    mask = rng.random((30, 30)) < 0.4
    labels, _ = ndimage.label(mask)
    a, b = vectorize(mask, min_area=3), vectorize_labels(labels, min_area=3)
    np.testing.assert_array_equal(a.ids, b.ids)
    np.testing.assert_array_equal(a.labels, b.labels)
    assert all(p.equals(q) for p, q in zip(a.polygons, b.polygons, strict=True))
