"""Checkpoint -> plain `nn.Module` + input spec, without importing the LightningModule.

sn7 checkpoints carry the model config (`_target_` + arguments) and the input spec in their
hyperparameters, so evaluation and prediction need nothing else from the user.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from hydra.errors import InstantiationException
from hydra.utils import instantiate
from torch import nn

from sn7.data.input_spec import InputSpec
from sn7.errors import CheckpointError, SN7Error

FORMAT_KEY = "sn7_format"
MODEL_PREFIX = "model."


@dataclass
class LoadedModel:
    model: nn.Module  # in eval mode, on CPU
    spec: InputSpec
    model_config: dict
    run_config: dict  # the full training config (data root, split, ...), {} if absent
    path: Path

    @property
    def threshold_file(self) -> Path:
        """Where evaluate stores the best threshold for this checkpoint (read by predict)."""
        return self.path.with_name(self.path.name + ".eval.json")


def read_checkpoint(path: str | Path) -> dict:
    path = Path(path)
    if path.is_dir():
        raise CheckpointError("is a folder; give the .ckpt file (e.g. checkpoints/best.ckpt)", path)
    if not path.is_file():
        raise CheckpointError("checkpoint not found", path)
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as exc:  # torch.load raises many types for a bad file; all mean "unreadable"
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CheckpointError(
            f"not a readable PyTorch checkpoint (truncated?): {first}", path
        ) from exc
    if not isinstance(ckpt, dict) or FORMAT_KEY not in ckpt:
        raise CheckpointError(
            "not an sn7 checkpoint (no model config inside); use a .ckpt written by train.py", path
        )
    return ckpt


def load_model(path: str | Path) -> LoadedModel:
    """Rebuild the trained model from its checkpoint alone."""
    path = Path(path)
    ckpt = read_checkpoint(path)
    hparams = ckpt.get("hyper_parameters", {})
    try:
        model_config = dict(hparams["model"])
        spec = InputSpec.from_dict(hparams["input_spec"])
    except (KeyError, TypeError) as exc:
        raise CheckpointError(
            f"sn7 checkpoint lacks {exc}; was it written by train.py?", path
        ) from exc
    try:
        model = instantiate(model_config)
    except (InstantiationException, SN7Error) as exc:
        raise CheckpointError(
            f"cannot rebuild model {model_config.get('_target_')}: {exc}", path
        ) from exc
    state = {
        k[len(MODEL_PREFIX) :]: v
        for k, v in ckpt.get("state_dict", {}).items()
        if k.startswith(MODEL_PREFIX)
    }
    try:
        model.load_state_dict(state)
    except RuntimeError as exc:
        head = str(exc).strip().splitlines()[0]
        raise CheckpointError(f"weights do not fit the model {model_config}: {head}", path) from exc
    model.eval()
    return LoadedModel(model, spec, model_config, dict(hparams.get("run_config") or {}), path)
