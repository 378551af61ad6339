"""Who runs the network's forward pass at inference: torch, ONNX Runtime or OpenVINO.

`infer.backend`:
- `torch`: the model itself, batch norm folded into the convolutions (eval mode only), in the
  precision and memory format `sn7.utils.hardware` chose for this machine;
- `onnxruntime` / `openvino`: the same model exported once to ONNX (`torch.onnx.export`, dynamic
  batch, the window's height and width fixed) and run by that runtime on the CPU. OpenVINO runs
  bf16 where the CPU has it natively (the same rule as `precision=auto`), f32 elsewhere; ONNX
  Runtime runs f32;
- `auto`: on a GPU torch; on a CPU OpenVINO when installed, else ONNX Runtime at fp32 and torch
  at bf16 (benchmarks/bench_infer.py measures the order; see `resolve_backend`).

The export is built from the model `sn7.inference.checkpoint.load_model` rebuilt from its
allow-list (nothing in a checkpoint runs), and cached beside the checkpoint (or in
`~/.cache/sn7/onnx` when that folder is read-only) under a name that carries the hash of the
weights and the window shape: a changed checkpoint gets a new file, and stale ones are removed.
ONNX files are protobuf graphs; opening one runs no Python.
"""

from __future__ import annotations

import contextlib
import copy
import functools
import hashlib
import importlib.util
import io
import logging
import os
import re
import tempfile
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import torch
from torch import nn

from sn7.errors import ConfigError
from sn7.utils.atomic import atomic_path
from sn7.utils.hardware import autocast

log = logging.getLogger(__name__)

BACKENDS = ("auto", "torch", "onnxruntime", "openvino")
RUNTIMES = {"onnxruntime": "onnxruntime", "openvino": "openvino"}  # backend -> module
EXPORT_VERSION = "1"  # bump when the export itself changes, so cached files are re-made
EXPORT_NAME = re.compile(r"([0-9a-f]{16})\.\d+x\d+\.onnx")  # after "<checkpoint name>."
INSTALL_HINT = "pip install -e '.[infer]'"

Runner = Callable[[torch.Tensor], torch.Tensor]  # (B, C, h, w) float32 -> (B, K, h, w) logits


def installed(backend: str) -> bool:
    module = RUNTIMES.get(backend)
    return module is None or importlib.util.find_spec(module) is not None


def resolve_backend(name: str, device: torch.device, precision: str = "32-true") -> str:
    """`auto` -> what runs fastest here; a named runtime that is missing is a one-line error.

    On a CPU, OpenVINO (bf16 where native, else f32) beat torch at both precisions; ONNX Runtime
    runs f32 only, so it beats torch fp32 but not torch bf16 (bench_infer): without OpenVINO, a
    CPU with native bf16 stays on torch."""
    name = str(name)
    if name not in BACKENDS:
        raise ConfigError(f"infer.backend={name!r} must be one of {list(BACKENDS)}")
    if name == "auto":
        if device.type != "cpu":
            return "torch"
        if installed("openvino"):
            return "openvino"
        bf16 = str(precision).startswith("bf16")
        return "onnxruntime" if installed("onnxruntime") and not bf16 else "torch"
    if name != "torch" and device.type != "cpu":
        raise ConfigError(
            f"infer.backend={name} runs on the CPU only; use infer.backend=torch (or auto) "
            f"with infer.device={device}"
        )
    if not installed(name):
        raise ConfigError(
            f"infer.backend={name} but {RUNTIMES[name]} is not installed: {INSTALL_HINT}"
        )
    return name


def fold_batch_norm(model: nn.Module) -> nn.Module:
    """A copy of `model` (eval mode) with every BatchNorm2d that follows a Conv2d in an
    nn.Sequential folded into that convolution (torch.ao's fuse_modules; ReLU after them is
    fused too): the same function with one pass over memory fewer per layer."""
    model = copy.deepcopy(model).eval()
    groups = []
    for name, module in model.named_modules():
        if not isinstance(module, nn.Sequential):
            continue
        kids = list(module.named_children())
        prefix = f"{name}." if name else ""
        for i in range(len(kids) - 1):
            (conv_name, conv), (bn_name, bn) = kids[i], kids[i + 1]
            if type(conv) is nn.Conv2d and type(bn) is nn.BatchNorm2d:
                group = [prefix + conv_name, prefix + bn_name]
                if i + 2 < len(kids) and type(kids[i + 2][1]) is nn.ReLU:
                    group.append(prefix + kids[i + 2][0])
                groups.append(group)
    if not groups:
        return model
    from torch.ao.quantization import fuse_modules

    return fuse_modules(model, groups, inplace=False)


def weights_key(model: nn.Module) -> str:
    """sha256 of the model's class and every parameter/buffer (names, shapes, bytes)."""
    digest = hashlib.sha256(f"{type(model).__module__}.{type(model).__qualname__}".encode())
    for name, tensor in model.state_dict().items():
        t = tensor.detach().cpu().contiguous()
        digest.update(f"{name}{tuple(t.shape)}{t.dtype}".encode())
        digest.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def _writable(folder: Path) -> bool:
    return folder.is_dir() and os.access(folder, os.W_OK)


def export_folder(checkpoint: Path | None) -> Path:
    if checkpoint is not None and _writable(Path(checkpoint).parent):
        return Path(checkpoint).parent
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "sn7" / "onnx"
    cache.mkdir(parents=True, exist_ok=True)
    return cache


def onnx_path(model: nn.Module, shape: tuple[int, int, int], checkpoint: Path | None) -> Path:
    """Where the export of `model` for (C, h, w) windows lives: `<checkpoint>.<weights key>.
    <h>x<w>.onnx`. Exports of the same checkpoint name with other weights (a retrained file, an
    older export version) are stale and removed."""
    folder = export_folder(checkpoint)
    stem = Path(checkpoint).name if checkpoint is not None else "model"
    key = hashlib.sha256(f"{weights_key(model)}|{EXPORT_VERSION}".encode()).hexdigest()[:16]
    if checkpoint is not None:
        for old in folder.glob(f"{glob_escape(stem)}.*.*.onnx"):
            rest = EXPORT_NAME.fullmatch(old.name.removeprefix(f"{stem}."))
            if rest is not None and rest.group(1) != key:  # only this checkpoint's own exports
                old.unlink(missing_ok=True)
    return folder / f"{stem}.{key}.{shape[1]}x{shape[2]}.onnx"


def glob_escape(text: str) -> str:
    return "".join(f"[{c}]" if c in "*?[" else c for c in text)


def export_onnx(model: nn.Module, shape: tuple[int, int, int], path: Path) -> Path:
    """Export `model` (eval, float32, CPU) for (batch, *shape) inputs, atomically."""
    if path.is_file():
        return path
    batch = torch.export.Dim("batch", min=1, max=1024)
    # outside inference mode (the predictor's forward runs in it): torch.export traces with
    # autograd's view of tensors, and a copy made in inference mode cannot be traced
    quiet = logging.getLogger("torch.onnx._internal.exporter._registration")  # torchvision ops
    level = quiet.level
    quiet.setLevel(logging.ERROR)
    try:
        with (
            torch.inference_mode(False),
            contextlib.redirect_stdout(io.StringIO()),  # the exporter's progress lines
            warnings.catch_warnings(),
        ):
            warnings.simplefilter("ignore", FutureWarning)  # torch.export's own deprecations
            model = copy.deepcopy(model).float().cpu().eval()
            program = torch.onnx.export(
                model,
                (torch.zeros(1, *shape),),
                dynamo=True,
                input_names=["image"],
                output_names=["logits"],
                dynamic_shapes=({0: batch},),
                optimize=True,
                verbose=False,
            )
    finally:
        quiet.setLevel(level)
    with atomic_path(path) as tmp:
        program.save(str(tmp))
    log.info("exported the model to %s", path)
    return path


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


class TorchRunner:
    """The model in eval mode (batch norm folded unless `fold=False`), in the precision and
    memory format given."""

    def __init__(
        self, model: nn.Module, precision: str, channels_last: bool, device, fold: bool = True
    ):
        self.device = torch.device(device)
        model = fold_batch_norm(model) if fold else copy.deepcopy(model).eval()
        self.model = model.to(self.device)  # a copy: the caller's model is never changed
        self.precision = precision
        self.channels_last = channels_last
        if channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with device_autocast(self.precision, self.device):
            return self.model(x).float()


class OnnxRuntimeRunner:
    def __init__(self, path: Path, threads: int):
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.log_severity_level = 3
        self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        image = np.ascontiguousarray(x.numpy(), np.float32)
        return torch.from_numpy(self.session.run(None, {"image": image})[0])


@functools.cache
def openvino_core():
    """One OpenVINO Core per process: every Core starts its own plugin and thread pool, and a
    session of many of them (the test suite) crashed."""
    import openvino as ov

    return ov.Core()


@functools.lru_cache(maxsize=8)
def openvino_model(path: str, threads: int, bf16: bool):
    """The model at `path` compiled for the CPU (kept: compiling takes ~0.5 s)."""
    config = {
        "INFERENCE_PRECISION_HINT": "bf16" if bf16 else "f32",
        "INFERENCE_NUM_THREADS": threads,
        "PERFORMANCE_HINT": "LATENCY",
    }
    return openvino_core().compile_model(path, "CPU", config)


class OpenVinoRunner:
    def __init__(self, path: Path, threads: int, bf16: bool):
        self.compiled = openvino_model(str(path), threads, bf16)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        image = np.ascontiguousarray(x.numpy(), np.float32)
        return torch.from_numpy(np.array(self.compiled(image)[0], copy=True))


def make_runner(
    backend: str,
    model: nn.Module,
    shape: tuple[int, int, int],
    *,
    precision: str,
    channels_last: bool,
    device,
    checkpoint: Path | None = None,
) -> Runner:
    """The forward pass of `model` on (B, *shape) float32 windows under `backend` (resolved)."""
    if backend == "torch":
        return TorchRunner(model, precision, channels_last, device)
    threads = torch.get_num_threads()
    try:
        path = export_onnx(model, shape, onnx_path(model, shape, checkpoint))
    except OSError as exc:  # e.g. a full disk: export to a temp file for this run only
        path = Path(tempfile.mkdtemp(prefix="sn7-onnx-")) / "model.onnx"
        log.warning("cannot cache the ONNX export (%s); using %s", exc, path)
        export_onnx(model, shape, path)
    if backend == "onnxruntime":
        return OnnxRuntimeRunner(path, threads)
    if backend == "openvino":
        return OpenVinoRunner(path, threads, bf16=precision.startswith("bf16"))
    raise ConfigError(f"unknown inference backend {backend!r}")
