"""SegmentationTask (sn7.lit.module): loss and metrics skip ignore pixels, val metrics are
evaluate's (p >= threshold), optimisers and schedulers come from config, and one batch can be
overfitted."""

from __future__ import annotations

import copy
from types import SimpleNamespace

import numpy as np
import pytest
import pytorch_lightning as pl
import rasterio
import torch
from torch.utils.data import DataLoader

from sn7.constants import IGNORE
from sn7.data.input_spec import InputSpec
from sn7.evaluate import crop_counts
from sn7.inference.checkpoint import LoadedModel
from sn7.inference.sliding_window import SlidingWindowPredictor
from sn7.lit.datamodule import SN7DataModule
from sn7.lit.module import CHECKPOINT_FORMAT, SegmentationTask
from sn7.metrics.pixel import counts_from, scores, sweep_metric, sweep_rows, threshold_grid
from sn7.models.heads import building_probability
from sn7.train import build_task

pytestmark = pytest.mark.usefixtures("one_torch_thread")

SPEC = {
    "bands": [1, 2, 3, 4],
    "mean": [0.3, 0.3, 0.3, 0.0],
    "std": [0.2, 0.2, 0.2, 1.0],
    "alpha_band": 4,
    "crop_size": 32,
}
# A pixelwise model: its output at a pixel depends on that pixel's input only, so changing the
# image under ignore pixels changes the predictions there and nowhere else.
PIXELWISE = {"_target_": "torch.nn.Conv2d", "in_channels": 4, "out_channels": 1, "kernel_size": 1}
TINY_UNET = {"_target_": "sn7.models.tiny_unet.TinyUNet", "in_ch": 4, "base": 4, "depth": 2}
LOSS = {"_target_": "sn7.models.losses.SegmentationLoss", "bce_weight": 1.0, "dice_weight": 1.0}
ADAMW = {"_target_": "torch.optim.AdamW", "_partial_": True, "lr": 1e-3}
VAL_KEYS = ["val/loss", "val/iou", "val/precision", "val/recall", "val/f1", "val/best_iou"]


def make_task(model=PIXELWISE, seed: int = 0, **kwargs) -> SegmentationTask:
    torch.manual_seed(seed)
    return SegmentationTask(
        model=model, loss=LOSS, optimizer=ADAMW, scheduler=None, input_spec=SPEC, **kwargs
    )


def make_batch(seed: int = 0, n: int = 2, size: int = 32) -> dict:
    g = torch.Generator().manual_seed(seed)
    image = torch.randn(n, 4, size, size, generator=g)
    mask = (torch.rand(n, size, size, generator=g) < 0.3).to(torch.uint8)
    mask[:, : size // 3] = IGNORE  # a no-data block
    mask[torch.rand(n, size, size, generator=g) < 0.1] = IGNORE  # and scattered UDM pixels
    return {"image": image, "mask": mask}


def loader(batch: dict) -> DataLoader:
    samples = [{k: v[i] for k, v in batch.items()} for i in range(len(batch["image"]))]
    return DataLoader(samples, batch_size=len(samples))


def trainer(**kwargs) -> pl.Trainer:
    return pl.Trainer(
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        **kwargs,
    )


def validate(task: SegmentationTask, batch: dict) -> dict[str, float]:
    t = trainer()
    t.validate(task, dataloaders=loader(batch), verbose=False)
    return {k: float(v) for k, v in t.callback_metrics.items()}


def train_one_step(task: SegmentationTask, batch: dict) -> dict[str, float]:
    t = trainer(max_steps=1, limit_val_batches=0, num_sanity_val_steps=0)
    t.fit(task, train_dataloaders=loader(batch))
    return {k: float(v) for k, v in t.callback_metrics.items()}


def with_image_changed(batch: dict, where: torch.Tensor) -> dict:
    image = batch["image"].clone()
    noise = torch.randn(image.shape, generator=torch.Generator().manual_seed(99)) * 100
    image[where[:, None].expand_as(image)] = noise[where[:, None].expand_as(image)]
    return {"image": image, "mask": batch["mask"]}


def test_ignore_pixels_do_not_change_val_loss_or_metrics():
    task = make_task()
    batch = make_batch()
    ignore = batch["mask"] == IGNORE
    changed = with_image_changed(batch, ignore)
    with torch.no_grad():  # the change really reaches the predictions under ignore
        before, after = task(batch["image"]), task(changed["image"])
    assert not torch.allclose(before[ignore], after[ignore])
    torch.testing.assert_close(before[~ignore], after[~ignore], rtol=0, atol=0)

    a, b = validate(task, batch), validate(task, changed)
    for key in [*VAL_KEYS, "val/best_threshold"]:
        assert a[key] == b[key], key

    # the same check catches a change where it counts
    valid_change = with_image_changed(batch, ~ignore & (torch.rand(ignore.shape) < 0.5))
    c = validate(task, valid_change)
    assert c["val/loss"] != a["val/loss"]


@pytest.mark.filterwarnings("ignore:You defined a `validation_step` but have no `val_dataloader`")
def test_ignore_pixels_do_not_change_train_loss_or_metrics():
    task = make_task()
    batch = make_batch(1)
    changed = with_image_changed(batch, batch["mask"] == IGNORE)
    a = train_one_step(copy.deepcopy(task), batch)
    b = train_one_step(copy.deepcopy(task), changed)
    for key in ["train/loss", "train/iou", "train/precision", "train/recall", "train/f1"]:
        assert a[key] == b[key], key


def test_val_metrics_count_valid_pixels_only():
    task = make_task()
    batch = make_batch(2)
    with torch.no_grad():
        prob = task(batch["image"]).sigmoid()
    valid = batch["mask"] != IGNORE
    pred, truth = prob[valid] >= 0.5, batch["mask"][valid] == 1
    tp = int((pred & truth).sum())
    fp = int((pred & ~truth).sum())
    fn = int((~pred & truth).sum())
    expected = scores(tp, fp, fn)
    got = validate(task, batch)
    for name in ("iou", "precision", "recall", "f1"):
        assert got[f"val/{name}"] == pytest.approx(expected[name], abs=1e-6), name
    with torch.no_grad():
        expected_loss = float(task.loss_fn(task(batch["image"]), batch["mask"].long()))
    assert got["val/loss"] == pytest.approx(expected_loss, rel=1e-6)
    # the best threshold's IoU can only beat the IoU at 0.5 (0.5 is on the grid)
    assert got["val/best_iou"] >= got["val/iou"] - 1e-6
    assert 0.05 <= got["val/best_threshold"] <= 0.95


def band1_tie_model(spec: InputSpec, level: int) -> dict:
    """A 1x1 conv whose logit is band1 - band1(level) in model-input units: exactly 0 (p = 0.5
    exactly) wherever band 1 reads `level`, above 0.5 where brighter, below where darker."""
    pixel = np.zeros((spec.in_channels, 1, 1), np.uint8)
    pixel[0] = level
    at_level = float(spec.normalize(pixel)[0, 0, 0])  # float32, as the dataset computes it
    return {"weight": [1.0] + [0.0] * (spec.in_channels - 1), "bias": -at_level}


def test_val_metrics_are_evaluates_crop_metrics_ties_included(synthetic_root, train_cfg, tmp_path):
    """Training's val counts and val/iou, precision, recall, F1 at 0.5 equal what evaluate
    computes over the same grid crops (sn7.evaluate.crop_counts), with many probabilities
    exactly 0.5: both count p >= threshold as a building."""
    cfg = train_cfg(synthetic_root.root, tmp_path, "data.val_batch_size=3")
    dm = SN7DataModule(cfg.data, cfg.split, cfg.subset, cfg.augment, cfg.seed)
    dm.prepare_data()
    dm.setup("fit")
    crops = [dm.val_set[i] for i in range(len(dm.val_set))]
    # band 1's most common raw value on building pixels: p = 0.5 exactly on a good share of them
    raw = [dm.val_set.read_crop(*where) for where in dm.val_set.index]
    level = int(np.bincount(np.concatenate([img[0][mask == 1] for img, mask in raw])).argmax())
    tie = band1_tie_model(dm.spec, level)

    task = SegmentationTask(
        model=PIXELWISE, loss=LOSS, optimizer=ADAMW, scheduler=None, input_spec=dm.spec.to_dict()
    )
    with torch.no_grad():
        task.model.weight.copy_(torch.tensor(tie["weight"]).reshape(1, -1, 1, 1))
        task.model.bias.fill_(tie["bias"])
    prob = torch.cat([task(c["image"][None]).sigmoid() for c in crops])
    masks = torch.stack([c["mask"] for c in crops])
    ties = (prob == 0.5) & (masks == 1)
    assert ties.sum() >= 10, "the test needs buildings with p exactly 0.5"

    t = trainer()
    t.validate(task, dataloaders=dm.val_dataloader(), verbose=False)
    logged = {k: float(v) for k, v in t.callback_metrics.items()}

    thresholds = threshold_grid()
    loaded = LoadedModel(task.model, dm.spec, {}, {}, tmp_path / "unused.ckpt")
    predictor = SlidingWindowPredictor(task.model, window=64, overlap=0, batch_size=5)
    counts = crop_counts(loaded, predictor, dm.val_set.rows, thresholds)
    np.testing.assert_array_equal(task.val_counts, counts)
    at_half = sweep_rows(thresholds, counts)[thresholds.index(0.5)]
    for name in ("iou", "precision", "recall", "f1"):
        assert logged[f"val/{name}"] == pytest.approx(at_half[name], rel=1e-6), name

    # the ties decide the result: counting p > 0.5 (torchmetrics' Binary* rule) gives less
    valid = masks != IGNORE
    strict = (prob > 0.5) & valid
    truth = (masks == 1) & valid
    tp = int((strict & truth).sum())
    strict_iou = tp / int((strict | truth).sum())
    assert strict_iou < at_half["iou"] - 0.01


def test_forward_returns_one_logit_map_per_image():
    task = make_task(TINY_UNET)
    out = task(torch.randn(3, 4, 40, 24))
    assert out.shape == (3, 40, 24)


def test_channels_last_gives_the_same_logits():
    plain = make_task(TINY_UNET).eval()
    fast = make_task(TINY_UNET, channels_last=True).eval()
    fast.load_state_dict(plain.state_dict())
    x = torch.randn(2, 4, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(fast(x), plain(x), rtol=1e-4, atol=1e-5)


def test_hparams_rebuild_the_plain_model():
    task = make_task(TINY_UNET)
    hp = task.hparams
    assert hp["model"] == TINY_UNET and hp["input_spec"] == SPEC and hp["loss"] == LOSS
    assert task.spec == InputSpec.from_dict(SPEC)
    from hydra.utils import instantiate

    rebuilt = instantiate(hp["model"])
    rebuilt.load_state_dict(task.model.state_dict())  # same architecture, key for key
    checkpoint: dict = {}
    task.on_save_checkpoint(checkpoint)
    assert checkpoint["sn7_format"] == CHECKPOINT_FORMAT


def composed_task(compose_config, run_dir, *overrides: str) -> SegmentationTask:
    """The task train() builds, from the composed config (run_dir: where logs would go)."""
    cfg = compose_config(
        "train", [f"paths.run_dir={run_dir}", "model.base=2", "model.depth=1", *overrides]
    )
    spec = InputSpec.from_data_cfg(cfg.data)
    return build_task(cfg, SimpleNamespace(spec=spec), channels_last=False)


@pytest.mark.parametrize("scheduler", ["cosine", "onecycle", "none"])
def test_optimizer_and_scheduler_come_from_config(compose_config, tmp_path, scheduler):
    task = composed_task(
        compose_config,
        tmp_path,
        f"scheduler={scheduler}",
        "optimizer.lr=0.02",
        "optimizer.weight_decay=0.1",
    )
    task.trainer = trainer(max_epochs=-1, max_steps=7)  # estimated_stepping_batches = 7
    configured = task.configure_optimizers()
    if scheduler == "none":
        assert isinstance(configured, torch.optim.AdamW)
        optimizer = configured
    else:
        optimizer = configured["optimizer"]
        sched = configured["lr_scheduler"]
        assert sched["interval"] == "step"
        if scheduler == "cosine":
            assert isinstance(sched["scheduler"], torch.optim.lr_scheduler.CosineAnnealingLR)
            assert sched["scheduler"].T_max == 7
        else:
            assert isinstance(sched["scheduler"], torch.optim.lr_scheduler.OneCycleLR)
            assert sched["scheduler"].total_steps == 7
        assert sched["scheduler"].optimizer is optimizer
    assert isinstance(optimizer, torch.optim.AdamW)
    group = optimizer.param_groups[0]
    assert group["weight_decay"] == 0.1
    if scheduler == "onecycle":  # starts at max_lr / div_factor, peaks at optimizer.lr
        assert group["max_lr"] == 0.02
    else:
        assert group.get("initial_lr", group["lr"]) == 0.02
    params = {id(p) for g in optimizer.param_groups for p in g["params"]}
    assert params == {id(p) for p in task.parameters()}


def overfit_batch(synthetic_root, spec: InputSpec) -> dict:
    """Two 64-px crops of the richest synthetic tile, one half under a cloud (label 255)."""
    tile = max(synthetic_root.tiles.values(), key=lambda t: (t.mask == 1).sum())
    with rasterio.open(tile.image) as src:
        image = spec.normalize(src.read(list(spec.bands)))
    crops = [(slice(0, 64), slice(0, 64)), (slice(32, 96), slice(64, 128))]
    return {
        "image": torch.from_numpy(np.stack([image[:, r, c] for r, c in crops])),
        "mask": torch.from_numpy(np.stack([tile.mask[r, c] for r, c in crops])),
    }


@pytest.mark.parametrize("targets", [[], ["targets=boundary"]], ids=["building", "boundary"])
def test_one_batch_can_be_overfitted(compose_config, synthetic_root, tmp_path, targets):
    """TinyUNet + the default loss + AdamW drive one batch to IoU > 0.9: the model, loss (with
    ignore pixels) and metric are wired together correctly, with one head or with building /
    edge / contact heads (scored on the map later stages read)."""
    task = composed_task(
        compose_config,
        tmp_path,
        "model.base=8",
        "model.depth=2",
        "optimizer.lr=0.01",
        "scheduler=none",
        *targets,
    )
    heads = 3 if targets else 1
    assert task.model.head.out_channels == heads
    torch.manual_seed(0)
    batch = overfit_batch(synthetic_root, task.spec)
    x, target = batch["image"], batch["mask"].long()
    assert (target == IGNORE).any() and (target == 1).any()
    optimizer = task.configure_optimizers()

    def iou() -> float:
        task.eval()
        metric = sweep_metric([0.5])
        with torch.no_grad():
            metric.update(building_probability(task.outputs(x)), target)
        task.train()
        return sweep_rows([0.5], counts_from(metric))[0]["iou"]

    start, best = iou(), 0.0
    for step in range(1, 201):
        optimizer.zero_grad()
        loss = task.loss_fn(task.outputs(x), target)
        loss.backward()
        optimizer.step()
        if step % 10 == 0:
            best = iou()
            if best > 0.9:
                break
    assert start < 0.5
    assert best > 0.9, f"IoU {best:.3f} after {step} steps (loss {float(loss):.3f})"
