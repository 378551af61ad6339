"""The full SN7 train set's size: `python prepare.py` cold and warm, and the DataModule's setup.

The root holds 1,423 images under 60 AOI names, as SN7's train set does: symlinks to the 8 images
of ../shared/sn7_sample (and their label files), renamed to the new AOI so that the SN7 file-name
pattern holds. Every mask is therefore a real one (2,000-5,000 buildings). prepare runs as a user
runs it, in a fresh process (interpreter start and imports included); the DataModule's
`prepare()` and `setup("fit")` run in this process, which holds torch as `train.py` does.

`python -m benchmarks.bench_scale [--images N]` (a cold build of 1,423 images takes minutes on two
cores; `--images 100` is a quick check, and its cold time is extrapolated to 1,423).
"""

from __future__ import annotations

import argparse
import math
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.common import (
    REPO,
    SHARED_SAMPLE,
    Section,
    Target,
    markdown_table,
    progress,
    project_config,
    run_standalone,
    timed,
)
from sn7.data.layout import discover_images
from sn7.utils.config import available_cores

FULL_TRAIN_IMAGES = 1423
FULL_TRAIN_AOIS = 60
FULL_TRAIN_CORES = 2
TARGET_COLD_S = 120.0  # bench_prepare's target: the full train set's masks in 2 min on 2 cores
TARGET_WARM_S = 5.0  # a re-run with every mask cached: start-up, listing, verify by size and mtime
MONTHS = [f"{y}_{m:02d}" for y in (2018, 2019) for m in range(1, 13)]
LINKED_DIRS = ("images", "images_masked", "labels", "labels_match", "labels_match_pix", "UDM_masks")


def _aoi_name(i: int) -> str:
    return f"L15-{1000 + 7 * i:04d}E-{1200 + 3 * i:04d}N_{4000 + 4 * i}_{5000 + i}_13"


def build_scaled_root(root: Path, images: int, aois: int) -> int:
    """`images` SN7 images over `aois` AOIs (months 2018_01..., as evenly as they go), each a set
    of symlinks to one of the sample's images; returns how many images it made."""
    sources = discover_images(SHARED_SAMPLE)
    per_aoi = [images // aois + (a < images % aois) for a in range(aois)]
    made = 0
    for a, n in enumerate(per_aoi):
        aoi = _aoi_name(a)
        for m in range(n):
            src = sources[made % len(sources)]
            stem = f"global_monthly_{MONTHS[m % len(MONTHS)]}_mosaic_{aoi}"
            src_aoi_dir = src.image.parent.parent
            for folder in LINKED_DIRS:
                if not (src_aoi_dir / folder).is_dir():
                    continue
                (root / "train" / aoi / folder).mkdir(parents=True, exist_ok=True)
                for path in (src_aoi_dir / folder).glob(f"{src.stem}*"):
                    link = root / "train" / aoi / folder / path.name.replace(src.stem, stem)
                    link.symlink_to(path)
            made += 1
    return made


def run_prepare(root: Path, work: Path) -> float:
    """Seconds of `python prepare.py data.root=root data.work_dir=work` in a fresh process."""
    cmd = [
        sys.executable,
        "prepare.py",
        f"data.root={root}",
        f"data.work_dir={work}",
        f"hydra.run.dir={work.parent / 'hydra'}",
    ]
    start = time.perf_counter()
    result = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{result.stdout}\n{result.stderr}")
    return seconds


def datamodule_times(root: Path, work: Path) -> tuple[float, float]:
    """Seconds of the DataModule's prepare() (in this process) and setup("fit"), warm cache."""
    from sn7.data.prepared import prepare
    from sn7.lit.datamodule import SN7DataModule

    cfg = project_config("train", [f"data.root={root}", f"data.work_dir={work}"])
    dm = SN7DataModule(cfg.data, cfg.split, cfg.subset, cfg.augment, cfg.seed)
    t_prepare = timed(lambda: prepare(dm.cfg, quiet=True))
    t_setup = timed(lambda: dm.setup("fit"))
    return t_prepare, t_setup


def run(images: int = FULL_TRAIN_IMAGES) -> Section:
    section = Section(f"bench_scale: {images} images (SN7 train-set size: {FULL_TRAIN_IMAGES})")
    if not (SHARED_SAMPLE / "train").is_dir():
        section.body = [f"skipped: the real sample {SHARED_SAMPLE} is absent"]
        return section
    aois = min(FULL_TRAIN_AOIS, math.ceil(images / len(MONTHS)))
    workers = available_cores()
    with tempfile.TemporaryDirectory(prefix="sn7-bench-scale-") as tmp:
        root, work = Path(tmp) / "root", Path(tmp) / "work"
        t_root = timed(lambda: build_scaled_root(root, images, aois))
        progress(f"{images} images under {aois} AOIs in {t_root:.1f} s; cold prepare ...")
        t_cold = run_prepare(root, work)
        progress(f"cold prepare {t_cold:.1f} s; warm prepare ...")
        t_warm = run_prepare(root, work)
        progress(f"warm prepare {t_warm:.1f} s; DataModule ...")
        t_dm_prepare, t_setup = datamodule_times(root, work)
        n_masks = sum(1 for _ in (work / "masks").glob("*/*.png"))
    if n_masks != images:
        raise RuntimeError(f"{n_masks} masks for {images} images")

    rows = [
        ["`python prepare.py`, cold (every mask built)", t_cold],
        ["`python prepare.py`, warm (all cached)", t_warm],
        ["DataModule: `prepare()` in-process, warm", t_dm_prepare],
        ["DataModule: `setup('fit')`", t_setup],
    ]
    section.body = [
        f"{images} images (symlinks to the 8 of {SHARED_SAMPLE}) under {aois} AOIs; "
        f"{workers} mask workers (data.workers=null: all cores); label source and settings are "
        "conf/data/sn7.yaml's. prepare.py in a fresh process, once each (no repeats: the cold "
        "build is the long part).",
        "",
        markdown_table(
            ["step", "s", "ms per image"],
            [[name, s, f"{1e3 * s / images:.2f}"] for name, s in rows],
        ),
    ]
    cold_full = t_cold * FULL_TRAIN_IMAGES / images * workers / FULL_TRAIN_CORES
    section.targets.append(
        Target(
            f"cold prepare of {FULL_TRAIN_IMAGES} images on {FULL_TRAIN_CORES} cores, s"
            + ("" if images == FULL_TRAIN_IMAGES and workers == FULL_TRAIN_CORES else " (scaled)"),
            cold_full,
            TARGET_COLD_S,
            higher_is_better=False,
            unit=" s",
            digits=0,
        )
    )
    if images == FULL_TRAIN_IMAGES:  # a warm run is mostly start-up: not scaled from fewer images
        section.targets.append(
            Target(
                f"warm prepare of {FULL_TRAIN_IMAGES} images, s",
                t_warm,
                TARGET_WARM_S,
                higher_is_better=False,
                unit=" s",
                digits=1,
            )
        )
    return section


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--images", type=int, default=FULL_TRAIN_IMAGES, help="%(default)s")
    args = parser.parse_args()
    run_standalone(lambda: run(args.images))
