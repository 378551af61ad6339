"""How raw image pixels become model input. Saved in every checkpoint, so evaluation and prediction
feed a model exactly what it was trained on without the user repeating any of it."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass

import numpy as np

from sn7.errors import ConfigError


@dataclass(frozen=True)
class InputSpec:
    bands: tuple[int, ...]  # 1-based raster bands, in model-channel order
    mean: tuple[float, ...]  # per band, in units of x/255
    std: tuple[float, ...]
    alpha_band: int | None = 4  # raster band that marks valid pixels (0 = no data)
    crop_size: int = 256  # training crop size (a hint for inference windows)

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

    def normalize(self, pixels: np.ndarray) -> np.ndarray:
        """(C, H, W) uint8 in `bands` order -> float32 model input."""
        x = pixels.astype(np.float32) / 255.0
        mean = np.asarray(self.mean, np.float32)[:, None, None]
        std = np.asarray(self.std, np.float32)[:, None, None]
        return (x - mean) / std

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
            }
        )
