"""Mask -> building polygons (one per 4-connected component), shared by evaluate and predict;
label image -> polygons (one per label) for buildings split by sn7.inference.separation.

Polygons come from rasterio.features.shapes on a component label image, in pixel coordinates
(x = column, y = row), so their area is a pixel count; callers map them to a CRS if they need to.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import shapely
from affine import Affine
from rasterio import features
from scipy import ndimage
from shapely.geometry import shape
from shapely.geometry.base import BaseGeometry


@dataclass
class Components:
    labels: np.ndarray  # (H, W) int32 component ids, 0 = background
    polygons: list[BaseGeometry]  # pixel coordinates, one per kept component
    ids: np.ndarray  # component id of each polygon


def vectorize(mask: np.ndarray, min_area: float = 0.0) -> Components:
    """Polygons of the True regions of `mask`, dropping those under `min_area` pixels."""
    labels, _ = ndimage.label(mask)  # default structure = 4-connectivity, as shapes() below
    return vectorize_labels(labels, min_area)


def vectorize_labels(labels: np.ndarray, min_area: float = 0.0) -> Components:
    """One polygon per label of a label image (0 = background), e.g. buildings split by
    `sn7.inference.separation`; touching labels stay separate polygons sharing an edge. A label
    in several 4-connected pieces becomes one MultiPolygon. Labels under `min_area` pixels are
    dropped from the polygons and zeroed in the returned label image."""
    labels = np.asarray(labels).astype(np.int32)  # a copy: the caller's image is not edited
    pieces: dict[int, list[BaseGeometry]] = {}
    for geom, value in features.shapes(
        labels, mask=labels > 0, connectivity=4, transform=Affine.identity()
    ):
        pieces.setdefault(int(value), []).append(shape(geom))
    polygons, ids = [], []
    for value, parts in pieces.items():
        polygon = parts[0] if len(parts) == 1 else shapely.union_all(parts)
        if polygon.area >= min_area:
            polygons.append(polygon)
            ids.append(value)
    kept = np.asarray(ids, np.int32)
    if min_area > 0:
        labels[~np.isin(labels, kept)] = 0
    return Components(labels, polygons, kept)


def mean_inside(polygons: list[BaseGeometry], values: np.ndarray) -> np.ndarray:
    """Mean of `values` (H, W) inside each pixel-space polygon (e.g. a footprint's mean
    probability), by the pixel-centre rule that gives a mask back from these polygons."""
    if not polygons:
        return np.zeros(0, np.float32)
    labels = features.rasterize(
        [(p, i + 1) for i, p in enumerate(polygons)], out_shape=values.shape,
        transform=Affine.identity(), dtype="int32",
    )  # fmt: skip
    means = ndimage.mean(values, labels, np.arange(1, len(polygons) + 1))
    return np.nan_to_num(np.asarray(means, np.float32))
