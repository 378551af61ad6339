"""Touching buildings split: skimage's watershed vs the hand-written flooding it replaced.

Project: `sn7.inference.separation.separate_buildings` (eroded-core markers, then
`skimage.segmentation.watershed` on the -distance transform of the core). Baseline: the
implementation before it, kept below as `_flooding_separation` (with its `_old_core_markers`,
which found the deepest pixel of a thin core part with `ndimage.maximum_position`): the same
markers grown by repeated 4-connected `ndimage.grey_dilation`, one distance level after another.
Both get the same synthetic 1024 x 1024 tile: a few hundred rectangles, L-shapes and pairs of
squares joined by a 2-px neck, blurred 1 px into a probability map and thresholded at 0.5 (seed
threshold 0.6, min_distance 2).
Outputs are compared building by building: labels with exactly the same pixels in both, and the
number of labels.

`python -m benchmarks.bench_separation`
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from benchmarks.common import Section, Target, markdown_table, measure, progress, run_standalone
from sn7.inference.separation import separate_buildings

SIZE = 1024
CELL = 32  # one building (or one joined pair) per CELL x CELL block
N_BUILDINGS = 400
MASK_THRESHOLD = 0.5
TARGET_SPEEDUP = 1.0
TARGET_SAME = 0.99  # share of the baseline's labels the project reproduces pixel for pixel

_CROSS = ndimage.generate_binary_structure(2, 1)


def _grow(labels: np.ndarray, allowed: np.ndarray) -> np.ndarray:
    """Geodesic growth of `labels` into the unlabelled `allowed` pixels until nothing changes."""
    while True:
        grown = ndimage.grey_dilation(labels, footprint=_CROSS)
        take = allowed & (labels == 0) & (grown > 0)
        if not take.any():
            return labels
        labels = np.where(take, grown, labels)


def _old_core_markers(core: np.ndarray, min_distance: int = 2) -> np.ndarray:
    core = core.astype(bool)
    parts, n_parts = ndimage.label(core)
    if n_parts == 0:
        return np.zeros(core.shape, np.int32)
    dist = ndimage.distance_transform_edt(core)
    deep = dist > min_distance
    markers, n_markers = ndimage.label(deep)
    ids = np.arange(1, n_parts + 1)
    shallow = ids[ndimage.sum(deep, parts, ids) == 0]
    if len(shallow):
        rows, cols = np.asarray(ndimage.maximum_position(dist, parts, shallow)).T
        markers[rows, cols] = n_markers + np.arange(1, len(shallow) + 1)
    return markers.astype(np.int32)


def _flooding_separation(
    prob: np.ndarray, mask: np.ndarray, seed_threshold: float = 0.6, min_distance: int = 2
) -> np.ndarray:
    """The replaced implementation: flooding by grey dilation, level by level (higher label wins
    ties)."""
    mask = mask.astype(bool)
    core = mask & (prob >= seed_threshold)
    labels = _old_core_markers(core, min_distance)
    dist = ndimage.distance_transform_edt(core)
    for level in np.unique(np.floor(dist[core]))[::-1]:
        labels = _grow(labels, core & (dist >= level))
    labels = _grow(labels, mask)
    unseeded, n_unseeded = ndimage.label(mask & (labels == 0))
    if n_unseeded:
        labels = np.where(unseeded > 0, unseeded + labels.max(), labels)
    return labels.astype(np.int32)


def synthetic_tile(seed: int = 0) -> tuple[np.ndarray, np.ndarray, int]:
    """(probability map, mask, number of buildings drawn): a third each rectangles, L-shapes and
    two 10 x 10 squares joined by a 2-px neck (two buildings)."""
    rng = np.random.default_rng(seed)
    drawn = np.zeros((SIZE, SIZE), bool)
    cells = SIZE // CELL
    n_drawn = 0
    for cell in rng.choice(cells * cells, size=N_BUILDINGS, replace=False):
        r, c = cell // cells * CELL + int(rng.integers(2, 6)), cell % cells * CELL + 2
        kind = int(rng.integers(3))
        h, w = (int(v) for v in rng.integers(6, 20, size=2))
        if kind == 0:
            drawn[r : r + h, c : c + w] = True
        elif kind == 1:
            drawn[r : r + h // 2, c : c + w] = True
            drawn[r : r + h, c : c + w // 2] = True
        else:
            drawn[r : r + 10, c : c + 10] = drawn[r : r + 10, c + 12 : c + 22] = True
            drawn[r + 4 : r + 6, c + 10 : c + 12] = True
        n_drawn += 2 if kind == 2 else 1
    prob = ndimage.gaussian_filter(drawn.astype(np.float32), 1.0)
    return prob, prob >= MASK_THRESHOLD, n_drawn


def identical_labels(a: np.ndarray, b: np.ndarray) -> int:
    """How many labels of `a` cover exactly the pixels of one label of `b` (ids may differ)."""
    inside = a > 0
    pairs, overlap = np.unique(np.stack([a[inside], b[inside]]), axis=1, return_counts=True)
    size_a = np.bincount(a.ravel())
    size_b = np.bincount(b.ravel())
    return int(((overlap == size_a[pairs[0]]) & (overlap == size_b[pairs[1]])).sum())


def run() -> Section:
    prob, mask, n_drawn = synthetic_tile()
    progress(f"{SIZE} x {SIZE} tile, {n_drawn} buildings drawn: both implementations")
    old = _flooding_separation(prob, mask)
    new = separate_buildings(prob, mask)
    n_old, n_new = len(np.unique(old)) - 1, len(np.unique(new)) - 1
    same = identical_labels(old, new)
    if not np.array_equal(old > 0, new > 0):
        raise AssertionError("the two implementations label different pixels")
    t_old, t_new = measure(
        [lambda: _flooding_separation(prob, mask), lambda: separate_buildings(prob, mask)],
        warmup=1,
        repeats=7,
        budget_s=20.0,
    )
    speedup = t_old.median / t_new.median
    section = Section(f"bench_separation: touching buildings split ({SIZE} x {SIZE} tile)")
    section.body = [
        f"Synthetic tile: {n_drawn} buildings drawn ({N_BUILDINGS} cells, a third of them pairs "
        "joined by a 2-px neck), blurred 1 px, mask at 0.5, seed threshold 0.6, min_distance 2.",
        "",
        markdown_table(
            ["implementation", "ms (median)", "min-max ms", "labels"],
            [
                [
                    "hand-written flooding (grey_dilation, level by level)",
                    1e3 * t_old.median,
                    t_old.spread(1e3),
                    n_old,
                ],
                [
                    "skimage.segmentation.watershed (project)",
                    1e3 * t_new.median,
                    t_new.spread(1e3),
                    n_new,
                ],
            ],
        ),
        "",
        f"Same pixels, {same} of {n_old} labels identical (after relabelling); speed-up "
        f"{speedup:.1f}x.",
    ]
    section.targets += [
        Target("watershed vs hand-written flooding, speed-up", speedup, TARGET_SPEEDUP, unit="x"),
        Target("labels identical to the hand-written flooding", same / n_old, TARGET_SAME),
    ]
    return section


if __name__ == "__main__":
    run_standalone(run)
