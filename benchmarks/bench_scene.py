"""predict on large scenes: peak RSS at 4096 and 8192 px, and windowed == whole at 2048 px.

Mosaics are built from real sample tiles (a tile repeated over the scene, tiled deflate GeoTIFF,
under a temp dir). Each run is `predict` in a fresh process (`--child`) that reports its own peak
RSS (VmHWM). Between the tile's copies runs an 8-px no-data gutter (alpha 0), as between the
strips of a real mosaic, so buildings never chain from copy to copy. The model is pixelwise (a
1x1 convolution: p = sigmoid(40 * (red - c)), c the red band's 97th percentile on the tile): about
3 % of the pixels in many small blobs, as buildings are, at threshold 0.5; the memory structure of
predict does not depend on the model's size. The 2048 px scene is predicted twice, whole (today's
path) and windowed (predict.max_scene_px forced small).

`python -m benchmarks.bench_scene`
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from benchmarks.common import (
    Section,
    Target,
    json_from_process,
    markdown_table,
    progress,
    project_config,
    project_input_spec,
    rss_mib,
    run_standalone,
    sample_root,
    save_checkpoint,
)

SIZES = (4096, 8192)
TARGET_RSS_RATIO = 1.2
GUTTER = 8  # px of no-data between the tile's copies
BRIGHT_QUANTILE = 0.97
GAIN = 40.0


def first_tile() -> Path:
    return sorted(sample_root().glob("train/*/images/*.tif"))[0]


def write_checkpoint(path: Path) -> Path:
    """An sn7 checkpoint of a 1x1 convolution that marks the tile's brightest red pixels."""
    import rasterio
    import torch
    from torch import nn

    spec = project_input_spec()
    with rasterio.open(first_tile()) as src:
        red = src.read(1).astype(np.float32) / 255
    cut = float(np.quantile(red[red > 0], BRIGHT_QUANTILE))
    model = nn.Conv2d(len(spec["bands"]), 1, kernel_size=1)
    with torch.no_grad():  # the model sees z = (x - mean) / std, so x = z * std + mean
        model.weight.zero_()
        model.weight[0, 0, 0, 0] = GAIN * spec["std"][0]
        model.bias.fill_(GAIN * (spec["mean"][0] - cut))
    config = {"_target_": "torch.nn.Conv2d", "in_channels": len(spec["bands"]),
              "out_channels": 1, "kernel_size": 1}  # fmt: skip
    return save_checkpoint(path, model, config, spec)


def build_mosaic(path: Path, size: int) -> Path:
    """A size x size 4-band GeoTIFF tiled with the first sample tile, an 8-px no-data gutter
    between copies (written by row strips)."""
    import rasterio
    from rasterio.windows import Window

    with rasterio.open(first_tile()) as src:
        tile, crs, transform = src.read(), src.crs, src.transform
    tile[-1, :GUTTER] = 0  # no-data gutters on the copy's top and left edges
    tile[-1, :, :GUTTER] = 0
    _, th, tw = tile.shape
    profile = dict(driver="GTiff", width=size, height=size, count=tile.shape[0], dtype="uint8",
                   crs=crs, transform=transform, tiled=True, blockxsize=256, blockysize=256,
                   compress="deflate")  # fmt: skip
    reps = -(-size // tw)
    with rasterio.open(path, "w", **profile) as dst:
        for r in range(0, size, th):
            h = min(th, size - r)
            row = np.tile(tile[:, :h], (1, 1, reps))[:, :, :size]
            dst.write(row, window=Window(0, r, size, h))
    return path


def child(image: Path, ckpt: Path, out: Path, max_px: int) -> None:
    """Run predict in this process; print peak RSS and seconds as the last line (JSON)."""
    from sn7.predict import predict

    overrides = [f"ckpt_path={ckpt}", f"input={image}", f"predict.out_dir={out}",
                 "predict.threshold=0.5", "predict.gallery=false",
                 f"predict.max_scene_px={max_px}", "threads=2"]  # fmt: skip
    cfg = project_config("predict", overrides)
    start = time.perf_counter()
    done = predict(cfg, given={o.split("=", 1)[0] for o in overrides})
    result = {"seconds": time.perf_counter() - start, "peak_rss_mib": rss_mib()[1],
              "buildings": sum(d["buildings"] for d in done)}  # fmt: skip
    print(json.dumps(result))


def compare(whole: Path, windowed: Path) -> dict:
    import geopandas as gpd

    a, b = (gpd.read_file(next(p.glob("*_buildings.geojson"))) for p in (whole, windowed))
    best = []
    tree = a.sindex
    for geom in b.geometry:
        ious = [geom.intersection(a.geometry[j]).area / geom.union(a.geometry[j]).area
                for j in tree.query(geom, predicate="intersects")]  # fmt: skip
        best.append(max(ious, default=0.0))
    best = np.asarray(best)
    return {"whole": len(a), "windowed": len(b), "min_iou": float(best.min(initial=1.0)),
            "exact": int((best > 1 - 1e-9).sum())}  # fmt: skip


def run() -> Section:
    section = Section("bench_scene: predict on large scenes, peak RSS 4096 vs 8192 px")
    results = {}
    with tempfile.TemporaryDirectory(prefix="sn7-bench-scene-") as tmp:
        tmp = Path(tmp)
        ckpt = write_checkpoint(tmp / "random.ckpt")
        runs = [(2048, "whole", 10**12), (2048, "windowed", 1)] + [
            (size, "windowed", 1) for size in SIZES
        ]
        for size, how, max_px in runs:
            image = tmp / f"scene{size}.tif"
            if not image.exists():
                build_mosaic(image, size)
            progress(f"predict {how} on {size} x {size} ...")
            out = tmp / f"out{size}_{how}"
            results[size, how] = json_from_process(
                "benchmarks.bench_scene", "--child", str(image), str(ckpt), str(out), str(max_px)
            )
            results[size, how]["out"] = out
        equal = compare(results[2048, "whole"]["out"], results[2048, "windowed"]["out"])
    rows = [[f"{s} x {s}", how, f"{r['peak_rss_mib']:.0f}", f"{r['seconds']:.0f}",
             r["buildings"]] for (s, how), r in results.items()]  # fmt: skip
    ratio = (
        results[SIZES[1], "windowed"]["peak_rss_mib"]
        / results[SIZES[0], "windowed"]["peak_rss_mib"]
    )
    section.body = [
        "predict in a fresh process per run (peak RSS = its VmHWM), pixelwise brightness model "
        "(see the module docstring), default track and post settings, 2 threads:",
        "",
        markdown_table(["scene", "path", "peak RSS MiB", "s", "buildings"], rows),
        "",
        f"2048 px, windowed vs whole: {equal['windowed']} vs {equal['whole']} buildings, "
        f"{equal['exact']} with IoU 1.0, min IoU {equal['min_iou']:.4f}.",
    ]
    section.targets = [
        Target("peak RSS 8192 / 4096 px", ratio, TARGET_RSS_RATIO, higher_is_better=False),
        Target("2048 px windowed vs whole: min IoU per building", equal["min_iou"], 1.0),
        Target(
            "2048 px windowed vs whole: buildings not in the whole-image result",
            float(equal["windowed"] - equal["exact"] + abs(equal["whole"] - equal["windowed"])),
            0.0,
            higher_is_better=False,
        ),
    ]
    return section


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--child", nargs=4)
    args = parser.parse_args()
    if args.child:
        image, ckpt, out, max_px = args.child
        child(Path(image), Path(ckpt), Path(out), int(max_px))
        sys.exit(0)
    run_standalone(run)
