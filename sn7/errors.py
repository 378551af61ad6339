"""One exception family for everything a user can fix: bad data, bad config, bad checkpoints.

CLIs print these as one line and exit non-zero; anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

from pathlib import Path


class SN7Error(Exception):
    """Base class: a problem in the user's input, with a message that says what to fix."""

    def __init__(self, message: str, path: str | Path | None = None):
        self.path = Path(path) if path is not None else None
        super().__init__(f"{path}: {message}" if path is not None else message)


class DataError(SN7Error):
    """An input file (raster, GeoJSON, folder layout) is missing, unreadable or inconsistent."""


class ConfigError(SN7Error):
    """A configuration value is invalid or contradicts another one."""


class CheckpointError(SN7Error):
    """A checkpoint is missing, corrupt, or was not written by sn7."""
