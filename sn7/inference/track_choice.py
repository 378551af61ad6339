"""Tracker settings chosen on a selection series, with their provenance (`track.json`).

`python series.py search=track ...` scores candidate trackers on a selection series (real label
series fed degraded truth, sn7/evaluation/track_search.py) and stores the best here; `track=auto`
in evaluate, predict and series.py reads it back, so a tracker is never tuned on what it reports.
The file is plain JSON; reading it runs nothing.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from sn7.errors import ConfigError

FORMAT = "sn7-track/1"


@dataclass
class TrackChoice:
    track: dict  # the chosen conf/track node: mode and options
    threshold: float  # the building threshold the winning footprints were cut at
    selected_on: dict  # data_root, aois, degradations, seed: where it was chosen
    score: float  # its mean SCOT there
    candidates: list[dict] = field(default_factory=list)  # every candidate and its scores
    format: str = FORMAT
    created: str = ""
    # the pixel threshold of the model a `network` preset imitates: thresholds then transfer to
    # another model relative to its own selection-split pixel threshold (None: absolute)
    reference_threshold: float | None = None

    def save(self, path: str | Path) -> Path:
        from sn7.utils.atomic import write_json_atomic

        self.created = self.created or time.strftime("%Y-%m-%d %H:%M:%S")
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        write_json_atomic(path, asdict(self))
        return path

    def where(self) -> str:
        """One line: where the choice was made."""
        s = self.selected_on
        return (
            f"chosen on {', '.join(s.get('aois') or [])} of {s.get('data_root')} under "
            f"{', '.join(s.get('degradations') or [])} (mean SCOT {self.score:.3f})"
        )

    def building_threshold(self, pixel: float) -> float | None:
        """The building threshold for a model whose selection split chose `pixel`: the chosen
        threshold scaled by pixel / reference_threshold (a model half as confident is cut at
        half the threshold); None when the choice is absolute (the selection split decides)."""
        if self.reference_threshold is None:
            return None
        value = self.threshold * float(pixel) / float(self.reference_threshold)
        return float(min(max(value, 0.01), 0.99))


def building_threshold_for(choice: TrackChoice | None, pixel: float, selected: float) -> float:
    """The building threshold a checkpoint is cut at: its selection split's (`selected`), or
    the choice's scaled to its pixel threshold when the choice imitated a model."""
    relative = None if choice is None else choice.building_threshold(pixel)
    return selected if relative is None else relative


def read_choice(path: str | Path) -> TrackChoice:
    """The stored choice; a missing, foreign or broken file is a one-line error naming a fix."""
    path = Path(path)
    fix = "run `python series.py search=track data.root=DIR series.aois=[AOI]` to choose one"
    if not path.is_file():
        raise ConfigError(f"track=auto: no tracker choice stored at {path}; {fix}")
    try:
        raw = json.loads(path.read_text())
        if raw.get("format") != FORMAT:
            raise ValueError(f"format {raw.get('format')!r}, expected {FORMAT!r}")
        choice = TrackChoice(**raw)
        if not isinstance(choice.track, dict) or "mode" not in choice.track:
            raise ValueError("no track mode in it")
        return choice
    except (ValueError, TypeError, AttributeError) as exc:
        raise ConfigError(f"track=auto: unreadable tracker choice {path} ({exc}); {fix}") from exc
