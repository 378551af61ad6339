"""sn7.release: a slim checkpoint (weights and configs only) that the safe loader opens and that
predicts what its source predicts."""

from __future__ import annotations

import pytest
import torch

from sn7.errors import CheckpointError
from sn7.inference.checkpoint import load_model, read_checkpoint
from sn7.release import main, release


def _probs(path):
    loaded = load_model(path)
    x = torch.rand(1, loaded.spec.in_channels, 32, 32, generator=torch.Generator().manual_seed(1))
    with torch.inference_mode():
        return torch.sigmoid(loaded.model(x))


def test_release_keeps_weights_and_configs_only(tiny_checkpoint, tmp_path):
    out = tmp_path / "release" / "model.ckpt"
    r = release(tiny_checkpoint, out)
    slim = read_checkpoint(out)  # weights_only=True: nothing in it can run
    assert "optimizer_states" in read_checkpoint(tiny_checkpoint)
    assert not {"optimizer_states", "loops", "callbacks", "lr_schedulers"} & set(slim)
    assert set(slim["hyper_parameters"]) <= {"model", "input_spec", "channels_last", "run_config"}
    assert (
        slim["sn7_release"]["source"] == "best.ckpt"
        and len(slim["sn7_release"]["source_sha256"]) == 64
    )
    assert r["bytes_out"] < r["bytes_in"] and r["max_dp"] == 0.0
    assert torch.equal(_probs(out), _probs(tiny_checkpoint))


def test_float16_halves_the_weights_and_stays_close(tiny_checkpoint, tmp_path):
    full, half = tmp_path / "f32.ckpt", tmp_path / "f16.ckpt"
    release(tiny_checkpoint, full)
    r = release(tiny_checkpoint, half, float16=True)
    assert half.stat().st_size < full.stat().st_size
    assert read_checkpoint(half)["sn7_release"]["weights"] == "float16"
    assert r["max_dp"] < 2e-2
    assert (_probs(half) - _probs(tiny_checkpoint)).abs().max() < 2e-2


def test_bad_inputs_are_one_line_errors(tiny_checkpoint, tmp_path, capsys):
    with pytest.raises(CheckpointError, match="differ"):
        release(tiny_checkpoint, tiny_checkpoint)
    other = tmp_path / "not_sn7.ckpt"
    torch.save({"state_dict": {}}, other)
    assert main([str(other), str(tmp_path / "out.ckpt")]) == 1
    assert "not an sn7 checkpoint" in capsys.readouterr().err
    assert not (tmp_path / "out.ckpt").exists()
