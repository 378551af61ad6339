"""Where square windows start along one side of a tile.

Validation crops (`GridCropDataset`) and sliding-window inference share this one layout, and
`check_infer` and `SlidingWindowPredictor` share its one check of window and overlap.
"""

from __future__ import annotations

from sn7.errors import ConfigError


def window_starts(size: int, window: int, overlap: int = 0) -> list[int]:
    """Start offsets of `window`-px windows covering `size` px: one every `window - overlap` px and
    a last one flush with the end, so neighbours overlap by at least `overlap` px (the last pair
    by more) with no more windows than that needs. A side no longer than a window gets one."""
    if size <= window:
        return [0]
    return [*range(0, size - window, window - overlap), size - window]


def check_window(window: int, overlap: int) -> None:
    """Windows must advance: 0 <= overlap < window."""
    if not 0 <= overlap < window:
        raise ConfigError(
            f"infer.overlap={overlap} must be >= 0 and smaller than infer.window={window} "
            "(the stride, window - overlap, must be positive)"
        )
