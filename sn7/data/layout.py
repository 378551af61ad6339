"""Discovery of the SpaceNet 7 folder layout: which images exist and where their labels live.

    <root>/train/<AOI>/images/global_monthly_YYYY_MM_mosaic_<AOI>.tif      (or images_masked/)
    <root>/train/<AOI>/labels/<stem>_Buildings.geojson                     lon/lat (CRS84)
    <root>/train/<AOI>/labels_match/<stem>_Buildings.geojson               EPSG:3857
    <root>/train/<AOI>/labels_match_pix/<stem>_Buildings.geojson           pixel (col, row)
    <root>/train/<AOI>/labels/<stem>_UDM.geojson, UDM_masks/<stem>_UDM.tif unusable (cloud) areas

`root` may also be the `train/` folder itself, or any folder whose children are AOI folders.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from sn7.errors import ConfigError, DataError

# label source -> coordinate space of its geometries
LABEL_SOURCES: dict[str, str] = {
    "labels": "geo",
    "labels_match": "geo",
    "labels_match_pix": "pixel",
}
IMAGE_DIRS = ("images", "images_masked")
_STEM_DATE = re.compile(r"global_monthly_(\d{4})_(\d{2})_mosaic")
TIF_SUFFIXES = (".tif", ".tiff", ".TIF", ".TIFF")  # image files, wherever a folder is listed


@dataclass(frozen=True)
class ImageFiles:
    """One monthly image of one AOI, with the paths of everything that describes it."""

    aoi: str
    stem: str
    date: str  # YYYY-MM, or "" when the file name does not carry one
    image: Path
    labels: Path  # building footprints of the chosen label source (may not exist)
    label_space: str  # "geo" or "pixel"
    udm_vectors: Path | None  # labels/<stem>_UDM.geojson when present
    udm_raster: Path | None  # UDM_masks/<stem>_UDM.tif when present

    @property
    def key(self) -> str:
        return f"{self.aoi}/{self.stem}"


def date_of(stem: str) -> str:
    match = _STEM_DATE.search(stem)
    return f"{match.group(1)}-{match.group(2)}" if match else ""


def _aoi_folders(root: Path, image_dir: str) -> list[Path]:
    candidates = [root / "train", root]
    for base in candidates:
        if base.is_dir():
            aois = sorted(p for p in base.iterdir() if (p / image_dir).is_dir())
            if aois:
                return aois
    raise DataError(
        f"no SN7 AOI folders found: expected <root>/train/<AOI>/{image_dir}/*.tif "
        f"(or <root>/<AOI>/{image_dir}/*.tif); set data.root to an SN7 dataset folder",
        root,
    )


def check_layout_options(image_dir: str, label_source: str) -> None:
    if image_dir not in IMAGE_DIRS:
        raise ConfigError(f"data.image_dir={image_dir!r} is not one of {list(IMAGE_DIRS)}")
    if label_source not in LABEL_SOURCES:
        raise ConfigError(
            f"data.label_source={label_source!r} is not one of {sorted(LABEL_SOURCES)}"
        )


def discover_images(
    root: str | Path, image_dir: str = "images", label_source: str = "labels"
) -> list[ImageFiles]:
    """List every image of an SN7 root, sorted by AOI then stem."""
    check_layout_options(image_dir, label_source)
    root = Path(root).expanduser()
    if not root.exists():
        raise DataError("data root does not exist (set data.root=...)", root)
    tiles = []
    for aoi_dir in _aoi_folders(root, image_dir):
        images = sorted(p for p in (aoi_dir / image_dir).iterdir() if p.suffix in TIF_SUFFIXES)
        tiles += [_tile(aoi_dir, image, label_source) for image in images]
    if not tiles:
        raise DataError(f"AOI folders found but no *.tif in their {image_dir}/ folders", root)
    return tiles


def _tile(aoi_dir: Path, image: Path, label_source: str) -> ImageFiles:
    stem = image.stem
    udm_vec = aoi_dir / "labels" / f"{stem}_UDM.geojson"
    udm_ras = aoi_dir / "UDM_masks" / f"{stem}_UDM.tif"
    return ImageFiles(
        aoi=aoi_dir.name,
        stem=stem,
        date=date_of(stem),
        image=image,
        labels=aoi_dir / label_source / f"{stem}_Buildings.geojson",
        label_space=LABEL_SOURCES[label_source],
        udm_vectors=udm_vec if udm_vec.is_file() else None,
        udm_raster=udm_ras if udm_ras.is_file() else None,
    )


def image_files_of(image: str | Path, label_source: str = "labels") -> ImageFiles | None:
    """The ImageFiles of an image inside an SN7 layout (<AOI>/images/<stem>.tif) whose labels exist,
    else None. Lets prediction show ground truth when it runs on SN7 data."""
    image = Path(image)
    if image.parent.name not in IMAGE_DIRS or label_source not in LABEL_SOURCES:
        return None
    tile = _tile(image.parent.parent, image, label_source)
    return tile if tile.labels.is_file() else None


def id_labels(files: ImageFiles) -> tuple[Path, str] | None:
    """(path, space) of the footprints whose `Id` persists across months (SN7's labels_match,
    labels_match_pix), preferring the chosen label source; None when the AOI has neither.
    Files in labels/ number buildings per file, so they cannot score tracking."""
    if files.labels.parent.name != "labels":
        return (files.labels, files.label_space) if files.labels.is_file() else None
    aoi_dir = files.labels.parent.parent
    for source in ("labels_match", "labels_match_pix"):
        path = aoi_dir / source / f"{files.stem}_Buildings.geojson"
        if path.is_file():
            return path, LABEL_SOURCES[source]
    return None


_STEM_AOI = re.compile(r"global_monthly_\d{4}_\d{2}_mosaic_(.+)$")


def aoi_of(stem: str) -> str | None:
    """The AOI of an SN7 monthly mosaic's file stem (global_monthly_YYYY_MM_mosaic_<AOI>)."""
    match = _STEM_AOI.search(stem)
    return match.group(1) if match else None
