"""How raw image pixels become model input. Saved in every checkpoint, so evaluation and prediction
feed a model exactly what it was trained on without the user repeating any of it."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass

import numpy as np

from sn7.errors import ConfigError

NORMALIZATIONS = ("fixed", "per_tile")
TileStats = tuple[np.ndarray, np.ndarray]  # per-band mean and std of one tile, x/255 units


@dataclass(frozen=True)
class InputSpec:
    bands: tuple[int, ...]  # 1-based raster bands, in model-channel order
    mean: tuple[float, ...]  # per band, in units of x/255
    std: tuple[float, ...]
    alpha_band: int | None = 4  # raster band that marks valid pixels (0 = no data)
    crop_size: int = 256  # training crop size (a hint for inference windows)
    # "fixed": (x/255 - mean) / std with the values above. "per_tile": colour bands standardised
    # by their own tile's mean/std (sn7.data.tile_stats), which removes the month-to-month and
    # AOI-to-AOI brightness shifts of the Planet mosaics (tile means vary 2x in the SN7 sample).
    normalization: str = "fixed"

    def __post_init__(self):
        n = len(self.bands)
        if n == 0:
            raise ConfigError("data.bands is empty")
        if len(self.mean) != n or len(self.std) != n:
            raise ConfigError(
                f"data.mean ({len(self.mean)} values) and data.std ({len(self.std)}) must have "
                f"one value per band in data.bands ({n})"
            )
        if any(s <= 0 for s in self.std):
            raise ConfigError(f"data.std must be positive, got {list(self.std)}")
        if self.normalization not in NORMALIZATIONS:
            raise ConfigError(
                f"data.normalization={self.normalization!r} must be one of {NORMALIZATIONS}"
            )

    @property
    def in_channels(self) -> int:
        return len(self.bands)

    @property
    def alpha_channel(self) -> int | None:
        """Position of the alpha band among the model's channels, if it is fed to the model."""
        return self.bands.index(self.alpha_band) if self.alpha_band in self.bands else None

    @property
    def rgb_channels(self) -> tuple[int, int, int]:
        """Model channels to show as an RGB picture: the first three non-alpha ones (repeated if
        there are fewer)."""
        colour = [i for i in range(self.in_channels) if i != self.alpha_channel] or [0]
        return tuple((colour * 3)[:3])

    @property
    def per_tile(self) -> bool:
        return self.normalization == "per_tile"

    def normalize(self, pixels: np.ndarray, tile_stats: TileStats | None = None) -> np.ndarray:
        """(C, H, W) uint8 in `bands` order -> float32 model input. `tile_stats` (mean, std per
        band, x/255 units) are needed with per-tile normalisation; the alpha band keeps the
        fixed values either way."""
        mean = np.asarray(self.mean, np.float32)
        std = np.asarray(self.std, np.float32)
        if self.per_tile:
            if tile_stats is None:
                raise ValueError("per-tile normalisation needs the tile's band statistics")
            colour = [c for c in range(self.in_channels) if c != self.alpha_channel]
            mean[colour] = np.asarray(tile_stats[0], np.float32)[colour]
            std[colour] = np.asarray(tile_stats[1], np.float32)[colour]
        x = pixels.astype(np.float32) / 255.0
        return (x - mean[:, None, None]) / std[:, None, None]

    def to_dict(self) -> dict:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, d: Mapping) -> InputSpec:
        return cls(
            bands=tuple(int(b) for b in d["bands"]),
            mean=tuple(float(m) for m in d["mean"]),
            std=tuple(float(s) for s in d["std"]),
            alpha_band=d.get("alpha_band"),
            crop_size=int(d.get("crop_size", 256)),
            normalization=d.get("normalization", "fixed"),
        )

    @classmethod
    def from_data_cfg(cls, data: Mapping) -> InputSpec:
        return cls.from_dict(
            {
                "bands": list(data["bands"]),
                "mean": list(data["mean"]),
                "std": list(data["std"]),
                "alpha_band": data["alpha_band"],
                "crop_size": data["crop_size"],
                "normalization": data.get("normalization", "fixed"),
            }
        )
