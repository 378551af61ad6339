"""Full-tile prediction by overlapping windows, blended with a smooth weight (no seams).

Windows step by `window - overlap` px, the last one flush with the tile edge (`sn7.data.windows`,
the layout of the validation crops too), so neighbours overlap by at least `overlap` px; any tile
size works (1023 px included; a tile smaller than the window is one window). Each pixel's
probability is the weight-averaged probability of the windows covering it; the weight rises from
~0 at a window's edge to 1 over `overlap` px (raised cosine), so a window's zero-padded borders,
where a CNN is least reliable, count least.

Device (`infer.device`): the model and the windows go to the GPU when asked (or `auto` and one is
there); probabilities always come back as CPU numpy arrays, so callers never see a device.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from sn7.data.windows import check_window, window_starts
from sn7.errors import ConfigError
from sn7.utils.hardware import (
    autocast,
    resolve_channels_last,
    resolve_device,
    resolve_precision,
)

_MIN_WEIGHT = 1e-3  # keeps tile-edge pixels (covered by one window edge only) well defined
CPU_BATCH_SIZE = 1  # `batch_size: auto` on CPU: 1.4x faster than 4 (bench_infer: page faults)
MAX_AUTO_BATCH = 32  # `batch_size: auto` on CUDA never goes above this


def blend_weights(height: int, width: int, overlap: int) -> np.ndarray:
    def ramp(n: int) -> np.ndarray:
        if overlap <= 0:
            return np.ones(n, np.float32)
        pos = np.minimum(np.arange(n) + 0.5, n - np.arange(n) - 0.5) / overlap
        return np.maximum(0.5 - 0.5 * np.cos(np.pi * np.clip(pos, 0, 1)), _MIN_WEIGHT)

    return np.outer(ramp(height), ramp(width)).astype(np.float32)


@contextlib.contextmanager
def device_autocast(precision: str, device: torch.device) -> Iterator[None]:
    """CPU: sn7.utils.hardware's choice (bf16 only where the CPU has it natively). CUDA: the
    mixed precision the GPU runs natively, bf16 where supported, else fp16."""
    if device.type != "cuda":
        with autocast(precision):
            yield
    elif precision.startswith(("bf16", "16")):
        dtype = torch.bfloat16 if precision.startswith("bf16") else torch.float16
        with torch.autocast("cuda", dtype=dtype):
            yield
    else:
        yield


def _in_channels(model: nn.Module) -> int:
    conv = next((p for p in model.parameters() if p.ndim == 4), None)
    if conv is None:
        raise ConfigError("infer.batch_size=auto needs a convolutional model; give a number")
    return int(conv.shape[1])


def cuda_batch_size(predictor: SlidingWindowPredictor, in_channels: int) -> int:
    """Half the free GPU memory over the peak memory of one window (measured by one forward
    pass of a blank window), between 1 and MAX_AUTO_BATCH. Half: the rest is headroom for the
    allocator, other processes and activations that grow faster than linearly."""
    device = predictor.device
    torch.cuda.synchronize(device)
    torch.cuda.reset_peak_memory_stats(device)
    before = torch.cuda.memory_allocated(device)
    window = torch.zeros(1, in_channels, predictor.window, predictor.window, device=device)
    predictor.forward(window)
    torch.cuda.synchronize(device)
    per_window = max(torch.cuda.max_memory_allocated(device) - before, 1)
    free, _ = torch.cuda.mem_get_info(device)
    return int(min(max(free // 2 // per_window, 1), MAX_AUTO_BATCH))


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
        device: str | torch.device = "cpu",
    ):
        check_window(window, overlap)
        if batch_size < 1:
            raise ConfigError(f"batch_size must be >= 1, got {batch_size}")
        self.device = resolve_device(device)
        self.model = model.eval().to(self.device)
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
        """(B, C, h, w) model input -> (B, h, w) float32 probabilities on the CPU; with `tta`,
        the mean over the four flips (each prediction flipped back)."""
        flips = [(), (-1,), (-2,), (-2, -1)] if self.tta else [()]
        batch = batch.to(self.device, non_blocking=True)
        total = None
        for dims in flips:
            x = batch.flip(dims) if dims else batch
            if self.channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            with device_autocast(self.precision, self.device):
                logits = self.model(x)
            prob = torch.sigmoid(logits.float())[:, 0]
            prob = prob.flip(dims) if dims else prob
            total = prob if total is None else total + prob
        return (total / len(flips)).cpu()

    def __call__(self, image: np.ndarray) -> np.ndarray:
        """(C, H, W) float32 model input -> (H, W) float32 probabilities."""
        _, height, width = image.shape
        windows = self.windows(height, width)
        wh, ww = windows[0][2], windows[0][3]
        weight = blend_weights(wh, ww, self.overlap if len(windows) > 1 else 0)
        total = np.zeros((height, width), np.float32)
        norm = np.zeros((height, width), np.float32)
        tensor = torch.from_numpy(np.ascontiguousarray(image, dtype=np.float32)).to(self.device)
        for i in range(0, len(windows), self.batch_size):
            chunk = windows[i : i + self.batch_size]
            batch = torch.stack([tensor[:, r : r + h, c : c + w] for r, c, h, w in chunk])
            probs = self.forward(batch).numpy()
            for (r, c, h, w), prob in zip(chunk, probs, strict=True):
                total[r : r + h, c : c + w] += prob * weight
                norm[r : r + h, c : c + w] += weight
        return total / norm


@dataclass(frozen=True)
class InferSettings:
    """How full tiles are predicted: conf/infer plus trainer.precision and channels_last of an
    evaluate/predict config, checked and resolved for this machine once, when the stage starts."""

    window: int
    overlap: int
    batch_size: int | str  # a number, or "auto"
    device: torch.device
    precision: str
    channels_last: bool
    tta: bool = False

    @classmethod
    def from_config(cls, cfg) -> InferSettings:
        from sn7.checks import check_infer  # checks sits on this floor; lazily, as it is a leaf

        infer = cfg.infer
        check_infer(infer)
        device = resolve_device(infer.get("device", "auto"))
        batch_size = infer.batch_size
        return cls(
            window=int(infer.window),
            overlap=int(infer.overlap),
            batch_size=batch_size if batch_size == "auto" else int(batch_size),
            device=device,
            precision=resolve_precision(cfg.trainer.precision, device.type),
            channels_last=resolve_channels_last(cfg.channels_last),
            tta=bool(infer.get("tta", False)),
        )


def predictor_for(settings: InferSettings, loaded) -> SlidingWindowPredictor:
    """The predictor `settings` ask for, around `loaded.model`."""
    batch_size = settings.batch_size
    device = settings.device
    predictor = SlidingWindowPredictor(
        loaded.model,
        window=settings.window,
        overlap=settings.overlap,
        batch_size=CPU_BATCH_SIZE if batch_size == "auto" else int(batch_size),
        precision=settings.precision,
        channels_last=settings.channels_last,
        tta=settings.tta,
        device=device,
    )
    if batch_size == "auto" and device.type == "cuda":
        spec = getattr(loaded, "spec", None)
        in_channels = spec.in_channels if spec is not None else _in_channels(predictor.model)
        predictor.batch_size = cuda_batch_size(predictor, in_channels)
    return predictor
