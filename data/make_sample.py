"""Re-create data/sample/ from the SN7 excerpt in ../shared/sn7_sample (run once, output committed).

Two AOIs x two months, every label variant (images_masked/ left out: same pixels here), images
re-encoded as DEFLATE-compressed tiled GeoTIFF with identical pixels and georeferencing.
Usage: python data/make_sample.py [SRC] [DST]
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import numpy as np
import rasterio

MONTHS = ("2018_01", "2019_07")
LABEL_DIRS = ("labels", "labels_match", "labels_match_pix")


def recompress(src: Path, dst: Path) -> None:
    with rasterio.open(src) as s:
        profile = dict(s.profile)
        data = s.read()
        colorinterp = s.colorinterp
    profile.update(
        compress="deflate",
        predictor=2,
        zlevel=9,
        tiled=True,
        blockxsize=256,
        blockysize=256,
        interleave="pixel",
    )
    dst.parent.mkdir(parents=True, exist_ok=True)
    with rasterio.open(dst, "w", **profile) as d:
        d.write(data)
        d.colorinterp = colorinterp
    with rasterio.open(dst) as check:
        assert np.array_equal(check.read(), data) and check.transform == profile["transform"]


def main(src_root: Path, dst_root: Path) -> None:
    for aoi_dir in sorted((src_root / "train").iterdir()):
        out = dst_root / "train" / aoi_dir.name
        for month in MONTHS:
            stem = f"global_monthly_{month}_mosaic_{aoi_dir.name}"
            # images_masked/ is left out: in this excerpt it holds the same pixels as images/
            recompress(aoi_dir / "images" / f"{stem}.tif", out / "images" / f"{stem}.tif")
            for label_dir in LABEL_DIRS:
                for f in (aoi_dir / label_dir).glob(f"{stem}_*.geojson"):
                    (out / label_dir).mkdir(parents=True, exist_ok=True)
                    shutil.copyfile(f, out / label_dir / f.name)
    shutil.copyfile(src_root / "README.md", dst_root / "SOURCE_README.md")


if __name__ == "__main__":
    here = Path(__file__).resolve().parent
    src = Path(sys.argv[1]) if len(sys.argv) > 1 else here.parent.parent / "shared" / "sn7_sample"
    dst = Path(sys.argv[2]) if len(sys.argv) > 2 else here / "sample"
    main(src, dst)
