"""The mask cache: one PNG per image under <work_dir>/masks/<AOI>/<stem>.png, built once.

An index (<work_dir>/masks/index.json) records, per mask, the size and mtime of every source file
and the rasterize settings; a mask is rebuilt only when one of them changed or its PNG is gone.
PNGs and the index are written atomically: a killed run leaves the previous state, a re-run resumes.
"""

from __future__ import annotations

import gc
import random
import time
from collections.abc import Callable, Sequence
from concurrent.futures import as_completed
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from sn7.constants import IGNORE
from sn7.data.layout import ImageFiles
from sn7.data.masks import LABEL_REPAIRS, RasterizeSettings, rasterize_tile
from sn7.data.raster_io import raster_info, read_png, write_png
from sn7.errors import SN7Error
from sn7.utils.atomic import remove_stale_temps, write_json_atomic
from sn7.utils.processes import bound_process_pool

INDEX_VERSION = 1
_FLUSH_SECONDS = 1.0


def masks_dir(work_dir: str | Path) -> Path:
    return Path(work_dir) / "masks"


def mask_path(work_dir: str | Path, tile: ImageFiles) -> Path:
    return masks_dir(work_dir) / tile.aoi / f"{tile.stem}.png"


def _fingerprint(tile: ImageFiles) -> dict:
    """Path, size and mtime of each source; a missing file is recorded as missing."""
    sources = {"image": tile.image, "labels": tile.labels}
    if tile.udm_vectors is not None:
        sources["udm_vectors"] = tile.udm_vectors
    if tile.udm_raster is not None:
        sources["udm_raster"] = tile.udm_raster
    out = {}
    for role, path in sources.items():
        try:
            stat = path.stat()
            out[role] = [str(path), stat.st_size, stat.st_mtime_ns]
        except FileNotFoundError:
            out[role] = [str(path), None, None]
    return out


@dataclass
class CacheReport:
    built: list[str] = field(default_factory=list)
    cached: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)  # tile key -> message
    seconds: float = 0.0

    def summary(self) -> str:
        text = f"{len(self.cached)} cached, {len(self.built)} built"
        if self.failed:
            text += f", {len(self.failed)} failed"
        return text + f" ({self.seconds:.1f} s)"


class MaskIndex:
    """The cache index: tile key -> {sources, settings, stats}."""

    def __init__(self, work_dir: str | Path):
        self.path = masks_dir(work_dir) / "index.json"
        self.entries: dict[str, dict] = {}
        if self.path.is_file():
            import json

            try:
                doc = json.loads(self.path.read_text())
                if doc.get("version") == INDEX_VERSION:
                    self.entries = doc.get("entries", {})
            except (ValueError, OSError):
                self.entries = {}  # unreadable index: every mask is simply rebuilt

    def is_fresh(self, tile: ImageFiles, settings: RasterizeSettings, png: Path) -> bool:
        entry = self.entries.get(tile.key)
        return (
            entry is not None
            and entry["sources"] == _fingerprint(tile)
            and entry["settings"] == settings.as_dict()
            and png.is_file()
        )

    def save(self) -> None:
        write_json_atomic(self.path, {"version": INDEX_VERSION, "entries": self.entries})


def _build_one(tile: ImageFiles, png: Path, settings: RasterizeSettings) -> tuple[str, dict | str]:
    """Worker: rasterize and write one mask; returns (key, entry) or (key, error message)."""
    sources = _fingerprint(tile)  # taken before reading, so a file edited meanwhile is redone
    # json.loads of a large GeoJSON allocates millions of (acyclic) objects; with torch and
    # Lightning imported, the cyclic GC re-walks their heap on every collection and one tile
    # takes 2x longer (benchmarks/bench_prepare.py). Nothing here makes cycles: pause the GC.
    gc_was_enabled = gc.isenabled()
    gc.disable()
    try:
        result = rasterize_tile(tile, settings)
    except SN7Error as exc:
        return tile.key, str(exc)
    finally:
        if gc_was_enabled:
            gc.enable()
    write_png(png, result.mask)
    stats = {
        "height": int(result.mask.shape[0]),
        "width": int(result.mask.shape[1]),
        "n_buildings": result.n_buildings,
        "building_frac": result.building_frac,
        "valid_frac": result.valid_frac,
        **result.label_repairs,
    }
    return tile.key, {"sources": sources, "settings": settings.as_dict(), "stats": stats}


def build_mask_cache(
    tiles: Sequence[ImageFiles],
    work_dir: str | Path,
    settings: RasterizeSettings,
    workers: int = 1,
    on_done: Callable[[str, str], None] | None = None,
) -> tuple[CacheReport, MaskIndex]:
    """Bring every tile's mask up to date; bad tiles are reported, never stop the others."""
    start = time.perf_counter()
    remove_stale_temps(masks_dir(work_dir))
    index = MaskIndex(work_dir)
    report = CacheReport()
    todo = []
    for tile in tiles:
        if index.is_fresh(tile, settings, mask_path(work_dir, tile)):
            report.cached.append(tile.key)
            if on_done:
                on_done(tile.key, "cached")
        else:
            todo.append(tile)

    last_flush = time.perf_counter()

    def record(key: str, result: dict | str) -> None:
        nonlocal last_flush
        if isinstance(result, str):
            report.failed[key] = result
            index.entries.pop(key, None)
        else:
            report.built.append(key)
            index.entries[key] = result
        if on_done:
            on_done(key, "failed" if isinstance(result, str) else "built")
        if time.perf_counter() - last_flush > _FLUSH_SECONDS:
            index.save()
            last_flush = time.perf_counter()

    jobs = [(t, mask_path(work_dir, t), settings) for t in todo]
    if workers <= 1 or len(jobs) <= 1:
        for job in jobs:
            record(*_build_one(*job))
    else:
        with bound_process_pool(min(workers, len(jobs))) as pool:
            futures = [pool.submit(_build_one, *job) for job in jobs]
            for future in as_completed(futures):
                record(*future.result())
    if todo or not index.path.is_file():
        index.save()
    report.seconds = time.perf_counter() - start
    return report, index


def verify_mask_cache(
    tiles: Sequence[ImageFiles],
    work_dir: str | Path,
    settings: RasterizeSettings,
    index: MaskIndex,
    sample: int = 2,
    seed: int = 0,
) -> dict[str, str]:
    """Re-check cached masks: readable, right size, values in {0,1,255}, up to date; and for a
    seeded sample of `sample` tiles, identical to a fresh rasterization. Returns key -> problem.

    A mask that passed these checks is recorded with its file's size and mtime; while the file
    still has them it is not decoded again (a warm run of the full SN7 train set would otherwise
    spend seconds decoding 1,423 unchanged PNGs). Any write to the file changes its mtime."""
    problems: dict[str, str] = {}
    checked = []
    newly_verified = False
    for tile in tiles:
        png = mask_path(work_dir, tile)
        entry = index.entries.get(tile.key)
        if entry is None:
            continue  # failed tiles are reported by the build step
        if not index.is_fresh(tile, settings, png):
            problems[tile.key] = "mask is older than its sources or settings"
            continue
        stamp = _file_stamp(png)
        if entry.get("verified") == stamp:
            checked.append((tile, None))
            continue
        try:
            mask = read_png(png)
        except SN7Error as exc:
            problems[tile.key] = str(exc)
            continue
        expected = (entry["stats"]["height"], entry["stats"]["width"])
        if mask.shape != expected:
            problems[tile.key] = f"mask is {mask.shape}, expected {expected}"
            continue
        bad_values = np.setdiff1d(np.unique(mask), [0, 1, IGNORE])
        if bad_values.size:
            problems[tile.key] = f"mask holds values {bad_values.tolist()} besides 0, 1, 255"
            continue
        checked.append((tile, mask))
        entry["verified"] = stamp
        newly_verified = True
    for tile, mask in random.Random(seed).sample(checked, min(sample, len(checked))):
        if mask is None:
            mask = read_png(mask_path(work_dir, tile))
        info = raster_info(tile.image)
        if mask.shape != (info.height, info.width):
            problems[tile.key] = f"mask is {mask.shape}, image is {(info.height, info.width)}"
        elif not np.array_equal(rasterize_tile(tile, settings).mask, mask):
            problems[tile.key] = "mask differs from a fresh rasterization of its labels"
    for key in problems:
        index.entries.get(key, {}).pop("verified", None)
    if newly_verified or problems:
        index.save()
    return problems


def _file_stamp(path: Path) -> list[int] | None:
    """(size, mtime in ns) of a file, as JSON can store it; None when it is missing."""
    try:
        st = path.stat()
    except OSError:
        return None
    return [st.st_size, st.st_mtime_ns]


def label_repairs(index: MaskIndex, tiles: Sequence[ImageFiles]) -> dict[str, int]:
    """Totals of LABEL_REPAIRS over the indexed masks of `tiles` (0 for masks indexed before
    they were recorded)."""
    totals = dict.fromkeys(LABEL_REPAIRS, 0)
    for tile in tiles:
        stats = index.entries.get(tile.key, {}).get("stats", {})
        for key in LABEL_REPAIRS:
            totals[key] += int(stats.get(key, 0))
    return totals
