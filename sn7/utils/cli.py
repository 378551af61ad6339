"""What every entry point does around its stage: a clear one-line error for user mistakes."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterable
from typing import Any

from hydra.core.hydra_config import HydraConfig
from hydra.errors import InstantiationException
from omegaconf import DictConfig

from sn7.errors import SN7Error


def user_error(exc: BaseException) -> SN7Error | None:
    """The SN7Error behind `exc`: itself, or the cause Hydra wrapped while instantiating."""
    while exc is not None:
        if isinstance(exc, SN7Error):
            return exc
        if not isinstance(exc, InstantiationException):
            return None
        exc = exc.__cause__
    return None


def run_stage(stage: Callable[[DictConfig], Any], cfg: DictConfig) -> Any:
    """Run `stage(cfg)`; an SN7Error prints one line and exits 1 (traceback with SN7_DEBUG=1).

    Other exceptions are bugs and keep their traceback.
    """
    try:
        return stage(cfg)
    except Exception as exc:
        error = user_error(exc)
        if error is None or os.environ.get("SN7_DEBUG") or cfg.get("debug_errors", False):
            raise
        print(f"sn7 error: {error}", file=sys.stderr, flush=True)
        sys.exit(1)


def override_keys(overrides: Iterable[str]) -> set[str]:
    """The config keys of Hydra override strings: `+a.b=1`, `~a.b` and `a.b=1` all give `a.b`."""
    return {o.lstrip("+~").split("=", 1)[0] for o in overrides}


def command_line_keys() -> set[str]:
    """Config keys the user set on the command line (empty outside a Hydra app)."""
    if not HydraConfig.initialized():
        return set()
    return override_keys(HydraConfig.get().overrides.task)


def command_line() -> str:
    """The running stage's command line as a user would retype it ("" outside a Hydra app)."""
    if not HydraConfig.initialized():
        return ""
    cfg = HydraConfig.get()
    return " ".join(["python", f"{cfg.job.name}.py", *cfg.overrides.task])
