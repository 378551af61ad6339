"""Thresholds chosen on a checkpoint's selection split, with their provenance.

evaluate chooses the pixel and building thresholds on the selection split (never the split it
reports) and stores them beside the checkpoint in `<ckpt>.thresholds.json`, with the checkpoint's
hash, the split's AOIs and months, and the footprint settings the building threshold was chosen
with (post-processing, min_area, tracking: the building threshold cuts the tracker's footprints).
predict's `threshold=auto` accepts them only when all of that still holds, so a number can never
silently come from another checkpoint, another split or other footprint settings.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from sn7.errors import CheckpointError
from sn7.utils.atomic import write_json_atomic

FORMAT = "sn7-thresholds/2"  # /2: the building threshold is the tracker's, `track` recorded


def thresholds_path(ckpt: str | Path) -> Path:
    ckpt = Path(ckpt)
    return ckpt.with_name(ckpt.name + ".thresholds.json")


def legacy_path(ckpt: str | Path) -> Path:
    """Where sn7 before the selection/report split stored a threshold (chosen on any split)."""
    ckpt = Path(ckpt)
    return ckpt.with_name(ckpt.name + ".eval.json")


def file_sha256(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


@dataclass
class SelectedThresholds:
    pixel: float  # best full-tile pixel IoU on the selection split
    building: float  # best building F1 (SN7 rule, IoU > 0.25) on the selection split
    selected_on: dict  # split, role, kind, aois, months, n_images, data_root
    post: dict  # post-processing the building threshold was chosen with
    min_area: float
    checkpoint_sha256: str
    track: dict | None = None  # the tracker whose footprints the building threshold cuts
    pixel_iou: float | None = None  # on the selection split, for the record
    building_f1: float | None = None
    pixel_grid: list[float] | None = None  # the candidates each threshold was chosen among
    building_grid: list[float] | None = None
    format: str = FORMAT
    created: str = ""
    tta: bool = False  # chosen on flip-averaged probabilities (infer.tta=true)

    def settings(self) -> dict:
        out = {"post": dict(self.post), "min_area": float(self.min_area), "track": self.track}
        return {**out, "tta": True} if self.tta else out  # older files (no tta) still match

    def save(self, ckpt: str | Path) -> Path:
        self.created = self.created or time.strftime("%Y-%m-%d %H:%M:%S")
        path = thresholds_path(ckpt)
        write_json_atomic(path, asdict(self))
        return path


def candidates(grid) -> list[float]:
    """A threshold grid as stored and compared: floats, ascending."""
    return sorted(float(t) for t in grid)


def mismatch(
    stored: SelectedThresholds,
    sha256: str,
    post: dict,
    min_area: float,
    track: dict,
    grids: tuple[list[float], list[float]] | None = None,
    tta: bool = False,
) -> str | None:
    """Why stored thresholds do not apply to this checkpoint and these footprint settings (None:
    they do). `grids` (pixel, building candidates) are compared when given: evaluate asks for its
    grids, predict has none and takes what was chosen."""
    if stored.checkpoint_sha256 != sha256:
        return "they were chosen for a different checkpoint file (hash differs)"
    wanted = {"post": dict(post), "min_area": float(min_area), "track": dict(track)}
    if tta:  # flip-averaged probabilities need their own thresholds
        wanted["tta"] = True
    if stored.settings() != wanted:
        return f"they were chosen with {stored.settings()}, not {wanted}"
    if grids is not None:
        if stored.pixel_grid is None or stored.building_grid is None:
            return "the file does not record the candidates they were chosen among"
        if [stored.pixel_grid, stored.building_grid] != [candidates(g) for g in grids]:
            return "they were chosen among other candidate thresholds (eval.thresholds grids)"
    return None


def read_selected(ckpt: str | Path) -> SelectedThresholds | None:
    """The stored thresholds of `ckpt`, None when there are none. A file from an older sn7 or
    one that is not sn7's is an error that says what to run."""
    path = thresholds_path(ckpt)
    if not path.is_file():
        if legacy_path(ckpt).is_file():
            raise CheckpointError(
                f"{legacy_path(ckpt).name} is from an older sn7 that chose thresholds on the split "
                f"it reported; run `python evaluate.py ckpt_path={ckpt}` to choose them on the "
                "selection split",
                ckpt,
            )
        return None
    try:
        raw = json.loads(path.read_text())
        if raw.get("format") != FORMAT:
            raise ValueError(f"format {raw.get('format')!r} of an older sn7, expected {FORMAT!r}")
        return SelectedThresholds(**raw)
    except (ValueError, TypeError, AttributeError) as exc:
        raise CheckpointError(
            f"unreadable threshold file ({exc}); delete it and run "
            f"`python evaluate.py ckpt_path={ckpt}`",
            path,
        ) from exc
