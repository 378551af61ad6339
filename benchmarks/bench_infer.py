"""Full-tile inference: where the time goes, how far it is from its lower bound, and the backends.

Model: conf/experiment/cpu_best's network (TinyUNet base 16, 2x upscale), seeded random weights
(the work is the same as the trained model's). Input: the normalised float32 of a real
1024 x 1023 SN7 tile of the sample. Windows, overlap and batch from conf/infer.

Part 1 (account): one full tile through today's torch path (eager, batch norm unfolded, the
precision and memory format `auto` resolves to) under torch.profiler. Every op's self time goes to
a kind: convolution, transposed convolution, batch norm, activation, pooling, concat/copy,
upsampling, casts, other (the nearest enclosing op with a kind). FLOPs (convolutions) and bytes
(each op reads its inputs and writes its outputs once, views free) are counted at dispatch level.
Each kind's bound is max(FLOPs / matmul rate, bytes / memory bandwidth), both rates measured in
the same run (a large matmul in the path's dtype; a large copy + add); the sum of the bounds is
the tile's lower bound.

Part 2 (backends, timed interleaved in one run): today's path; torch with batch norm folded;
ONNX Runtime (fp32); OpenVINO in the precision `auto` resolves to (and f32 where that is bf16);
the `auto` backend with 2 and 4 windows per forward pass and with 1 thread; one forward pass over
the whole padded tile (the sliding window's overhead). Each row's largest probability difference
from torch fp32 eager is measured on the same tile.

`python -m benchmarks.bench_infer`
"""

from __future__ import annotations

import contextlib
import functools
import time
from collections import defaultdict
from types import SimpleNamespace

import numpy as np
import torch
import torch.nn.functional as F
from hydra.utils import instantiate
from torch.profiler import ProfilerActivity, profile, record_function
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves

from benchmarks.bench_profile import Traffic, op_kind
from benchmarks.bench_train import Matmul
from benchmarks.common import (
    Section,
    Target,
    describe_path,
    markdown_table,
    measure,
    progress,
    project_config,
    run_standalone,
    sample_root,
)
from sn7.data.input_spec import InputSpec
from sn7.data.layout import discover_images
from sn7.data.raster_io import read_raster
from sn7.inference.backends import TorchRunner, installed
from sn7.inference.sliding_window import InferSettings, SlidingWindowPredictor, predictor_for

TARGET_SPEEDUP = 2.0  # auto backend vs today's torch eager path, tiles/s
TARGET_VS_BOUND = 1.5  # auto backend's seconds per tile over the tile's lower bound
TARGET_OVERHEAD = 1.3  # sliding window vs one pass over the padded tile
KINDS = (
    "convolution",
    "transposed convolution",
    "batch norm",
    "activation",
    "pooling",
    "concat/copy",
    "upsampling",
    "casts",
    "other",
)
PHASE = "sn7::inference"
MATMUL_N = 2048


def first_tile_input() -> np.ndarray:
    """The first image of the sample, normalised as conf/data/sn7.yaml says: (C, H, W) float32."""
    spec = InputSpec.from_data_cfg(project_config("evaluate").data)
    tile = discover_images(sample_root())[0]
    return spec.normalize(read_raster(tile.image, spec.bands))


def project_predictor(overrides=()) -> SlidingWindowPredictor:
    """What evaluate.py / predict.py build (`predictor_for` on conf/evaluate.yaml + `overrides`)
    around an untrained TinyUNet of the default size (conf/model) in place of a checkpoint (for
    bench_profile and bench_hugepages)."""
    torch.manual_seed(0)
    model = instantiate(project_config("train").model)
    return predictor_for(settings(overrides), SimpleNamespace(model=model))


def cpu_best_model() -> torch.nn.Module:
    torch.manual_seed(0)
    return instantiate(project_config("train", ["experiment=cpu_best"]).model).eval()


def settings(overrides=()) -> InferSettings:
    return InferSettings.from_config(project_config("evaluate", list(overrides)))


def predictor(model, overrides=(), **replace) -> SlidingWindowPredictor:
    """What evaluate.py / predict.py build (`predictor_for` on conf/evaluate.yaml + overrides)."""
    s = settings(overrides)
    s = type(s)(**{**s.__dict__, **replace})
    return predictor_for(s, SimpleNamespace(model=model))


def todays_predictor(model) -> SlidingWindowPredictor:
    """Before issue 27: torch eager, batch norm unfolded, auto precision and memory format."""
    p = predictor(model, backend="torch")
    p._torch = TorchRunner(model, p.precision, p.channels_last, p.device, fold=False)
    return p


# --- part 1: account ------------------------------------------------------------------------


def infer_kind(names) -> str:
    """Kind of an op given its name and its enclosing ops' names (innermost first)."""
    for name in names:
        n = name.lower().removeprefix("aten::").removeprefix("aten.").split(".")[0]
        if "conv_transpose" in n:
            return "transposed convolution"
    for name in names:
        n = name.lower().removeprefix("aten::").removeprefix("aten.").split(".")[0]
        if "avg_pool" in n:
            return "pooling"
        if "sigmoid" in n:
            return "activation"
        kind = op_kind(name)
        if kind is not None:
            return {
                "convolution fwd": "convolution",
                "batch norm fwd": "batch norm",
                "autocast casts/to": "casts",
            }.get(kind, kind)
    return "other"


class WorkMode(TorchDispatchMode):
    """Bytes per kind (inputs read + outputs written once, views free); the convolutions' FLOPs
    come from `conv_flops` (module hooks: the dispatched op names vary with the CPU path)."""

    def __init__(self):
        super().__init__()
        self.bytes: dict[str, float] = defaultdict(float)
        self.conv_transpose = False  # set by conv_flops' hooks while a transposed conv runs

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        if func.is_view:
            return out
        kind = infer_kind([func.overloadpacket.__name__])
        if kind == "convolution" and self.conv_transpose:
            kind = "transposed convolution"
        tensors = [t for t in tree_leaves((args, kwargs, out)) if isinstance(t, torch.Tensor)]
        self.bytes[kind] += sum(t.numel() * t.element_size() for t in tensors)
        return out


@contextlib.contextmanager
def conv_flops(model: torch.nn.Module, work: WorkMode):
    """Count 2 x multiply-adds of every Conv2d / ConvTranspose2d the model runs into `flops`;
    tell `work` when a transposed convolution runs."""
    flops: dict[str, float] = defaultdict(float)

    def before(module, inputs):
        work.conv_transpose = isinstance(module, torch.nn.ConvTranspose2d)

    def after(module, inputs, output):
        work.conv_transpose = False
        w = module.weight
        if isinstance(module, torch.nn.ConvTranspose2d):  # every input pixel x the kernel
            x = inputs[0]
            flops["transposed convolution"] += (
                2.0 * x.numel() * w.shape[1] * w.shape[2] * w.shape[3]
            )
        else:  # every output pixel x (in / groups) x kernel
            flops["convolution"] += 2.0 * output.numel() * w.shape[1] * w.shape[2] * w.shape[3]

    handles = []
    for module in model.modules():
        if isinstance(module, (torch.nn.Conv2d, torch.nn.ConvTranspose2d)):
            handles += [module.register_forward_pre_hook(before),
                        module.register_forward_hook(after)]  # fmt: skip
    try:
        yield flops
    finally:
        for handle in handles:
            handle.remove()


def kind_times(events) -> dict[str, float]:
    times: dict[str, float] = defaultdict(float)
    for event in events:
        chain, node = [], event
        while node is not None:
            chain.append(node.name)
            node = node.cpu_parent
        if PHASE not in chain:
            continue
        chain = chain[: chain.index(PHASE)]
        times[infer_kind(chain) if chain else "other"] += event.self_cpu_time_total / 1e6
    return times


def machine_rates(dtype: torch.dtype) -> tuple[float, float]:
    """(matmul GFLOP/s in `dtype`, memory GB/s), the best of a few interleaved repeats."""
    mm, traffic = Matmul(dtype, MATMUL_N, reps=4), Traffic()
    t_mm, t_traffic = measure([mm, traffic], warmup=1, repeats=5, budget_s=8.0)
    return mm.flop / min(t_mm.seconds) / 1e9, traffic.gbps(t_traffic)


def account(model, image: np.ndarray) -> tuple[list[str], float]:
    """Markdown lines of the per-kind account of today's path, and the tile's lower bound (s)."""
    today = todays_predictor(model)
    dtype = torch.bfloat16 if today.precision.startswith("bf16") else torch.float32
    rate, bandwidth = machine_rates(dtype)
    today(image)  # warm-up
    with WorkMode() as work, conv_flops(today._torch.model, work) as flops:
        today(image)
    work.flops = flops
    start = time.perf_counter()
    with profile(activities=[ProfilerActivity.CPU]) as prof, record_function(PHASE):
        today(image)
    wall = time.perf_counter() - start
    times = kind_times(prof.events())
    rate2, bandwidth2 = machine_rates(dtype)  # best of before and after
    rate, bandwidth = max(rate, rate2), max(bandwidth, bandwidth2)
    total = sum(times.values())
    rows, bound_total = [], 0.0
    for kind in KINDS:
        t, f, b = times.get(kind, 0.0), work.flops.get(kind, 0.0), work.bytes.get(kind, 0.0)
        if not (t or f or b):
            continue
        bound_f, bound_b = f / (rate * 1e9), b / (bandwidth * 1e9)
        bound = max(bound_f, bound_b)
        bound_total += bound
        rows.append(
            [
                kind,
                f"{1e3 * t:.0f}",
                f"{100 * t / total:.1f}%",
                f"{f / 1e9:.1f}" if f else "",
                f"{b / 2**20:.0f}",
                f"{f / t / 1e9:.0f}" if f and t else "",
                f"{1e3 * bound:.0f} ({'FLOPs' if bound_f >= bound_b else 'bytes'})",
                f"{t / bound:.1f}x" if bound else "",
            ]
        )
    rows.append(
        ["**tile**", f"{1e3 * total:.0f}", "100%", f"{sum(work.flops.values()) / 1e9:.1f}",
         f"{sum(work.bytes.values()) / 2**20:.0f}", f"{sum(work.flops.values()) / total / 1e9:.0f}",
         f"{1e3 * bound_total:.0f}", f"{total / bound_total:.1f}x"]
    )  # fmt: skip
    lines = [
        f"Account of one full tile on today's path (torch eager, "
        f"{describe_path(today.precision, today.channels_last)}, batch norm unfolded, "
        f"{today.batch_size} window per pass): self CPU time per kind of op under torch.profiler; "
        f"bound = max(FLOPs / {str(dtype).removeprefix('torch.')} matmul rate, bytes / bandwidth).",
        "",
        markdown_table(
            [
                "kind",
                "ms/tile",
                "share",
                "GFLOP",
                "MiB moved",
                "GFLOP/s",
                "bound ms (by)",
                "vs bound",
            ],
            rows,
        ),
        "",
        f"Rates measured in this run: {str(dtype).removeprefix('torch.')} matmul {MATMUL_N}^2 "
        f"{rate:.0f} GFLOP/s; memory (copy + add of 256 MiB fp32) {bandwidth:.1f} GB/s. Wall time "
        f"under the profiler {wall:.2f} s; lower bound {bound_total:.2f} s.",
    ]
    return lines, bound_total


# --- part 2: backends -----------------------------------------------------------------------


def one_thread(model, image: np.ndarray) -> SlidingWindowPredictor:
    """The auto predictor with its runtime built for one thread (a runtime's thread count is
    fixed when it is built, at the first window of a shape)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        p = predictor(model)
        p(image)
        return p
    finally:
        torch.set_num_threads(before)


def run() -> Section:
    image = first_tile_input()
    _, height, width = image.shape
    model = cpu_best_model()
    auto = predictor(model)
    precision = auto.precision
    progress(f"{width}x{height} tile, cpu_best network; account of today's path")
    account_lines, bound = account(model, image)

    rows: dict[str, SlidingWindowPredictor] = {"today: torch eager": todays_predictor(model)}
    rows["torch, batch norm folded"] = predictor(model, backend="torch")
    for backend in ("onnxruntime", "openvino"):
        if installed(backend):
            rows[f"{backend} ({'f32' if backend == 'onnxruntime' else precision})"] = predictor(
                model, backend=backend
            )
            if backend == "openvino" and precision != "32-true":
                rows["openvino (32-true)"] = predictor(model, backend=backend, precision="32-true")
    auto_name = next(
        (k for k, p in rows.items() if k != "today: torch eager" and p.backend == auto.backend
         and p.precision == precision and p.batch_size == auto.batch_size),
        None,
    )  # fmt: skip
    if auto_name is None:  # torch is auto: batch norm folded
        auto_name = "torch, batch norm folded"
    rows[auto_name] = auto  # the same object the stage builds
    for batch in (1, 2, 4):
        if batch != auto.batch_size:
            rows[f"auto, {batch} windows per pass"] = predictor(model, batch_size=batch)
    if torch.get_num_threads() > 1:
        rows["auto, 1 thread"] = one_thread(model, image)

    multiple = 2**model.depth
    padded = F.pad(
        torch.from_numpy(image)[None], (0, -width % multiple, 0, -height % multiple),
        mode="reflect",
    )  # fmt: skip

    def one_pass() -> np.ndarray:
        return auto.forward(padded)[0, :height, :width].numpy()

    progress(f"backends: {', '.join(rows)} (first calls export / compile)")
    reference = SlidingWindowPredictor(model, auto.window, auto.overlap, 1, "32-true")
    reference._torch = TorchRunner(model, "32-true", False, "cpu", fold=False)
    expected = reference(image)
    differences = {name: float(np.abs(p(image) - expected).max()) for name, p in rows.items()}
    calls = [functools.partial(p, image) for p in rows.values()]
    *timings, t_pass = measure([*calls, one_pass], warmup=1, repeats=5, budget_s=90.0)
    timing = dict(zip(rows, timings, strict=True))
    t_today = timing["today: torch eager"].median
    table = [
        [
            name + (" **(auto)**" if name == auto_name else ""),
            p.backend,
            "32-true" if p.backend == "onnxruntime" else p.precision,
            p.batch_size,
            t.median,
            t.spread(),
            1 / t.median,
            f"{t_today / t.median:.2f}x",
            f"{differences[name]:.1e}",
        ]
        for (name, p), t in zip(rows.items(), timings, strict=True)
    ]
    t_auto = timing[auto_name].median
    section = Section(f"bench_infer: full-tile inference ({width} x {height}), cpu_best network")
    section.body = [
        *account_lines,
        "",
        f"Backends, timed interleaved (medians; window {auto.window}, overlap {auto.overlap}; "
        f"{torch.get_num_threads()} threads unless said). |Δp|: the largest probability "
        "difference from torch fp32 eager on this tile (bf16 rows differ by bf16 rounding, as "
        "today's path does).",
        "",
        markdown_table(
            [
                "path",
                "backend",
                "precision",
                "windows/pass",
                "s/tile",
                "min-max s",
                "tiles/s",
                "vs today",
                "max abs Δp",
            ],
            table,
        ),
        "",
        f"One forward pass over the padded tile ({padded.shape[-1]} x {padded.shape[-2]}, auto "
        f"backend): {t_pass.median:.2f} s; the sliding window ({len(auto.windows(height, width))}"
        f" windows) takes {t_auto / t_pass.median:.2f}x that.",
    ]
    section.targets += [
        Target("auto backend vs today's torch path, tiles/s", t_today / t_auto, TARGET_SPEEDUP,
               unit="x"),
        Target("auto backend, seconds per tile over the lower bound", t_auto / bound,
               TARGET_VS_BOUND, higher_is_better=False, unit="x"),
        Target("sliding-window overhead vs one padded pass", t_auto / t_pass.median,
               TARGET_OVERHEAD, higher_is_better=False, unit="x"),
    ]  # fmt: skip
    return section


if __name__ == "__main__":
    run_standalone(run)
