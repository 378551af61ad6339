"""The train stage (sn7.train, train.py): every config composes and builds, every loss runs, a
checkpoint rebuilds its model and resumes, the loggers record what the issue asks for, multirun
and DDP work."""

from __future__ import annotations

import copy
import importlib.util
import json
import math
import re
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pandas as pd
import pytest
import pytorch_lightning as pl
import torch
import yaml
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.utils import get_class, instantiate
from omegaconf import OmegaConf, open_dict
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.backend.event_processing.event_file_loader import EventFileLoader

from sn7.data.input_spec import InputSpec
from sn7.errors import DataError
from sn7.inference.checkpoint import load_model
from sn7.lit.callbacks import TensorBoardPanels
from sn7.lit.module import CHECKPOINT_FORMAT, SegmentationTask
from sn7.lit.time_budget import TimeBudget
from sn7.metrics.pixel import scores
from sn7.models.losses import SegmentationLoss
from sn7.models.tiny_unet import TinyUNet
from sn7.train import instantiate_group, train, trainer_settings

REPO = Path(__file__).resolve().parents[1]
CONF = REPO / "conf"
# groups of conf/train.yaml's defaults list; `hydra` is Hydra's own
GROUPS = [
    next(iter(entry))
    for entry in OmegaConf.load(CONF / "train.yaml").defaults
    if not isinstance(entry, str) and next(iter(entry)) != "hydra"
]
CHOICES = [(g, p.stem) for g in GROUPS for p in sorted((CONF / g).glob("*.yaml"))]
LOSSES = sorted(p.stem for p in (CONF / "loss").glob("*.yaml"))
SKIP = ("defaults", "hydra")  # keys of a global config file that are not job values
NORM = ["data.mean=[0.31,0.32,0.33,0.0]", "data.std=[0.2,0.21,0.22,1.0]"]
ONE_THREAD = "threads=1"  # see the one_torch_thread fixture

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture
def tiny_cfg(train_cfg):
    """train_cfg (TINY_TRAIN settings) on one torch thread."""
    return lambda root, run_dir, *overrides: train_cfg(root, run_dir, ONE_THREAD, *overrides)


def ckpt_of(path: Path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=False)


def model_checkpoint_state(ckpt: dict) -> dict:
    """State of the ModelCheckpoint that keeps best.ckpt (the periodic one has no monitor)."""
    (state,) = [
        v
        for k, v in ckpt["callbacks"].items()
        if k.startswith("ModelCheckpoint") and v["monitor"] is not None
    ]
    return state


# --- composition ------------------------------------------------------------------------------


def test_every_group_of_the_defaults_list_has_choices():
    assert {"data", "model", "loss", "optimizer", "scheduler", "trainer", "logger"} <= set(GROUPS)
    assert {"experiment", "debug", "callbacks", "augment"} <= set(GROUPS)
    for group in ("loss", "trainer", "logger", "scheduler", "experiment"):
        assert sum(g == group for g, _ in CHOICES) >= 3, group


@pytest.mark.parametrize(("group", "choice"), CHOICES, ids=[f"{g}={c}" for g, c in CHOICES])
def test_every_choice_composes_and_builds(tmp_path, group, choice):
    """Compose `group=choice` as the CLI would and build everything the train stage builds from
    it (trainers only for CPU choices: gpu/ddp need hardware, they are composed only)."""
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose(
            "train",
            [f"{group}={choice}", f"paths.run_dir={tmp_path}"],
            return_hydra_config=True,
        )
    assert cfg.hydra.runtime.choices[group] == choice
    choice_cfg = OmegaConf.load(CONF / group / f"{choice}.yaml")
    if "# @package _global_" in (CONF / group / f"{choice}.yaml").read_text():
        assert_global_values_applied(cfg, choice_cfg)
    with open_dict(cfg):
        del cfg["hydra"]
    OmegaConf.resolve(cfg)  # every interpolation resolves

    model = instantiate(cfg.model)
    assert isinstance(model, TinyUNet) and model.encoders[0][0].in_channels == len(cfg.data.bands)
    assert isinstance(instantiate(cfg.loss), SegmentationLoss)
    callbacks = instantiate_group(cfg.get("callbacks"))
    assert_optimisation_follows_the_config(cfg, callbacks)
    for key, base in (("callbacks", pl.Callback), ("logger", pl.loggers.Logger)):
        entries = cfg.get(key) or {}
        targets = [e._target_ for e in entries.values() if e and "_target_" in e]
        built = instantiate_group(entries)
        assert len(built) == len(targets), key
        for obj, target in zip(built, targets, strict=True):
            assert isinstance(obj, get_class(target)) and isinstance(obj, base), target
    if cfg.trainer.accelerator == "cpu":
        trainer = instantiate(trainer_settings(cfg), precision="32-true", logger=False)
        assert trainer.max_epochs == (1 if cfg.trainer.fast_dev_run else cfg.trainer.max_epochs)
    else:
        assert group == "trainer" and cfg.trainer.accelerator == "gpu"


STEPS = 10  # the stub trainer's estimated_stepping_batches


def assert_optimisation_follows_the_config(cfg, callbacks) -> None:
    """SegmentationTask.configure_optimizers, run as Lightning would (the trainer a stub that
    knows the step count and the callbacks), gives what the config asks for: its optimizer over
    every parameter with its weight decay, and an lr that peaks at `optimizer.lr` (a schedule
    starts at or rises to it, then anneals) over the whole run, in steps or in budget time."""
    task = SegmentationTask(
        model=cfg.model,
        loss=cfg.loss,
        optimizer=cfg.optimizer,
        scheduler=cfg.scheduler or None,
        input_spec=InputSpec.from_data_cfg(cfg.data).to_dict(),
    )
    task.trainer = SimpleNamespace(estimated_stepping_batches=STEPS, callbacks=callbacks)
    configured = task.configure_optimizers()
    has_schedule = bool(cfg.scheduler and cfg.scheduler.get("scheduler"))
    optimizer = configured["optimizer"] if has_schedule else configured
    assert type(optimizer) is get_class(cfg.optimizer._target_)
    (group,) = optimizer.param_groups
    assert {id(p) for p in group["params"]} == {id(p) for p in task.parameters()}
    assert group["weight_decay"] == cfg.optimizer.weight_decay
    if not has_schedule:
        assert group["lr"] == cfg.optimizer.lr
        return
    scheduler = configured["lr_scheduler"]["scheduler"]
    assert type(scheduler) is get_class(cfg.scheduler.scheduler._target_)
    assert configured["lr_scheduler"]["interval"] == cfg.scheduler.get("interval", "step")
    lrs = [group["lr"]]
    if cfg.scheduler.get("clock_arg"):  # the clock is the config's TimeBudget callback
        (budget,) = [c for c in callbacks if isinstance(c, TimeBudget)]
        assert scheduler.clock is budget
        for k in range(1, STEPS + 1):  # the budget's time spent in tenths
            budget.elapsed_seconds = budget.budget_seconds * k / STEPS
            optimizer.step()  # no gradients: changes nothing, but keeps the order Lightning has
            scheduler.step()
            lrs.append(group["lr"])
    else:  # the schedule spans the trainer's step count
        for _ in range(STEPS - 1):
            optimizer.step()
            scheduler.step()
            lrs.append(group["lr"])
    assert max(lrs) == pytest.approx(cfg.optimizer.lr)
    assert lrs[-1] < cfg.optimizer.lr / 10, lrs  # annealed by the end of the run


def assert_global_values_applied(cfg, choice_cfg) -> None:
    """An `@package _global_` file (experiment, debug, ...) really lands at the top level."""
    for override in choice_cfg.get("defaults", []):
        if isinstance(override, str):
            continue
        ((key, value),) = override.items()
        if key.startswith("override /") and key != "override /hydra/sweeper":
            assert cfg.hydra.runtime.choices[key.removeprefix("override /")] == value, key
    values = OmegaConf.masked_copy(choice_cfg, [k for k in choice_cfg if k not in SKIP])
    expected = OmegaConf.to_container(values, resolve=False)
    actual = OmegaConf.to_container(cfg, resolve=False)  # interpolations compared as typed
    for key in leaf_keys(expected):
        assert dig(actual, key) == dig(expected, key), key


def dig(tree: dict, dotted: str):
    for part in dotted.rstrip(".").split("."):
        tree = tree[part]
    return tree


def leaf_keys(node, prefix: str = "") -> list[str]:
    if not isinstance(node, dict):
        return [prefix]
    return [k for key, value in node.items() for k in leaf_keys(value, f"{prefix}{key}.")]


def test_trainer_choices_for_gpus_and_ddp(compose_config):
    gpu = compose_config("train", ["trainer=gpu"]).trainer
    assert (gpu.accelerator, gpu.devices) == ("gpu", 1)
    ddp = compose_config("train", ["trainer=ddp"]).trainer
    assert (ddp.accelerator, ddp.strategy, ddp.sync_batchnorm) == ("gpu", "ddp", True)
    sim = compose_config("train", ["trainer=ddp_sim"]).trainer
    assert (sim.accelerator, sim.devices, sim.precision) == ("cpu", 2, "32-true")
    assert sim.strategy.process_group_backend == "gloo" and sim.strategy.start_method == "spawn"


# --- short runs -------------------------------------------------------------------------------

RUNS = [  # every loss, and between them every scheduler
    ("bce", "none"),
    ("dice", "onecycle"),
    ("bce_dice", "cosine"),
    ("focal", "time_onecycle"),
    ("focal_dice", "none"),
]


def test_short_runs_cover_every_loss_and_scheduler():
    assert sorted({loss for loss, _ in RUNS}) == LOSSES
    schedulers = {p.stem for p in (CONF / "scheduler").glob("*.yaml")}
    assert {s for _, s in RUNS} == schedulers


@pytest.mark.parametrize(("loss", "scheduler"), RUNS)
def test_fast_dev_run(synthetic_root, tiny_cfg, tmp_path, monkeypatch, loss, scheduler):
    """One step per loss/scheduler: every term of the loss is non-zero on a batch with
    buildings and adds up to the loss, and the scheduler moves the learning rate."""
    seen: dict = {}
    original = SegmentationTask.training_step

    def recording(self, batch, batch_idx):
        seen["lr_before"] = self.trainer.optimizers[0].param_groups[0]["lr"]
        with torch.no_grad():
            seen["logits"] = self(batch["image"])
        seen["target"], seen["loss_fn"] = batch["mask"].long(), self.loss_fn
        return original(self, batch, batch_idx)

    def at_end(self):
        seen["lr_after"] = self.trainer.optimizers[0].param_groups[0]["lr"]

    monkeypatch.setattr(SegmentationTask, "training_step", recording)
    monkeypatch.setattr(SegmentationTask, "on_train_end", at_end)
    cfg = tiny_cfg(
        synthetic_root.root,
        tmp_path,
        "debug=fast_dev_run",
        f"loss={loss}",
        f"scheduler={scheduler}",
    )
    value = train(cfg)
    assert value is not None and 0.0 <= value <= 1.0  # val/best_iou
    # fast_dev_run logs nothing and saves no checkpoint
    assert not (tmp_path / "tensorboard").exists()
    assert not (tmp_path / "checkpoints" / "best.ckpt").exists()

    logits, target, loss_fn = seen["logits"], seen["target"], seen["loss_fn"]
    assert (target == 1).any()
    weights = {name: getattr(loss_fn, f"{name}_weight") for name in ("bce", "dice", "focal")}
    assert {name for name, w in weights.items() if w} == set(loss.split("_"))
    total = 0.0
    for name, weight in weights.items():
        if weight:
            only = {f"{n}_weight": float(n == name) for n in weights}
            kept = ("pos_weight", "focal_gamma", "focal_alpha", "smooth", "gap_weight")
            term = SegmentationLoss(**only, **{k: getattr(loss_fn, k) for k in kept})
            value = float(term(logits, target))
            assert value > 1e-4, name
            total += weight * value
    assert float(loss_fn(logits, target)) == pytest.approx(total, rel=1e-5)

    if scheduler == "none":
        assert seen["lr_after"] == seen["lr_before"] == cfg.optimizer.lr
    elif scheduler == "time_onecycle":  # moves with elapsed time: a step moves it a little
        assert seen["lr_after"] > seen["lr_before"]
    else:
        assert seen["lr_after"] != pytest.approx(seen["lr_before"], rel=1e-3)


def test_overfit_repeats_the_same_batch(synthetic_root, tiny_cfg, tmp_path, monkeypatch):
    """debug=overfit must show the model one batch again and again (random crops otherwise)."""
    seen: dict[int, list] = {}
    original = SegmentationTask.training_step

    def recording(self, batch, batch_idx):
        seen.setdefault(self.current_epoch, []).append(
            (batch["tile"].tolist(), batch["window"].tolist())
        )
        return original(self, batch, batch_idx)

    monkeypatch.setattr(SegmentationTask, "training_step", recording)
    common = ["trainer.max_epochs=3", "logger=none", "augment=none"]
    train(tiny_cfg(synthetic_root.root, tmp_path / "overfit", "debug=overfit", *common))
    assert sorted(seen) == [0, 1, 2]
    assert all(len(batches) == 1 for batches in seen.values())  # overfit_batches: 1
    assert seen[0] == seen[1] == seen[2]

    seen.clear()  # without debug=overfit every epoch draws new crops
    train(
        tiny_cfg(synthetic_root.root, tmp_path / "plain", "trainer.limit_train_batches=1", *common)
    )
    assert seen[0] != seen[1] != seen[2]


# --- one logged run, its checkpoints and a resume ----------------------------------------------


@pytest.fixture(scope="module")
def tb_run(synthetic_root, session_train_cfg, tmp_path_factory):
    """One epoch with the default logger (TensorBoard) and callbacks, model.base=8."""
    run_dir = tmp_path_factory.mktemp("tb_run")
    cfg = session_train_cfg(synthetic_root.root, run_dir, ONE_THREAD, "model.base=8", *NORM)
    value = train(cfg)
    return run_dir, cfg, value


def test_tensorboard_has_losses_metrics_panel_and_pr_curve(tb_run):
    run_dir, cfg, _ = tb_run
    events = EventAccumulator(
        str(run_dir / "tensorboard"), size_guidance={"images": 0, "tensors": 0, "scalars": 0}
    )
    events.Reload()
    tags = events.Tags()
    for tag in ["train/loss", "val/loss", "val/iou", "val/precision", "val/recall", "val/f1"]:
        assert tag in tags["scalars"], tag
        assert all(math.isfinite(e.value) for e in events.Scalars(tag))
    assert "val/best_iou" in tags["scalars"] and "hp/val_best_iou" in tags["scalars"]
    steps = [e.step for e in events.Scalars("train/loss")]
    assert steps == [0, 1]  # 8 crops / batch 4, logged every step

    (panel,) = events.Images("val/panel")
    k = min(4, cfg.data.val_batch_size)
    assert (panel.height, panel.width) == (k * 64, 4 * 64 + 3 * 4)  # image|truth|prob|errors

    assert "val/pr_curve" in tags["tensors"]
    assert events.SummaryMetadata("val/pr_curve").plugin_data.plugin_name == "pr_curves"
    (curve,) = events.Tensors("val/pr_curve")
    data = torch.tensor(list(curve.tensor_proto.float_val)).reshape(6, -1)
    tp, fp, tn, fn, precision, recall = data
    assert data.shape[1] == 19  # thresholds 0.05 .. 0.95
    assert ((precision >= 0) & (precision <= 1) & (recall >= 0) & (recall <= 1)).all()
    assert (tp[:-1] >= tp[1:]).all() and (fp[:-1] >= fp[1:]).all()  # thresholds ascend
    total = tp + fp + tn + fn
    assert (total == total[0]).all() and total[0] > 0
    for t in range(data.shape[1]):  # the rules evaluate reports with (metrics.pixel.scores)
        expected = scores(*(float(c[t]) for c in (tp, fp, fn)))
        assert precision[t] == pytest.approx(expected["precision"], abs=1e-6)
        assert recall[t] == pytest.approx(expected["recall"], abs=1e-6)

    # the hparams table: the run's config against hp/val_best_iou (EventAccumulator skips it)
    hparams = {
        value.tag: value.metadata.plugin_data
        for path in (run_dir / "tensorboard").glob("events.out.tfevents.*")
        for event in EventFileLoader(str(path)).Load()
        for value in event.summary.value
        if value.tag.startswith("_hparams_/")
    }
    assert {"_hparams_/experiment", "_hparams_/session_start_info"} <= hparams.keys()
    assert all(data.plugin_name == "hparams" for data in hparams.values())
    assert b"hp/val_best_iou" in hparams["_hparams_/experiment"].content
    assert b"model/base" in hparams["_hparams_/session_start_info"].content  # run_config


def test_images_and_pr_curves_come_from_the_callback(synthetic_root, tiny_cfg, tmp_path):
    """The task itself writes scalars only: without TensorBoardPanels no panel, no PR curve."""
    cfg = tiny_cfg(synthetic_root.root, tmp_path, "callbacks.tensorboard_panels=null")
    assert not any(isinstance(c, TensorBoardPanels) for c in instantiate_group(cfg.callbacks))
    train(cfg)
    events = EventAccumulator(str(tmp_path / "tensorboard"), size_guidance={"tensors": 0})
    events.Reload()
    assert "val/iou" in events.Tags()["scalars"]
    assert not events.Tags()["images"]
    assert "val/pr_curve" not in events.Tags()["tensors"]


def test_checkpoint_hparams_describe_model_and_input(tb_run):
    run_dir, cfg, _ = tb_run
    for name in ("best.ckpt", "last.ckpt"):
        ckpt = ckpt_of(run_dir / "checkpoints" / name)
        assert ckpt["sn7_format"] == CHECKPOINT_FORMAT
        hp = ckpt["hyper_parameters"]
        assert hp["model"] == {
            "_target_": "sn7.models.tiny_unet.TinyUNet",
            "in_ch": 4,
            "base": 8,
            "depth": 2,
            "upscale": 1,
            "out_ch": 1,
            "block": "plain",
        }
        assert hp["input_spec"] == {
            "bands": [1, 2, 3, 4],
            "mean": [0.31, 0.32, 0.33, 0.0],
            "std": [0.2, 0.21, 0.22, 1.0],
            "alpha_band": 4,
            "crop_size": 64,
            "normalization": "fixed",
        }
        assert hp["loss"]["_target_"] == "sn7.models.losses.SegmentationLoss"
        assert hp["run_config"]["data"]["root"] == str(cfg.data.root)
    loaded = load_model(run_dir / "checkpoints" / "best.ckpt")  # what evaluate/predict do
    assert isinstance(loaded.model, TinyUNet)
    assert loaded.model.head.in_channels == 8
    assert loaded.spec.mean == (0.31, 0.32, 0.33, 0.0)


def test_train_returns_the_optimized_metric(tb_run):
    run_dir, cfg, value = tb_run
    assert cfg.optimized_metric == "val/best_iou"
    best = model_checkpoint_state(ckpt_of(run_dir / "checkpoints" / "best.ckpt"))
    assert value == pytest.approx(float(best["best_model_score"]))  # one epoch: best = last
    events = EventAccumulator(str(run_dir / "tensorboard"))
    events.Reload()
    assert value == pytest.approx(events.Scalars("val/best_iou")[-1].value)
    summary = json.loads((run_dir / "train_summary.json").read_text())
    assert summary["metrics"]["val/best_iou"] == pytest.approx(value)
    assert summary["best_checkpoint"].endswith("best.ckpt") and summary["steps"] == 2
    assert 0 < summary["metrics"]["train/minutes"] < 30


@pytest.mark.filterwarnings("ignore:The dirpath has changed")  # resumed into a new run dir
def test_resume_continues_epochs_steps_and_optimizer_state(
    tb_run, synthetic_root, tiny_cfg, tmp_path, monkeypatch
):
    run_dir, _, _ = tb_run
    last = run_dir / "checkpoints" / "last.ckpt"
    before = ckpt_of(last)
    # written when training ended (periodic_checkpoint saves last.ckpt then if its N steps never
    # came): epoch 0 is complete, so the checkpoint's epoch counter is 1
    assert (before["epoch"], before["global_step"]) == (1, 2)

    restored = {}
    original = SegmentationTask.on_train_start

    def capture(self):  # runs after Lightning restored the checkpoint's training state
        restored["optimizer"] = copy.deepcopy(self.trainer.optimizers[0].state_dict())
        restored["epoch"], restored["step"] = self.current_epoch, self.global_step
        return original(self)

    monkeypatch.setattr(SegmentationTask, "on_train_start", capture)
    cfg = tiny_cfg(
        synthetic_root.root,
        tmp_path,
        "model.base=8",
        *NORM,
        f"ckpt_path={last}",
        "trainer.max_epochs=2",
        "logger=csv",
    )
    value = train(cfg)
    assert value is not None

    assert (restored["epoch"], restored["step"]) == (1, 2)
    saved = before["optimizer_states"][0]["state"]
    assert restored["optimizer"]["state"].keys() == saved.keys()
    for key, state in saved.items():
        for name in ("exp_avg", "exp_avg_sq", "step"):
            assert torch.equal(restored["optimizer"]["state"][key][name], state[name])

    after = ckpt_of(tmp_path / "checkpoints" / "last.ckpt")
    assert (after["epoch"], after["global_step"]) == (2, 4)  # at train end, as above
    assert all(int(s["step"]) == 4 for s in after["optimizer_states"][0]["state"].values())
    assert after["lr_schedulers"][0]["last_epoch"] == 4

    metrics = pd.read_csv(tmp_path / "csv" / "metrics.csv")  # logger=csv works too
    for column in ["train/loss", "val/iou", "val/precision", "val/recall", "val/f1"]:
        assert metrics[column].notna().any(), column
    assert set(metrics["epoch"].dropna()) == {1}  # epoch 0 was not trained again
    assert sorted(metrics.loc[metrics["train/loss"].notna(), "step"]) == [2, 3]


def test_last_ckpt_after_every_validation_and_every_n_steps(
    synthetic_root, tiny_cfg, tmp_path, monkeypatch
):
    """3 epochs of 3 steps, periodic every 2 steps, a monitor that never improves after epoch 0
    (`epoch`, mode min): best.ckpt stays at step 3, last.ckpt is written at steps 2, 4, 6, 8 and
    after each validation (3, 6, 9), so the run ends with last.ckpt at step 9, epoch 2."""
    saved = []
    original = pl.Trainer.save_checkpoint

    def recording(self, filepath, *args, **kwargs):
        saved.append((Path(filepath).name, self.global_step))
        return original(self, filepath, *args, **kwargs)

    monkeypatch.setattr(pl.Trainer, "save_checkpoint", recording)
    cfg = tiny_cfg(
        synthetic_root.root,
        tmp_path,
        "logger=none",
        "data.samples_per_epoch=12",  # 3 steps of 4 crops
        "trainer.max_epochs=3",
        "callbacks.periodic_checkpoint.every_n_train_steps=2",
        "callbacks.model_checkpoint.monitor=epoch",
        "callbacks.model_checkpoint.mode=min",
    )
    train(cfg)
    assert sorted({step for name, step in saved if name == "last.ckpt"}) == [2, 3, 4, 6, 8, 9]
    assert [step for name, step in saved if name == "best.ckpt"] == [3]
    files = sorted(p.name for p in (tmp_path / "checkpoints").iterdir())
    assert files == ["best.ckpt", "last.ckpt"]  # no last-v1.ckpt
    last = ckpt_of(tmp_path / "checkpoints" / "last.ckpt")
    assert (last["epoch"], last["global_step"]) == (2, 9)
    assert model_checkpoint_state(last)["best_model_path"].endswith("best.ckpt")


def test_evaluate_after_training_outside_a_hydra_app(synthetic_root, tiny_cfg, tmp_path):
    """train() called from plain Python (no Hydra app, GlobalHydra not initialised) still
    composes conf/evaluate.yaml for evaluate_after_training, and leaves no Hydra state behind."""
    assert not GlobalHydra.instance().is_initialized()
    cfg = tiny_cfg(
        synthetic_root.root,
        tmp_path,
        "logger=none",
        "evaluate_after_training=true",
        "optimized_metric=eval/full_tile_iou",
        "eval_overrides=['eval.gallery=0','eval.crop_metrics=false']",
    )
    value = train(cfg)
    assert not GlobalHydra.instance().is_initialized()
    metrics = json.loads((tmp_path / "evaluate" / "metrics.json").read_text())
    assert value == pytest.approx(metrics["pixel"]["headline"]["iou"])
    summary = json.loads((tmp_path / "train_summary.json").read_text())
    assert summary["metrics"]["eval/full_tile_iou"] == pytest.approx(value)


def test_boundary_targets_train_and_evaluate_end_to_end(synthetic_root, tiny_cfg, tmp_path):
    """targets=boundary: a building / edge / contact checkpoint opens in evaluate (weights only,
    the allow-listed TinyUNet with out_ch=3) and is scored on the map the stages share."""
    from sn7.inference.checkpoint import load_model

    cfg = tiny_cfg(
        synthetic_root.root,
        tmp_path,
        "targets=boundary",
        "logger=none",
        "evaluate_after_training=true",
        "optimized_metric=eval/full_tile_iou",
        "eval_overrides=['eval.gallery=0','eval.crop_metrics=false']",
    )
    value = train(cfg)
    loaded = load_model(tmp_path / "checkpoints" / "best.ckpt")
    assert loaded.model_config["out_ch"] == 3 and loaded.model.head.out_channels == 3
    metrics = json.loads((tmp_path / "evaluate" / "metrics.json").read_text())
    assert value == pytest.approx(metrics["pixel"]["headline"]["iou"])


def load_entry_point():
    """train.py as a module; `main.__wrapped__` is main() without Hydra's decorator."""
    spec = importlib.util.spec_from_file_location("sn7_train_entry", REPO / "train.py")
    entry = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(entry)
    return entry


def test_entry_point_returns_the_metric_without_a_logger(synthetic_root, tiny_cfg, tmp_path):
    """train.py's main() hands back cfg.optimized_metric (what a sweeper optimises); logger=none
    trains and checkpoints without writing any log."""
    entry = load_entry_point()
    cfg = tiny_cfg(
        synthetic_root.root,
        tmp_path,
        "logger=none",
        "optimized_metric=val/loss",
        "callbacks.model_checkpoint.monitor=val/loss",
        "callbacks.model_checkpoint.mode=min",
    )
    value = entry.main.__wrapped__(cfg)
    best = model_checkpoint_state(ckpt_of(tmp_path / "checkpoints" / "best.ckpt"))
    assert value == pytest.approx(float(best["best_model_score"]))
    assert value > 0.05  # a loss, not an IoU
    assert not (tmp_path / "tensorboard").exists() and not (tmp_path / "csv").exists()


def test_entry_point_reports_user_errors_in_one_line(tiny_cfg, tmp_path, capsys):
    entry = load_entry_point()
    cfg = tiny_cfg(tmp_path / "no_such_root", tmp_path / "run")
    with pytest.raises(SystemExit) as exc:
        entry.main.__wrapped__(cfg)
    assert exc.value.code == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("sn7 error:") and "no_such_root" in err[0]


@pytest.mark.parametrize("how", ["debug_errors=true", "SN7_DEBUG=1"])
def test_entry_point_debug_lets_the_error_through(tiny_cfg, tmp_path, capsys, monkeypatch, how):
    """With debug_errors=true (or SN7_DEBUG=1) the error itself leaves main, traceback and all,
    for Hydra to print, instead of the one `sn7 error:` line and exit 1."""
    entry = load_entry_point()
    monkeypatch.delenv("SN7_DEBUG", raising=False)
    if how.startswith("SN7_DEBUG"):
        monkeypatch.setenv("SN7_DEBUG", "1")
        cfg = tiny_cfg(tmp_path / "no_such_root", tmp_path / "run")
    else:
        cfg = tiny_cfg(tmp_path / "no_such_root", tmp_path / "run", how)
    with pytest.raises(DataError, match="no_such_root") as exc:
        entry.main.__wrapped__(cfg)
    assert exc.traceback[-1].name == "discover_images"  # the frame that raised it
    assert "sn7 error:" not in capsys.readouterr().err


# --- processes --------------------------------------------------------------------------------


def run_train_sweep(sweep, synthetic_root, tiny_overrides, tmp_path, *extra) -> str:
    """train.py in a subprocess, sweeping `extra` into `sweep` (model.base left to the sweep);
    its stdout + stderr."""
    overrides = [o for o in tiny_overrides if not o.startswith("model.base=")]
    cmd = [
        sys.executable,
        "train.py",
        *extra,
        f"hydra.sweep.dir={sweep}",
        f"data.root={synthetic_root.root}",
        f"data.work_dir={tmp_path / 'work'}",
        f"paths.output_dir={tmp_path / 'outputs'}",
        *overrides,
        ONE_THREAD,
        "trainer.limit_val_batches=1",
    ]
    done = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout + done.stderr


# Lightning lines `make demo` used to show a new user: a cloud-logger tip, a torch deprecation
# raised inside Lightning, a FLOP count of 0 (no example input) and limit_*_batches=1.0 echoed
NOISE = (
    "Tip: For seamless cloud logging",
    "`isinstance(treespec, LeafSpec)` is deprecated",
    "`Trainer(limit_train_batches=1.0)` was configured",
    "`Trainer(limit_val_batches=1.0)` was configured",
)


def test_multirun_runs_every_job(synthetic_root, tiny_train_overrides, tmp_path):
    """Every job of a sweep trains into its own folder, and the output carries none of Lightning's
    NOISE: the model summary (on here) counts real FLOPs."""
    sweep = tmp_path / "sweep"
    summary_on = [o.replace("summary=false", "summary=true") for o in tiny_train_overrides]
    output = run_train_sweep(
        sweep, synthetic_root, summary_on, tmp_path, "-m", "model.base=4,8", "logger=csv"
    )
    assert [line for line in NOISE if line in output] == []
    flops = re.findall(r"^(.*\S) +Total Flops|Total FLOPs: (\S+)", output, re.M)  # plain|rich
    assert len(flops) == 2 and all("".join(f).strip() != "0" for f in flops), flops
    for job, base in ((0, 4), (1, 8)):
        job_dir = sweep / str(job)
        ckpt = ckpt_of(job_dir / "checkpoints" / "last.ckpt")
        assert ckpt["hyper_parameters"]["model"]["base"] == base
        assert (job_dir / "csv" / "metrics.csv").is_file()
        assert (job_dir / ".hydra" / "overrides.yaml").is_file()
    assert not (tmp_path / "outputs").exists()  # nothing outside the sweep dir and work dir


def test_optuna_search_optimises_the_full_tile_iou(synthetic_root, tiny_train_overrides, tmp_path):
    """hparams_search=optuna: each trial trains, evaluates its best checkpoint on the full tiles of
    the selection split (never the report split) and hands that IoU to Optuna, which writes the
    best parameters it found."""
    pytest.importorskip("hydra_plugins.hydra_optuna_sweeper")
    sweep = tmp_path / "optuna"
    run_train_sweep(
        sweep,
        synthetic_root,
        tiny_train_overrides,
        tmp_path,
        "hparams_search=optuna",
        "hydra.sweeper.n_trials=2",
        "logger=none",
        "eval_overrides=['eval.split=val','eval.gallery=0','eval.crop_metrics=false']",
    )
    best = yaml.safe_load((sweep / "optimization_results.yaml").read_text())
    for job in (0, 1):
        m = json.loads((sweep / str(job) / "evaluate" / "metrics.json").read_text())
        assert m["split"] == "val" and m["reported_on"]["role"] == "selection"
    assert best["name"] == "optuna" and 0.0 <= best["best_value"] <= 1.0
    assert set(best["best_params"]) == {
        "optimizer.lr",
        "loss.bce_weight",
        "loss.dice_weight",
        "data.pos_fraction",
        "model.base",
    }
    ious = [
        json.loads((sweep / str(job) / "evaluate" / "metrics.json").read_text())["pixel"][
            "headline"
        ]["iou"]
        for job in (0, 1)
    ]
    assert best["best_value"] == pytest.approx(max(ious))


@pytest.mark.slow
def test_ddp_sim_fast_dev_run(synthetic_root, tiny_cfg, tmp_path, monkeypatch):
    """Two CPU processes over gloo, spawned. Each rank validates different crops; what is logged
    (on every rank) is the metric over both ranks' pixels, and a value logged with sync_dist is
    the mean over ranks. With scheduler=time_onecycle the TimeBudget clock is broadcast from
    rank 0 at every step (sn7.lit.time_budget), so both ranks read the same time.
    tests/rank_probe.py records what each rank saw."""
    monkeypatch.syspath_prepend(str(Path(__file__).parent))  # the spawned ranks import it
    probe = tmp_path / "probe"
    cfg = tiny_cfg(
        synthetic_root.root,
        tmp_path,
        "trainer=ddp_sim",
        "debug=fast_dev_run",
        "scheduler=time_onecycle",
        "+callbacks.rank_probe._target_=rank_probe.RankProbe",
        f"+callbacks.rank_probe.out_dir={probe}",
    )
    value = train(cfg)
    ranks = [json.loads((probe / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert ranks[0]["clock"] == ranks[1]["clock"] > 0  # rank 0's clock, on both ranks
    counts = [r["counts"] for r in ranks]
    assert all(sum(c) > 0 for c in counts) and counts[0] != counts[1]
    expected = scores(*(a + b for a, b in zip(*counts, strict=True)))
    for rank in ranks:
        logged = rank["logged"]
        assert logged["probe/rank"] == pytest.approx(1.5)  # mean of 1 and 2
        for name in ("iou", "precision", "recall", "f1"):
            assert logged[f"val/{name}"] == pytest.approx(expected[name], rel=1e-6), name
        assert logged["val/best_iou"] == pytest.approx(value)
        assert logged["val/best_iou"] >= logged["val/iou"] - 1e-6
