"""Degraded truth: the input maps a series run feeds the tracker instead of a network's output.

Truth as input shows a tracker's ceiling; each degradation imitates one kind of model error, so a
tracker's (or a temporal rule's) robustness to it can be measured without training anything. A
degradation (conf/degrade/<name>.yaml) is a list of steps applied in order:

- label steps change which true buildings each month shows, on the (T, H, W) id rasters:
  missed (a share of ids never shown, or a share per size bin), dropout (each building-month
  hidden with a probability, per size bin), flicker (a share of buildings absent in one random month
  they stand in), boundary (each building dilated, px > 0, or eroded, px < 0), contact (the
  pixels where two buildings touch dropped: truth as a body map);
- then the ids are rendered into probabilities (INSIDE on buildings, OUTSIDE elsewhere) and map
  steps change those: levels (the rendered 0.95 / 0.05 moved to a network's own confidence),
  merge (gaps up to `gap` px between buildings bridged), false_positives (random discs,
  `density` per million pixels each month), blur (Gaussian, `sigma` px), noise (N(0, sd) per
  pixel, optionally spatially correlated, clipped to [0, 1]), scale (one month's map times
  `factor`), gain (every month's map times its own random factor).

Every step draws from its own generator, seeded by (seed, step index, AOI): the same seed gives
the same maps, and one step's draws do not shift when another is added.

`contact` renders truth as a boundary-aware model's body class (touching buildings cut apart).
The `network` preset (conf/degrade/network.yaml) chains these with parameters measured from a
real model's errors (sn7/evaluation/error_profile.py).
"""

from __future__ import annotations

import inspect
import zlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage
from skimage.draw import disk as draw_disk
from skimage.morphology import disk
from skimage.segmentation import expand_labels

from sn7.errors import ConfigError

INSIDE, OUTSIDE = 0.95, 0.05  # probabilities of rendered truth: building, background


def _median_areas(ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(present ids, each one's median area in px over the months it stands in)."""
    areas: dict[int, list[int]] = {}
    for month in ids:
        values, counts = np.unique(month[month > 0], return_counts=True)
        for v, c in zip(values.tolist(), counts.tolist(), strict=True):
            areas.setdefault(v, []).append(c)
    present = np.array(sorted(areas), ids.dtype)
    return present, np.array([np.median(areas[v]) for v in present.tolist()])


def _share_by_area(areas: np.ndarray, by_area: Sequence) -> np.ndarray:
    """Each area's share from [[max_area, share], ...] (ascending max_area; the first bin whose
    max_area exceeds it; beyond the last: the last share)."""
    edges = [float(a) for a, _ in by_area]
    shares = np.array([float(s) for _, s in by_area])
    return shares[np.minimum(np.searchsorted(edges, areas, side="right"), len(shares) - 1)]


def missed(
    ids: np.ndarray, rng: np.random.Generator, share: float = 0.1, by_area: Sequence | None = None
) -> np.ndarray:
    """round(share * N) of the N ids of the series never shown, in any month. With `by_area`
    ([[max_area px, share], ...]), each id is hidden with the share of its median area's bin
    (small buildings are missed more: the `network` preset's measured recall by size)."""
    present, areas = _median_areas(ids)
    if by_area:
        hidden = present[rng.random(len(present)) < _share_by_area(areas, by_area)]
    else:
        hidden = rng.choice(present, round(share * len(present)), replace=False)
    return np.where(np.isin(ids, hidden), 0, ids)


def dropout(
    ids: np.ndarray, rng: np.random.Generator, rate: float = 0.1, by_area: Sequence | None = None
) -> np.ndarray:
    """Each (building, month) it stands in hidden independently with probability `rate` (or its
    median area's bin's rate from `by_area`): a model that misses a building in some months."""
    present, areas = _median_areas(ids)
    rates = _share_by_area(areas, by_area) if by_area else np.full(len(present), float(rate))
    lut = np.zeros(int(ids.max(initial=0)) + 1)
    lut[present] = rates
    out = ids.copy()
    for t, month in enumerate(ids):
        shown = np.unique(month[month > 0])
        drop = shown[rng.random(len(shown)) < lut[shown]]
        out[t][np.isin(month, drop)] = 0
    return out


def flicker(ids: np.ndarray, rng: np.random.Generator, share: float = 0.1) -> np.ndarray:
    """round(share * N) buildings each absent in one month drawn from the months it stands in."""
    present = np.unique(ids[ids > 0])
    chosen = rng.choice(present, round(share * len(present)), replace=False)
    out = ids.copy()
    standing = np.stack([np.isin(chosen, np.unique(month)) for month in ids])  # (T, n chosen)
    for j, building in enumerate(chosen):
        t = rng.choice(np.flatnonzero(standing[:, j]))
        out[t][out[t] == building] = 0
    return out


def boundary(ids: np.ndarray, rng: np.random.Generator, px: int = -1) -> np.ndarray:
    """Each building dilated by px (> 0, never into a neighbour) or eroded by -px (< 0, also
    away from a touching neighbour)."""
    if px > 0:
        return np.stack([expand_labels(month, px) for month in ids])
    if px == 0:
        return ids
    footprint = disk(-px)
    out = ids.copy()
    for t, month in enumerate(ids):
        same = ndimage.grey_erosion(month, footprint=footprint) == ndimage.grey_dilation(
            month, footprint=footprint
        )
        out[t] = np.where(same, month, 0)
    return out


def contact(ids: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Truth as a boundary-aware model's *body* class shows it: the pixels where a building
    touches another (4-neighbour of a different id) become background, so touching buildings
    are cut apart instead of rendering as one blob (the 2nd and 4th places' contact class)."""
    out = ids.copy()
    for t, month in enumerate(ids):
        touching = np.zeros(month.shape, bool)
        for axis in (0, 1):
            a = month.take(range(1, month.shape[axis]), axis=axis)
            b = month.take(range(month.shape[axis] - 1), axis=axis)
            differ = (a != b) & (a > 0) & (b > 0)
            pad = [(0, 0), (0, 0)]
            pad[axis] = (1, 0)
            touching |= np.pad(differ, pad)
            pad[axis] = (0, 1)
            touching |= np.pad(differ, pad)
        out[t][touching] = 0
    return out


def merge(probs: np.ndarray, rng: np.random.Generator, gap: int = 2) -> np.ndarray:
    """Gaps of up to `gap` px between buildings (prob >= 0.5) filled with INSIDE, as a model
    that cannot see the alleys between houses (a binary closing: it also fills notches)."""
    radius = (gap + 1) // 2
    square = np.ones((2 * radius + 1, 2 * radius + 1), bool)
    out = probs.copy()
    for t, prob in enumerate(probs):
        mask = prob >= 0.5
        bridges = ndimage.binary_closing(mask, structure=square) & ~mask
        out[t][bridges] = INSIDE
    return out


def false_positives(
    probs: np.ndarray,
    rng: np.random.Generator,
    density: float = 20.0,
    radius: Sequence[int] = (2, 4),
    value: float = INSIDE,
) -> np.ndarray:
    """Discs of `value` at random places, Poisson(density per million pixels) a month, radius
    drawn uniformly from [radius[0], radius[1]] px."""
    out = probs.copy()
    height, width = probs.shape[1:]
    for t in range(len(probs)):
        for _ in range(rng.poisson(density * height * width / 1e6)):
            centre = (rng.uniform(0, height), rng.uniform(0, width))
            r = rng.integers(radius[0], radius[1] + 1)
            rr, cc = draw_disk(centre, r, shape=(height, width))
            out[t, rr, cc] = np.maximum(out[t, rr, cc], value)
    return out


def blur(probs: np.ndarray, rng: np.random.Generator, sigma: float = 1.0) -> np.ndarray:
    """Gaussian blur of each month (reflected edges, so the mean is kept)."""
    return ndimage.gaussian_filter(probs, sigma=(0, sigma, sigma), mode="reflect")


def noise(
    probs: np.ndarray, rng: np.random.Generator, sd: float = 0.15, corr: float = 0.0
) -> np.ndarray:
    """Per-pixel N(0, sd) noise, clipped to [0, 1]; with corr > 0 the noise is white noise
    smoothed by a Gaussian of sigma `corr` px and rescaled to sd (a network's errors come in
    blobs, not single pixels)."""
    white = rng.normal(0.0, 1.0, probs.shape)
    if corr > 0:
        white = ndimage.gaussian_filter(white.astype(np.float32), (0, corr, corr), mode="reflect")
        white /= max(float(white.std()), 1e-12)
    return np.clip(probs + sd * white, 0.0, 1.0).astype(np.float32)


def levels(
    probs: np.ndarray, rng: np.random.Generator, inside: float = INSIDE, outside: float = OUTSIDE
) -> np.ndarray:
    """Rendered truth's INSIDE / OUTSIDE moved to `inside` / `outside` (linear in between): a
    network's own confidence on buildings and background."""
    return (outside + (probs - OUTSIDE) * (inside - outside) / (INSIDE - OUTSIDE)).astype(
        np.float32
    )


def gain(probs: np.ndarray, rng: np.random.Generator, sd: float = 0.1) -> np.ndarray:
    """Every month's map times exp(N(0, sd)), clipped to [0, 1]: each month seen a little
    brighter or darker (season, haze, sensor), not just one."""
    factors = np.exp(rng.normal(0.0, sd, len(probs))).astype(np.float32)
    return np.clip(probs * factors[:, None, None], 0.0, 1.0).astype(np.float32)


def scale(probs: np.ndarray, rng: np.random.Generator, factor: float = 0.6, month: int = 0):
    """One month's map times `factor` (a month the model sees worse: season, haze, another
    sensor); `month` counts from 0, negative from the end."""
    if not -len(probs) <= month < len(probs):
        raise ConfigError(f"degrade: scale month={month} but the series has {len(probs)} months")
    out = probs.copy()
    out[month] *= factor
    return out


LABEL_STEPS: dict[str, Callable] = {
    "missed": missed,
    "dropout": dropout,
    "flicker": flicker,
    "boundary": boundary,
    "contact": contact,
}
MAP_STEPS: dict[str, Callable] = {
    "merge": merge,
    "false_positives": false_positives,
    "blur": blur,
    "noise": noise,
    "scale": scale,
    "levels": levels,
    "gain": gain,
}
_SHARES = ("share", "rate", "inside", "outside", "value")
_NON_NEGATIVE = ("sigma", "sd", "gap", "density", "factor", "corr")


@dataclass(frozen=True)
class Step:
    kind: str
    params: dict = field(default_factory=dict)

    @property
    def on_labels(self) -> bool:
        return self.kind in LABEL_STEPS

    def apply(self, data: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        return {**LABEL_STEPS, **MAP_STEPS}[self.kind](data, rng, **self.params)


def _step(node: Mapping, k: int) -> Step:
    params = dict(node or {})
    kind = params.pop("kind", None)
    steps = {**LABEL_STEPS, **MAP_STEPS}
    if kind not in steps:
        raise ConfigError(f"degrade.steps[{k}].kind must be one of {sorted(steps)}; got {kind!r}")
    accepted = set(list(inspect.signature(steps[kind]).parameters)[2:])
    unknown = sorted(set(params) - accepted)
    if unknown:
        raise ConfigError(f"degrade.steps[{k}] ({kind}): unknown keys {unknown}; known: "
                          f"{sorted(accepted)}")  # fmt: skip
    for key in _SHARES:
        if key in params and not 0 <= float(params[key]) <= 1:
            raise ConfigError(f"degrade.steps[{k}].{key}={params[key]} must be in [0, 1]")
    for key in _NON_NEGATIVE:
        if key in params and float(params[key]) < 0:
            raise ConfigError(f"degrade.steps[{k}].{key}={params[key]} must be >= 0")
    if "by_area" in params:
        params["by_area"] = _by_area(params["by_area"], f"degrade.steps[{k}].by_area")
    if kind == "false_positives" and "radius" in params:
        r = list(params["radius"])
        if len(r) != 2 or not 0 < int(r[0]) <= int(r[1]):
            raise ConfigError(
                f"degrade.steps[{k}].radius={r} must be [min, max] with 0 < min <= max"
            )
        params["radius"] = (int(r[0]), int(r[1]))
    return Step(kind, params)


# how each step's parameters move with strength s: multiplied by s (0 = no effect), or moved
# from their no-effect value towards the given one (x0 + s (x - x0))
_SCALED = {"share", "rate", "sigma", "sd", "density", "gap", "px"}
_TOWARDS = {
    ("levels", "inside"): INSIDE,
    ("levels", "outside"): OUTSIDE,
    ("false_positives", "value"): INSIDE,
    ("scale", "factor"): 1.0,
}


def scaled_step(node: dict, strength: float) -> dict:
    """A step's config at `strength` (1: as given; 0: no effect; between: proportionally; gap
    and px rounded, shares at most 1). Area bins keep their edges, their shares scale. `contact`
    has no strength: it is how truth is drawn, not an error."""
    if strength == 1.0:
        return node
    kind = node.get("kind")
    out = dict(node)
    for key, value in node.items():
        if key in _SCALED:
            out[key] = value * strength
            if key in ("gap", "px"):
                out[key] = round(out[key])
            if key in ("share", "rate"):
                out[key] = min(1.0, out[key])
        elif (kind, key) in _TOWARDS:
            x0 = _TOWARDS[(kind, key)]
            out[key] = x0 + strength * (float(value) - x0)
        elif key == "by_area":
            out[key] = [[a, min(1.0, float(share) * strength)] for a, share in value]
    return out


def _by_area(value, where: str) -> tuple[tuple[float, float], ...]:
    try:
        pairs = tuple((float(a), float(share)) for a, share in value)
    except (TypeError, ValueError):
        pairs = ()
    edges = [a for a, _ in pairs]
    if not pairs or edges != sorted(edges) or not all(0 <= s <= 1 for _, s in pairs):
        raise ConfigError(
            f"{where}={value} must be [[max_area px, share in [0, 1]], ...] by ascending max_area"
        )
    return pairs


@dataclass(frozen=True)
class Degradation:
    """conf/degrade: a name and its steps, label steps first (checked once at a stage's start)."""

    name: str
    steps: tuple[Step, ...] = ()
    # the pixel threshold of the model whose errors the steps imitate (the `network` preset)
    reference_threshold: float | None = None
    strength: float = 1.0  # the steps' parameters scaled towards truth (0) or beyond (> 1)

    @classmethod
    def from_config(cls, node: Mapping | None) -> Degradation:
        node = dict(node or {})
        known = ["name", "reference_threshold", "steps", "strength"]
        unknown = sorted(set(node) - set(known))
        if unknown:
            raise ConfigError(f"degrade: unknown keys {unknown}; known: {known}")
        reference = node.get("reference_threshold")
        if reference is not None and not 0 < float(reference) < 1:
            raise ConfigError(f"degrade.reference_threshold={reference} must be in (0, 1)")
        strength = float(node.get("strength", 1.0))
        if strength < 0:
            raise ConfigError(f"degrade.strength={strength} must be >= 0 (0: truth, 1: as given)")
        raw = [scaled_step(dict(s or {}), strength) for s in node.get("steps") or []]
        steps = tuple(_step(s, k) for k, s in enumerate(raw))
        kinds = [s.on_labels for s in steps]
        if kinds != sorted(kinds, reverse=True):
            raise ConfigError(
                f"degrade {node.get('name')}: label steps {sorted(LABEL_STEPS)} must come before "
                f"map steps {sorted(MAP_STEPS)} (they change the ids the maps are rendered from)"
            )
        reference = None if reference is None else float(reference)
        return cls(str(node.get("name", "custom")), steps, reference, strength)

    def as_dict(self) -> dict:
        out = {"name": self.name, "steps": [{"kind": s.kind, **s.params} for s in self.steps]}
        if self.reference_threshold is not None:
            out["reference_threshold"] = self.reference_threshold
        if self.strength != 1.0:
            out["strength"] = self.strength  # the steps above are already scaled
        return out

    def apply(self, ids: np.ndarray, seed: int, aoi: str = "") -> tuple[np.ndarray, np.ndarray]:
        """(shown ids, probability maps), both (T, H, W), of the truth id rasters `ids`."""
        shown = np.asarray(ids)
        probs = None
        for k, step in enumerate(self.steps):
            rng = np.random.default_rng([int(seed), k, zlib.crc32(aoi.encode())])
            if step.on_labels:
                shown = step.apply(shown, rng)
            else:
                probs = render(shown) if probs is None else probs
                probs = step.apply(probs, rng).astype(np.float32, copy=False)
        return shown, render(shown) if probs is None else probs


def render(ids: np.ndarray) -> np.ndarray:
    """(T, H, W) float32 probabilities: INSIDE on any building, OUTSIDE elsewhere."""
    return np.where(np.asarray(ids) > 0, np.float32(INSIDE), np.float32(OUTSIDE))
