"""How a network errs on a monthly series, measured against the truth, as the parameters of a
`degrade` preset (conf/degrade/network.yaml): trackers can then be chosen on label series fed
truth degraded the way that network errs, without running it there.

Measured on one AOI's months (probabilities P, AOI-wide truth id rasters, valid pixels), at a
building threshold `threshold` (the checkpoint's pixel threshold chosen on its selection split):

- levels: median P on building interiors (1 px eroded) and on background farther than 3 px from
  any building (where the rendered truth's 0.95 / 0.05 go);
- misses by size: a building stands in a month and is *detected* there when P reaches
  `threshold` somewhere on it (its peak: a soft edge alone is no miss; `blur` makes those).
  Per area bin: the share of buildings missed in every month they stand (persistent: `missed`
  by_area) and, of the others, the share of their months missed (`dropout`);
- edge softness: the Gaussian sigma whose blurred truth mask correlates best with P (`blur`);
- noise: the residual of P against that blurred truth (least squares), on background far from
  buildings and below `threshold`: its sd and its correlation length from the lag-2 px
  autocorrelation of smoothed white noise, rho(d) = exp(-d^2 / (4 sigma^2)) (`noise`);
- false positives: components of P >= threshold with no pixel within 2 px of a building, per
  million valid pixels a month, and their equivalent radii (10th and 90th percentile)
  (`false_positives`);
- month shift: the sd over months of the log of each month's interior median over all months'
  (`gain`; on the 4-month sample the July months read 0.08-0.15 against 0.66-0.69 in January).
"""

from __future__ import annotations

import argparse
import itertools
import json
from pathlib import Path

import numpy as np
from rasterio import features
from rasterio.transform import Affine
from scipy import ndimage

from sn7.errors import ConfigError

AREA_EDGES = (10, 25, 50, 100)  # px: bins of SN7 buildings at 4 m pixels (most are 10-50 px)
SIGMAS = (0.0, 0.5, 1.0, 1.5, 2.0, 2.5, 3.0, 4.0)
FAR = 3  # px from any building: "background" for levels and noise
FP_GAP = 2  # px: a component this close to a building is not a false positive
LAG = 2  # px: lag of the autocorrelation the noise's correlation length is read from


def id_raster(geoms, ids, index: dict, shape: tuple[int, int]) -> np.ndarray:
    """(H, W) uint32 raster of AOI-wide building indices (1..N, `index` maps true Id -> index,
    grown as new ids appear), burnt from pixel-space geometries (pixel-centre rule)."""
    out = np.zeros(shape, np.uint32)
    shapes = [(g, index.setdefault(i, len(index) + 1)) for g, i in zip(geoms, ids, strict=True)]
    if shapes:
        out = features.rasterize(
            shapes, out_shape=shape, transform=Affine.identity(), dtype="uint32"
        )
    return out


def _distance_to_buildings(ids) -> np.ndarray:
    """(T, H, W) px from each pixel to the month's nearest building pixel (0 on buildings)."""
    return np.stack([ndimage.distance_transform_edt(month == 0) for month in ids])


def _levels(probs, ids, valid, distance) -> tuple[float, float, np.ndarray, np.ndarray]:
    inside_px = np.stack([ndimage.binary_erosion(month > 0) for month in ids]) & valid
    far_px = (distance > FAR) & valid
    if not inside_px.any() or not far_px.any():
        raise ConfigError("error profile: needs months with building interiors and background")
    return float(np.median(probs[inside_px])), float(np.median(probs[far_px])), inside_px, far_px


def _misses(probs, ids, valid, threshold: float) -> dict:
    """Per area bin: persistent misses (share of buildings), monthly dropout (share of months)."""
    months: dict[int, list[tuple[float, bool]]] = {}  # index -> [(area, detected) per month]
    for t, month in enumerate(ids):
        labels = np.where(valid[t], month, 0)
        present = np.unique(labels[labels > 0])
        if not len(present):
            continue
        area = ndimage.sum_labels(np.ones_like(labels), labels, present)
        peak = ndimage.maximum(probs[t], labels, present)
        for i, a, m in zip(present.tolist(), area, peak, strict=True):
            months.setdefault(i, []).append((float(a), bool(m >= threshold)))
    edges = (0, *AREA_EDGES, np.inf)
    bins = []
    for lo, hi in itertools.pairwise(edges):
        chosen = [v for v in months.values() if lo <= np.median([a for a, _ in v]) < hi]
        never = [v for v in chosen if not any(d for _, d in v)]
        rest = [d for v in chosen if any(d for _, d in v) for _, d in v]
        bins.append({
            "max_area": None if hi == np.inf else int(hi),
            "buildings": len(chosen),
            "persistent_miss": len(never) / len(chosen) if chosen else 0.0,
            "dropout": (len(rest) - sum(rest)) / len(rest) if rest else 0.0,
        })  # fmt: skip
    return {"bins": bins, "buildings": len(months)}


def _blur_sigma(probs, ids, valid) -> tuple[float, np.ndarray]:
    """(sigma, truth mask blurred by it) correlating best with P."""
    truth = (ids > 0).astype(np.float32)
    best, best_r, best_map = 0.0, -np.inf, truth
    for sigma in SIGMAS:
        blurred = ndimage.gaussian_filter(truth, (0, sigma, sigma)) if sigma else truth
        r = np.corrcoef(blurred[valid], probs[valid])[0, 1]
        if r > best_r:
            best, best_r, best_map = sigma, r, blurred
    return best, best_map


def _noise(probs, blurred, valid, far_px, threshold: float) -> tuple[float, float]:
    slope, intercept = np.polyfit(blurred[valid], probs[valid], 1)
    residual = probs - (intercept + slope * blurred)
    quiet = far_px & (probs < threshold)
    if quiet.sum() < 100:
        return 0.0, 0.0
    sd = float(residual[quiet].std())
    both = quiet[:, :, :-LAG] & quiet[:, :, LAG:]
    a, b = residual[:, :, :-LAG][both], residual[:, :, LAG:][both]
    rho = float(np.corrcoef(a, b)[0, 1]) if both.sum() > 100 and a.std() > 0 else 0.0
    corr = LAG / (2 * np.sqrt(-np.log(rho))) if 0 < rho < 1 else 0.0
    return sd, float(corr)


def _false_positives(probs, distance, valid, threshold: float) -> dict:
    radii: list[float] = []
    count = 0
    pixels = 0
    for t in range(len(probs)):
        near = distance[t] <= FP_GAP
        labels, n = ndimage.label((probs[t] >= threshold) & valid[t], structure=np.ones((3, 3)))
        if n:
            touches = ndimage.maximum(near, labels, np.arange(1, n + 1)).astype(bool)
            area = ndimage.sum_labels(np.ones_like(labels), labels, np.arange(1, n + 1))
            radii += np.sqrt(area[~touches] / np.pi).tolist()
            count += int((~touches).sum())
        pixels += int(valid[t].sum())
    r10, r90 = np.percentile(radii, [10, 90]) if radii else (2.0, 4.0)
    low = max(1, round(float(r10)))
    return {
        "per_million_px": 1e6 * count / max(pixels, 1),
        "count": count,
        "radius": [low, max(low, round(float(r90)))],
    }


def _month_inside(probs, inside_px) -> list[float | None]:
    """Each month's median P on building interiors (None: no interior there)."""
    return [
        float(np.median(p[m])) if m.any() else None for p, m in zip(probs, inside_px, strict=True)
    ]


def _gain_sd(month_inside: list[float | None]) -> float:
    medians = [m for m in month_inside if m is not None]
    if len(medians) < 2:
        return 0.0
    logs = np.log(np.maximum(medians, 1e-3) / np.median(medians))
    return float(np.std(logs, ddof=1))


def measure(probs: np.ndarray, ids: np.ndarray, valid: np.ndarray, threshold: float) -> dict:
    """The error profile of (T, H, W) probabilities against (T, H, W) AOI-wide id rasters."""
    probs = np.asarray(probs, np.float32)
    if probs.shape != ids.shape or probs.shape != valid.shape or probs.ndim != 3:
        raise ConfigError(
            f"error profile: probs {probs.shape}, ids {ids.shape}, valid {valid.shape} differ"
        )
    distance = _distance_to_buildings(ids)  # shared by the levels and the false positives
    inside, outside, inside_px, far_px = _levels(probs, ids, valid, distance)
    sigma, blurred = _blur_sigma(probs, ids, valid)
    sd, corr = _noise(probs, blurred, valid, far_px, threshold)
    month_inside = _month_inside(probs, inside_px)
    return {
        "threshold": float(threshold),
        "months": len(probs),
        "inside": inside,
        "outside": outside,
        "misses": _misses(probs, ids, valid, threshold),
        "blur_sigma": sigma,
        "noise_sd": sd,
        "noise_corr": corr,
        "false_positives": _false_positives(probs, distance, valid, threshold),
        "month_inside": month_inside,
        "gain_sd": _gain_sd(month_inside),
    }


def combine(profiles: list[dict]) -> dict:
    """Several AOIs' profiles as one: building-weighted misses, means of the rest."""
    if len(profiles) == 1:
        return profiles[0]
    keys = ("inside", "outside", "blur_sigma", "noise_sd", "noise_corr", "gain_sd", "threshold")
    out = {k: float(np.mean([p[k] for p in profiles])) for k in keys}
    out["months"] = sum(p["months"] for p in profiles)
    out["month_inside"] = [m for p in profiles for m in p["month_inside"]]
    bins = []
    for k, first in enumerate(profiles[0]["misses"]["bins"]):
        rows = [p["misses"]["bins"][k] for p in profiles]
        n = sum(r["buildings"] for r in rows)
        bins.append({
            "max_area": first["max_area"],
            "buildings": n,
            "persistent_miss": sum(r["persistent_miss"] * r["buildings"] for r in rows) / max(n, 1),
            "dropout": sum(r["dropout"] * r["buildings"] for r in rows) / max(n, 1),
        })  # fmt: skip
    out["misses"] = {"bins": bins, "buildings": sum(p["misses"]["buildings"] for p in profiles)}
    fps = [p["false_positives"] for p in profiles]
    out["false_positives"] = {
        "per_million_px": float(np.mean([f["per_million_px"] for f in fps])),
        "count": sum(f["count"] for f in fps),
        "radius": [min(f["radius"][0] for f in fps), max(f["radius"][1] for f in fps)],
    }
    return out


def preset_steps(profile: dict) -> list[dict]:
    """conf/degrade steps that make rendered truth err as the profiled network does."""
    bins = profile["misses"]["bins"]
    by_area = [[b["max_area"] or 1e9, round(b["persistent_miss"], 3)] for b in bins]
    dropout = [[b["max_area"] or 1e9, round(b["dropout"], 3)] for b in bins]
    fp = profile["false_positives"]
    inside = round(profile["inside"], 3)
    return [
        {"kind": "missed", "by_area": by_area},
        {"kind": "dropout", "by_area": dropout},
        {"kind": "levels", "inside": inside, "outside": round(profile["outside"], 3)},
        {"kind": "false_positives", "density": round(fp["per_million_px"], 1),
         "radius": list(fp["radius"]), "value": inside},
        {"kind": "blur", "sigma": profile["blur_sigma"]},
        {"kind": "noise", "sd": round(profile["noise_sd"], 3),
         "corr": round(profile["noise_corr"], 2)},
        {"kind": "gain", "sd": round(profile["gain_sd"], 3)},
    ]  # fmt: skip


def preset_yaml(profile_file: Path, name: str) -> str:
    """A conf/degrade file from an evaluate run's error_profile.json, its provenance on top."""
    import yaml

    raw = json.loads(Path(profile_file).read_text())
    p = raw["profile"]
    lines = [
        f"# {name}: truth degraded the way a real network errs. Measured by",
        f"#   {raw.get('command', 'python evaluate.py ... eval.error_profile=true')}",
        f"# checkpoint {raw.get('checkpoint')}",
        f"#   (sha256 {str(raw.get('checkpoint_sha256'))[:16]}) on {', '.join(raw['aois'])}",
        f"# ({p['months']} AOI-months) at the pixel threshold {p['threshold']:.2f} chosen on its",
        "# selection split; written by `python -m sn7.evaluation.error_profile` (its docstring",
        f"# says what each number measures) from {profile_file}.",
        f"name: {name}",
        "strength: 1.0      # parameters scaled: 0 = truth, 0.5 = half as bad, 1 = as measured",
        "# thresholds chosen on these maps transfer to a model relative to its own pixel threshold",
        f"reference_threshold: {p['threshold']}",
        "steps:",
    ]
    for step in raw["steps"]:
        ordered = {"kind": step["kind"], **{k: v for k, v in step.items() if k != "kind"}}
        text = yaml.safe_dump(ordered, default_flow_style=True, width=1000, sort_keys=False).strip()
        lines.append(f"  - {text}")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=preset_yaml.__doc__)
    parser.add_argument("profile", type=Path, help="error_profile.json of an evaluate run")
    parser.add_argument("--name", default="network")
    parser.add_argument("--out", type=Path, required=True, help="e.g. conf/degrade/network.yaml")
    args = parser.parse_args(argv)
    from sn7.utils.atomic import write_text_atomic

    write_text_atomic(args.out, preset_yaml(args.profile, args.name))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
