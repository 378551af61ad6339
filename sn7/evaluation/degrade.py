"""Degraded truth: the input maps a series run feeds the tracker instead of a network's output.

Truth as input shows a tracker's ceiling; each degradation imitates one kind of model error, so a
tracker's (or a temporal rule's) robustness to it can be measured without training anything. A
degradation (conf/degrade/<name>.yaml) is a list of steps applied in order:

- label steps change which true buildings each month shows, on the (T, H, W) id rasters:
  missed (a share of ids never shown), flicker (a share of buildings absent in one random month
  they stand in), boundary (each building dilated, px > 0, or eroded, px < 0), contact (the
  pixels where two buildings touch dropped: truth as a body map);
- then the ids are rendered into probabilities (INSIDE on buildings, OUTSIDE elsewhere) and map
  steps change those: merge (gaps up to `gap` px between buildings bridged), false_positives
  (random discs, `density` per million pixels each month), blur (Gaussian, `sigma` px), noise
  (N(0, sd) per pixel, clipped to [0, 1]), scale (one month's map times `factor`).

Every step draws from its own generator, seeded by (seed, step index, AOI): the same seed gives
the same maps, and one step's draws do not shift when another is added.

`contact` renders truth as a boundary-aware model's body class (touching buildings cut apart).
Still to come: a `network` preset whose parameters are measured from a real model's errors
(cpu_best).
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


def missed(ids: np.ndarray, rng: np.random.Generator, share: float = 0.1) -> np.ndarray:
    """round(share * N) of the N ids of the series never shown, in any month."""
    present = np.unique(ids[ids > 0])
    hidden = rng.choice(present, round(share * len(present)), replace=False)
    return np.where(np.isin(ids, hidden), 0, ids)


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
) -> np.ndarray:
    """Discs of INSIDE at random places, Poisson(density per million pixels) a month, radius
    drawn uniformly from [radius[0], radius[1]] px."""
    out = probs.copy()
    height, width = probs.shape[1:]
    for t in range(len(probs)):
        for _ in range(rng.poisson(density * height * width / 1e6)):
            centre = (rng.uniform(0, height), rng.uniform(0, width))
            r = rng.integers(radius[0], radius[1] + 1)
            rr, cc = draw_disk(centre, r, shape=(height, width))
            out[t, rr, cc] = np.maximum(out[t, rr, cc], INSIDE)
    return out


def blur(probs: np.ndarray, rng: np.random.Generator, sigma: float = 1.0) -> np.ndarray:
    """Gaussian blur of each month (reflected edges, so the mean is kept)."""
    return ndimage.gaussian_filter(probs, sigma=(0, sigma, sigma), mode="reflect")


def noise(probs: np.ndarray, rng: np.random.Generator, sd: float = 0.15) -> np.ndarray:
    """Per-pixel N(0, sd) noise, clipped to [0, 1]."""
    return np.clip(probs + rng.normal(0.0, sd, probs.shape), 0.0, 1.0).astype(np.float32)


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
}
_SHARES = ("share",)
_NON_NEGATIVE = ("sigma", "sd", "gap", "density", "factor")


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
    if kind == "false_positives" and "radius" in params:
        r = list(params["radius"])
        if len(r) != 2 or not 0 < int(r[0]) <= int(r[1]):
            raise ConfigError(
                f"degrade.steps[{k}].radius={r} must be [min, max] with 0 < min <= max"
            )
        params["radius"] = (int(r[0]), int(r[1]))
    return Step(kind, params)


@dataclass(frozen=True)
class Degradation:
    """conf/degrade: a name and its steps, label steps first (checked once at a stage's start)."""

    name: str
    steps: tuple[Step, ...] = ()

    @classmethod
    def from_config(cls, node: Mapping | None) -> Degradation:
        node = dict(node or {})
        unknown = sorted(set(node) - {"name", "steps"})
        if unknown:
            raise ConfigError(f"degrade: unknown keys {unknown}; known: ['name', 'steps']")
        steps = tuple(_step(s, k) for k, s in enumerate(node.get("steps") or []))
        kinds = [s.on_labels for s in steps]
        if kinds != sorted(kinds, reverse=True):
            raise ConfigError(
                f"degrade {node.get('name')}: label steps {sorted(LABEL_STEPS)} must come before "
                f"map steps {sorted(MAP_STEPS)} (they change the ids the maps are rendered from)"
            )
        return cls(str(node.get("name", "custom")), steps)

    def as_dict(self) -> dict:
        return {"name": self.name, "steps": [{"kind": s.kind, **s.params} for s in self.steps]}

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
