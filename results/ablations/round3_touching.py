"""How many buildings touch another one once rasterised (the boundary lever's blind spot).

    python results/ablations/round3_touching.py

The mask cache holds 0 / 1 / 255, no instance ids, so the boundary lever's contact target is the
background gap between close buildings (sn7.models.losses.boundary_targets); buildings whose
pixels touch merge in the mask and get no contact pixels. This counts them on the sample's last
month (labels_match_pix, burnt one id per polygon, 4-neighbour contact between different ids).
"""

from pathlib import Path

import geopandas as gpd
import numpy as np
import torch
from affine import Affine
from rasterio import features
from scipy import ndimage

from sn7.models.losses import gap_pixels

root = Path(__file__).resolve().parents[2] / "../shared/sn7_sample/train"
for path in sorted(root.glob("*/labels_match_pix/*2019_07*.geojson")):
    geoms = [g for g in gpd.read_file(path).geometry if g is not None and not g.is_empty]
    ids = features.rasterize(
        ((g, i + 1) for i, g in enumerate(geoms)),
        out_shape=(1024, 1024),
        transform=Affine.identity(),
        dtype=np.int32,
    )
    touch = np.zeros(ids.shape, bool)
    for shift in ((0, 1), (1, 0), (0, -1), (-1, 0)):
        other = np.roll(ids, shift, axis=(0, 1))
        touch |= (ids > 0) & (other > 0) & (other != ids)
    mask = (ids > 0).astype(np.uint8)
    gap = gap_pixels(torch.from_numpy(mask)[None].long())[0].numpy()
    print(
        f"{path.parts[-3]}: {len(geoms)} buildings, {ndimage.label(mask)[1]} mask components, "
        f"{len(np.unique(ids[touch]))} touching another ({int(touch.sum())} px); "
        f"{int(gap.sum())} contact (gap) px"
    )
