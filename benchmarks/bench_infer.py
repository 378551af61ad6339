"""Full-tile inference: the project's sliding window vs one plain forward pass over the tile.

Project: the `SlidingWindowPredictor` that evaluate.py and predict.py build (`predictor_for`):
conf/infer/sliding_window.yaml (window, overlap, windows per batch, TTA) and the precision and
memory format they resolve for `auto`.
Baseline: the same model, precision and memory format, one forward pass over the whole tile
reflect-padded to a multiple of 2**depth, then a sigmoid (no windows, no blending). Both get the
same normalised float32 input of a real 1024 x 1023 SN7 tile. In the same interleaved rounds:
every candidate precision / memory format through the sliding window (the default must be the
fastest), and the default path with one window per forward pass instead of conf/infer's batch.

`python -m benchmarks.bench_infer`
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from types import SimpleNamespace

import numpy as np
import torch
import torch.nn.functional as F
from hydra.utils import instantiate

from benchmarks.common import (
    Section,
    Target,
    candidate_paths,
    compare_paths,
    describe_path,
    markdown_table,
    measure,
    progress,
    project_config,
    run_standalone,
    sample_root,
)
from sn7.data.input_spec import InputSpec
from sn7.data.layout import discover_images
from sn7.data.raster_io import read_raster
from sn7.inference.sliding_window import InferSettings, SlidingWindowPredictor, predictor_for

TARGET_OVERHEAD = 1.3


def first_tile_input() -> np.ndarray:
    """The first image of the sample, normalised as conf/data/sn7.yaml says: (C, H, W) float32."""
    spec = InputSpec.from_data_cfg(project_config("evaluate").data)
    tile = discover_images(sample_root())[0]
    return spec.normalize(read_raster(tile.image, spec.bands))


def project_predictor(overrides: Sequence[str] = ()) -> SlidingWindowPredictor:
    """What evaluate.py / predict.py build (`predictor_for` on conf/evaluate.yaml + `overrides`),
    around an untrained TinyUNet of the default size (conf/model) in place of a checkpoint."""
    torch.manual_seed(0)
    model = instantiate(project_config("train").model)
    return predictor_for(
        InferSettings.from_config(project_config("evaluate", overrides)),
        SimpleNamespace(model=model),
    )


def run() -> Section:
    predictor = project_predictor()
    model = predictor.model
    image = first_tile_input()
    _, height, width = image.shape
    multiple = 2**model.depth
    tensor = torch.from_numpy(image)[None]
    padded = F.pad(tensor, (0, -width % multiple, 0, -height % multiple), mode="reflect")

    def plain() -> np.ndarray:
        # predictor.forward: the same autocast, channels_last input and sigmoid, one pass
        return predictor.forward(padded)[0, :height, :width].numpy()

    # Everything is timed in one interleaved measurement: the one-pass baseline, the project's
    # predictor, the other candidate paths (config batch size) and the default path with one
    # window per forward pass. The project's predictor is the same object in all three roles.
    default = (predictor.precision, predictor.channels_last)
    candidates = {
        (precision, cl): project_predictor(
            [f"trainer.precision={precision}", f"channels_last={cl}"]
        )
        for precision, cl in candidate_paths()
        if (precision, cl) != default
    } | {default: predictor}
    batch_sizes = {predictor.batch_size: predictor}
    if predictor.batch_size != 1:
        batch_sizes[1] = project_predictor(["infer.batch_size=1"])
    variants = [*candidates.values(), *(p for bs, p in batch_sizes.items() if p is not predictor)]

    path = describe_path(*default)
    progress(f"{width}x{height} tile: one pass vs sliding window ({path}), candidate paths")
    t_plain, *t_variants = measure(
        [plain, *(functools.partial(p, image) for p in variants)],
        warmup=1,
        repeats=6,
        budget_s=60.0,
    )
    timing_of = dict(zip(map(id, variants), t_variants, strict=True))
    t_window = timing_of[id(predictor)]
    overhead = t_window.median / t_plain.median
    path_lines, fastest_target = compare_paths(
        "full-tile inference",
        {key: timing_of[id(p)] for key, p in candidates.items()},
        default,
        1,
        "tiles/s",
    )
    batch_rows = [
        [
            f"{bs}" + (" (conf/infer)" if p is predictor else ""),
            timing_of[id(p)].median,
            timing_of[id(p)].spread(),
            f"{t_window.median / timing_of[id(p)].median:.2f}x",
        ]
        for bs, p in sorted(batch_sizes.items())
    ]
    windows = predictor.windows(height, width)
    window_px = sum(h * w for _, _, h, w in windows)
    padded_px = padded.shape[-2] * padded.shape[-1]

    section = Section(f"bench_infer: full-tile prediction ({width} x {height})")
    section.body = [
        f"TinyUNet base {model.encoders[0][0].out_channels}, {path} (auto)."
        f" Sliding window: window {predictor.window}, overlap "
        f"{predictor.overlap}, {predictor.batch_size} windows per batch -> {len(windows)} windows, "
        f"{window_px / padded_px:.2f}x the pixels of the padded tile "
        f"({padded.shape[-1]} x {padded.shape[-2]}). Timed interleaved; medians.",
        "",
        markdown_table(
            ["method", "s/tile (median)", "min-max s", "tiles/s", "vs one pass"],
            [
                [
                    "one forward pass, padded tile",
                    t_plain.median,
                    t_plain.spread(),
                    1 / t_plain.median,
                    "1.00x",
                ],
                [
                    "SlidingWindowPredictor (project)",
                    t_window.median,
                    t_window.spread(),
                    1 / t_window.median,
                    f"{overhead:.2f}x",
                ],
            ],
        ),
        "",
        *path_lines,
        "",
        f"Windows per forward pass, {path} (same interleaved run):",
        "",
        markdown_table(["windows per batch", "s/tile", "min-max s", "speed vs config"], batch_rows),
    ]
    section.targets.append(
        Target(
            "sliding-window overhead vs one padded pass",
            overhead,
            TARGET_OVERHEAD,
            higher_is_better=False,
            unit="x",
        )
    )
    section.targets.append(fastest_target)
    return section


if __name__ == "__main__":
    run_standalone(run)
