"""Where a training step's time goes, how far it is from its lower bound, and what would help.

Part 1 (profile): one training step of TinyUNet base 32, batch 8 x 256^2, on the project's default
path (precision=auto, channels_last=auto: bf16 autocast + NHWC where the CPU has native bf16), the
way bench_train times it, under torch.profiler for `--steps` steps after warm-up. The step runs in
labelled phases: optimizer (zero_grad), model forward, loss (forward and backward: the backward is
split at the logits, which changes no number), model backward, optimizer (AdamW step). Every op's
*self* time goes to one kind: by the op's own name or the nearest enclosing op that has a kind
(`aten::copy_` under `aten::_to_copy` is a cast, under `CatBackward0` a concat); loss and
optimizer phases are kinds of their own.

Each kind's lower bound is its roofline: max(FLOPs / bf16 matmul rate, bytes / memory bandwidth),
both rates measured in the same run (a large bf16 matmul; a large tensor copy and add, counted as
bytes read + written). FLOPs are torch.utils.flop_counter's convolution counts; bytes assume each
op reads its inputs and writes its outputs once (counted at dispatch level, views free), except the
optimizer, whose bound is a fused AdamW pass: 28 bytes per parameter (read p, g, m, v; write
p, m, v in fp32). The step's bound is the sum of its kinds' bounds.

Part 2 (candidates, timed interleaved): the default step; NCHW instead of channels_last; AdamW with
foreach=True and with fused=True; batch 16 (img/s at the same crop size); the model under
torch.compile (inductor, default mode; its compile time reported apart and amortised over a 30-min
run). Part 3: full-tile inference (conf/infer) eager vs the compiled model.

`python -m benchmarks.bench_profile [--steps N] [--skip-candidates] [--skip-compile]`
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import time
from collections import defaultdict
from collections.abc import Iterator

import torch
from hydra.utils import instantiate
from torch.profiler import ProfilerActivity, profile, record_function
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves
from torch.utils.flop_counter import FlopCounterMode

from benchmarks.bench_train import BATCH, Matmul, TrainingStep, precision_context
from benchmarks.common import (
    Section,
    Target,
    Timing,
    describe_path,
    markdown_table,
    measure,
    progress,
    project_config,
    run_standalone,
    training_path,
)

BASE = 32
STEPS = 3
WARMUP = 2
KINDS = (
    "convolution fwd",
    "convolution bwd",
    "batch norm fwd",
    "batch norm bwd",
    "activation",
    "pooling",
    "concat/copy",
    "upsampling",
    "autocast casts/to",
    "loss",
    "optimizer",
    "other",
)
PHASE_PREFIX = "sn7::"
ADAMW_BYTES_PER_PARAM = 28
RUN_MINUTES = 30
MATMUL_N = 2048
COPY_MIB = 256


def op_kind(name: str) -> str | None:
    """Kind of a profiler/dispatcher op name, None for generic ops (copy_, empty, add, slice):
    those take the kind of the op they run inside."""
    n = name.lower().removeprefix("autograd::engine::evaluate_function: ")
    n = n.removeprefix("aten::").removeprefix("aten.").split(".")[0]
    if "convolution_backward" in n or "convolutionbackward" in n:
        return "convolution bwd"
    if "conv" in n:
        return "convolution fwd"
    if "batch_norm_backward" in n or "batchnormbackward" in n:
        return "batch norm bwd"
    if "batch_norm" in n:
        return "batch norm fwd"
    if "relu" in n or "threshold" in n:
        return "activation"
    if "max_pool" in n or "maxpool" in n:
        return "pooling"
    if "upsample" in n:
        return "upsampling"
    if n in ("cat", "clone", "contiguous") or n.startswith("catbackward"):
        return "concat/copy"
    if n in ("to", "_to_copy") or n.startswith("tocopybackward"):
        return "autocast casts/to"
    return None


def phase_kind(phase: str) -> str | None:
    return {"loss": "loss", "optimizer": "optimizer"}.get(phase)


class ProfiledStep(TrainingStep):
    """bench_train's step in labelled phases; `phase` tells a dispatch mode where it is."""

    phase = ""

    @contextlib.contextmanager
    def _phase(self, name: str) -> Iterator[None]:
        self.phase = name
        with record_function(PHASE_PREFIX + name):
            yield
        self.phase = ""

    def __call__(self, batch: dict | None = None) -> float:
        with self._phase("optimizer"):
            self.optimizer.zero_grad(set_to_none=True)
        x = self.image
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with self._phase("model forward"), precision_context(self.precision):
            logits = self.model(x)
        with self._phase("loss"):
            head = logits.detach().requires_grad_()
            with precision_context(self.precision):
                loss = self.loss_fn(head[:, 0], self.mask.long())
            loss.backward()
        with self._phase("model backward"):
            logits.backward(head.grad)
        with self._phase("optimizer"):
            self.optimizer.step()
        return loss.detach().item()


class TrafficMode(TorchDispatchMode):
    """Bytes each kind of op moves: every op reads its tensor inputs and writes its outputs once
    (views move nothing)."""

    def __init__(self, step: ProfiledStep):
        super().__init__()
        self.step = step
        self.bytes: dict[str, float] = defaultdict(float)

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        if not func.is_view:
            kind = (
                phase_kind(self.step.phase)
                or op_kind(func.overloadpacket.__name__)
                or ("other" if self.step.phase else None)
            )
            if kind:
                tensors = [
                    t for t in tree_leaves((args, kwargs, out)) if isinstance(t, torch.Tensor)
                ]
                self.bytes[kind] += sum(t.numel() * t.element_size() for t in tensors)
        return out


def kind_times(events) -> tuple[dict[str, float], int]:
    """Self CPU seconds per kind over the profiled steps, and how many events had a phase."""
    times: dict[str, float] = defaultdict(float)
    counted = 0
    for event in events:
        chain, node = [], event
        while node is not None:
            chain.append(node.name)
            node = node.cpu_parent
        phases = [c.removeprefix(PHASE_PREFIX) for c in chain if c.startswith(PHASE_PREFIX)]
        if not phases:
            continue  # profiler scaffolding
        counted += 1
        # a phase's own self time is Python between its ops: "other" in the model phases
        kind = phase_kind(phases[0]) or next(filter(None, map(op_kind, chain)), "other")
        times[kind] += event.self_cpu_time_total / 1e6
    return times, counted


# --- machine rates --------------------------------------------------------------------------


class Traffic:
    """A large copy and add, as one timed call; bytes counted as read + written."""

    def __init__(self, mib: int = COPY_MIB):
        n = mib * 2**20 // 4
        self.a, self.b, self.out = torch.rand(n), torch.rand(n), torch.empty(n)
        self.bytes = 2 * self.a.nbytes + 3 * self.a.nbytes

    def __call__(self) -> None:
        self.out.copy_(self.a)
        torch.add(self.a, self.b, out=self.out)

    def gbps(self, timing: Timing) -> float:
        return self.bytes / min(timing.seconds) / 1e9


def machine_rates() -> tuple[float, float]:
    """(bf16 matmul GFLOP/s, memory GB/s): the best of a few interleaved repeats."""
    mm, traffic = Matmul(torch.bfloat16, MATMUL_N, reps=4), Traffic()
    t_mm, t_traffic = measure([mm, traffic], warmup=1, repeats=5, budget_s=6.0)
    return mm.flop / min(t_mm.seconds) / 1e9, traffic.gbps(t_traffic)


# --- part 1: profile ------------------------------------------------------------------------


def count_work(step: ProfiledStep) -> tuple[dict[str, float], dict[str, float]]:
    """(FLOPs, bytes) per kind of one step."""
    with FlopCounterMode(display=False) as flops, TrafficMode(step) as traffic:
        step()
    counts = {str(op): n for op, n in flops.get_flop_counts()["Global"].items()}
    per_kind = defaultdict(float)
    for op, n in counts.items():
        per_kind[op_kind(op) or "other"] += float(n)
    params = sum(p.numel() for p in step.model.parameters())
    traffic.bytes["optimizer"] = float(ADAMW_BYTES_PER_PARAM * params)
    return dict(per_kind), dict(traffic.bytes)


def profile_section(steps: int) -> tuple[list[str], dict]:
    cfg = project_config("train")
    path = training_path(cfg)
    progress(f"profile: base {BASE}, {describe_path(*path)}, {WARMUP} warm-up + {steps} steps")
    step = ProfiledStep(cfg, BASE, *path)
    rate, bandwidth = machine_rates()
    for _ in range(WARMUP):
        step()
    flops, nbytes = count_work(step)
    start = time.perf_counter()
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(steps):
            step()
    wall = (time.perf_counter() - start) / steps
    times, counted = kind_times(prof.events())
    rate2, bandwidth2 = machine_rates()  # best of before and after: load cannot inflate a share
    rate, bandwidth = max(rate, rate2), max(bandwidth, bandwidth2)

    profiled = sum(times.values()) / steps
    rows, bound_total = [], 0.0
    for kind in KINDS:
        if kind not in times and kind not in nbytes:
            continue  # e.g. upsampling: TinyUNet upsamples by transposed convolution
        t = times.get(kind, 0.0) / steps
        f, b = flops.get(kind, 0.0), nbytes.get(kind, 0.0)
        bound_f, bound_b = f / (rate * 1e9), b / (bandwidth * 1e9)
        bound = max(bound_f, bound_b)
        bound_total += bound
        rows.append(
            [
                kind,
                f"{1e3 * t:.0f}",
                f"{100 * t / profiled:.1f}%",
                f"{f / t / 1e9:.0f}" if f and t else "",
                f"{b / t / 1e9:.1f}" if b and t else "",
                f"{1e3 * bound:.0f} ({'FLOPs' if bound_f >= bound_b else 'bytes'})",
                f"{t / bound:.1f}x" if bound else "",
            ]
        )
    rows.append(
        ["**step**", f"{1e3 * profiled:.0f}", "100%", f"{sum(flops.values()) / profiled / 1e9:.0f}",
         f"{sum(nbytes.values()) / profiled / 1e9:.1f}", f"{1e3 * bound_total:.0f}",
         f"{profiled / bound_total:.1f}x"]
    )  # fmt: skip
    conv_share = 100 * (times.get("convolution fwd", 0) + times.get("convolution bwd", 0))
    conv_share /= sum(times.values())
    lines = [
        f"Profile of one training step: TinyUNet base {BASE}, batch {BATCH} x 256^2, "
        f"{step.image.shape[1]} input channels, {describe_path(*path)} (the default path), "
        f"mean of {steps} profiled steps after {WARMUP} warm-up steps. Time = self CPU time of "
        "the ops of that kind; bound = max(FLOPs / bf16 matmul rate, bytes / bandwidth). "
        "TinyUNet upsamples by transposed convolution: it is counted as convolution.",
        "",
        markdown_table(
            ["kind", "ms/step", "share", "GFLOP/s", "GB/s", "bound ms (by)", "vs bound"], rows
        ),
        "",
        f"Rates measured in this run: bf16 matmul {MATMUL_N}^2 {rate:.0f} GFLOP/s; memory "
        f"(copy + add of {COPY_MIB} MiB fp32) {bandwidth:.1f} GB/s. Step wall time under the "
        f"profiler {wall:.2f} s (sum of self times {profiled:.2f} s, {counted // steps} ops/step); "
        f"lower bound {bound_total:.2f} s: the step is {profiled / bound_total:.1f}x its bound, "
        f"convolutions take {conv_share:.0f}% of it.",
    ]
    info = {
        "rate": rate,
        "bandwidth": bandwidth,
        "step_s": profiled,
        "bound_s": bound_total,
        "flops": sum(flops.values()),
        "conv_share": conv_share,
    }
    return lines, info


# --- part 2: candidates ---------------------------------------------------------------------


def candidate_steps(cfg, compile_model: bool) -> tuple[dict[str, TrainingStep], float]:
    """name -> step, and the compile time (first compiled step minus a default step)."""
    precision, channels_last = training_path(cfg)
    steps = {"default": TrainingStep(cfg, BASE, precision, channels_last)}
    steps["NCHW (channels_last off)"] = TrainingStep(cfg, BASE, precision, False)
    for flag in ("foreach", "fused"):
        step = TrainingStep(cfg, BASE, precision, channels_last)
        step.optimizer = instantiate(cfg.optimizer, **{flag: True})(params=step.model.parameters())
        steps[f"AdamW {flag}=True"] = step
    steps["batch 16"] = TrainingStep(cfg, BASE, precision, channels_last, batch=2 * BATCH)
    compile_s = 0.0
    if compile_model:
        step = TrainingStep(cfg, BASE, precision, channels_last)
        step.model.compile()  # in place: state_dict keys keep their names
        progress("compiling the training step (inductor)")
        compile_s = first_call_overhead(step, steps["default"])
        steps["torch.compile (inductor)"] = step
    return steps, compile_s


def timed_call(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def first_call_overhead(compiled, eager) -> float:
    """Seconds the compiled callable's first call (the compilation) takes beyond a warm eager
    call (timed right after it, so both see the same load)."""
    eager()
    first = timed_call(compiled)
    return max(0.0, first - timed_call(eager))


def candidates_section(info: dict, compile_model: bool) -> tuple[list[str], dict]:
    cfg = project_config("train")
    steps, compile_s = candidate_steps(cfg, compile_model)
    progress("candidates, interleaved: " + ", ".join(steps))
    mm = Matmul(torch.bfloat16, MATMUL_N, reps=4)  # in the same rounds: shares see the same load
    times = measure([*steps.values(), mm], warmup=1, repeats=4, min_repeats=3, budget_s=120.0)
    timings = dict(zip(steps, times[:-1], strict=True))
    rate = max(info["rate"], mm.flop / min(times[-1].seconds) / 1e9)
    base = timings["default"]
    rows, speed, shares = [], {}, {}
    for name, t in timings.items():
        batch = steps[name].image.shape[0]
        img_s, best = batch / t.median, batch / min(t.seconds)
        speed[name] = (img_s / (BATCH / base.median), best / (BATCH / min(base.seconds)))
        share = 100 * info["flops"] * batch / BATCH / min(t.seconds) / 1e9 / rate
        shares[name] = share
        run = ""
        if name.startswith("torch.compile"):
            useful = max(0.0, RUN_MINUTES * 60 - compile_s)
            run = f"{best * useful / (RUN_MINUTES * 60):.2f}"
        rows.append(
            [name, f"{img_s:.2f}", f"{best:.2f}", f"{speed[name][0]:.2f}x / {speed[name][1]:.2f}x",
             f"{share:.0f}%", run, t.spread(), len(t.seconds)]
        )  # fmt: skip
    lines = [
        f"Candidates for the training step (base {BASE}, 256^2 crops), timed interleaved. "
        "img/s from the median and from the fastest step (the fastest is the least disturbed "
        "by other jobs); % bf16 matmul = step GFLOP/s (fastest step) / best bf16 matmul rate "
        f"(profile or these rounds: {rate:.0f} GFLOP/s):",
        "",
        markdown_table(
            [
                "candidate",
                "img/s median",
                "img/s best",
                "vs default median / best",
                "% bf16 matmul",
                f"img/s (best) over a {RUN_MINUTES}-min run incl. compile",
                "step s min-max",
                "steps",
            ],
            rows,
        ),
    ]
    if compile_model:
        lines += [
            "",
            f"torch.compile: compile time {compile_s:.0f} s (first compiled step minus a warm "
            f"eager step; caches disabled, as on a fresh machine) = "
            f"{100 * compile_s / (RUN_MINUTES * 60):.1f}% of a {RUN_MINUTES}-min "
            "run.",
        ]
    return lines, {"speed": speed, "share": shares, "compile_s": compile_s}


# --- part 3: inference ----------------------------------------------------------------------


def inference_section() -> tuple[list[str], dict]:
    """Full-tile sliding window (conf/infer) with the eager model, a larger batch, and the
    compiled model."""
    from benchmarks.bench_infer import first_tile_input, project_predictor

    image = first_tile_input()
    eager = project_predictor()
    n_windows = len(eager.windows(*image.shape[1:]))
    variants = {
        f"eager, batch {eager.batch_size} (default)": eager,
        f"eager, batch {n_windows}": project_predictor([f"infer.batch_size={n_windows}"]),
        f"torch.compile (inductor), batch {eager.batch_size}": project_predictor(),
    }
    compiled = list(variants.values())[-1]
    compiled.model.compile()
    progress("compiling the inference model (inductor)")
    compile_s = first_call_overhead(lambda: compiled(image), lambda: eager(image))
    fns = [functools.partial(predictor, image) for predictor in variants.values()]
    timings = dict(zip(variants, measure(fns, warmup=1, repeats=5, budget_s=40.0), strict=True))
    t_eager = next(iter(timings.values()))
    rows = [
        [name, f"{1 / t.median:.3f}", f"{1 / min(t.seconds):.3f}",
         f"{t_eager.median / t.median:.2f}x / {min(t_eager.seconds) / min(t.seconds):.2f}x",
         t.spread()]
        for name, t in timings.items()
    ]  # fmt: skip
    lines = [
        f"Full-tile inference ({image.shape[1]} x {image.shape[2]} tile, window {eager.window}, "
        f"overlap {eager.overlap}: {n_windows} windows), timed interleaved:",
        "",
        markdown_table(
            [
                "predictor",
                "tiles/s median",
                "tiles/s best",
                "vs default median / best",
                "s min-max",
            ],
            rows,
        ),
        "",
        f"Inference compile time {compile_s:.0f} s, i.e. "
        f"{compile_s / t_eager.median:.0f} eager tiles.",
    ]
    best = max(min(t_eager.seconds) / min(t.seconds) for t in timings.values())
    return lines, {"compile_s": compile_s, "best_speedup": best}


def run(steps: int = STEPS, candidates: bool = True, compile_model: bool = True) -> Section:
    # compile times as a fresh machine pays them: no inductor/AOTAutograd caches from earlier runs
    import torch._inductor.config

    torch._inductor.config.force_disable_caches = True
    section = Section(f"bench_profile: where a training step goes (base {BASE}, batch {BATCH})")
    lines, info = profile_section(steps)
    section.body = lines
    # the performance issue's targets (#17), ratios from this run; the AMX one is "2x the old
    # default or within 1.5x of the lower bound", of which only the bound is measurable in one run
    bound_ratio = info["step_s"] / info["bound_s"]
    section.targets = [
        Target("training step vs its lower bound (the AMX target)", bound_ratio, 1.5, False, "x", 1)
    ]
    if candidates:
        more, trained = candidates_section(info, compile_model)
        section.body += ["", *more]
        section.targets.append(
            Target("default path, share of bf16 matmul rate, fastest step (the avx512_bf16 target)",
                   trained["share"]["default"], 70.0, unit="%", digits=0)
        )  # fmt: skip
        if compile_model:
            more, inferred = inference_section()
            section.body += ["", *more]
            section.targets.append(
                Target("full-tile inference, fastest candidate vs default (fastest tile)",
                       inferred["best_speedup"], 1.5, unit="x")
            )  # fmt: skip
    return section


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--steps", type=int, default=STEPS, help="profiled steps (%(default)s)")
    parser.add_argument("--skip-candidates", action="store_true", help="part 1 only")
    parser.add_argument("--skip-compile", action="store_true", help="no torch.compile runs")
    args = parser.parse_args()
    run_standalone(lambda: run(args.steps, not args.skip_candidates, not args.skip_compile))
