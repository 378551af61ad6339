"""Full-tile prediction by overlapping windows, blended with a smooth weight (no seams).

Windows are spread evenly so that neighbours overlap by at least `overlap` px and the last one is
flush with the tile edge; any tile size works (1023 px included; a tile smaller than the window is
one window). Each pixel's probability is the weight-averaged probability of the windows covering
it; the weight rises from ~0 at a window's edge to 1 over `overlap` px (raised cosine), so a
window's zero-padded borders, where a CNN is least reliable, count least.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn

from sn7.errors import ConfigError
from sn7.utils.hardware import autocast, resolve_channels_last, resolve_precision

_MIN_WEIGHT = 1e-3  # keeps tile-edge pixels (covered by one window edge only) well defined


def window_starts(size: int, window: int, overlap: int) -> list[int]:
    if size <= window:
        return [0]
    n = math.ceil((size - overlap) / (window - overlap))
    return sorted({round(i * (size - window) / (n - 1)) for i in range(n)})


def blend_weights(height: int, width: int, overlap: int) -> np.ndarray:
    def ramp(n: int) -> np.ndarray:
        if overlap <= 0:
            return np.ones(n, np.float32)
        pos = np.minimum(np.arange(n) + 0.5, n - np.arange(n) - 0.5) / overlap
        return np.maximum(0.5 - 0.5 * np.cos(np.pi * np.clip(pos, 0, 1)), _MIN_WEIGHT)

    return np.outer(ramp(height), ramp(width)).astype(np.float32)


class SlidingWindowPredictor:
    def __init__(
        self,
        model: nn.Module,
        window: int = 544,
        overlap: int = 64,
        batch_size: int = 4,
        precision: str = "32-true",
        channels_last: bool = False,
        tta: bool = False,
    ):
        if window <= 0 or overlap < 0 or overlap >= window:
            raise ConfigError(f"need 0 <= overlap < window, got window={window}, overlap={overlap}")
        if batch_size < 1:
            raise ConfigError(f"batch_size must be >= 1, got {batch_size}")
        self.model = model.eval()
        self.window, self.overlap, self.batch_size = window, overlap, batch_size
        self.precision = precision
        self.channels_last = channels_last
        self.tta = tta
        if channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)

    def windows(self, height: int, width: int) -> list[tuple[int, int, int, int]]:
        """(row, col, h, w) of every window over a height x width tile."""
        wh, ww = min(self.window, height), min(self.window, width)
        return [
            (r, c, wh, ww)
            for r in window_starts(height, self.window, self.overlap)
            for c in window_starts(width, self.window, self.overlap)
        ]

    @torch.inference_mode()
    def forward(self, batch: torch.Tensor) -> torch.Tensor:
        """(B, C, h, w) model input -> (B, h, w) probabilities; with `tta`, the mean over the
        four flips (each prediction flipped back)."""
        flips = [(), (-1,), (-2,), (-2, -1)] if self.tta else [()]
        total = None
        for dims in flips:
            x = batch.flip(dims) if dims else batch
            if self.channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            with autocast(self.precision):
                logits = self.model(x)
            prob = torch.sigmoid(logits.float())[:, 0]
            prob = prob.flip(dims) if dims else prob
            total = prob if total is None else total + prob
        return total / len(flips)

    def __call__(self, image: np.ndarray) -> np.ndarray:
        """(C, H, W) float32 model input -> (H, W) float32 probabilities."""
        _, height, width = image.shape
        windows = self.windows(height, width)
        wh, ww = windows[0][2], windows[0][3]
        weight = blend_weights(wh, ww, self.overlap if len(windows) > 1 else 0)
        total = np.zeros((height, width), np.float32)
        norm = np.zeros((height, width), np.float32)
        tensor = torch.from_numpy(np.ascontiguousarray(image, dtype=np.float32))
        for i in range(0, len(windows), self.batch_size):
            chunk = windows[i : i + self.batch_size]
            batch = torch.stack([tensor[:, r : r + h, c : c + w] for r, c, h, w in chunk])
            probs = self.forward(batch).numpy()
            for (r, c, h, w), prob in zip(chunk, probs, strict=True):
                total[r : r + h, c : c + w] += prob * weight
                norm[r : r + h, c : c + w] += weight
        return total / norm


def predictor_for(cfg, loaded) -> SlidingWindowPredictor:
    """The predictor an evaluate/predict config asks for (cfg.infer, trainer.precision, ...)."""
    precision = resolve_precision(cfg.trainer.precision)
    return SlidingWindowPredictor(
        loaded.model,
        window=cfg.infer.window,
        overlap=cfg.infer.overlap,
        batch_size=cfg.infer.batch_size,
        precision=precision,
        channels_last=resolve_channels_last(cfg.channels_last),
        tta=bool(cfg.infer.get("tta", False)),
    )
