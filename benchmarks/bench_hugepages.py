"""Proposal check: glibc malloc on transparent huge pages (GLIBC_TUNABLES=glibc.malloc.hugetlb=1).

glibc serves every allocation above 32 MiB (every activation of a full-tile pass, many of a training
step) with a fresh mmap and unmaps it on free, so each pass page-faults its tensors in again, 4 KiB
at a time. With the tunable, glibc asks for transparent huge pages (2 MiB faults); memory is still
returned on free. It must be in the environment when the process starts, so this benchmark runs
fresh processes with and without it, alternating, each timing the project's default sliding-window
prediction (as bench_infer) and default-path training step (as bench_train, base 32).

Not part of `make bench`: it measures an environment setting, not the project's code.
`python -m benchmarks.bench_hugepages`
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
from pathlib import Path

from benchmarks.bench_infer import first_tile_input, project_predictor
from benchmarks.bench_train import TrainingStep
from benchmarks.common import (
    Section,
    Target,
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

TUNABLE = "glibc.malloc.hugetlb=1"
ROUNDS = 3
TRAIN_BASE = 32
TARGET_SPEEDUP = 1.10  # worth adopting


def probe() -> dict:
    prepare_process()
    predictor, image = project_predictor(), first_tile_input()
    cfg = project_config("train")
    step = TrainingStep(cfg, TRAIN_BASE, *training_path(cfg))
    t_infer, t_train = measure([lambda: predictor(image), step], warmup=2, repeats=5, budget_s=40.0)
    return {
        "infer_s": t_infer.median,
        "train_s": t_train.median,
        "peak_mib": rss_mib()[1],
        "faults": resource.getrusage(resource.RUSAGE_SELF).ru_minflt,
        "runs": len(t_infer.seconds) + 2,
    }


def run_probe(hugetlb: bool) -> dict:
    env = dict(os.environ)
    others = [t for t in env.pop("GLIBC_TUNABLES", "").split(":") if t and "hugetlb" not in t]
    if hugetlb:
        others.append(TUNABLE)
    if others:
        env["GLIBC_TUNABLES"] = ":".join(others)
    return json_from_process("benchmarks.bench_hugepages", "--probe", env=env)


def run() -> Section:
    results: dict[bool, list[dict]] = {False: [], True: []}
    for i in range(ROUNDS):
        for hugetlb in (False, True):
            progress(f"round {i + 1}/{ROUNDS}: {'with' if hugetlb else 'without'} {TUNABLE}")
            results[hugetlb].append(run_probe(hugetlb))

    def median(hugetlb: bool, key: str) -> float:
        return statistics.median(r[key] for r in results[hugetlb])

    rows = [
        [
            f"GLIBC_TUNABLES={TUNABLE}" if hugetlb else "glibc default",
            median(hugetlb, "infer_s"),
            median(hugetlb, "train_s"),
            f"{median(hugetlb, 'peak_mib'):.0f}",
            f"{median(hugetlb, 'faults') / median(hugetlb, 'runs') / 1e3:.0f}k",
        ]
        for hugetlb in (False, True)
    ]
    infer_gain = median(False, "infer_s") / median(True, "infer_s")
    train_gain = median(False, "train_s") / median(True, "train_s")
    thp = Path("/sys/kernel/mm/transparent_hugepage/enabled")
    section = Section("bench_hugepages: glibc malloc on transparent huge pages (proposal)")
    section.body = [
        f"{ROUNDS} rounds of two fresh processes (without, with); medians over rounds of each "
        f"process's median. THP mode: {thp.read_text().strip() if thp.is_file() else 'unknown'}"
        " (the tunable needs `madvise` or `always`).",
        "",
        markdown_table(
            [
                "malloc",
                "sliding window s/tile",
                f"train step s (base {TRAIN_BASE})",
                "peak RSS MiB",
                "page faults per timed call",
            ],
            rows,
        ),
    ]
    section.targets += [
        Target("hugetlb speed-up, sliding-window tile", infer_gain, TARGET_SPEEDUP, unit="x"),
        Target("hugetlb speed-up, training step", train_gain, TARGET_SPEEDUP, unit="x"),
    ]
    return section


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--probe", action="store_true", help=argparse.SUPPRESS)
    if parser.parse_args().probe:
        print(json.dumps(probe()))
    else:
        run_standalone(run)
