"""Stage 1, prepare: SN7 folder -> mask cache, manifest.csv, subset.csv, split.csv in data.work_dir.

`python -m sn7.prepare data.root=DIR` runs it alone; train and evaluate call `prepare()` too, which
costs a few file stats when everything is already cached.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import hydra
import pandas as pd
from omegaconf import DictConfig

from sn7.checks import EVAL_SPLITS, check_data
from sn7.data.layout import discover_tiles
from sn7.data.manifest import COLUMNS, build_manifest, read_csv, write_csv
from sn7.data.mask_cache import CacheReport, build_mask_cache, mask_path, verify_mask_cache
from sn7.data.masks import RasterizeSettings
from sn7.data.split import split_aois
from sn7.data.subset import balanced_subset
from sn7.errors import ConfigError, DataError
from sn7.utils.atomic import exclusive_lock, write_json_atomic
from sn7.utils.cli import run_stage
from sn7.utils.config import available_cores
from sn7.utils.console import console, print_table, progress_bar


@dataclass
class Prepared:
    """The artifacts of the prepare stage, loaded."""

    work_dir: Path
    manifest: pd.DataFrame
    subset: pd.DataFrame
    split: pd.DataFrame
    report: CacheReport = field(default_factory=CacheReport)

    def tiles(self, split: str) -> pd.DataFrame:
        """Subset rows of `split` ("train" or "val"), or every manifest row for "all"."""
        if split == "all":
            return self.manifest
        if split not in EVAL_SPLITS:
            raise ConfigError(f"split {split!r} must be one of {EVAL_SPLITS}")
        aois = set(self.split.loc[self.split["split"] == split, "aoi"])
        return self.subset[self.subset["aoi"].isin(aois)].reset_index(drop=True)


def artifact_paths(work_dir: str | Path) -> dict[str, Path]:
    work_dir = Path(work_dir)
    return {name: work_dir / f"{name}.csv" for name in ("manifest", "subset", "split")}


def prepare(cfg: DictConfig, quiet: bool = False) -> Prepared:
    """Run discovery -> cache -> verify -> manifest -> subset -> split for `cfg.data`."""
    data = cfg.data
    check_data(data)
    work_dir = Path(data.work_dir)
    tiles = discover_tiles(data.root, data.image_dir, data.label_source)
    settings = RasterizeSettings(alpha_band=data.alpha_band, all_touched=data.all_touched)
    workers = int(data.workers or available_cores())

    with exclusive_lock(work_dir, "the prepare cache"):
        with progress_bar() as bar:
            task = bar.add_task("masks", total=len(tiles))
            report, index = build_mask_cache(
                tiles, work_dir, settings, workers, on_done=lambda *_: bar.advance(task)
            )
        problems = verify_mask_cache(
            tiles, work_dir, settings, index, sample=data.verify_sample, seed=cfg.seed
        )
        if problems:
            # Self-heal once: drop the bad masks and rebuild them, then check again.
            console.print(f"[yellow]verify: {len(problems)} bad mask(s), rebuilding[/yellow]")
            bad = [t for t in tiles if t.key in problems]
            for tile in bad:
                index.entries.pop(tile.key, None)
                mask_path(work_dir, tile).unlink(missing_ok=True)
            index.save()
            rebuilt, index = build_mask_cache(bad, work_dir, settings, workers)
            report.built += rebuilt.built
            report.failed.update(rebuilt.failed)
            problems = verify_mask_cache(bad, work_dir, settings, index, sample=len(bad))
            report.failed.update(problems)
            for key in problems:  # still bad after a rebuild: keep it out of the manifest
                index.entries.pop(key, None)
            index.save()

        manifest = build_manifest(tiles, work_dir, index, data.label_source)
        if manifest.empty:
            raise DataError(_failure_text(report, "no image could be prepared"), data.root)
        subset = balanced_subset(
            manifest, cfg.subset.per_aoi, cfg.subset.max_images, cfg.subset.seed
        )
        split = split_aois(
            manifest["aoi"].unique(),
            val_aois=cfg.split.val_aois,
            val_fraction=cfg.split.val_fraction,
            folds=cfg.split.folds,
            fold=cfg.split.fold,
            seed=cfg.split.seed,
        )
        paths = artifact_paths(work_dir)
        write_csv(manifest, paths["manifest"])
        write_csv(subset, paths["subset"])
        write_csv(split, paths["split"])
        write_json_atomic(
            work_dir / "prepare.json",
            {
                "data_root": str(Path(data.root).resolve()),
                "label_source": data.label_source,
                "image_dir": data.image_dir,
                "rasterize": settings.as_dict(),
                "n_images": len(tiles),
                "n_prepared": len(manifest),
                "failed": report.failed,
                "finished": time.strftime("%Y-%m-%d %H:%M:%S"),
            },
        )

    prepared = Prepared(work_dir, manifest, subset, split, report)
    if not quiet:
        _print_summary(prepared)
    if report.failed:
        text = _failure_text(report, f"{len(report.failed)} of {len(tiles)} image(s) failed")
        if data.on_error == "fail":
            raise DataError(text + "\n(data.on_error=skip leaves them out instead)")
        console.print(f"[yellow]warning: {text}\n(left out of the manifest)[/yellow]")
    return prepared


def _failure_text(report: CacheReport, head: str) -> str:
    return head + ":\n" + "\n".join(f"  - {msg}" for msg in report.failed.values())


def load_prepared(work_dir: str | Path) -> Prepared:
    """Read the artifacts of an earlier prepare run without touching the cache."""
    paths = artifact_paths(work_dir)
    return Prepared(
        Path(work_dir),
        read_csv(paths["manifest"], "manifest", COLUMNS),
        read_csv(paths["subset"], "subset", COLUMNS),
        read_csv(paths["split"], "split", ["aoi", "split"]),
    )


def _print_summary(p: Prepared) -> None:
    split_of = dict(zip(p.split["aoi"], p.split["split"], strict=True))
    rows = []
    for aoi, g in p.manifest.groupby("aoi"):
        in_subset = int((p.subset["aoi"] == aoi).sum())
        rows.append(
            [
                aoi,
                split_of.get(aoi, "-"),
                len(g),
                in_subset,
                int(g["n_buildings"].sum()),
                float(g["building_frac"].mean()),
                float(g["valid_frac"].mean()),
            ]
        )
    print_table(
        f"prepared {p.work_dir}",
        ["AOI", "split", "images", "subset", "buildings", "building frac", "valid frac"],
        rows,
    )
    console.print(f"masks: {p.report.summary()}")


@hydra.main(version_base="1.3", config_path="../conf", config_name="prepare")
def main(cfg: DictConfig) -> None:
    run_stage(prepare, cfg)


if __name__ == "__main__":
    main()
