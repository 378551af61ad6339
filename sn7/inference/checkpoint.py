"""Checkpoint -> plain `nn.Module` + input spec, without importing the LightningModule.

sn7 checkpoints carry the model config (`_target_` + arguments) and the input spec in their
hyperparameters, so evaluation and prediction need nothing else from the user.

A checkpoint may come from someone else, and a pickle can run code as it loads. So files are
opened with `torch.load(weights_only=True)` (tensors and plain containers only; sn7 saves nothing
else), and the model is built only from an allow-listed class (sn7.models.registry).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from omegaconf import DictConfig
from torch import nn

from sn7.data.input_spec import InputSpec
from sn7.errors import CheckpointError, ConfigError, SN7Error
from sn7.models.registry import ModelRefused, build_model
from sn7.utils.config import to_container
from sn7.utils.safe_load import first_line, load_weights_only

FORMAT_KEY = "sn7_format"
MODEL_PREFIX = "model."


@dataclass
class LoadedModel:
    model: nn.Module  # in eval mode, on CPU
    spec: InputSpec
    model_config: dict
    run_config: dict  # the full training config (data root, split, ...), {} if absent
    path: Path


def read_checkpoint(path: str | Path) -> dict:
    """The checkpoint dict, unpickled with weights_only=True: nothing in the file can run."""
    path = Path(path)
    if path.is_dir():
        raise CheckpointError("is a folder; give the .ckpt file (e.g. checkpoints/best.ckpt)", path)
    if not path.is_file():
        raise CheckpointError("checkpoint not found", path)
    ckpt = load_weights_only(path)
    if not isinstance(ckpt, dict) or FORMAT_KEY not in ckpt:
        raise CheckpointError(
            "not an sn7 checkpoint (no model config inside); use a .ckpt written by train.py", path
        )
    return ckpt


def load_model(path: str | Path, trusted_models: Iterable[str] = ()) -> LoadedModel:
    """Rebuild the trained model from its checkpoint alone.

    `trusted_models`: `_target_`s the user allows beyond sn7's own models (config key
    `trusted_models`)."""
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
        model = build_model(model_config, list(trusted_models or ()))
    except ModelRefused as exc:
        raise CheckpointError(str(exc), path) from exc
    except (ImportError, ValueError, TypeError, SN7Error) as exc:
        raise CheckpointError(
            f"cannot rebuild model {model_config.get('_target_')}: {first_line(exc)}", path
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


INPUT_KEYS = ("bands", "mean", "std", "alpha_band", "crop_size", "normalization")


def check_against_checkpoint(cfg: DictConfig, loaded: LoadedModel, given: set[str]) -> None:
    """Model and input settings come from the checkpoint; a contradicting override is an error."""
    conflicts = []
    for key, value in (cfg.get("model") or {}).items():
        if value is not None and loaded.model_config.get(key) != value:
            conflicts.append(f"model.{key}={value} (checkpoint: {loaded.model_config.get(key)})")
    spec = loaded.spec.to_dict()
    for key in INPUT_KEYS:
        if f"data.{key}" in given:
            value = to_container(cfg.data[key])
            if value != spec[key]:
                conflicts.append(f"data.{key}={value} (checkpoint: {spec[key]})")
    if conflicts:
        raise ConfigError(
            "override(s) contradict the checkpoint, which defines the model and its input: "
            + "; ".join(conflicts)
            + ". Drop them: evaluate and predict read these settings from the checkpoint",
            loaded.path,
        )
