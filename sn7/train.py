"""Stage 2, train: compose model, data and trainer from the Hydra config and fit.

Returns the value of `cfg.optimized_metric` so Hydra sweepers (e.g. Optuna) can optimise it.
"""

from __future__ import annotations

import copy
import logging
import os
import time
from pathlib import Path

import pytorch_lightning as pl
import torch
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf, open_dict

from sn7.data.input_spec import InputSpec
from sn7.errors import ConfigError
from sn7.inference.checkpoint import read_checkpoint
from sn7.lit.checkpoint_io import AtomicCheckpointIO
from sn7.lit.datamodule import SN7DataModule
from sn7.lit.module import SegmentationTask
from sn7.lit.quiet import quiet_lightning
from sn7.lit.speed_fit import Candidate, SpeedFit, SpeedFitSettings, choose, time_training_step
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


_ABSENT = object()


def apply_overrides(cfg: DictConfig, overrides: Candidate) -> None:
    """Set dotted keys of `cfg` in place; a key the config does not have is a one-line error."""
    with open_dict(cfg):
        for key, value in overrides.items():
            if OmegaConf.select(cfg, key, default=_ABSENT) is _ABSENT:
                raise ConfigError(f"speed_fit candidate sets {key}, which the config does not have")
            OmegaConf.update(cfg, key, value, merge=False)


def seconds_per_step(
    cfg: DictConfig, candidate: Candidate, precision: str, channels_last: bool, timed_steps: int
) -> float:
    """Time a few training steps of the run's task with `candidate` applied, on this machine."""
    trial = copy.deepcopy(cfg)
    apply_overrides(trial, candidate)
    spec = InputSpec.from_data_cfg(trial.data)
    model, loss_fn = instantiate(trial.model), instantiate(trial.loss)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    optimizer = instantiate(trial.optimizer)(params=model.parameters())
    shape = (int(trial.data.batch_size), spec.in_channels, spec.crop_size, spec.crop_size)
    return time_training_step(
        model,
        lambda x, target: loss_fn(model(x), target),
        optimizer,
        shape,
        precision,
        channels_last,
        timed_steps,
    )


def fit_to_speed(cfg: DictConfig, precision: str, channels_last: bool) -> SpeedFit | None:
    """`speed_fit` (sn7.lit.speed_fit): apply the first candidate recipe that trains enough steps
    on this machine to `cfg`. A resumed run takes its checkpoint's values of the candidates' keys
    instead, so it continues the model it started."""
    if not cfg.get("speed_fit"):
        return None
    settings = SpeedFitSettings.from_config(to_container(cfg.speed_fit))
    if cfg.ckpt_path:
        run = read_checkpoint(cfg.ckpt_path).get("hyper_parameters", {}).get("run_config") or {}
        run = OmegaConf.create(run)
        keys = {k for c in settings.candidates for k in c}
        resumed = {k: OmegaConf.select(run, k) for k in sorted(keys)}
        apply_overrides(cfg, resumed)
        log.info("speed_fit: resuming with the checkpoint's %s", resumed)
        return SpeedFit(resumed, True, settings.min_steps, settings.budget_minutes)
    accelerator = str(cfg.trainer.accelerator)
    if accelerator != "cpu" and not (accelerator == "auto" and not torch.cuda.is_available()):
        log.info("speed_fit: CPUs only; accelerator=%s runs the recipe as written", accelerator)
        return None
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:  # torchrun: ranks could time differently
        log.info("speed_fit: one process per rank (WORLD_SIZE > 1) runs the recipe as written")
        return None
    fit = choose(
        settings,
        lambda c: seconds_per_step(cfg, c, precision, channels_last, settings.timed_steps),
    )
    apply_overrides(cfg, fit.chosen)
    return fit


def train(cfg: DictConfig) -> float | None:
    quiet_lightning()
    threads = configure_threads(cfg.threads)
    precision = resolve_precision(cfg.trainer.precision, cfg.trainer.accelerator)
    channels_last = resolve_channels_last(cfg.channels_last)
    log.info("precision %s, channels_last %s, %d torch threads", precision, channels_last, threads)
    speed = fit_to_speed(cfg, precision, channels_last)
    pl.seed_everything(cfg.seed, workers=True)  # after speed_fit's trial steps: same init

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
        if speed is not None:
            summary["speed_fit"] = speed.as_dict()
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
