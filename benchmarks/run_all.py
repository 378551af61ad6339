"""`make bench`: every benchmark one after another (never two at once), then results/benchmarks.md.

Each section is printed as soon as its benchmark ends; the file gets the machine header, every
section and one summary of all PASS/MISS lines.

`python -m benchmarks.run_all [--out FILE] [--only train,infer,...]`
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from benchmarks import (
    bench_data,
    bench_eval_memory,
    bench_infer,
    bench_prepare,
    bench_profile,
    bench_scale,
    bench_scene,
    bench_separation,
    bench_train,
)
from benchmarks.common import RESULTS, machine_header, prepare_process, run_section

BENCHMARKS = {
    "train": bench_train,
    "profile": bench_profile,
    "infer": bench_infer,
    "data": bench_data,
    "prepare": bench_prepare,
    "scale": bench_scale,
    "eval_memory": bench_eval_memory,
    "separation": bench_separation,
    "scene": bench_scene,
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--out", type=Path, default=RESULTS, help="markdown report (%(default)s)")
    parser.add_argument("--only", help=f"comma-separated subset of {','.join(BENCHMARKS)}")
    args = parser.parse_args()
    names = args.only.split(",") if args.only else list(BENCHMARKS)
    unknown = sorted(set(names) - set(BENCHMARKS))
    if unknown:
        parser.error(f"unknown benchmark(s) {unknown}; choose from {list(BENCHMARKS)}")

    prepare_process()
    header = machine_header()
    print(header, end="\n\n", flush=True)
    start = time.perf_counter()
    sections = []
    for name in names:
        section = run_section(BENCHMARKS[name].run)
        print(section.render(), end="\n\n", flush=True)
        sections.append(section)
    total = time.perf_counter() - start

    summary = [t.line() for s in sections for t in s.targets]
    report = "\n\n".join(
        [
            header,
            *(s.render() for s in sections),
            "## Summary\n\n```\n" + "\n".join(summary) + f"\n```\n\n_(all: {total:.0f} s)_\n",
        ]
    )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(report)
    print("## Summary\n\n" + "\n".join(summary) + f"\n\n{total:.0f} s; written to {args.out}")


if __name__ == "__main__":
    main()
