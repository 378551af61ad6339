"""Scenes larger than memory: probabilities by row strips, footprints by row blocks.

`predict_strips` runs the predictor's own windows in its own order and batches, reading only the
image rows the current window row needs, and yields rows as soon as no later window touches them:
the probabilities are bitwise those of `predictor(image)` on the whole scene (same float32 sums
in the same order), while memory is bounded by a window's height times the scene's width.

`scene_footprints` cuts footprints block by block from a probability source that can re-read any
rows (a scratch GeoTIFF). Each step of `cut_footprints` is local to a component's extent: the
opening reaches 2 * opening px, so a crop's rows that far from a cut edge are trimmed; the
watershed (`separate_buildings`, which floods one mask component at a time) and its distance
transform stay inside a mask component.
Filling holes is not local (a hole
is background the scene border cannot reach): background that touches only a cut edge is
"uncertain" (compared with the same crop with the cut edges closed), and a component touching a
cut edge or uncertain background is re-cut on a taller crop until it touches neither. Each
building is emitted once, by the block holding its first pixel in raster order. Crops span the
scene's full width, so left and right are real edges. Pathological shapes (a ring spanning the
whole scene) grow the crop up to the whole scene: exact, but then not bounded in memory.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np
import torch
from rasterio.windows import Window
from scipy import ndimage
from shapely.affinity import translate
from shapely.geometry.base import BaseGeometry

from sn7.data.input_spec import InputSpec
from sn7.data.raster_io import read_raster
from sn7.inference.footprints import FootprintSettings, PostSettings
from sn7.inference.postprocess import clean_mask
from sn7.inference.separation import separate_buildings
from sn7.inference.sliding_window import blend_weights
from sn7.inference.vectorize import mean_inside, vectorize_labels

_CROSS = ndimage.generate_binary_structure(2, 1)
BLOCK_ROWS = 256  # footprint/mask blocks: one row of 256-px GeoTIFF tiles (memory ~ width x this)
SLACK_ROWS = 64  # crop margin beyond the opening's reach, so most seam buildings fit at once


def alpha_of(spec: InputSpec, count: int) -> int | None:
    """The alpha band to read, None when the raster has none (e.g. a plain RGB image)."""
    alpha = spec.alpha_band
    return None if alpha is not None and alpha > count else alpha


def predict_strips(
    src, path, spec: InputSpec, predictor, stats=None
) -> Iterator[tuple[int, np.ndarray, np.ndarray]]:
    """(first row, (h, W) float32 probabilities, (h, W) valid) of consecutive row blocks of the
    open raster `src`, top to bottom; equal to `predictor(normalised whole image)`."""
    height, width = src.height, src.width
    alpha = alpha_of(spec, src.count)
    windows = predictor.windows(height, width)
    wh = windows[0][2]
    weight = blend_weights(wh, windows[0][3], predictor.overlap if len(windows) > 1 else 0)
    total = np.zeros((wh, width), np.float32)  # rows [top, top + wh) of the scene
    norm = np.zeros((wh, width), np.float32)
    top = windows[0][0]
    strips: dict[int, np.ndarray] = {}  # uint8 bands of rows [r, r + wh), by window row r

    def window_input(r: int, c: int, w: int) -> torch.Tensor:
        if r not in strips:
            for old in [k for k in strips if k < top]:
                del strips[old]
            strips[r] = read_raster(path, spec.bands, Window(0, r, width, wh), src=src)
        # normalising is elementwise: a window of the normalised scene, bit for bit
        return torch.from_numpy(spec.normalize(strips[r][:, :, c : c + w], stats))

    def finish(stop: int):
        rows = stop - top
        valid = read_valid_rows(src, path, alpha, top, rows)
        return top, total[:rows] / norm[:rows], valid

    for i in range(0, len(windows), predictor.batch_size):
        chunk = windows[i : i + predictor.batch_size]
        batch = torch.stack([window_input(r, c, w) for r, c, h, w in chunk])
        probs = predictor.forward(batch).numpy()
        for (r, c, h, w), prob in zip(chunk, probs, strict=True):
            if r != top:  # rows above r are final: no later window reaches them
                yield finish(r)
                shift = r - top
                for acc in (total, norm):
                    acc[: wh - shift] = acc[shift:].copy()
                    acc[wh - shift :] = 0
                top = r
            total[:h, c : c + w] += prob * weight
            norm[:h, c : c + w] += weight
    yield finish(height)


def read_valid_rows(src, path, alpha: int | None, row: int, rows: int) -> np.ndarray:
    if alpha is None:
        return np.ones((rows, src.width), bool)
    return read_raster(path, [alpha], Window(0, row, src.width, rows), src=src)[0] > 0


# --- footprints and masks by row blocks -------------------------------------------------------

RowReader = Callable[[int, int], tuple[np.ndarray, np.ndarray]]  # (a, b) -> prob, valid rows


@dataclass
class Crop:
    """Cleaned mask of scene rows [top, top + len): exact except where `uncertain`."""

    top: int
    mask: np.ndarray
    uncertain: np.ndarray | None  # background that may be a hole (fill_holes only)
    prob: np.ndarray  # the map the mask was cut from, same rows
    raw: np.ndarray  # the predictor's probabilities, same rows (for mean_prob)
    valid: np.ndarray
    at_top: bool  # its first row is the scene's
    at_bottom: bool


def clean_crop(
    read: RowReader, height: int, a: int, b: int, threshold: float, post: PostSettings,
    month_map: Callable[[np.ndarray, np.ndarray], np.ndarray],
) -> Crop:  # fmt: skip
    """Rows [a, b) thresholded and cleaned as `cut_footprints` does the whole map, minus the rows
    the opening cannot know (2 * opening from a cut edge), with uncertain background marked."""
    a, b = max(a, 0), min(b, height)
    raw, valid = read(a, b)
    prob = month_map(raw, valid)
    mask = clean_mask((prob >= threshold) & valid, opening=post.opening)
    reach = 2 * post.opening
    cut_top = 0 if a == 0 else min(reach, b - a)
    cut_bottom = 0 if b == height else reach
    keep = slice(cut_top, (b - a) - cut_bottom)
    mask, prob, raw, valid = mask[keep], prob[keep], raw[keep], valid[keep]
    uncertain = None
    if post.fill_holes:
        filled = ndimage.binary_fill_holes(mask, structure=_CROSS)
        pad = ((int(a > 0), int(b < height)), (0, 0))
        closed = np.pad(mask, pad, constant_values=True)
        closed = ndimage.binary_fill_holes(closed, structure=_CROSS)
        closed = closed[pad[0][0] : closed.shape[0] - pad[0][1]]
        uncertain = closed & ~filled
        mask = filled
    return Crop(a + cut_top, mask, uncertain, prob, raw, valid, a == 0, b == height)


def clean_rows(
    read: RowReader, height: int, r0: int, r1: int, threshold: float, post: PostSettings,
    month_map,
) -> np.ndarray:  # fmt: skip
    """The exactly cleaned mask of rows [r0, r1): crops grow until no row there is uncertain."""
    margin = 2 * post.opening + SLACK_ROWS
    while True:
        crop = clean_crop(read, height, r0 - margin, r1 + margin, threshold, post, month_map)
        rows = slice(r0 - crop.top, r1 - crop.top)
        if crop.uncertain is None or not crop.uncertain[rows].any():
            return crop.mask[rows]
        margin *= 2


@dataclass
class Footprint:
    polygon: BaseGeometry  # scene pixel coordinates
    mean_prob: float
    score: float  # mean of the month map over the footprint's valid pixels (tracking's score)
    evidence: bool  # is enough of it valid (track min_valid)


def _is_whole(crop: Crop, labels: np.ndarray, label: int, box) -> bool:
    """Is this component of the crop exactly a component of the whole scene's cleaned mask?
    Not if it touches a cut edge or background that may be a hole."""
    rows, cols = box
    n = crop.mask.shape[0]
    if (rows.start == 0 and not crop.at_top) or (rows.stop == n and not crop.at_bottom):
        return False
    if crop.uncertain is not None:
        r = slice(max(rows.start - 1, 0), rows.stop + 1)
        c = slice(max(cols.start - 1, 0), cols.stop + 1)
        near = ndimage.binary_dilation(labels[r, c] == label, structure=_CROSS)
        return not (near & crop.uncertain[r, c]).any()
    return True


def _first_pixel(labels: np.ndarray, label: int, box) -> tuple[int, int]:
    rows, cols = box
    inside = labels[rows, cols] == label
    k = int(np.argmax(inside.ravel()))
    return rows.start + k // inside.shape[1], cols.start + k % inside.shape[1]


def _cut_components(
    crop: Crop, labels: np.ndarray, chosen: list[int], box, settings: FootprintSettings,
    separate: bool, min_valid: float,
) -> list[Footprint]:  # fmt: skip
    """Exact mask components `chosen` of `crop` (inside `box`) -> their buildings, as
    cut_footprints cuts them from the whole map: the watershed, its distance transform and the
    polygons of a component need only the component and a 1-px ring around it."""
    rows, cols = box
    r = slice(max(rows.start - 1, 0), rows.stop + 1)
    c = slice(max(cols.start - 1, 0), cols.stop + 1)
    own = np.isin(labels[r, c], chosen)
    if separate:
        post = settings.post
        parts = separate_buildings(crop.prob[r, c], own, post.seed_threshold, post.min_distance)
    else:
        parts = np.where(own, labels[r, c], 0)
    comps = vectorize_labels(parts, settings.min_area)
    if not comps.polygons:
        return []
    raw = crop.raw[r, c]
    means = mean_inside(comps.polygons, raw)
    valid = crop.valid[r, c].ravel()
    flat = comps.labels.ravel()
    n = int(flat.max()) + 1
    area = np.bincount(flat, minlength=n)[comps.ids].astype(np.float64)
    n_valid = np.bincount(flat, weights=valid, minlength=n)[comps.ids]
    total = np.bincount(flat, weights=np.where(valid, raw.ravel(), 0), minlength=n)
    scores = np.divide(total[comps.ids], n_valid, out=np.zeros(len(comps.ids)), where=n_valid > 0)
    scores = scores.astype(np.float32)  # as sn7.inference.temporal.monthly_scores stores them
    dy, dx = crop.top + r.start, c.start
    return [
        Footprint(translate(p, dx, dy), float(m), float(s), bool(nv >= min_valid * ar))
        for p, m, s, nv, ar in zip(comps.polygons, means, scores, n_valid, area, strict=True)
    ]


def scene_footprints(
    read: RowReader, height: int, settings: FootprintSettings, separate: bool,
    month_map=lambda raw, valid: raw, min_valid: float = 0.5, block_rows: int = BLOCK_ROWS,
) -> Iterator[tuple[int, list[Footprint]]]:  # fmt: skip
    """(first row, footprints) per block of `block_rows` rows, top to bottom: together exactly
    the buildings `cut_footprints(month_map(prob, valid), valid, settings, separate)` cuts from the
    whole scene, each once (the block holding its first pixel emits it). Within a block, the
    components whole in its crop come first (in the crop's polygon order), then those re-cut on
    a taller crop."""
    post = settings.post
    margin = 2 * post.opening + SLACK_ROWS
    cut = (settings.threshold, post, month_map)
    for r0 in range(0, height, block_rows):
        r1 = min(r0 + block_rows, height)
        crop = clean_crop(read, height, r0 - margin, r1 + margin, *cut)
        labels, _ = ndimage.label(crop.mask)
        whole, regrown, done = [], [], set()
        for label, box in enumerate(ndimage.find_objects(labels), start=1):
            if box is None or not r0 <= crop.top + box[0].start < r1:
                continue  # its first pixel lies in another block
            if _is_whole(crop, labels, label, box):
                whole.append(label)
                done.add((crop.top + box[0].start, _first_pixel(labels, label, box)[1]))
                continue
            row, col = _first_pixel(labels, label, box)
            row += crop.top
            grow = margin
            while True:  # re-cut on taller crops until the component is whole
                grow *= 2
                here = clean_crop(read, height, row - grow, row + grow, *cut)
                here_labels, _ = ndimage.label(here.mask)
                here_label = int(here_labels[row - here.top, col])
                here_box = ndimage.find_objects(here_labels)[here_label - 1]
                if _is_whole(here, here_labels, here_label, here_box):
                    break
            top, first_col = _first_pixel(here_labels, here_label, here_box)
            key = (top + here.top, first_col)
            if r0 <= key[0] < r1 and key not in done:  # else an earlier block or piece has it
                done.add(key)
                regrown.append((here, here_labels, here_label, here_box))
        found = []
        if whole and not separate:  # one call: vectorising is exact for any set of components
            full = (slice(0, crop.mask.shape[0]), slice(0, crop.mask.shape[1]))
            found = _cut_components(crop, labels, whole, full, settings, separate, min_valid)
        elif whole:  # the watershed one component at a time, as separate_buildings floods
            boxes = ndimage.find_objects(labels)
            for label in whole:
                found += _cut_components(crop, labels, [label], boxes[label - 1], settings,
                                         separate, min_valid)  # fmt: skip
        for here, here_labels, here_label, here_box in regrown:
            found += _cut_components(here, here_labels, [here_label], here_box, settings,
                                     separate, min_valid)  # fmt: skip
        yield r0, found
