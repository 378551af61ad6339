"""What every benchmark shares: config composition, interleaved timing, markdown, PASS/MISS lines.

Timing is interleaved (baseline, project, baseline, project, ...) so that load from other jobs on a
shared machine falls on both sides of a ratio alike; medians absorb the occasional slow repeat.

torch (and sn7.utils.hardware, which imports it) is imported inside the functions that need it:
bench_prepare times the mask cache in a process without torch, as `python prepare.py` runs it.
"""

from __future__ import annotations

import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from hydra import compose, initialize_config_dir
from omegaconf import DictConfig

import sn7  # noqa: F401  (registers the OmegaConf resolvers the configs use)
from sn7.utils.config import available_cores

REPO = Path(__file__).resolve().parents[1]
CONF_DIR = REPO / "conf"
RESULTS = REPO / "results" / "benchmarks.md"
SHARED_SAMPLE = REPO.parent / "shared" / "sn7_sample"
SHIPPED_SAMPLE = REPO / "data" / "sample"
RELEVANT_FLAGS = ("avx2", "fma", "avx512f", "avx512_bf16", "amx_tile", "amx_bf16")


def project_config(name: str, overrides: Sequence[str] = ()) -> DictConfig:
    """`conf/<name>.yaml` composed as the CLI would (so defaults are the project's own)."""
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return compose(name, overrides=list(overrides))


def sample_root() -> Path:
    """The real SN7 excerpt: ../shared/sn7_sample (4 months per AOI), else data/sample."""
    return SHARED_SAMPLE if (SHARED_SAMPLE / "train").is_dir() else SHIPPED_SAMPLE


def auto_path() -> tuple[str, bool]:
    """(precision, channels_last) that `precision=auto`, `channels_last=auto` give on this CPU."""
    from sn7.utils.hardware import resolve_channels_last, resolve_precision

    precision = resolve_precision("auto", "cpu")
    return precision, resolve_channels_last("auto")


def training_path(train_cfg: DictConfig) -> tuple[str, bool]:
    """(precision, channels_last) that sn7.train resolves from a composed train config."""
    from sn7.utils.hardware import resolve_channels_last, resolve_precision

    precision = resolve_precision(train_cfg.trainer.precision, train_cfg.trainer.accelerator)
    return precision, resolve_channels_last(train_cfg.channels_last)


# every (precision, channels_last) the project could run on a CPU; PLAIN is every baseline
PATHS = (("32-true", False), ("32-true", True), ("bf16-mixed", False), ("bf16-mixed", True))
PLAIN = PATHS[0]


def candidate_paths() -> list[tuple[str, bool]]:
    """Paths worth timing here: bf16 only with native bf16 (emulated, it is several times slower
    than fp32: no one would pick it, and it would blow the time budget)."""
    from sn7.utils.hardware import has_native_bf16

    return [p for p in PATHS if has_native_bf16() or not p[0].startswith("bf16")]


def describe_path(precision: str, channels_last: bool) -> str:
    return f"{precision}, {'channels_last' if channels_last else 'NCHW'}"


# --- timing ---------------------------------------------------------------------------------


@dataclass
class Timing:
    seconds: list[float] = field(default_factory=list)

    @property
    def median(self) -> float:
        return statistics.median(self.seconds)

    def spread(self, scale: float = 1.0) -> str:
        """min-max of the repeats (times `scale`, e.g. 1e3 for ms): how noisy the machine was."""
        return f"{scale * min(self.seconds):.3g}-{scale * max(self.seconds):.3g}"


def json_from_process(module: str, *args: str, env: dict | None = None) -> dict:
    """Run `python -m <module> <args>` in a fresh process; its last stdout line is a JSON result.

    A fresh process measures what a separate job would see (peak memory, imports, allocator)."""
    out = subprocess.run(
        [sys.executable, "-m", module, *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def rss_mib() -> tuple[float, float]:
    """(current, peak) resident set of this process, MiB.

    /proc/self/status VmHWM belongs to this process image alone; getrusage's ru_maxrss would also
    carry the parent's high-water mark across fork+exec (Linux keeps it in the signal struct).
    """
    status = Path("/proc/self/status")
    if status.is_file():
        fields = dict(line.split(":", 1) for line in status.read_text().splitlines())
        return int(fields["VmRSS"].split()[0]) / 1024, int(fields["VmHWM"].split()[0]) / 1024
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # bytes on macOS
    return peak / 1024**2, peak / 1024**2


def timed(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def measure(
    fns: Sequence[Callable[[], object]],
    *,
    warmup: int = 2,
    repeats: int = 7,
    min_repeats: int = 3,
    budget_s: float = 60.0,
) -> list[Timing]:
    """Time each of `fns`, interleaved round by round, after `warmup` untimed rounds.

    Stops after `repeats` rounds, or earlier once `min_repeats` rounds are done and `budget_s`
    (timed seconds, all fns together) is spent: slow machines get fewer repeats, not a longer run.
    """
    for _ in range(warmup):
        for fn in fns:
            fn()
    timings = [Timing() for _ in fns]
    spent = 0.0
    for done in range(1, repeats + 1):
        for fn, timing in zip(fns, timings, strict=True):
            timing.seconds.append(timed(fn))
            spent += timing.seconds[-1]
        if done >= min_repeats and spent > budget_s:
            break
    return timings


# --- reporting ------------------------------------------------------------------------------


def markdown_table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    def cell(value: object) -> str:
        if isinstance(value, float):
            return f"{value:.3g}" if abs(value) < 100 else f"{value:.0f}"
        return str(value)

    lines = [
        "| " + " | ".join(headers) + " |",
        "|" + "|".join("---" if i == 0 else "---:" for i in range(len(headers))) + "|",
    ]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


@dataclass
class Target:
    """One target of the issue: `value` compared with `limit` (>= when higher is better)."""

    name: str
    value: float
    limit: float
    higher_is_better: bool = True
    unit: str = ""
    digits: int = 2

    @property
    def passed(self) -> bool:
        return self.value >= self.limit if self.higher_is_better else self.value <= self.limit

    def line(self) -> str:
        op = ">=" if self.higher_is_better else "<="
        digits = self.digits
        while (
            self.value != self.limit
            and f"{self.value:.{digits}f}" == f"{self.limit:.{digits}f}"
            and digits < 6
        ):
            digits += 1  # 2.996 must not print as a MISS of "3.00 (target >= 3.00)"
        value, limit = (f"{v:.{digits}f}{self.unit}" for v in (self.value, self.limit))
        verdict = "PASS" if self.passed else "MISS"
        return f"{verdict} {self.name}: {value} (target {op} {limit})"


TARGET_VS_FASTEST = 0.95  # the default path is the fastest candidate, within timing noise


def compare_paths(
    what: str,
    timings: dict[tuple[str, bool], Timing],
    default: tuple[str, bool],
    items: float,
    unit: str,
) -> tuple[list[str], Target]:
    """Markdown lines ranking every timed path (`items` per call, e.g. 8 images, as `unit`), and
    the target that the project's default is the fastest of them."""
    from sn7.utils.hardware import has_native_bf16

    plain = timings[PLAIN]
    rows = [
        [
            describe_path(*path) + (" (default)" if path == default else ""),
            f"{items / t.median:.2f}",
            f"{plain.median / t.median:.2f}x",
            t.spread(),
        ]
        for path, t in timings.items()
    ]
    fastest = min(timings, key=lambda path: timings[path].median)
    note = "" if has_native_bf16() else "; bf16 left out: no native bf16, emulated it is slow"
    lines = [
        f"Every candidate path, {what} (timed interleaved{note}):",
        "",
        markdown_table(["path", unit, "vs plain fp32", "s min-max"], rows),
    ]
    target = Target(
        f"{what}: default path vs the fastest candidate ({describe_path(*fastest)}), speed ratio",
        timings[fastest].median / timings[default].median,
        TARGET_VS_FASTEST,
    )
    return lines, target


@dataclass
class Section:
    """A benchmark's result: markdown body (tables, method notes) and its targets."""

    title: str
    body: list[str] = field(default_factory=list)
    targets: list[Target] = field(default_factory=list)
    seconds: float = 0.0
    load_at_end: float = 0.0

    def render(self) -> str:
        parts = [f"## {self.title}", "", *self.body, ""]
        parts += ["```", *(t.line() for t in self.targets), "```", ""]
        parts.append(f"_({self.seconds:.0f} s; load average at the end {self.load_at_end:.2f})_")
        return "\n".join(parts)


def run_section(run: Callable[[], Section]) -> Section:
    """Run one benchmark; record its duration and the load it ended under."""
    start = time.perf_counter()
    section = run()
    section.seconds = time.perf_counter() - start
    section.load_at_end = os.getloadavg()[0]
    return section


def machine_header() -> str:
    import torch

    from sn7.utils.hardware import cpu_flags, cpu_model, has_native_bf16

    flags = cpu_flags()
    precision, channels_last = auto_path()
    load1 = os.getloadavg()[0]
    cores = available_cores()
    lines = [
        "# sn7 benchmarks",
        "",
        f"- date: {time.strftime('%Y-%m-%d %H:%M:%S')}",
        f"- CPU: {cpu_model()} ({cores} cores available, {platform.machine()})",
        "- flags: " + ", ".join(f"{f} {'yes' if f in flags else 'no'}" for f in RELEVANT_FLAGS),
        f"- native bf16: {'yes' if has_native_bf16() else 'no'}; "
        f"ATen CPU capability: {torch.backends.cpu.get_cpu_capability()}",
        f"- torch {torch.__version__}, python {platform.python_version()}; "
        f"torch threads {torch.get_num_threads()} "
        f"(OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')})",
        f"- project default path (precision=auto, channels_last=auto): "
        f"{describe_path(precision, channels_last)}",
        f"- load average at start: {load1:.2f} on {cores} cores"
        + (" (the machine was busy: absolute timings are noisy)" if load1 > 0.5 else ""),
    ]
    return "\n".join(lines)


def prepare_process() -> None:
    """Threads as the project's stages set them: one torch thread per available core."""
    from sn7.utils.hardware import configure_threads

    configure_threads()


def run_standalone(run: Callable[[], Section]) -> Section:
    """`python -m benchmarks.bench_x`: machine header, then the section, to stdout."""
    prepare_process()
    print(machine_header(), end="\n\n", flush=True)
    section = run_section(run)
    print(section.render(), flush=True)
    return section


def progress(message: str) -> None:
    """A line on stderr, so long runs show life without cluttering the report on stdout."""
    print(f"  [{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


# --- checkpoints ----------------------------------------------------------------------------


def project_input_spec() -> dict:
    """conf/data/sn7.yaml's input spec, as train.py stores it in a checkpoint."""
    data = project_config("train", []).data
    return {"bands": list(data.bands), "mean": list(data.mean), "std": list(data.std),
            "alpha_band": data.alpha_band, "crop_size": data.crop_size}  # fmt: skip


def save_checkpoint(path: Path, model, model_config: dict, input_spec: dict) -> Path:
    """An sn7 checkpoint of `model` (what evaluate.py / predict.py open) without training."""
    import torch

    from sn7.lit.module import CHECKPOINT_FORMAT

    torch.save(
        {
            "sn7_format": CHECKPOINT_FORMAT,
            "hyper_parameters": {"model": model_config, "input_spec": input_spec, "run_config": {}},
            "state_dict": {f"model.{k}": v for k, v in model.state_dict().items()},
        },
        path,
    )
    return path
