"""python -m sn7.convert OLD.ckpt NEW.ckpt --trust: re-save an older checkpoint as plain data.

Older checkpoints pickled OmegaConf objects in their hyperparameters, so they only open with
`torch.load(weights_only=False)`, which runs whatever the pickle says. This tool does that once,
on the user's word (`--trust`), and writes the same content as tensors and plain containers,
which evaluate/predict/resume then open with weights_only=True.
"""

from __future__ import annotations

import argparse
import sys
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from enum import Enum
from pathlib import Path, PurePath
from typing import Any

import numpy as np
import torch
from omegaconf import DictConfig, ListConfig, OmegaConf

from sn7.errors import CheckpointError, SN7Error
from sn7.utils.atomic import atomic_path

_SCALARS = (str, int, float, bool, type(None), torch.Tensor, torch.dtype, torch.device, torch.Size)


def plain(value: Any, where: str = "checkpoint") -> Any:
    """`value` rebuilt from types torch.load(weights_only=True) accepts; CheckpointError on a
    type with no plain equivalent (`where` names it)."""
    if isinstance(value, DictConfig | ListConfig):
        return OmegaConf.to_container(value, resolve=True)
    if isinstance(value, _SCALARS):
        return value
    if isinstance(value, Mapping):
        kind = OrderedDict if isinstance(value, OrderedDict) else dict
        return kind((k, plain(v, f"{where}[{k!r}]")) for k, v in value.items())
    if isinstance(value, list | tuple | set):
        items = [plain(v, f"{where}[{i}]") for i, v in enumerate(value)]
        return tuple(items) if isinstance(value, tuple) else items
    if isinstance(value, PurePath):
        return str(value)
    if isinstance(value, Enum):
        return plain(value.value, where)
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return torch.from_numpy(value)
    raise CheckpointError(f"{where} is a {type(value).__qualname__}, which has no plain form")


def convert(src: str | Path, dst: str | Path) -> Path:
    """Load `src` running its pickle (trusted by the caller), save it as plain data to `dst`."""
    src, dst = Path(src), Path(dst)
    if not src.is_file():
        raise CheckpointError("checkpoint not found", src)
    if dst.resolve() == src.resolve():
        raise CheckpointError("NEW must differ from OLD: keep the original until NEW works", dst)
    try:
        ckpt = torch.load(src, map_location="cpu", weights_only=False)
    except Exception as exc:
        raise CheckpointError(f"cannot load: {str(exc).strip().splitlines()[0]}", src) from exc
    converted = plain(ckpt)
    with atomic_path(dst) as tmp:
        torch.save(converted, tmp)
    torch.load(dst, map_location="cpu", weights_only=True)  # the point of the exercise
    return dst


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m sn7.convert", description=__doc__.split("\n")[0]
    )
    parser.add_argument("old", type=Path, help="checkpoint that needs weights_only=False")
    parser.add_argument("new", type=Path, help="where to write the plain-data checkpoint")
    parser.add_argument(
        "--trust", action="store_true", help="run OLD's pickle (only for files you trust)"
    )
    args = parser.parse_args(argv)
    warning = (
        f"loading {args.old} runs its pickle: any code inside the file executes. "
        "Convert only checkpoints from a source you trust."
    )
    if not args.trust:
        print(f"sn7 error: {warning} Add --trust to go ahead.", file=sys.stderr)
        return 1
    print(f"sn7 convert: {warning}", file=sys.stderr, flush=True)
    try:
        out = convert(args.old, args.new)
    except SN7Error as exc:
        print(f"sn7 error: {exc}", file=sys.stderr)
        return 1
    print(f"wrote {out} (opens with weights_only=True)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
