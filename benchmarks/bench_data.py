"""Training samples: the mask cache + windowed reads vs re-rasterizing the labels on every read.

Project: `RandomCropDataset.read_crop` (a 256^2 window of the GeoTIFF + a slice of the cached mask,
held in memory) and `sample` (normalise, to tensors). Baseline, the way torchgeo's SpaceNet7 dataset
works: per sample, read the whole image and rasterize its GeoJSON (here with the project's own
`rasterize_tile`, so parsing, reprojection and burning are the same code as the cache's), then crop
both to the same window and normalise the same way. Positions are random, identical for both sides,
and the two outputs are checked equal. Both run in this process, which holds torch as a DataLoader
worker (forked from the training process) would.

Data wait: the project's SN7DataModule (default num_workers, one thread per worker, light
augmentation) feeds the default-path training step of bench_train (TinyUNet from conf/model); the
time spent in `next(loader)` is the wait, as a share of the whole step (wait + compute).

`python -m benchmarks.bench_data`
"""

from __future__ import annotations

import time

import numpy as np
import torch

from benchmarks.bench_train import TrainingStep
from benchmarks.common import (
    Section,
    Target,
    describe_path,
    markdown_table,
    measure,
    progress,
    project_config,
    run_standalone,
    sample_root,
    timed,
    training_path,
)
from sn7.data.layout import discover_images
from sn7.data.masks import RasterizeSettings, rasterize_tile
from sn7.data.prepared import prepare
from sn7.data.raster_io import read_raster
from sn7.lit.datamodule import SN7DataModule

TARGET_SPEEDUP = 30.0
TARGET_WAIT_SHARE = 10.0  # % of a training step
N_POSITIONS = 16
LOADER_BUDGET_S = 25.0  # timed training steps fed by the loader, and as many on a fixed batch


def datamodule(cfg) -> SN7DataModule:
    dm = SN7DataModule(cfg.data, cfg.split, cfg.subset, cfg.augment, cfg.seed)
    prepare(dm.cfg, quiet=True)  # builds the cache once; a few stats when it is fresh
    dm.setup("fit")
    return dm


class Samplers:
    """Both ways to get the samples at a list of (tile, row, col); each call takes the next."""

    def __init__(self, dm: SN7DataModule, settings: RasterizeSettings, seed: int = 0):
        ds = dm.train_set
        self.ds, self.settings = ds, settings
        tiles = discover_images(dm.cfg.data.root, dm.cfg.data.image_dir, dm.cfg.data.label_source)
        by_image = {str(t.image): t for t in tiles}
        self.tiles = [by_image[str(path)] for path in ds.rows["image"]]
        rng = np.random.default_rng(seed)
        self.positions = []
        for _ in range(N_POSITIONS):
            tile = int(rng.integers(len(ds.rows)))
            h, w = ds.masks[tile].shape
            row, col = (int(rng.integers(n - ds.crop + 1)) for n in (h, w))
            self.positions.append((tile, row, col))
        self._next = {"cached": 0, "rerasterize": 0}

    def _position(self, kind: str) -> tuple[int, int, int]:
        i = self._next[kind]
        self._next[kind] = i + 1
        return self.positions[i % len(self.positions)]

    def cached_at(self, tile: int, row: int, col: int) -> dict:
        return self.ds.sample(tile, row, col, *self.ds.read_crop(tile, row, col))

    def rerasterized_at(self, tile: int, row: int, col: int) -> dict:
        s, source = self.ds.crop, self.tiles[tile]
        image = read_raster(source.image, self.ds.spec.bands)
        mask = rasterize_tile(source, self.settings).mask
        crop = np.s_[row : row + s, col : col + s]
        return self.ds.sample(tile, row, col, image[(slice(None), *crop)], mask[crop])

    def cached(self) -> dict:
        return self.cached_at(*self._position("cached"))

    def rerasterized(self) -> dict:
        return self.rerasterized_at(*self._position("rerasterize"))

    def check_equal(self) -> None:
        for pos in self.positions:
            a, b = self.cached_at(*pos), self.rerasterized_at(*pos)
            if not (torch.equal(a["image"], b["image"]) and torch.equal(a["mask"], b["mask"])):
                raise AssertionError(f"cached and re-rasterized samples differ at {pos}")


def loader_wait(dm: SN7DataModule, step: TrainingStep) -> dict:
    """Training steps fed by the project's loader (time in next() = wait), then the same step
    repeated on the last batch, in memory, once the worker has filled its queue and sleeps.

    Runs before the benchmark's own augmentation calls, so the workers fork from a process that
    has not used OpenCV's thread pool yet (forking after it has is the classic cv2 deadlock)."""
    loader = dm.train_dataloader()
    batches = iter(loader)
    for _ in range(2):  # worker start-up and its first batches are not steady state
        step(next(batches))
    waits, computes = [], []
    max_steps = len(loader) - 2
    while len(waits) < max_steps and (
        sum(waits) + sum(computes) < LOADER_BUDGET_S or len(waits) < 4
    ):
        start = time.perf_counter()
        batch = next(batches)
        got = time.perf_counter()
        step(batch)
        waits.append(got - start)
        computes.append(time.perf_counter() - got)
    fixed_steps = []
    while sum(fixed_steps) < LOADER_BUDGET_S / 2 or len(fixed_steps) < 3:
        fixed_steps.append(timed(lambda: step(batch)))
    del batches
    return {
        "workers": loader.num_workers,
        "steps": len(waits),
        "wait_s": sum(waits),
        "compute_s": sum(computes),
        "max_wait_s": max(waits),
        "fixed_step_s": float(np.median(fixed_steps)),
        "loader_step_s": float(np.median(np.add(waits, computes))),
    }


def run() -> Section:
    root = sample_root()
    cfg = project_config("train", [f"data.root={root}"])
    progress(f"cache of {root} (prepare)")
    dm = datamodule(cfg)
    settings = RasterizeSettings(alpha_band=cfg.data.alpha_band, all_touched=cfg.data.all_touched)
    precision, channels_last = training_path(cfg)
    progress(f"training steps fed by the DataLoader ({describe_path(precision, channels_last)})")
    step = TrainingStep(cfg, cfg.model.base, precision, channels_last)
    wait = loader_wait(dm, step)
    share = 100 * wait["wait_s"] / (wait["wait_s"] + wait["compute_s"])

    samplers = Samplers(dm, settings, seed=cfg.seed)
    progress("checking that cached and re-rasterized samples are equal")
    samplers.check_equal()
    progress("per-sample: re-rasterize vs cache")
    t_raster, t_cached = measure(
        [samplers.rerasterized, samplers.cached], warmup=1, repeats=N_POSITIONS, budget_s=30.0
    )
    ds = dm.train_set
    [t_item] = measure([lambda: ds[0]], warmup=3, repeats=50, budget_s=5.0)
    speedup = t_raster.median / t_cached.median
    batch_cost = dm.cfg.data.batch_size * t_item.median

    section = Section("bench_data: a 256^2 training sample, and the training loop's data wait")
    section.body = [
        f"Data: {root} ({len(ds.rows)} train tiles of {len(dm.val_set.rows) + len(ds.rows)}), "
        f"{N_POSITIONS} random positions, same for both methods; outputs checked equal.",
        "",
        markdown_table(
            ["per sample (image + mask window)", "ms (median)", "min-max ms", "vs cache"],
            [
                [
                    "read whole image + rasterize GeoJSON, crop (torchgeo-style)",
                    1e3 * t_raster.median,
                    t_raster.spread(1e3),
                    f"{speedup:.0f}x slower",
                ],
                [
                    "cache: RandomCropDataset.read_crop + sample",
                    1e3 * t_cached.median,
                    t_cached.spread(1e3),
                    "1x",
                ],
                [
                    "RandomCropDataset[i] (random crop + light augment)",
                    1e3 * t_item.median,
                    t_item.spread(1e3),
                    "",
                ],
            ],
        ),
        "",
        f"Data wait: TinyUNet base {cfg.model.base}, {describe_path(precision, channels_last)}, "
        f"batch {dm.cfg.data.batch_size}, SN7DataModule.train_dataloader() with the default "
        f"{wait['workers']} worker(s); {wait['steps']} timed steps after 2 warm-up steps.",
        "",
        markdown_table(
            ["measure", "value"],
            [
                ["data wait / (wait + compute)", f"{share:.1f}%"],
                [
                    "wait per step, mean / max",
                    f"{1e3 * wait['wait_s'] / wait['steps']:.1f} / "
                    f"{1e3 * wait['max_wait_s']:.1f} ms",
                ],
                ["step with loader (wait + compute), median", f"{wait['loader_step_s']:.2f} s"],
                ["same step on an in-memory batch, median", f"{wait['fixed_step_s']:.2f} s"],
                [
                    "one worker's time per batch (batch x sample)",
                    f"{1e3 * batch_cost:.0f} ms "
                    f"({100 * batch_cost / wait['fixed_step_s']:.1f}% of a step)",
                ],
            ],
        ),
        "",
        "The step-time difference with and without the loader includes the worker's CPU use "
        "competing with the step's threads (and, on a shared machine, other jobs).",
    ]
    section.targets += [
        Target("cache vs re-rasterize per sample", speedup, TARGET_SPEEDUP, unit="x", digits=0),
        Target(
            f"data wait with {wait['workers']} worker(s), share of a training step",
            share,
            TARGET_WAIT_SHARE,
            higher_is_better=False,
            unit="%",
            digits=1,
        ),
    ]
    return section


if __name__ == "__main__":
    run_standalone(run)
