"""Which data an evaluation reads: the report scope (what is scored) and the selection scope
(where the checkpoint's thresholds are chosen), resolved from command line, checkpoint and defaults.

Order of precedence: command line > the checkpoint's training config > defaults. A foreign data
root (not the one the checkpoint was trained on) never inherits the training split or subset, since
its AOIs are not there; the selection scope is always the checkpoint's own data.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pandas as pd
from omegaconf import DictConfig, OmegaConf

from sn7.checks import check_data
from sn7.data.layout import discover_images
from sn7.data.prepared import Prepared, ensure_prepared
from sn7.data.split import describe
from sn7.errors import ConfigError
from sn7.evaluation.thresholds import SelectedThresholds
from sn7.inference.checkpoint import LoadedModel
from sn7.utils.config import to_container

GROUPS = ("data", "split", "subset")


def trained_config(loaded: LoadedModel) -> dict:
    """The checkpoint's data/split/subset, with splits of older sn7 versions (train/val, val being
    the held-out AOI) renamed to today's roles (val -> test)."""
    trained = {g: dict(loaded.run_config.get(g) or {}) for g in GROUPS}
    split = trained["split"]
    if split and "test_aois" not in split:
        split["test_aois"] = split.pop("val_aois", None)
        split["test_fraction"] = split.pop("val_fraction", 0.2)
    seed = loaded.run_config.get("seed")
    for group in ("split", "subset"):  # before split/subset had seeds of their own
        if trained[group] and "seed" not in trained[group] and seed is not None:
            trained[group]["seed"] = seed
    return trained


def is_foreign_root(cfg: DictConfig, loaded: LoadedModel, given: set[str]) -> bool:
    trained_root = (loaded.run_config.get("data") or {}).get("root")
    if "data.root" not in given or trained_root is None:
        return False
    return Path(cfg.data.root).resolve() != Path(trained_root).resolve()


def data_config(cfg: DictConfig, loaded: LoadedModel, given: set[str]) -> DictConfig:
    """data/split/subset for prepare: command line > checkpoint's training config > default.
    On a foreign data root the training split and subset do not apply (their AOIs are not there)."""
    merged = {g: to_container(cfg[g]) for g in GROUPS}
    inherit = ("data",) if is_foreign_root(cfg, loaded, given) else GROUPS
    for group, values in trained_config(loaded).items():
        if group not in inherit or group in given:
            continue
        for key, value in values.items():
            if f"{group}.{key}" not in given:
                merged[group][key] = value
    if "data.root" in given:
        merged["data"]["root"] = to_container(cfg.data.root)
        if "data.work_dir" not in given:
            merged["data"]["work_dir"] = to_container(cfg.data.work_dir)  # derived from the root
    merged["data"].update(loaded.spec.to_dict())
    return OmegaConf.create(merged)


def selection_config(cfg: DictConfig, loaded: LoadedModel, given: set[str]) -> DictConfig:
    """The checkpoint's own data and split: where its thresholds are chosen, whatever is scored.
    A checkpoint without its training config selects on the given root's selection split."""
    own = bool(loaded.run_config.get("data"))
    return data_config(cfg, loaded, given=set() if own else given)


@dataclass
class Scope:
    """What is scored: a prepared root, a split of it, and whether that split is held out."""

    prep_cfg: DictConfig
    prepared: Prepared
    split: str
    foreign: bool

    def rows(self) -> pd.DataFrame:
        return self.prepared.rows(self.split)

    def files(self) -> dict:
        data = self.prep_cfg.data
        return {f.stem: f for f in discover_images(data.root, data.image_dir, data.label_source)}

    def describe(self) -> dict:
        split = self.prepared.split
        if self.split == "all":
            split = split[split["stem"].isin(self.rows()["stem"])]
        root = str(Path(self.prep_cfg.data.root).resolve())
        return describe(split, self.split) | {"data_root": root}


def report_scope(cfg: DictConfig, loaded: LoadedModel, given: set[str]) -> Scope:
    foreign = is_foreign_root(cfg, loaded, given)
    split = cfg.eval.split if ("eval.split" in given or not foreign) else "all"
    prep_cfg = data_config(cfg, loaded, given)
    check_data(prep_cfg.data)
    prepared = ensure_prepared(prep_cfg)
    scope = Scope(prep_cfg, prepared, split, foreign)
    if scope.rows().empty:
        hint = " (too few AOIs for a report split: try eval.split=all)" if split == "test" else ""
        raise ConfigError(f"eval.split={split} has no images in {prep_cfg.data.root}{hint}")
    return scope


def selection_scope(cfg: DictConfig, loaded: LoadedModel, given: set[str]) -> Scope:
    prep_cfg = selection_config(cfg, loaded, given)
    if not Path(prep_cfg.data.root).exists():
        raise ConfigError(
            f"no thresholds chosen on a selection split are stored for this checkpoint, and its "
            f"training data ({prep_cfg.data.root}) is not here to choose them on. Give "
            "eval.threshold=... (reported as given), or run evaluate once where that data is",
            loaded.path,
        )
    check_data(prep_cfg.data)
    scope = Scope(prep_cfg, ensure_prepared(prep_cfg), "val", foreign=False)
    if scope.rows().empty:
        raise ConfigError(
            "the checkpoint's split has no selection (val) images to choose thresholds on; give "
            "eval.threshold=...",
            loaded.path,
        )
    return scope


def held_out(
    cfg: DictConfig,
    loaded: LoadedModel,
    scope: Scope,
    selected: SelectedThresholds,
    given: set[str],
) -> bool:
    """True when nothing was chosen or trained on the reported images: the report split of the
    checkpoint's own root, or a foreign root none of whose AOIs it was trained or selected on."""
    reported = set(scope.rows()["aoi"])
    selected_aois = set(selected.selected_on.get("aois") or [])
    if not scope.foreign:
        return scope.split == "test" and not (reported & selected_aois)
    own = selection_config(cfg, loaded, given)
    if not Path(own.data.root).exists():
        return not (reported & selected_aois)  # training AOIs unknown here: names checked only
    split = ensure_prepared(own).split
    return not (reported & (selected_aois | set(split.loc[split["split"] != "test", "aoi"])))
