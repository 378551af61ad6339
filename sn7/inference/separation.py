"""Touching buildings -> one label each: marker-controlled flooding of a building mask.

Thresholding a probability map merges neighbours whose gap is itself above the threshold (common
in dense SN7 AOIs and in a temporal mean map, which blurs gaps). Markers come from a stricter
"core" (prob >= seed_threshold) eroded by `min_distance` pixels, so blobs joined by a weaker seam
or by a neck at most 2 * min_distance wide get one marker each. Markers then grow back over the
core in order of decreasing distance to its edge (a watershed on -distance by immersion), and
finally over the rest of the mask.

Markers are eroded core parts, not local maxima of the distance transform: on synthetic L-shapes
and rectangles (sn7.testing.synthetic, blurred 1 px) the maxima split 19-47% of clean single
buildings (min_distance 3..1), eroded cores none, and 1.5% with smooth noise (sd 0.05), while still
splitting 59% of touching pairs joined by a neck (min_distance 2).

scikit-image is not a dependency, and `scipy.ndimage.watershed_ift` (a max-arc image foresting
transform) hands a whole plateau to one marker, so the flooding is done here with growth steps
(`ndimage.grey_dilation` of the label image), level by level. Where two fronts meet in the same
step the higher label takes the contested pixel: a one-pixel bias on the dividing line.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

_CROSS = ndimage.generate_binary_structure(2, 1)  # 4-connectivity, as vectorize


def _grow(labels: np.ndarray, allowed: np.ndarray) -> np.ndarray:
    """Geodesic growth of `labels` into the unlabelled `allowed` pixels until nothing changes."""
    while True:
        grown = ndimage.grey_dilation(labels, footprint=_CROSS)
        take = allowed & (labels == 0) & (grown > 0)
        if not take.any():
            return labels
        labels = np.where(take, grown, labels)


def core_markers(core: np.ndarray, min_distance: int = 2) -> np.ndarray:
    """(H, W) int32 markers: the connected parts of `core` farther than `min_distance` pixels from
    its edge (an erosion, so a neck at most 2 * min_distance wide cuts); a part of the core with
    no such pixel gets one marker, its deepest pixel."""
    core = core.astype(bool)
    parts, n_parts = ndimage.label(core)
    if n_parts == 0:
        return np.zeros(core.shape, np.int32)
    dist = ndimage.distance_transform_edt(core)
    deep = dist > min_distance
    markers, n_markers = ndimage.label(deep)
    ids = np.arange(1, n_parts + 1)
    shallow = ids[ndimage.sum(deep, parts, ids) == 0]
    if len(shallow):
        rows, cols = np.asarray(ndimage.maximum_position(dist, parts, shallow)).T
        markers[rows, cols] = n_markers + np.arange(1, len(shallow) + 1)
    return markers.astype(np.int32)


def separate_buildings(
    prob: np.ndarray, mask: np.ndarray, seed_threshold: float = 0.6, min_distance: int = 2
) -> np.ndarray:
    """(H, W) int32 label image of `mask` (0 = background) with touching buildings split.

    The union of the labels is exactly `mask`: a part of the mask with no core pixel (a weak
    building) keeps one label of its own rather than being dropped.
    """
    mask = mask.astype(bool)
    core = mask & (prob >= seed_threshold)
    labels = core_markers(core, min_distance)
    dist = ndimage.distance_transform_edt(core)
    for level in np.unique(np.floor(dist[core]))[::-1]:  # deepest first: immersion
        labels = _grow(labels, core & (dist >= level))
    labels = _grow(labels, mask)
    unseeded, n_unseeded = ndimage.label(mask & (labels == 0))
    if n_unseeded:
        labels = np.where(unseeded > 0, unseeded + labels.max(), labels)
    return labels.astype(np.int32)
