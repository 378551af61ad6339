"""python -m sn7.release CKPT OUT.ckpt [--float16]: a checkpoint small enough to commit and share.

A training checkpoint carries the optimizer's moments, the loops and the callbacks' state (23 MB for
cpu_best's 1.9 M weights); predict and evaluate need only the weights and the model / input
configs. This keeps those (float16 weights with --float16: half again), records where they came
from (`sn7_release`: source file, its sha256, step), and checks that the result opens with the safe
loader and gives the source's probabilities. Thresholds are not carried over: they belong to a
file's exact weights, so run evaluate on the release (it chooses them on the selection split).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

from sn7.errors import CheckpointError, SN7Error
from sn7.evaluation.thresholds import file_sha256
from sn7.inference.checkpoint import FORMAT_KEY, load_model, read_checkpoint
from sn7.utils.atomic import atomic_path

KEEP = ("model", "input_spec", "channels_last", "run_config")  # hyper_parameters predict reads


def release(src: str | Path, dst: str | Path, float16: bool = False) -> dict:
    """Write the slim checkpoint; returns what was checked (sizes, largest probability change)."""
    src, dst = Path(src), Path(dst)
    if dst.resolve() == src.resolve():
        raise CheckpointError("OUT must differ from CKPT", dst)
    ckpt = read_checkpoint(src)
    source = load_model(src)  # it must rebuild before it is released
    state = {
        k: v.half() if float16 and v.is_floating_point() else v
        for k, v in ckpt["state_dict"].items()
    }
    hparams = ckpt.get("hyper_parameters", {})
    slim = {
        FORMAT_KEY: ckpt[FORMAT_KEY],
        "epoch": ckpt.get("epoch"),
        "global_step": ckpt.get("global_step"),
        "state_dict": state,
        "hyper_parameters": {k: hparams[k] for k in KEEP if k in hparams},
        "sn7_release": {
            "source": src.name,
            "source_sha256": file_sha256(src),
            "global_step": ckpt.get("global_step"),
            "weights": "float16" if float16 else "float32",
            "created": time.strftime("%Y-%m-%d %H:%M:%S"),
        },
    }
    dst.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(dst) as tmp:
        torch.save(slim, tmp)
    try:
        delta = _max_change(source, load_model(dst))
    except BaseException:
        dst.unlink(missing_ok=True)  # never leave an unchecked release behind
        raise
    if delta > (2e-2 if float16 else 1e-6):  # float16 rounds weights to ~3 digits
        dst.unlink()
        raise CheckpointError(f"released weights change probabilities by {delta:.2e}", dst)
    return {"bytes_in": src.stat().st_size, "bytes_out": dst.stat().st_size, "max_dp": float(delta)}


def _max_change(a, b) -> float:
    """Largest |delta p| between two loaded models on a seeded random input."""
    x = torch.randn(2, a.spec.in_channels, 64, 64, generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        return float((torch.sigmoid(a.model(x)) - torch.sigmoid(b.model(x))).abs().max())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("ckpt", type=Path)
    parser.add_argument("out", type=Path)
    parser.add_argument("--float16", action="store_true", help="store the weights as float16")
    args = parser.parse_args(argv)
    try:
        r = release(args.ckpt, args.out, args.float16)
    except SN7Error as exc:
        print(f"sn7 error: {exc}", file=sys.stderr)
        return 1
    print(f"wrote {args.out}: {r['bytes_in'] / 2**20:.1f} MB -> {r['bytes_out'] / 2**20:.1f} MB, "
          f"probabilities within {r['max_dp']:.1e} of the source; now run "
          f"`python evaluate.py ckpt_path={args.out}` to choose its thresholds")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
