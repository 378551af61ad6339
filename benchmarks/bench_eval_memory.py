"""evaluate in bounded memory: peak RSS and seconds per tile for 8 and for 64 full tiles.

evaluate streams AOI by AOI (only the months of the AOI being scored are held, for tracking), so
its peak memory must not grow with the number of tiles. Both roots are SN7-shaped symlink farms over
the shared sample (4 months per AOI: 2 AOIs, then 16), scored whole (`eval.split=all`) at a fixed
threshold by a small TinyUNet with random weights: what is measured is evaluate's own buffering, not
the model. Each size runs in a fresh process (`--child`), which reports its own peak RSS.

`python -m benchmarks.bench_eval_memory`
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.bench_scale import build_scaled_root
from benchmarks.common import (
    SHARED_SAMPLE,
    Section,
    Target,
    json_from_process,
    markdown_table,
    progress,
    project_config,
    project_input_spec,
    rss_mib,
    run_standalone,
    save_checkpoint,
)

SIZES = (8, 64)
MONTHS_PER_AOI = 4
TARGET_RSS_RATIO = 1.2  # peak RSS of 64 tiles / 8 tiles


def write_checkpoint(path: Path) -> Path:
    """An sn7 checkpoint of a TinyUNet (base 8, depth 3) with random weights."""
    from sn7.models.tiny_unet import TinyUNet

    model_cfg = {"_target_": "sn7.models.tiny_unet.TinyUNet", "in_ch": 4, "base": 8, "depth": 3}
    model = TinyUNet(in_ch=4, base=8, depth=3)
    return save_checkpoint(path, model, model_cfg, project_input_spec())


def child(root: Path, work: Path, ckpt: Path, out: Path) -> None:
    """Run evaluate in this process and print its peak RSS and timing as the last line (JSON)."""
    import torch

    from sn7.evaluate import evaluate

    torch.set_num_threads(2)
    overrides = [
        f"ckpt_path={ckpt}",
        f"data.root={root}",
        f"data.work_dir={work}",
        f"paths.run_dir={out}",
        "eval.split=all",
        "eval.threshold=0.5",
        "eval.gallery=0",
        "eval.crop_metrics=false",
        "track=match",
    ]
    cfg = project_config("evaluate", overrides)
    given = {o.split("=", 1)[0] for o in overrides}
    start = time.perf_counter()
    metrics = evaluate(cfg, given=given)
    seconds = time.perf_counter() - start
    result = {
        "n_tiles": metrics["n_tiles"],
        "peak_rss_mib": rss_mib()[1],  # VmHWM: not the parent's peak
        "seconds": seconds,
        "seconds_per_tile": metrics["seconds_per_tile"],
    }
    print(json.dumps(result))


def run() -> Section:
    section = Section("bench_eval_memory: evaluate's peak memory, 8 vs 64 full tiles")
    if not (SHARED_SAMPLE / "train").is_dir():
        section.body = [f"skipped: the real sample {SHARED_SAMPLE} is absent"]
        return section
    results = {}
    with tempfile.TemporaryDirectory(prefix="sn7-bench-evalmem-") as tmp:
        ckpt = write_checkpoint(Path(tmp) / "random.ckpt")
        for n in SIZES:
            root, work = Path(tmp) / f"root{n}", Path(tmp) / f"work{n}"
            build_scaled_root(root, n, n // MONTHS_PER_AOI)
            progress(f"evaluate on {n} tiles ...")
            args = ["--child", str(root), str(work), str(ckpt), str(Path(tmp) / f"run{n}")]
            results[n] = json_from_process("benchmarks.bench_eval_memory", *args)
    rows = [
        [
            n,
            r["n_tiles"],
            f"{r['peak_rss_mib']:.0f}",
            f"{r['seconds_per_tile']:.2f}",
            f"{r['seconds']:.0f}",
        ]
        for n, r in results.items()
    ]
    small, big = results[SIZES[0]], results[SIZES[1]]
    section.body = [
        "Fresh process per size; TinyUNet base 8 (random weights), `eval.threshold=0.5`, "
        "`track=match`, no gallery; the 64-tile root is 16 AOIs x 4 months of symlinks.",
        "",
        markdown_table(["tiles", "scored", "peak RSS MiB", "s / tile", "total s"], rows),
    ]
    section.targets = [
        Target(
            "evaluate peak RSS, 64 tiles / 8 tiles",
            big["peak_rss_mib"] / small["peak_rss_mib"],
            TARGET_RSS_RATIO,
            higher_is_better=False,
        ),
        Target(
            "evaluate seconds per tile, 64 tiles / 8 tiles (no slower at scale)",
            big["seconds_per_tile"] / small["seconds_per_tile"],
            1.2,
            higher_is_better=False,
        ),
    ]
    return section


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--child", nargs=4, metavar=("ROOT", "WORK", "CKPT", "OUT"))
    args = parser.parse_args()
    if args.child:
        child(*map(Path, args.child))
        return
    print(run_standalone(run).render())


if __name__ == "__main__":
    sys.exit(main())
