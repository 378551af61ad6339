"""OmegaConf resolvers and small config helpers shared by every entry point.

Resolvers are registered when `sn7` is imported, so configs compose the same way in the CLIs, in
tests (Hydra's compose API) and in notebooks.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from omegaconf import DictConfig, ListConfig, OmegaConf


def available_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def project_root() -> str:
    """The folder holding conf/ (the repository root of an editable install), else the cwd."""
    here = Path(__file__).resolve().parents[2]
    return str(here if (here / "conf").is_dir() else Path.cwd())


def work_dir_for(root: str, cache_dir: str) -> str:
    """A cache folder unique to a data root: two roots never share masks or splits."""
    resolved = Path(root).expanduser().resolve()
    digest = hashlib.sha1(str(resolved).encode()).hexdigest()[:8]
    return str(Path(cache_dir) / f"{resolved.name or 'root'}-{digest}")


def register_resolvers() -> None:
    OmegaConf.register_new_resolver("sn7.project_root", project_root, replace=True)
    OmegaConf.register_new_resolver("sn7.work_dir", work_dir_for, replace=True)
    OmegaConf.register_new_resolver("sn7.cores", available_cores, replace=True)
    OmegaConf.register_new_resolver("sn7.len", len, replace=True)


def to_container(cfg):
    """A plain, fully resolved dict/list (what goes into checkpoints and logs); None stays None."""
    if isinstance(cfg, DictConfig | ListConfig):
        return OmegaConf.to_container(cfg, resolve=True)
    return cfg
