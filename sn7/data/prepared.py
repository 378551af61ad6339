"""The prepare stage's work and artifacts: SN7 folder -> mask cache, manifest.csv, subset.csv,
split.csv and prepare.json in `data.work_dir`.

`prepare()` builds them (`python prepare.py` is its command line, sn7/prepare.py the stage). The
stages after it (the DataModule, evaluate) call `ensure_prepared()`: it reads the artifacts when
prepare.json says they were made from these very inputs (file sizes and modification times) with
these settings, and runs `prepare()` only when they are missing or stale. Callers check the config
first (`sn7.checks`).
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
from omegaconf import DictConfig

from sn7.data.layout import ImageFiles, discover_images
from sn7.data.manifest import COLUMNS, build_manifest, read_csv, write_csv
from sn7.data.mask_cache import (
    CacheReport,
    MaskIndex,
    build_mask_cache,
    label_repairs,
    mask_path,
    verify_mask_cache,
)
from sn7.data.masks import RasterizeSettings
from sn7.data.split import SPLITS, selection_kind, split_aois, split_images
from sn7.data.subset import balanced_subset
from sn7.errors import ConfigError, DataError
from sn7.utils.atomic import write_json_atomic
from sn7.utils.config import available_cores, to_container
from sn7.utils.console import console, print_table, progress_bar
from sn7.utils.locking import exclusive_lock


@dataclass
class Prepared:
    """The artifacts of the prepare stage, loaded."""

    work_dir: Path
    manifest: pd.DataFrame
    subset: pd.DataFrame
    split: pd.DataFrame
    report: CacheReport = field(default_factory=CacheReport)
    label_repairs: dict[str, int] = field(default_factory=dict)  # mask_cache.label_repairs

    def rows(self, split: str) -> pd.DataFrame:
        """Subset rows (one per image) of `split` ("train", "val" = selection, "test" = report),
        or every manifest row for "all"."""
        if split == "all":
            return self.manifest
        if split not in SPLITS:
            raise ConfigError(f"split {split!r} must be one of {(*SPLITS, 'all')}")
        stems = set(self.split.loc[self.split["split"] == split, "stem"])
        return self.subset[self.subset["stem"].isin(stems)].reset_index(drop=True)


def artifact_paths(work_dir: str | Path) -> dict[str, Path]:
    work_dir = Path(work_dir)
    return {name: work_dir / f"{name}.csv" for name in ("manifest", "subset", "split")}


def prepare(cfg: DictConfig, quiet: bool = False) -> Prepared:
    """Discovery -> mask cache -> verify -> manifest -> subset -> split for `cfg.data`."""
    data = cfg.data
    work_dir = Path(data.work_dir)
    tiles = discover_images(data.root, data.image_dir, data.label_source)
    settings = RasterizeSettings(alpha_band=data.alpha_band, all_touched=data.all_touched)
    with exclusive_lock(work_dir, "the prepare cache"):
        report, index = build_verified_masks(
            tiles, work_dir, settings, int(data.workers or available_cores()), data.verify_sample
        )
        manifest = build_manifest(tiles, work_dir, index, data.label_source)
        if manifest.empty:
            raise DataError(_failure_text(report, "no image could be prepared"), data.root)
        prepared = Prepared(work_dir, manifest, *subset_and_split(cfg, manifest), report)
        prepared.label_repairs = label_repairs(index, tiles)
        write_artifacts(prepared, cfg, settings, tiles)
    if not quiet:
        print_summary(prepared)
    if report.failed:
        text = _failure_text(report, f"{len(report.failed)} of {len(tiles)} image(s) failed")
        if data.on_error == "fail":
            raise DataError(text + "\n(data.on_error=skip leaves them out instead)")
        console.print(f"[yellow]warning: {text}\n(left out of the manifest)[/yellow]")
    return prepared


def build_verified_masks(
    tiles: Sequence[ImageFiles],
    work_dir: Path,
    settings: RasterizeSettings,
    workers: int,
    verify_sample: int,
) -> tuple[CacheReport, MaskIndex]:
    """Bring the mask cache up to date and check it; masks that fail the check are rebuilt once,
    and any still bad after that are left out of the index (so out of the manifest)."""
    with progress_bar() as bar:
        task = bar.add_task("masks", total=len(tiles))
        report, index = build_mask_cache(
            tiles, work_dir, settings, workers, on_done=lambda *_: bar.advance(task)
        )
    problems = verify_mask_cache(tiles, work_dir, settings, index, sample=verify_sample)
    if not problems:
        return report, index
    console.print(f"[yellow]verify: {len(problems)} bad mask(s), rebuilding[/yellow]")
    bad = [t for t in tiles if t.key in problems]
    for tile in bad:
        index.entries.pop(tile.key, None)
        mask_path(work_dir, tile).unlink(missing_ok=True)
    index.save()
    rebuilt, index = build_mask_cache(bad, work_dir, settings, workers)
    report.built += rebuilt.built
    report.failed.update(rebuilt.failed)
    still_bad = verify_mask_cache(bad, work_dir, settings, index, sample=len(bad))
    report.failed.update(still_bad)
    for key in still_bad:
        index.entries.pop(key, None)
    index.save()
    return report, index


def subset_and_split(cfg: DictConfig, manifest: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    subset = balanced_subset(manifest, cfg.subset.per_aoi, cfg.subset.max_images, cfg.subset.seed)
    sp = cfg.split
    aoi_split = split_aois(
        manifest["aoi"].unique(),
        test_aois=sp.get("test_aois"),
        val_aois=sp.get("val_aois"),
        test_fraction=sp.get("test_fraction", 0.2),
        val_fraction=sp.get("val_fraction", 0.2),
        folds=sp.get("folds"),
        fold=sp.get("fold", 0),
        seed=sp.get("seed", 0),
    )
    # the time split picks among the subset's months, so a capped subset still has a selection split
    in_subset = manifest["stem"].isin(subset["stem"])
    split = pd.concat(
        [
            split_images(manifest[in_subset], aoi_split, int(sp.get("val_months", 1))),
            split_images(manifest[~in_subset], aoi_split, val_months=0),
        ]
    ).sort_values(["aoi", "date", "stem"])
    return subset, split.reset_index(drop=True)


def write_artifacts(
    prepared: Prepared, cfg: DictConfig, settings: RasterizeSettings, tiles: Sequence[ImageFiles]
) -> None:
    data = cfg.data
    paths = artifact_paths(prepared.work_dir)
    write_csv(prepared.manifest, paths["manifest"])
    write_csv(prepared.subset, paths["subset"])
    write_csv(prepared.split, paths["split"])
    write_json_atomic(
        prepared.work_dir / "prepare.json",
        {
            "data_root": str(Path(data.root).resolve()),
            "label_source": data.label_source,
            "image_dir": data.image_dir,
            "rasterize": settings.as_dict(),
            "settings": artifact_settings(cfg),
            "inputs": inputs_fingerprint(tiles),
            "n_images": len(tiles),
            "n_prepared": len(prepared.manifest),
            "failed": prepared.report.failed,
            "finished": time.strftime("%Y-%m-%d %H:%M:%S"),
        },
    )


def _failure_text(report: CacheReport, head: str) -> str:
    return head + ":\n" + "\n".join(f"  - {msg}" for msg in report.failed.values())


def artifact_settings(cfg: DictConfig) -> dict:
    """What the artifacts depend on besides the input files: the data root and layout, how masks
    are rasterised, and the subset and split settings."""
    data = cfg.data
    return {
        "data_root": str(Path(data.root).resolve()),
        "image_dir": data.image_dir,
        "label_source": data.label_source,
        "rasterize": RasterizeSettings(data.alpha_band, data.all_touched).as_dict(),
        "on_error": data.on_error,
        "subset": to_container(cfg.subset),
        "split": to_container(cfg.split),
    }


def inputs_fingerprint(tiles: Sequence[ImageFiles]) -> str:
    """sha256 of every input file's path, size and modification time (images, labels, UDMs):
    any added, removed or edited file changes it. File stats only, no reading."""
    digest = hashlib.sha256()
    for tile in tiles:
        for path in (tile.image, tile.labels, tile.udm_vectors, tile.udm_raster):
            if path is None:
                continue
            try:
                st = path.stat()
                digest.update(f"{path}|{st.st_size}|{st.st_mtime_ns}\n".encode())
            except FileNotFoundError:
                digest.update(f"{path}|missing\n".encode())
    return digest.hexdigest()


def stale_reason(cfg: DictConfig) -> str | None:
    """Why the artifacts in cfg.data.work_dir cannot be used as they are (None: they can)."""
    data = cfg.data
    work_dir = Path(data.work_dir)
    record = work_dir / "prepare.json"
    if not record.is_file() or not all(p.is_file() for p in artifact_paths(work_dir).values()):
        return "not prepared yet"
    try:
        made = json.loads(record.read_text())
    except ValueError:
        return "prepare.json is unreadable"
    if made.get("settings") != artifact_settings(cfg):
        return "prepared with other settings"
    tiles = discover_images(data.root, data.image_dir, data.label_source)
    if made.get("inputs") != inputs_fingerprint(tiles):
        return "input files changed since"
    return None


def ensure_prepared(cfg: DictConfig, quiet: bool = True) -> Prepared:
    """The prepared artifacts of cfg.data: read when fresh, else made by `prepare()` (a stage after
    prepare never redoes its work when nothing changed). A mask deleted from the cache makes the
    artifacts stale too."""
    if stale_reason(cfg) is None:
        prepared = load_prepared(cfg.data.work_dir)
        if all(Path(m).is_file() for m in prepared.manifest["mask"]):
            return prepared
    return prepare(cfg, quiet=quiet)


def load_prepared(work_dir: str | Path) -> Prepared:
    """Read the artifacts of an earlier prepare run without touching the cache."""
    paths = artifact_paths(work_dir)
    return Prepared(
        Path(work_dir),
        read_csv(paths["manifest"], "manifest", COLUMNS),
        read_csv(paths["subset"], "subset", COLUMNS),
        read_csv(paths["split"], "split", ["aoi", "stem", "date", "split"]),
    )


def print_summary(prepared: Prepared) -> None:
    split_of = {
        aoi: "+".join(dict.fromkeys(group.sort_values("date")["split"]))
        for aoi, group in prepared.split.groupby("aoi")
    }
    rows = []
    for aoi, group in prepared.manifest.groupby("aoi"):
        rows.append(
            [
                aoi,
                split_of.get(aoi, "-"),
                len(group),
                int((prepared.subset["aoi"] == aoi).sum()),
                int(group["n_buildings"].sum()),
                float(group["building_frac"].mean()),
                float(group["valid_frac"].mean()),
            ]
        )
    if selection_kind(prepared.split) == "time":
        console.print(
            "selection split (val): the last month(s) of the training AOIs; too few AOIs for "
            "selection AOIs of its own. The report split (test) is never used to choose anything."
        )
    print_table(
        f"prepared {prepared.work_dir}",
        ["AOI", "split", "images", "subset", "buildings", "building frac", "valid frac"],
        rows,
    )
    console.print(f"masks: {prepared.report.summary()}")
    if text := label_repairs_text(prepared.label_repairs):
        console.print(f"labels: {text}")


def label_repairs_text(counts: dict[str, int]) -> str:
    """E.g. "12 null or non-polygonal geometries skipped, 1 outside the tile"; "" when all 0."""
    parts = [
        (counts.get("n_null", 0), "null or non-polygonal geometries skipped"),
        (counts.get("n_repaired", 0), "repaired (invalid, make_valid)"),
        (counts.get("n_outside", 0), "outside the tile"),
    ]
    return ", ".join(f"{n} {what}" for n, what in parts if n)
