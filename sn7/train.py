"""Stage 2, train: compose model, data and trainer from the Hydra config and fit.

Returns the value of `cfg.optimized_metric` so Hydra sweepers (e.g. Optuna) can optimise it.
"""

from __future__ import annotations

import copy
import logging
import time
from pathlib import Path

import pytorch_lightning as pl
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.utils import instantiate
from omegaconf import DictConfig, open_dict

from sn7.errors import ConfigError
from sn7.lit.checkpoint_io import AtomicCheckpointIO
from sn7.lit.datamodule import SN7DataModule
from sn7.lit.module import SegmentationTask
from sn7.lit.quiet import quiet_lightning
from sn7.utils.atomic import write_json_atomic
from sn7.utils.cli import override_keys
from sn7.utils.config import project_root, to_container
from sn7.utils.hardware import (
    configure_threads,
    resolve_channels_last,
    resolve_compile,
    resolve_precision,
)

log = logging.getLogger(__name__)


def instantiate_group(group: DictConfig | None) -> list:
    """Callbacks/loggers are dicts of `_target_` entries; a null or empty group gives none."""
    if not group:
        return []
    return [instantiate(entry) for entry in group.values() if entry and "_target_" in entry]


def trainer_settings(cfg: DictConfig) -> DictConfig:
    """cfg.trainer without the keys sn7 reads itself (`compile`), ready for instantiate. (A
    deepcopy keeps its parent, so interpolations such as ${paths.run_dir} still resolve.)"""
    settings = copy.deepcopy(cfg.trainer)
    with open_dict(settings):
        settings.pop("compile", None)
    return settings


def build_task(cfg: DictConfig, datamodule: SN7DataModule, channels_last: bool) -> SegmentationTask:
    return SegmentationTask(
        model=to_container(cfg.model),
        loss=to_container(cfg.loss),
        optimizer=to_container(cfg.optimizer),
        scheduler=to_container(cfg.scheduler) if cfg.scheduler else None,
        input_spec=datamodule.spec.to_dict(),
        channels_last=channels_last,
        run_config=to_container(cfg),
    )


def train(cfg: DictConfig) -> float | None:
    quiet_lightning()
    threads = configure_threads(cfg.threads)
    pl.seed_everything(cfg.seed, workers=True)
    precision = resolve_precision(cfg.trainer.precision, cfg.trainer.accelerator)
    channels_last = resolve_channels_last(cfg.channels_last)
    log.info("precision %s, channels_last %s, %d torch threads", precision, channels_last, threads)

    datamodule = SN7DataModule(cfg.data, cfg.split, cfg.subset, cfg.augment, cfg.seed)
    task = build_task(cfg, datamodule, channels_last)
    if resolve_compile(cfg.trainer.get("compile", "auto")):
        log.info("torch.compile: the model compiles during the first steps")
        task.model.compile()  # in place, unlike torch.compile(): no `_orig_mod.` in checkpoints
    loggers = instantiate_group(cfg.get("logger"))
    callbacks = instantiate_group(cfg.get("callbacks"))
    if not loggers:
        # LearningRateMonitor refuses to run without a logger; the lr is still on the progress bar.
        callbacks = [c for c in callbacks if not isinstance(c, pl.callbacks.LearningRateMonitor)]
    trainer: pl.Trainer = instantiate(
        trainer_settings(cfg),
        precision=precision,
        callbacks=callbacks,
        logger=loggers or False,
        plugins=[AtomicCheckpointIO()],
    )
    started = time.perf_counter()
    trainer.fit(task, datamodule=datamodule, ckpt_path=cfg.ckpt_path, weights_only=True)
    minutes = (time.perf_counter() - started) / 60

    results = {k: float(v) for k, v in trainer.callback_metrics.items() if v.numel() == 1}
    results["train/minutes"] = minutes
    log.info("training took %.1f min (%d steps)", minutes, trainer.global_step)
    ckpt = best_model_checkpoint(callbacks)
    best = ckpt.best_model_path if ckpt is not None else ""
    if best:
        log.info("best checkpoint: %s (%s)", best, ckpt.best_model_score)
    if cfg.evaluate_after_training and trainer.is_global_zero:
        if not best:
            raise ConfigError("evaluate_after_training needs the model_checkpoint callback")
        results["eval/full_tile_iou"] = evaluate_checkpoint(cfg, best)
    if trainer.is_global_zero:
        summary = {"best_checkpoint": best, "steps": trainer.global_step, "metrics": results}
        write_json_atomic(Path(cfg.paths.run_dir) / "train_summary.json", summary)
    value = results.get(cfg.optimized_metric)
    log.info("%s = %s", cfg.optimized_metric, value)
    return value


def best_model_checkpoint(callbacks: list) -> pl.callbacks.ModelCheckpoint | None:
    """The ModelCheckpoint that keeps a best model (a monitor and save_top_k != 0), not the one
    that only refreshes last.ckpt every N steps."""
    return next(
        (
            c
            for c in callbacks
            if isinstance(c, pl.callbacks.ModelCheckpoint) and c.monitor and c.save_top_k != 0
        ),
        None,
    )


def compose_evaluate_config(overrides: list[str]) -> DictConfig:
    """conf/evaluate.yaml with `overrides`, as evaluate.py would compose it: through the running
    Hydra app (train.py, sweeps) or, when train() is called from plain Python, a Hydra context of
    its own that leaves no global state behind."""
    if GlobalHydra.instance().is_initialized():
        return compose("evaluate", overrides=overrides)
    conf_dir = Path(project_root()) / "conf"
    if not (conf_dir / "evaluate.yaml").is_file():
        raise ConfigError("evaluate_after_training needs conf/evaluate.yaml", conf_dir)
    with initialize_config_dir(config_dir=str(conf_dir), version_base="1.3"):
        return compose("evaluate", overrides=overrides)


def evaluate_checkpoint(cfg: DictConfig, ckpt_path: str) -> float:
    """Full-tile IoU of the val AOI(s): evaluate.py on `ckpt_path`, into <run_dir>/evaluate."""
    from sn7.evaluate import evaluate

    eval_cfg = compose_evaluate_config(
        [
            f"ckpt_path={ckpt_path}",
            f"paths.run_dir={Path(cfg.paths.run_dir) / 'evaluate'}",
            f"trainer.precision={cfg.trainer.precision}",
            *cfg.eval_overrides,
        ]
    )
    return evaluate(eval_cfg, given=override_keys(cfg.eval_overrides))["pixel"]["headline"]["iou"]
