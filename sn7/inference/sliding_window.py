"""Full-tile prediction by overlapping windows, blended with a smooth weight (no seams).

Windows step by `window - overlap` px, the last one flush with the tile edge (`sn7.data.windows`,
the layout of the validation crops too), so neighbours overlap by at least `overlap` px; any tile
size works (1023 px included; a tile smaller than the window is one window). Each pixel's
probability is the weight-averaged probability of the windows covering it; the weight rises from
~0 at a window's edge to 1 over `overlap` px (raised cosine), so a window's zero-padded borders,
where a CNN is least reliable, count least.

Device (`infer.device`): the model and the windows go to the GPU when asked (or `auto` and one is
there); probabilities always come back as CPU numpy arrays, so callers never see a device.
Backend (`infer.backend`, sn7.inference.backends): torch, ONNX Runtime or OpenVINO runs each batch
of windows; windows, blending and test-time flips are the same for all of them.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from sn7.data.windows import check_window, window_starts
from sn7.errors import ConfigError
from sn7.inference.backends import Runner, TorchRunner, make_runner, resolve_backend
from sn7.models.heads import building_probability
from sn7.utils.hardware import resolve_channels_last, resolve_device, resolve_precision

_MIN_WEIGHT = 1e-3  # keeps tile-edge pixels (covered by one window edge only) well defined
CPU_BATCH_SIZE = 1  # `batch_size: auto` on CPU with torch: 1.4x faster than 4 (page faults)
RUNTIME_CPU_BATCH_SIZE = 4  # OpenVINO / ONNX Runtime: never slower than 1, 3-5 % faster in 4 of 5
MAX_AUTO_BATCH = 32  # `batch_size: auto` on CUDA never goes above this


def blend_weights(height: int, width: int, overlap: int) -> np.ndarray:
    def ramp(n: int) -> np.ndarray:
        if overlap <= 0:
            return np.ones(n, np.float32)
        pos = np.minimum(np.arange(n) + 0.5, n - np.arange(n) - 0.5) / overlap
        return np.maximum(0.5 - 0.5 * np.cos(np.pi * np.clip(pos, 0, 1)), _MIN_WEIGHT)

    return np.outer(ramp(height), ramp(width)).astype(np.float32)


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
        backend: str = "torch",
        checkpoint: str | Path | None = None,
    ):
        check_window(window, overlap)
        if batch_size < 1:
            raise ConfigError(f"batch_size must be >= 1, got {batch_size}")
        self.device = resolve_device(device)
        self.model = model.eval()
        self.window, self.overlap, self.batch_size = window, overlap, batch_size
        self.precision = precision
        self.channels_last = channels_last
        self.tta = tta
        self.backend = resolve_backend(backend, self.device, precision)
        self.checkpoint = None if checkpoint is None else Path(checkpoint)
        self._runners: dict[tuple[int, ...], Runner] = {}
        if self.backend == "torch":  # one runner for every window shape
            self._torch = TorchRunner(model, precision, channels_last, self.device)

    def runner(self, shape: tuple[int, ...]) -> Runner:
        """The forward pass for (C, h, w) windows (ONNX exports are made per window shape)."""
        if self.backend == "torch":
            return self._torch
        if shape not in self._runners:
            self._runners[shape] = make_runner(
                self.backend, self.model, tuple(shape), precision=self.precision,
                channels_last=self.channels_last, device=self.device, checkpoint=self.checkpoint,
            )  # fmt: skip
        return self._runners[shape]

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
        run = self.runner(tuple(batch.shape[1:]))
        total = None
        for dims in flips:
            x = batch.flip(dims) if dims else batch
            prob = building_probability(run(x))
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
    backend: str = "torch"  # resolved: torch | onnxruntime | openvino

    @classmethod
    def from_config(cls, cfg) -> InferSettings:
        from sn7.checks import check_infer  # checks sits on this floor; lazily, as it is a leaf

        infer = cfg.infer
        check_infer(infer)
        device = resolve_device(infer.get("device", "auto"))
        batch_size = infer.batch_size
        precision = resolve_precision(cfg.trainer.precision, device.type)
        return cls(
            window=int(infer.window),
            overlap=int(infer.overlap),
            batch_size=batch_size if batch_size == "auto" else int(batch_size),
            device=device,
            precision=precision,
            channels_last=resolve_channels_last(cfg.channels_last),
            tta=bool(infer.get("tta", False)),
            backend=resolve_backend(infer.get("backend", "auto"), device, precision),
        )


def cpu_auto_batch(backend: str) -> int:
    """Windows per forward pass for `batch_size: auto` (CUDA replaces it by a measured size)."""
    return CPU_BATCH_SIZE if backend == "torch" else RUNTIME_CPU_BATCH_SIZE


def predictor_for(settings: InferSettings, loaded) -> SlidingWindowPredictor:
    """The predictor `settings` ask for, around `loaded.model`."""
    batch_size = settings.batch_size
    device = settings.device
    predictor = SlidingWindowPredictor(
        loaded.model,
        window=settings.window,
        overlap=settings.overlap,
        batch_size=int(batch_size) if batch_size != "auto" else cpu_auto_batch(settings.backend),
        precision=settings.precision,
        channels_last=settings.channels_last,
        tta=settings.tta,
        device=device,
        backend=settings.backend,
        checkpoint=getattr(loaded, "path", None),
    )
    if batch_size == "auto" and device.type == "cuda":
        spec = getattr(loaded, "spec", None)
        in_channels = spec.in_channels if spec is not None else _in_channels(predictor.model)
        predictor.batch_size = cuda_batch_size(predictor, in_channels)
    return predictor
