"""The fastest correct CPU path for this machine, decided from what the CPU really has.

bf16 autocast is 3-4x faster than fp32 where the CPU has native bf16 (AVX512-BF16 / AMX) and ~9x
*slower* where it only has AVX2, where PyTorch emulates it. So `precision=auto` looks at the CPU
flags, never at whether bf16 merely runs. The device (`infer.device`) is resolved here too, so
the up-front config check and the sliding window share one rule.
"""

from __future__ import annotations

import contextlib
import functools
import re
from collections.abc import Iterator
from pathlib import Path

import torch

from sn7.errors import ConfigError
from sn7.utils.config import available_cores

NATIVE_BF16_FLAGS = frozenset({"avx512_bf16", "amx_bf16"})
PRECISIONS = ("32-true", "32", "bf16-mixed", "bf16-true", "16-mixed")


@functools.cache
def cpu_flags(cpuinfo: str | Path = "/proc/cpuinfo") -> frozenset[str]:
    try:
        for line in Path(cpuinfo).read_text().splitlines():
            if line.startswith("flags"):
                return frozenset(line.split(":", 1)[1].split())
    except OSError:
        pass
    return frozenset()


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "unknown CPU"


def has_native_bf16(flags: frozenset[str] | None = None) -> bool:
    """Whether the CPU (or the given /proc/cpuinfo flag set) has bf16 instructions."""
    return bool(NATIVE_BF16_FLAGS & (cpu_flags() if flags is None else flags))


def cpu_precision(flags: frozenset[str]) -> str:
    """The `auto` precision for a CPU with these flags: bf16 only where it is native."""
    return "bf16-mixed" if has_native_bf16(flags) else "32-true"


def resolve_precision(value: str | int, accelerator: str = "cpu") -> str:
    """`auto` -> bf16-mixed on CPUs with native bf16, else 32-true (GPUs: bf16 or 16 mixed)."""
    value = str(value)
    if value != "auto":
        if value not in PRECISIONS:
            raise ConfigError(f"precision={value!r} must be auto or one of {list(PRECISIONS)}")
        return value
    if accelerator in ("gpu", "cuda") or (accelerator == "auto" and torch.cuda.is_available()):
        return "bf16-mixed" if torch.cuda.is_bf16_supported() else "16-mixed"
    return cpu_precision(cpu_flags())


def resolve_device(value: str | torch.device = "auto") -> torch.device:
    """`auto` -> cuda when torch sees a GPU, else cpu; `cuda` without one is a ConfigError.

    The one check of `infer.device`: sn7.checks runs it up front, the sliding window at use."""
    text = str(value)
    if text == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if text not in ("cpu", "cuda") and not re.fullmatch(r"cuda:\d+", text):
        raise ConfigError(f"infer.device={text!r} must be auto, cpu or cuda")
    if text.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(
            f"infer.device={text} but torch sees no CUDA GPU; use infer.device=auto or cpu"
        )
    return torch.device(text)


def resolve_channels_last(value: str | bool) -> bool:
    """`auto` -> channels_last. Measured (benchmarks/): oneDNN's NHWC kernels are 3x faster than
    NCHW in bf16, 1.4-1.6x in fp32 on AVX-512, and no slower in fp32 on AVX2, so it is never the
    wrong choice on a CPU, whatever the precision."""
    if value == "auto":
        return True
    if isinstance(value, bool):
        return value
    raise ConfigError(f"channels_last={value!r} must be auto, true or false")


def configure_threads(threads: int | None = None) -> int:
    """One torch thread per core for the main process (workers set their own to 1)."""
    n = int(threads or available_cores())
    torch.set_num_threads(n)
    return n


@contextlib.contextmanager
def autocast(precision: str) -> Iterator[None]:
    """Inference-time equivalent of the Trainer's precision plugin on CPU."""
    if precision.startswith("bf16"):
        with torch.autocast("cpu", dtype=torch.bfloat16):
            yield
    else:
        yield


COMPILE_SETTINGS = ("auto", "true", "false")
# CPU flags on which torch.compile measured a clear training win; none so far (see below)
COMPILE_WINS_FLAGS: tuple[frozenset[str], ...] = ()


def resolve_compile(value: str | bool, flags: frozenset[str] | None = None) -> bool:
    """`auto` -> off on every CPU measured so far. benchmarks/bench_profile.py on a 2-core
    AVX512-BF16 EPYC (TinyUNet base 32, bf16, channels_last): convolutions are 63-75% of a step,
    near their matmul bound, and inductor hands them to the same oneDNN kernels; what it can fuse
    (batch norm, ReLU, pooling, casts: 25-35%) left the step at 0.96-1.04x, for a cold compile of
    ~65-70 s (and again per new input shape). `flags` (default: this CPU's) selects the CPU kinds of
    COMPILE_WINS_FLAGS, once a measurement puts one there."""
    setting = str(value).lower()
    if setting not in COMPILE_SETTINGS:
        raise ConfigError(f"compile={value!r} must be one of {list(COMPILE_SETTINGS)}")
    if setting == "auto":
        flags = cpu_flags() if flags is None else flags
        return any(needed <= flags for needed in COMPILE_WINS_FLAGS)
    return setting == "true"
