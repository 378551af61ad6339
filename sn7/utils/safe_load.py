"""`torch.load` that runs nothing: weights_only=True, and a one-line reason when it refuses.

A pickle can call any function as it loads, so a checkpoint from someone else is opened only as
tensors and plain containers. Every place sn7 opens a checkpoint (evaluate, predict, training
resume via sn7.lit.checkpoint_io) goes through `load_weights_only`.
"""

from __future__ import annotations

import pickle
import re
from pathlib import Path
from typing import Any

import torch

from sn7.errors import CheckpointError

CONVERT = "python -m sn7.convert {path} NEW.ckpt --trust"
# What the pickle of an older sn7 checkpoint may name besides tensors: OmegaConf containers (or
# Lightning's AttributeDict) saved as hyperparameters and the plain types inside them. This only
# picks the message; such a file is never unpickled here.
_OLD_FORMAT_MODULES = ("omegaconf.",)
_OLD_FORMAT_GLOBALS = frozenset(
    {
        "typing.Any",
        "builtins.dict",
        "builtins.list",
        "builtins.tuple",
        "builtins.set",
        "builtins.int",
        "builtins.float",
        "builtins.str",
        "builtins.bool",
        "collections.defaultdict",
        "collections.OrderedDict",
        "pathlib.PosixPath",
        "pathlib.WindowsPath",
        "pytorch_lightning.utilities.parsing.AttributeDict",
        "lightning_fabric.utilities.data.AttributeDict",
    }
)


def first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _pickled_globals(path: Path, exc: BaseException) -> list[str]:
    """The functions/classes the file's pickle names, read without running it."""
    try:
        return list(torch.serialization.get_unsafe_globals_in_checkpoint(path))
    except Exception:  # not a zip checkpoint (legacy format): fall back on torch's message
        return re.findall(r"GLOBAL ([\w.]+)", str(exc))


def refused_pickle_error(path: Path, exc: BaseException) -> CheckpointError:
    """The CheckpointError for a file torch.load(weights_only=True) refused with `exc`."""
    names = _pickled_globals(path, exc)
    if not names:
        reason = re.search(r"(Unsupported [^\n]*)", str(exc))
        return CheckpointError(
            f"not a readable PyTorch checkpoint: {reason[1] if reason else first_line(exc)}", path
        )
    ordered = sorted(names, key=lambda n: n.startswith("builtins."))  # the telling ones first
    shown = ", ".join(ordered[:3]) + (", ..." if len(ordered) > 3 else "")
    if all(n.startswith(_OLD_FORMAT_MODULES) or n in _OLD_FORMAT_GLOBALS for n in names):
        return CheckpointError(
            f"written by an older sn7 (its pickle holds {shown}), which only loads by running "
            f"the pickle; if you trust its source, convert it once: {CONVERT.format(path=path)}",
            path,
        )
    return CheckpointError(
        f"refused: loading it would call {shown}; a checkpoint holds only tensors and plain "
        "values, so this file was not written by sn7 (or was altered)",
        path,
    )


def load_weights_only(path: str | Path, map_location: Any = "cpu") -> Any:
    """torch.load(path, weights_only=True); CheckpointError (one line, naming the file) if the
    file is unreadable or its pickle asks for anything beyond tensors and plain values."""
    path = Path(path)
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as exc:
        raise refused_pickle_error(path, exc) from exc
    except FileNotFoundError as exc:
        raise CheckpointError("checkpoint not found", path) from exc
    except Exception as exc:  # torch.load raises many types for a bad file; all mean "unreadable"
        raise CheckpointError(
            f"not a readable PyTorch checkpoint (truncated?): {first_line(exc)}", path
        ) from exc
