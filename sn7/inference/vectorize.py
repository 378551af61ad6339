"""Mask -> building polygons (one per 4-connected component), shared by evaluate and predict.

Polygons come from rasterio.features.shapes on a component label image, in pixel coordinates
(x = column, y = row), so their area is a pixel count; callers map them to a CRS if they need to.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
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

    def mean_of(self, values: np.ndarray) -> np.ndarray:
        """Mean of `values` (H, W) over each kept component (e.g. its mean probability)."""
        if len(self.ids) == 0:
            return np.zeros(0, np.float32)
        return np.asarray(ndimage.mean(values, self.labels, self.ids), np.float32)


def vectorize(mask: np.ndarray, min_area: float = 0.0) -> Components:
    """Polygons of the True regions of `mask`, dropping those under `min_area` pixels."""
    labels, _ = ndimage.label(mask)  # default structure = 4-connectivity, as shapes() below
    labels = labels.astype(np.int32)
    polygons, ids = [], []
    for geom, value in features.shapes(
        labels, mask=labels > 0, connectivity=4, transform=Affine.identity()
    ):
        polygon = shape(geom)
        if polygon.area >= min_area:
            polygons.append(polygon)
            ids.append(int(value))
    kept = np.asarray(ids, np.int32)
    if min_area > 0:
        labels[~np.isin(labels, kept)] = 0
    return Components(labels, polygons, kept)
