"""Mask-cache build (prepare's heavy part): 1 worker vs all workers, and the all-cached re-run.

Each build goes into a fresh cache folder, so every tile is read, its GeoJSON parsed, reprojected
and rasterized, and its PNG written; label source, alpha band and workers are conf/data/sn7.yaml's.
The target is set for the full SN7 train set: 1,423 tiles in <= 2 min on 2 cores, i.e. <= 170 ms
per tile per core (wall seconds x workers / tiles, with all workers busy).

Builds run in a fresh process (`--probe`) that imports no torch, as `python prepare.py` does;
a second probe first imports torch and Lightning, as the process of `train.py` has when its
DataModule builds a missing cache (Python's garbage collector then walks those objects during
the GeoJSON parsing, so that variant is reported too).

`python -m benchmarks.bench_prepare`
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

from benchmarks.common import (
    Section,
    Target,
    Timing,
    json_from_process,
    markdown_table,
    measure,
    progress,
    project_config,
    run_standalone,
    sample_root,
)
from sn7.data.layout import discover_images
from sn7.data.mask_cache import build_mask_cache
from sn7.data.masks import RasterizeSettings
from sn7.utils.config import available_cores

FULL_TRAIN_TILES = 1423
FULL_TRAIN_CORES = 2
TARGET_MS_PER_TILE_CORE = 170.0


def probe(with_torch: bool) -> dict:
    """Time fresh builds (1 and all workers, interleaved) and cached re-runs in this process."""
    if with_torch:
        import pytorch_lightning  # noqa: F401
        import torch  # noqa: F401
    root = sample_root()
    cfg = project_config("prepare", [f"data.root={root}"])
    tiles = discover_images(root, cfg.data.image_dir, cfg.data.label_source)
    settings = RasterizeSettings(alpha_band=cfg.data.alpha_band, all_touched=cfg.data.all_touched)
    all_workers = min(int(cfg.data.workers or available_cores()), len(tiles))

    with tempfile.TemporaryDirectory(prefix="sn7-bench-prepare-") as tmp:

        def fresh_build(workers: int):
            def build() -> None:
                report, _ = build_mask_cache(
                    tiles, tempfile.mkdtemp(dir=tmp), settings, workers=workers
                )
                if report.failed or len(report.built) != len(tiles):
                    raise RuntimeError(f"mask cache build failed: {report.failed}")

            return build

        t_one, t_all = measure(
            [fresh_build(1), fresh_build(all_workers)], warmup=1, repeats=5, budget_s=40.0
        )
        cached_dir = Path(tmp) / "cached"
        _, index = build_mask_cache(tiles, cached_dir, settings, workers=all_workers)

        def rerun() -> None:
            report, _ = build_mask_cache(tiles, cached_dir, settings, workers=all_workers)
            if len(report.cached) != len(tiles):
                raise RuntimeError("the re-run rebuilt masks that were fresh")

        [t_cached] = measure([rerun], warmup=1, repeats=9, budget_s=5.0)
    return {
        "root": str(root),
        "label_source": cfg.data.label_source,
        "tiles": len(tiles),
        "workers": all_workers,
        "buildings": [e["stats"]["n_buildings"] for e in index.entries.values()],
        "one": t_one.seconds,
        "all": t_all.seconds,
        "cached": t_cached.seconds,
    }


def run_probe(with_torch: bool) -> dict:
    args = ["--probe", "--with-torch"] if with_torch else ["--probe"]
    return json_from_process("benchmarks.bench_prepare", *args)


def run() -> Section:
    progress(f"mask builds of {sample_root()} in a process without torch (as sn7.prepare)")
    plain = run_probe(with_torch=False)
    progress("the same in a process that has imported torch + Lightning (as train.py)")
    loaded = run_probe(with_torch=True)
    n, workers = plain["tiles"], plain["workers"]

    def ms_per_tile_core(seconds: float, n_workers: int) -> float:
        return 1e3 * seconds * n_workers / n

    rows = []
    for label, result in (("sn7.prepare", plain), ("train.py (torch loaded)", loaded)):
        for run_label, key, n_workers in (
            ("build, 1 worker", "one", 1),
            (f"build, all {workers} workers", "all", workers),
            ("re-run, all cached", "cached", workers),
        ):
            timing = Timing(result[key])
            per_tile_core = ms_per_tile_core(timing.median, n_workers)
            rows.append(
                [
                    f"{label}: {run_label}",
                    timing.median,
                    timing.spread(),
                    n / timing.median,
                    f"{per_tile_core:.1f}",
                    f"{FULL_TRAIN_TILES * per_tile_core / 1e3 / FULL_TRAIN_CORES:.0f}",
                ]
            )
    t_one, t_all = Timing(plain["one"]), Timing(plain["all"])
    ms_all = ms_per_tile_core(t_all.median, workers)
    full_s = FULL_TRAIN_TILES * ms_all / 1e3 / FULL_TRAIN_CORES
    slowdown = Timing(loaded["one"]).median / t_one.median

    section = Section("bench_prepare: mask-cache build")
    section.body = [
        f"{n} tiles of {plain['root']} ({min(plain['buildings'])}-{max(plain['buildings'])} "
        f"buildings each, label source `{plain['label_source']}`, GeoJSON parsing included); "
        "each build into an empty cache folder; 1-worker and all-worker builds interleaved; "
        "medians. Each variant runs in its own fresh process.",
        "",
        markdown_table(
            [
                "process: run",
                "s (median)",
                "min-max s",
                "tiles/s",
                "ms per tile per core",
                f"s for {FULL_TRAIN_TILES} tiles on {FULL_TRAIN_CORES} cores",
            ],
            rows,
        ),
        "",
        f"Speed-up of {workers} workers over 1 (sn7.prepare): "
        f"{t_one.median / t_all.median:.2f}x. With torch and Lightning imported, one worker "
        f"takes {slowdown:.2f}x the time"
        + (
            " (the cyclic garbage collector re-walks their objects while `json.loads` "
            "allocates the GeoJSON, unless it is paused during parsing)."
            if slowdown > 1.2
            else "."
        ),
    ]
    section.targets.append(
        Target(
            f"sn7.prepare mask build with {workers} workers, ms per tile per core "
            f"(full SN7 train set on {FULL_TRAIN_CORES} cores: {full_s:.0f} s)",
            ms_all,
            TARGET_MS_PER_TILE_CORE,
            higher_is_better=False,
            unit=" ms",
            digits=0,
        )
    )
    return section


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--probe", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--with-torch", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.probe:
        print(json.dumps(probe(args.with_torch)))
    else:
        run_standalone(run)
