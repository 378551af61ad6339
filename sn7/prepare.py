"""Stage 1, prepare: check the config, then build the mask cache and the manifest, subset and split
(`sn7.data.prepared`). `python prepare.py data.root=DIR` runs it alone."""

from __future__ import annotations

from omegaconf import DictConfig

from sn7.checks import check_data
from sn7.data.prepared import Prepared
from sn7.data.prepared import prepare as prepare_artifacts


def prepare(cfg: DictConfig, quiet: bool = False) -> Prepared:
    check_data(cfg.data)
    return prepare_artifacts(cfg, quiet=quiet)
