"""Training-step throughput: plain fp32 NCHW vs the project's default path, TinyUNet base 16/32/64.

One step = forward + BCE+Dice loss (conf/loss/bce_dice.yaml) + backward + AdamW step
(conf/optimizer/adamw.yaml), batch 8 x 256^2, the way the Trainer runs SegmentationTask: forward
and loss inside Lightning's own precision plugin, the input made channels_last when the model is.
The default path is `trainer.precision=auto` + `channels_last=auto` resolved by sn7.utils.hardware.

FLOPs per step come from torch.utils.flop_counter (convolutions and their backward; the AdamW
update is not counted) and are set against the best matmul rate measured in the same run: bf16
where the CPU has native bf16, else fp32. Peak RSS of a base-64 step is measured in a fresh
subprocess (`--rss-probe 64`), so it is that step's high-water mark and nothing else's.

`python -m benchmarks.bench_train`
"""

from __future__ import annotations

import argparse
import contextlib
import json

import torch
from hydra.utils import instantiate
from omegaconf import DictConfig
from pytorch_lightning.plugins.precision import MixedPrecision
from torch.utils.flop_counter import FlopCounterMode

from benchmarks.common import (
    PLAIN,
    Section,
    Target,
    Timing,
    candidate_paths,
    compare_paths,
    describe_path,
    json_from_process,
    markdown_table,
    measure,
    prepare_process,
    progress,
    project_config,
    rss_mib,
    run_standalone,
    training_path,
)
from sn7.constants import IGNORE
from sn7.utils.hardware import has_native_bf16

BATCH, SIZE = 8, 256
# base -> (warm-up rounds, max timed rounds, timed-seconds budget); base 64 fp32 takes ~12 s/step
# on a 2-core AVX-512 machine, so it gets the fewest rounds.
BASES = {16: (2, 9, 30.0), 32: (2, 7, 60.0), 64: (1, 5, 60.0)}
TARGET_BASE = 32
TARGET_SPEEDUP = 3.0  # where native bf16 exists
TARGET_MATMUL_SHARE = 70.0  # % of the best matmul rate, at base 32
RSS_BASE = 64
MATMUL_SIZES = (2048, 4096)


def precision_context(precision: str) -> contextlib.AbstractContextManager:
    """What the Trainer wraps `training_step` in for this precision on CPU."""
    if precision in ("32-true", "32"):
        return contextlib.nullcontext()
    if precision in ("bf16-mixed", "16-mixed"):
        return MixedPrecision(precision, device="cpu").forward_context()
    raise ValueError(f"bench_train has no step for precision {precision!r}")


class TrainingStep:
    """One optimisation step of TinyUNet on a fixed random batch; same seed, same start weights."""

    def __init__(
        self,
        cfg: DictConfig,
        base: int,
        precision: str,
        channels_last: bool,
        batch: int = BATCH,
        seed: int = 0,
    ):
        torch.manual_seed(seed)
        model = instantiate(cfg.model, base=base).train()
        if channels_last:
            model = model.to(memory_format=torch.channels_last)
        self.model, self.precision, self.channels_last = model, precision, channels_last
        self.loss_fn = instantiate(cfg.loss)
        self.optimizer = instantiate(cfg.optimizer)(params=model.parameters())
        gen = torch.Generator().manual_seed(seed)
        in_ch = model.encoders[0][0].in_channels
        self.image = torch.randn(batch, in_ch, SIZE, SIZE, generator=gen)
        self.mask = (torch.rand(batch, SIZE, SIZE, generator=gen) < 0.05).to(torch.uint8)
        self.mask[:, :, -SIZE // 8 :] = IGNORE  # a no-data strip, as at tile edges

    def __call__(self, batch: dict | None = None) -> float:
        """One step on `batch` (a DataLoader batch: "image", "mask"), else on the fixed batch."""
        x, mask = (self.image, self.mask) if batch is None else (batch["image"], batch["mask"])
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with precision_context(self.precision):
            loss = self.loss_fn(self.model(x)[:, 0], mask.long())
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        return loss.detach().item()


def count_flops(cfg: DictConfig, base: int, path: tuple[str, bool]) -> float:
    """FLOPs of one step at batch BATCH, counted on a batch of 1 (convolution FLOPs are exactly
    linear in the batch; this spares a slow machine most of a base-64 step)."""
    with FlopCounterMode(display=False) as counter:
        TrainingStep(cfg, base, *path, batch=1)()
    return float(counter.get_total_flops()) * BATCH


class Matmul:
    """`reps` square n x n matmuls of one dtype, as one timed call (a few tenths of a second)."""

    def __init__(self, dtype: torch.dtype, n: int, reps: int = 1):
        self.a, self.b = torch.randn(n, n).to(dtype), torch.randn(n, n).to(dtype)
        self.out = torch.empty(n, n, dtype=dtype)
        self.flop, self.reps = 2 * n**3 * reps, reps

    def __call__(self) -> None:
        for _ in range(self.reps):
            torch.mm(self.a, self.b, out=self.out)

    def gflops(self, timing: Timing) -> float:
        return self.flop / timing.median / 1e9


def matmul_dtypes() -> list[torch.dtype]:
    """fp32 always; bf16 only where native (emulated it is slow and no one would use it)."""
    return [torch.float32] + ([torch.bfloat16] if has_native_bf16() else [])


def matmul_rates() -> dict[tuple[torch.dtype, int], float]:
    """GFLOP/s of one square matmul per dtype and size, measured alone."""
    rates = {}
    for dtype in matmul_dtypes():
        for n in MATMUL_SIZES:
            mm = Matmul(dtype, n)
            [timing] = measure([mm], repeats=9, budget_s=8.0)
            rates[(dtype, n)] = mm.gflops(timing)
    return rates


def reference_matmuls(rates: dict[tuple[torch.dtype, int], float]) -> dict[torch.dtype, Matmul]:
    """Per dtype, its fastest size, repeated to ~0.3 s: timed in the same rounds as the steps, so
    a step and the rate it is compared with share the machine's load."""
    out = {}
    for dtype in matmul_dtypes():
        n = max(MATMUL_SIZES, key=lambda size: rates[(dtype, size)])
        reps = max(1, round(0.3 / (2 * n**3 / 1e9 / rates[(dtype, n)])))
        out[dtype] = Matmul(dtype, n, reps)
    return out


def _name(dtype: torch.dtype) -> str:
    return {torch.float32: "fp32", torch.bfloat16: "bf16"}.get(dtype, str(dtype))


def rss_probe(base: int) -> dict:
    """Run in a fresh process: peak RSS of the default-path training step (2 steps)."""
    prepare_process()
    cfg = project_config("train")
    step = TrainingStep(cfg, base, *training_path(cfg))
    before, _ = rss_mib()
    step()
    step()
    _, peak = rss_mib()
    return {"base": base, "before_mib": before, "peak_mib": peak}


def measure_rss(base: int) -> dict:
    return json_from_process("benchmarks.bench_train", "--rss-probe", str(base))


def run() -> Section:
    cfg = project_config("train")
    default = training_path(cfg)
    same_path = default == PLAIN
    progress("matmul reference rates")
    rates = matmul_rates()
    ref_dtype = torch.bfloat16 if has_native_bf16() else torch.float32
    matmuls = reference_matmuls(rates)
    alone = {dtype: max(r for (d, _), r in rates.items() if d == dtype) for dtype in matmuls}

    rows, results = [], {}
    for base, (warmup, repeats, budget) in BASES.items():
        # at the target width every candidate path runs too: the default must be the fastest
        paths = list(
            dict.fromkeys([PLAIN, default, *(candidate_paths() if base == TARGET_BASE else [])])
        )
        progress(f"base {base}: " + " vs ".join(describe_path(*p) for p in paths))
        steps = {path: TrainingStep(cfg, base, *path) for path in paths}
        flops = count_flops(cfg, base, default)
        times = measure(
            [*steps.values(), *matmuls.values()],
            warmup=warmup,
            repeats=repeats,
            budget_s=budget * len(paths) / 2,
        )
        timings = dict(zip(paths, times[: len(paths)], strict=True))
        # "best measured" rate: the higher of the matmul alone and in these rounds
        best = {
            dtype: max(alone[dtype], mm.gflops(t))
            for (dtype, mm), t in zip(matmuls.items(), times[len(paths) :], strict=True)
        }
        t_plain, t_project = timings[PLAIN], timings[default]
        if base == TARGET_BASE:
            path_lines, fastest_target = compare_paths(
                f"training, base {base}", timings, default, BATCH, "img/s"
            )
        plain_gflops = flops / t_plain.median / 1e9
        project_gflops = flops / t_project.median / 1e9
        ratio = t_plain.median / t_project.median
        results[base] = (ratio, 100 * project_gflops / best[ref_dtype])
        rows.append(
            [
                base,
                f"{flops / 1e9:.0f}",
                f"{BATCH / t_plain.median:.2f}",
                f"{BATCH / t_project.median:.2f}",
                f"{ratio:.2f}x",
                f"{plain_gflops:.0f} ({100 * plain_gflops / best[torch.float32]:.0f}%)",
                f"{project_gflops:.0f} ({results[base][1]:.0f}%)",
                f"{best[torch.float32]:.0f} / {best[ref_dtype]:.0f}",
                f"{t_plain.spread()} / {t_project.spread()}",
                len(t_project.seconds),
            ]
        )
    progress(f"peak RSS of a base-{RSS_BASE} step (subprocess)")
    rss = measure_rss(RSS_BASE)

    section = Section("bench_train: training-step throughput (batch 8 x 256^2)")
    section.body = [
        f"Plain = fp32, NCHW. Default = {describe_path(*default)} "
        "(precision=auto, channels_last=auto)."
        + (" On this CPU they are the same path, measured once." if same_path else ""),
        "Steps are timed interleaved (plain, default, plain, ...); medians of the timed steps.",
        "",
        markdown_table(
            [
                "base",
                "GFLOP/step",
                "plain img/s",
                "default img/s",
                "speed-up",
                "plain GFLOP/s (% fp32 matmul)",
                f"default GFLOP/s (% {_name(ref_dtype)} matmul)",
                f"matmul GFLOP/s fp32 / {_name(ref_dtype)}",
                "step s min-max plain / default",
                "steps",
            ],
            rows,
        ),
        "",
        *path_lines,
        "",
        "Matmul alone at the start: "
        + ", ".join(f"{_name(d)} {n}^2 {rate:.0f} GFLOP/s" for (d, n), rate in rates.items())
        + ". Each base's matmul rate (fp32 for plain; "
        + f"{_name(ref_dtype)} for the default) is the higher of that and the same matmul timed "
        "in the rounds of that base's steps, so a loaded machine cannot inflate a share.",
        "",
        f"Peak RSS of a base-{RSS_BASE} training step ({describe_path(*default)}, fresh process, "
        f"2 steps): {rss['peak_mib']:.0f} MiB (the process held {rss['before_mib']:.0f} MiB "
        "before the first step: torch, model, optimizer, batch).",
    ]
    ratio, share = results[TARGET_BASE]
    if has_native_bf16():
        section.targets.append(
            Target(f"base {TARGET_BASE} default vs plain fp32", ratio, TARGET_SPEEDUP, unit="x")
        )
    section.targets += [
        Target(
            f"base {TARGET_BASE} default path, share of best {_name(ref_dtype)} matmul rate",
            share,
            TARGET_MATMUL_SHARE,
            unit="%",
            digits=0,
        ),
        fastest_target,
    ]
    return section


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--rss-probe", type=int, metavar="BASE", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.rss_probe:
        print(json.dumps(rss_probe(args.rss_probe)))
    else:
        run_standalone(run)
