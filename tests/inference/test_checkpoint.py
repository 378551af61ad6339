"""Checkpoint -> plain model + input spec (sn7.inference.checkpoint), and its errors."""

from __future__ import annotations

import shutil

import pytest
import torch

from sn7.data.input_spec import InputSpec
from sn7.errors import CheckpointError
from sn7.inference.checkpoint import load_model, read_checkpoint
from sn7.models.tiny_unet import TinyUNet


def test_tiny_checkpoint_rebuilds_the_trained_model(tiny_checkpoint, synthetic_root):
    loaded = load_model(tiny_checkpoint)
    assert isinstance(loaded.model, TinyUNet)
    assert not loaded.model.training  # eval mode: BatchNorm uses its running statistics
    assert loaded.model_config["_target_"] == "sn7.models.tiny_unet.TinyUNet"
    assert (loaded.model_config["base"], loaded.model_config["depth"]) == (4, 2)
    assert loaded.model_config["in_ch"] == 4
    assert loaded.spec == InputSpec(
        bands=(1, 2, 3, 4),
        mean=(0.33, 0.33, 0.27, 0.0),
        std=(0.17, 0.15, 0.14, 1.0),
        alpha_band=4,
        crop_size=64,
    )
    assert loaded.run_config["data"]["root"] == str(synthetic_root.root)
    assert loaded.path == tiny_checkpoint
    assert loaded.threshold_file == tiny_checkpoint.with_name("best.ckpt.eval.json")

    trained = torch.load(tiny_checkpoint, map_location="cpu", weights_only=False)["state_dict"]
    weights = loaded.model.state_dict()
    assert weights.keys() == {k.removeprefix("model.") for k in trained if k.startswith("model.")}
    for name, value in weights.items():
        assert torch.equal(value, trained[f"model.{name}"]), name  # trained, not initial, weights


def test_stub_checkpoint_loads(tmp_path, stub_checkpoint):
    loaded = load_model(stub_checkpoint(tmp_path / "stub.ckpt"))
    assert isinstance(loaded.model, torch.nn.Conv2d)
    assert loaded.run_config == {}


def _truncated(tmp_path, tiny_checkpoint):
    data = tiny_checkpoint.read_bytes()
    path = tmp_path / "truncated.ckpt"
    path.write_bytes(data[: len(data) // 2])
    return path


def _text(tmp_path, tiny_checkpoint):
    path = tmp_path / "notes.ckpt"
    path.write_text("not a checkpoint\n")
    return path


def _plain_torch(tmp_path, tiny_checkpoint):
    path = tmp_path / "plain.ckpt"
    torch.save({"state_dict": TinyUNet(4, 4, 2).state_dict(), "epoch": 3}, path)
    return path


def _tensor(tmp_path, tiny_checkpoint):
    path = tmp_path / "tensor.pt"
    torch.save(torch.zeros(3), path)
    return path


def _no_hparams(tmp_path, tiny_checkpoint):
    ckpt = torch.load(tiny_checkpoint, map_location="cpu", weights_only=False)
    del ckpt["hyper_parameters"]["input_spec"]
    path = tmp_path / "no_spec.ckpt"
    torch.save(ckpt, path)
    return path


def _wrong_weights(tmp_path, tiny_checkpoint):
    ckpt = torch.load(tiny_checkpoint, map_location="cpu", weights_only=False)
    ckpt["hyper_parameters"]["model"]["base"] = 8
    path = tmp_path / "wrong_weights.ckpt"
    torch.save(ckpt, path)
    return path


def _unknown_model(tmp_path, tiny_checkpoint):
    ckpt = torch.load(tiny_checkpoint, map_location="cpu", weights_only=False)
    ckpt["hyper_parameters"]["model"]["_target_"] = "sn7.models.no_such.Model"
    path = tmp_path / "unknown.ckpt"
    torch.save(ckpt, path)
    return path


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda tmp, _: tmp / "missing.ckpt", "checkpoint not found"),
        (lambda tmp, _: tmp, "is a folder"),
        (_truncated, "not a readable PyTorch checkpoint (truncated?)"),
        (_text, "not a readable PyTorch checkpoint"),
        (_plain_torch, "not an sn7 checkpoint"),
        (_tensor, "not an sn7 checkpoint"),
        (_no_hparams, "lacks 'input_spec'"),
        (_wrong_weights, "weights do not fit the model"),
        (_unknown_model, "cannot rebuild model sn7.models.no_such.Model"),
    ],
)
def test_bad_checkpoints_are_checkpoint_errors_naming_the_file(
    tmp_path, tiny_checkpoint, make, message
):
    path = make(tmp_path, tiny_checkpoint)
    with pytest.raises(CheckpointError) as exc:
        load_model(path)
    assert str(exc.value).startswith(f"{path}: ")
    assert message in str(exc.value)
    assert exc.value.path == path


def test_read_checkpoint_accepts_a_copy(tmp_path, tiny_checkpoint):
    copy = shutil.copy(tiny_checkpoint, tmp_path / "copy.ckpt")
    assert read_checkpoint(copy)["sn7_format"].startswith("sn7-segmentation/")
