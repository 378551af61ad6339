"""Pixel <-> CRS mapping of geometries (sn7.data.vector_io.apply_affine)."""

from __future__ import annotations

import numpy as np
import shapely
from affine import Affine
from shapely.geometry import box

from sn7.data.vector_io import apply_affine


def test_apply_affine_maps_pixels_to_the_crs_and_back():
    transform = Affine(0.5, 0.0, 1000.0, 0.0, -0.5, 2000.0)  # 0.5 m pixels, north up
    pixel = [box(0, 0, 2, 4), box(10, 10, 11, 11)]
    crs = apply_affine(pixel, transform)
    assert shapely.bounds(crs[0]).tolist() == [1000.0, 1998.0, 1001.0, 2000.0]
    assert crs[1].area == 0.25
    back = apply_affine(crs, ~transform)
    assert all(shapely.equals_exact(back, np.asarray(pixel, dtype=object), tolerance=1e-9))
    assert apply_affine([], transform).shape == (0,)
