"""Which model classes a checkpoint may ask evaluate/predict to build.

A checkpoint names its model by a `_target_` import path. Building whatever it names would let a
checkpoint from someone else call any function with any arguments (`os.makedirs`, `os.system`),
so only the classes below, and those the user lists in `trusted_models`, are built. Refusal
happens on the string, before anything is imported: importing a named module can run code too.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from hydra.utils import get_class
from torch import nn

from sn7.errors import ConfigError

SN7_MODELS = frozenset(
    {
        "sn7.models.tiny_unet.TinyUNet",
        # a single 1x1 conv is the pixelwise baseline (the test suite's stub model); its
        # constructor takes only numbers and strings
        "torch.nn.Conv2d",
    }
)
TRUST_HINT = "add it to trusted_models if you trust this file"


class ModelRefused(ConfigError):
    """The allow-list refuses a model config (raised before anything is imported)."""


def _nested_target(value: Any) -> bool:
    if isinstance(value, Mapping):
        return "_target_" in value or any(_nested_target(v) for v in value.values())
    if isinstance(value, list | tuple):
        return any(_nested_target(v) for v in value)
    return False


def refusal(config: Any, trusted: Iterable[str] = ()) -> str | None:
    """Why `config` (`_target_` + keyword arguments) may not be built, or None if it may."""
    if not isinstance(config, Mapping) or not isinstance(config.get("_target_"), str):
        return "model config has no _target_ string"
    target = config["_target_"]
    if target not in SN7_MODELS and target not in set(trusted):
        return f"refuses model _target_ {target}: not an sn7 model; {TRUST_HINT}"
    for key, value in config.items():
        if key == "_target_":
            continue
        if key.startswith("_") and key.endswith("_"):
            return f"refuses model {target}: Hydra key {key} (only keyword arguments are allowed)"
        if _nested_target(value):
            return f"refuses model {target}: argument {key} holds a nested _target_"
    return None


def build_model(config: Mapping, trusted: Iterable[str] = ()) -> nn.Module:
    """Build an allowed model from its config by a plain call `cls(**kwargs)`.

    Not `hydra.utils.instantiate`: that recurses into nested `_target_`s and resolves `${...}`
    interpolations (environment variables among them), neither of which a model needs.
    """
    reason = refusal(config, trusted)
    if reason is not None:
        raise ModelRefused(reason)
    cls = get_class(config["_target_"])
    kwargs = {k: v for k, v in config.items() if k != "_target_"}
    model = cls(**kwargs)
    if not isinstance(model, nn.Module):
        raise ConfigError(f"{config['_target_']} built a {type(model).__name__}, not an nn.Module")
    return model
