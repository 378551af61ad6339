"""Checkpoint -> plain model + input spec (sn7.inference.checkpoint), and its errors."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf
from pytorch_lightning.utilities.parsing import AttributeDict

from sn7.convert import main as convert_main
from sn7.convert import plain
from sn7.data.input_spec import InputSpec
from sn7.errors import CheckpointError
from sn7.inference.checkpoint import load_model, read_checkpoint
from sn7.models.tiny_unet import TinyUNet

REPO = Path(__file__).resolve().parents[2]


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

    trained = torch.load(tiny_checkpoint, map_location="cpu", weights_only=True)["state_dict"]
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
    ckpt = torch.load(tiny_checkpoint, map_location="cpu", weights_only=True)
    del ckpt["hyper_parameters"]["input_spec"]
    path = tmp_path / "no_spec.ckpt"
    torch.save(ckpt, path)
    return path


def _wrong_weights(tmp_path, tiny_checkpoint):
    ckpt = torch.load(tiny_checkpoint, map_location="cpu", weights_only=True)
    ckpt["hyper_parameters"]["model"]["base"] = 8
    path = tmp_path / "wrong_weights.ckpt"
    torch.save(ckpt, path)
    return path


def _unknown_model(tmp_path, tiny_checkpoint):
    ckpt = torch.load(tiny_checkpoint, map_location="cpu", weights_only=True)
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
        (
            _unknown_model,
            "refuses model _target_ sn7.models.no_such.Model: not an sn7 model; "
            "add it to trusted_models if you trust this file",
        ),
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


# --- checkpoints from someone else: nothing in the file may run ---------------------------------


class MakesDirOnLoad:
    """Unpickling this calls os.makedirs(marker): the shape of a hostile checkpoint."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (os.makedirs, (self.marker,))


def _hostile(tmp_path, tiny_checkpoint, legacy=False):
    ckpt = torch.load(tiny_checkpoint, map_location="cpu", weights_only=True)
    ckpt["hyper_parameters"]["payload"] = MakesDirOnLoad(tmp_path / "marker")
    path = tmp_path / "hostile.ckpt"
    torch.save(ckpt, path, _use_new_zipfile_serialization=not legacy)
    return path


@pytest.mark.parametrize("legacy", [False, True], ids=["zip", "legacy-format"])
def test_a_pickle_that_runs_code_is_refused_and_does_not_run(tmp_path, tiny_checkpoint, legacy):
    path = _hostile(tmp_path, tiny_checkpoint, legacy)
    with pytest.raises(CheckpointError) as exc:
        load_model(path)
    assert str(exc.value).startswith(f"{path}: refused: loading it would call ")
    assert "os.makedirs" in str(exc.value) or "posix.makedirs" in str(exc.value)
    assert "\n" not in str(exc.value)
    assert not (tmp_path / "marker").exists()


def _with_model(tmp_path, tiny_checkpoint, model_config, name="foreign.ckpt"):
    ckpt = torch.load(tiny_checkpoint, map_location="cpu", weights_only=True)
    ckpt["hyper_parameters"]["model"] = model_config
    path = tmp_path / name
    torch.save(ckpt, path)
    return path


def test_a_foreign_model_target_is_refused_and_not_called(tmp_path, tiny_checkpoint):
    marker = tmp_path / "made_by_makedirs"
    path = _with_model(tmp_path, tiny_checkpoint, {"_target_": "os.makedirs", "name": str(marker)})
    with pytest.raises(CheckpointError) as exc:
        load_model(path)
    assert str(exc.value) == (
        f"{path}: refuses model _target_ os.makedirs: not an sn7 model; "
        "add it to trusted_models if you trust this file"
    )
    assert not marker.exists()


def test_a_nested_target_is_refused_even_under_an_sn7_model(tmp_path, tiny_checkpoint):
    marker = tmp_path / "made_by_makedirs"
    config = {
        "_target_": "sn7.models.tiny_unet.TinyUNet",
        "in_ch": 4,
        "base": {"_target_": "os.makedirs", "name": str(marker)},
        "depth": 2,
    }
    path = _with_model(tmp_path, tiny_checkpoint, config)
    with pytest.raises(CheckpointError, match="argument base holds a nested _target_"):
        load_model(path)
    assert not marker.exists()


def test_hydra_keys_and_interpolations_do_nothing(tmp_path, tiny_checkpoint):
    """Models are built by a plain call, so `${oc.env:...}` stays a string (no environment read)
    and Hydra's `_partial_`/`_args_` keys are refused."""
    partial = {"_target_": "sn7.models.tiny_unet.TinyUNet", "_partial_": True}
    with pytest.raises(CheckpointError, match="Hydra key _partial_"):
        load_model(_with_model(tmp_path, tiny_checkpoint, partial, "partial.ckpt"))
    env = {"_target_": "sn7.models.tiny_unet.TinyUNet", "in_ch": 4, "base": "${oc.env:HOME}"}
    with pytest.raises(CheckpointError, match="cannot rebuild model"):
        load_model(_with_model(tmp_path, tiny_checkpoint, env, "env.ckpt"))


PIXEL_NET = """
from pathlib import Path
from torch import nn

Path(__file__).with_name("imported").touch()  # proves whether the module was ever imported


class PixelNet(nn.Module):
    def __init__(self, in_ch: int):
        super().__init__()
        self.head = nn.Conv2d(in_ch, 1, 1)

    def forward(self, x):
        return self.head(x)
"""


def test_a_user_trusted_target_is_built_and_an_untrusted_one_never_imported(
    tmp_path, tiny_checkpoint, monkeypatch
):
    package = tmp_path / "user_models"
    package.mkdir()
    (package / "pixel_net.py").write_text(PIXEL_NET)
    monkeypatch.syspath_prepend(str(package))
    monkeypatch.delitem(sys.modules, "pixel_net", raising=False)
    ckpt = torch.load(tiny_checkpoint, map_location="cpu", weights_only=True)
    ckpt["hyper_parameters"]["model"] = {"_target_": "pixel_net.PixelNet", "in_ch": 4}
    ckpt["state_dict"] = {"model.head.weight": torch.full((1, 4, 1, 1), 0.5)}
    ckpt["state_dict"]["model.head.bias"] = torch.tensor([-1.0])
    path = tmp_path / "user.ckpt"
    torch.save(ckpt, path)

    with pytest.raises(CheckpointError, match=r"refuses model _target_ pixel_net\.PixelNet"):
        load_model(path)
    assert not (package / "imported").exists()  # refused on the name, before any import

    loaded = load_model(path, trusted_models=["pixel_net.PixelNet"])
    assert (package / "imported").exists()
    assert type(loaded.model).__name__ == "PixelNet"
    assert torch.equal(loaded.model.head.weight, torch.full((1, 4, 1, 1), 0.5))
    assert loaded.model_config == {"_target_": "pixel_net.PixelNet", "in_ch": 4}


def _old_format(tmp_path, tiny_checkpoint, container=OmegaConf.create):
    """A checkpoint whose hyperparameters are OmegaConf objects, as an older sn7 wrote them."""
    ckpt = torch.load(tiny_checkpoint, map_location="cpu", weights_only=True)
    ckpt["hyper_parameters"] = container(ckpt["hyper_parameters"])
    path = tmp_path / "old.ckpt"
    torch.save(ckpt, path)
    return path


def _attribute_dict(hparams):
    return AttributeDict(hparams, model=OmegaConf.create(hparams["model"]))


@pytest.mark.parametrize("container", [OmegaConf.create, _attribute_dict])
def test_an_old_format_checkpoint_says_how_to_convert_it(tmp_path, tiny_checkpoint, container):
    path = _old_format(tmp_path, tiny_checkpoint, container)
    with pytest.raises(CheckpointError) as exc:
        load_model(path)
    message = str(exc.value)
    assert message.startswith(f"{path}: written by an older sn7 (its pickle holds ")
    assert "omegaconf." in message
    assert message.endswith(f"convert it once: python -m sn7.convert {path} NEW.ckpt --trust")
    assert "\n" not in message


def test_convert_needs_trust_then_writes_a_safe_checkpoint(tmp_path, tiny_checkpoint, capsys):
    old = _old_format(tmp_path, tiny_checkpoint)
    new = tmp_path / "new.ckpt"
    assert convert_main([str(old), str(new)]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"sn7 error: loading {old} runs its pickle") and "--trust" in err
    assert not new.exists()

    assert convert_main([str(old), str(new), "--trust"]) == 0
    assert "any code inside the file executes" in capsys.readouterr().err
    safe = torch.load(new, map_location="cpu", weights_only=True)
    assert type(safe["hyper_parameters"]) is dict
    assert type(safe["hyper_parameters"]["model"]) is dict
    original = load_model(tiny_checkpoint)
    converted = load_model(new)
    assert converted.model_config == original.model_config
    assert converted.spec == original.spec
    assert converted.run_config == original.run_config
    for name, value in original.model.state_dict().items():
        assert torch.equal(converted.model.state_dict()[name], value), name


def test_convert_without_trust_never_opens_the_file(tmp_path, tiny_checkpoint):
    hostile = _hostile(tmp_path, tiny_checkpoint)
    assert convert_main([str(hostile), str(tmp_path / "new.ckpt")]) == 1
    assert not (tmp_path / "marker").exists()


def test_plain_refuses_an_object_without_a_plain_form():
    with pytest.raises(CheckpointError, match=r"checkpoint\['x'\] is a object"):
        plain({"x": object()})
    assert plain({"p": Path("/a"), "t": (1, [2.5])}) == {"p": "/a", "t": (1, [2.5])}


@pytest.mark.slow
def test_evaluate_cli_refuses_a_hostile_checkpoint_in_one_line(tmp_path, tiny_checkpoint):
    path = _hostile(tmp_path, tiny_checkpoint)
    result = subprocess.run(
        [sys.executable, "evaluate.py", f"ckpt_path={path}", f"hydra.run.dir={tmp_path / 'run'}"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 1, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert "Traceback" not in result.stderr
    assert lines[-1].startswith(f"sn7 error: {path}: refused: loading it would call ")
    assert sum(line.startswith("sn7 error:") for line in lines) == 1
    assert not (tmp_path / "marker").exists()
