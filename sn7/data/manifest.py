"""The manifest: one row per usable image, the table every later stage starts from."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from sn7.data.layout import ImageFiles
from sn7.data.mask_cache import MaskIndex, mask_path
from sn7.errors import DataError
from sn7.utils.atomic import write_text_atomic

COLUMNS = [
    "aoi",
    "date",
    "stem",
    "image",
    "mask",
    "height",
    "width",
    "n_buildings",
    "building_frac",
    "valid_frac",
    "label_source",
]


def build_manifest(
    tiles: Sequence[ImageFiles], work_dir: str | Path, index: MaskIndex, label_source: str
) -> pd.DataFrame:
    """Rows for every tile whose mask is in the cache index (failed tiles are left out)."""
    rows = []
    for tile in tiles:
        entry = index.entries.get(tile.key)
        if entry is None:
            continue
        stats = entry["stats"]
        rows.append(
            {
                "aoi": tile.aoi,
                "date": tile.date,
                "stem": tile.stem,
                "image": str(tile.image),
                "mask": str(mask_path(work_dir, tile)),
                "height": stats["height"],
                "width": stats["width"],
                "n_buildings": stats["n_buildings"],
                "building_frac": round(stats["building_frac"], 6),
                "valid_frac": round(stats["valid_frac"], 6),
                "label_source": label_source,
            }
        )
    return pd.DataFrame(rows, columns=COLUMNS)


def write_csv(df: pd.DataFrame, path: str | Path) -> None:
    write_text_atomic(path, df.to_csv(index=False))


def read_csv(path: str | Path, what: str, columns: Sequence[str]) -> pd.DataFrame:
    """Read a prepare artifact, failing clearly when it is missing or from another version."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{what} not found; run `python prepare.py` first", path)
    df = pd.read_csv(path, dtype={"date": str})
    if "date" in df.columns:  # an image without a date in its name has "", read back as NaN
        df["date"] = df["date"].fillna("")
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise DataError(f"{what} lacks columns {missing}; re-run `python prepare.py`", path)
    return df
