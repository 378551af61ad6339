"""Training checkpoints open with torch.load(weights_only=True), and resume never runs a pickle
(sn7.lit.checkpoint_io, the plain hyperparameters of sn7.lit.module)."""

from __future__ import annotations

import os

import pytest
import torch
from omegaconf import OmegaConf

from sn7.errors import CheckpointError
from sn7.lit.module import SegmentationTask
from sn7.train import train

pytestmark = pytest.mark.usefixtures("one_torch_thread")

SPEC = {"bands": [1, 2, 3, 4], "mean": [0.3] * 4, "std": [0.2] * 4, "crop_size": 32}
CONFIGS = {
    "model": {"_target_": "sn7.models.tiny_unet.TinyUNet", "in_ch": 4, "base": 4, "depth": 2},
    "loss": {"_target_": "sn7.models.losses.SegmentationLoss", "bce_weight": 1.0},
    "optimizer": {"_target_": "torch.optim.AdamW", "_partial_": True, "lr": 1e-3},
    "scheduler": None,
    "input_spec": SPEC,
    "run_config": {"seed": 1, "data": {"bands": [1, 2, 3, 4]}},
}


def _is_plain(value) -> bool:
    if isinstance(value, dict):
        return type(value) is dict and all(_is_plain(v) for v in value.values())
    if isinstance(value, list):
        return type(value) is list and all(_is_plain(v) for v in value)
    return value is None or type(value) in (str, int, float, bool)


def test_hyperparameters_given_as_omegaconf_are_saved_as_plain_containers():
    task = SegmentationTask(**{k: OmegaConf.create(v) if v else v for k, v in CONFIGS.items()})
    saved = dict(task.hparams)
    assert {k: saved[k] for k in CONFIGS} == CONFIGS
    assert all(_is_plain(saved[k]) for k in CONFIGS), {k: type(v) for k, v in saved.items()}


@pytest.fixture
def torch_loads(monkeypatch):
    """Every torch.load call of the test, as (path, weights_only)."""
    calls = []
    real = torch.load

    def spy(f, *args, **kwargs):
        calls.append((str(f), kwargs.get("weights_only")))
        return real(f, *args, **kwargs)

    monkeypatch.setattr(torch, "load", spy)
    return calls


def test_a_trained_checkpoint_opens_weights_only_and_resumes(
    tiny_checkpoint, synthetic_root, session_train_cfg, tmp_path, torch_loads
):
    last = tiny_checkpoint.with_name("last.ckpt")
    for path in (tiny_checkpoint, last):
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
        assert _is_plain(ckpt["hyper_parameters"]["model"])
        if path == last:  # best.ckpt is whichever epoch validated best
            assert ckpt["global_step"] == 4  # 2 epochs of 2 steps

    cfg = session_train_cfg(
        synthetic_root.root, tmp_path, "trainer.max_epochs=3", "logger=csv", f"ckpt_path={last}"
    )
    train(cfg)
    resumed = torch.load(tmp_path / "checkpoints" / "last.ckpt", weights_only=True)
    assert resumed["global_step"] == 6  # only the third epoch ran (2 steps)
    assert (str(last), True) in torch_loads  # resume read the file...
    assert all(weights_only is True for _, weights_only in torch_loads)  # ...and nothing unsafe


def test_resume_from_a_hostile_checkpoint_is_refused_without_running_it(
    tiny_checkpoint, synthetic_root, session_train_cfg, tmp_path
):
    class MakesDirOnLoad:
        def __reduce__(self):
            return (os.makedirs, (str(tmp_path / "marker"),))

    ckpt = torch.load(tiny_checkpoint.with_name("last.ckpt"), weights_only=True)
    ckpt["loops"]["payload"] = MakesDirOnLoad()
    hostile = tmp_path / "hostile.ckpt"
    torch.save(ckpt, hostile)
    cfg = session_train_cfg(
        synthetic_root.root, tmp_path / "run", "trainer.max_epochs=3", f"ckpt_path={hostile}"
    )
    with pytest.raises(CheckpointError, match=r"refused: loading it would call os\.makedirs"):
        train(cfg)
    assert not (tmp_path / "marker").exists()
