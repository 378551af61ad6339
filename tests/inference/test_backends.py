"""Inference backends (sn7.inference.backends): torch with batch norm folded, ONNX Runtime and
OpenVINO give torch's probabilities, the ONNX export is cached per weights and window shape, and
a missing runtime or an impossible choice is a one-line error."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from sn7.data.input_spec import InputSpec
from sn7.data.raster_io import read_raster
from sn7.errors import ConfigError
from sn7.inference import backends
from sn7.inference.backends import fold_batch_norm, resolve_backend
from sn7.inference.sliding_window import SlidingWindowPredictor
from sn7.models.tiny_unet import TinyUNet

REPO = Path(__file__).resolve().parents[2]
SAMPLE_TILE = next((REPO / "data" / "sample").rglob("images/*.tif"))
RUNTIMES = [
    pytest.param(name, marks=pytest.mark.skipif(not backends.installed(name), reason="missing"))
    for name in ("onnxruntime", "openvino")
]
CPU = torch.device("cpu")


def cpu_best_shaped_model(
    seed: int = 0, calibrate_on: np.ndarray | None = None, **arch
) -> TinyUNet:
    """conf/experiment/cpu_best's network (base 16, 2x upscale), random weights and batch-norm
    statistics far from (0, 1), so that folding them is not a no-op; with `calibrate_on`, the
    head rescaled so that each output's logits on that image have mean 0 and std 3 (probabilities
    that vary over the whole range, as a trained model's do). `arch`: other TinyUNet arguments."""
    torch.manual_seed(seed)
    model = TinyUNet(in_ch=4, base=16, depth=4, upscale=2, **arch)
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            module.running_mean.uniform_(-0.5, 0.5)
            module.running_var.uniform_(0.5, 2.0)
            module.weight.data.uniform_(0.5, 1.5)
            module.bias.data.uniform_(-0.2, 0.2)
    model.eval()
    if calibrate_on is not None:
        with torch.inference_mode():
            logits = model(torch.from_numpy(calibrate_on)[None])
        mean, std = logits.mean(dim=(0, 2, 3)), logits.std(dim=(0, 2, 3))  # per output head
        with torch.no_grad():
            model.head.weight *= (3 / std)[:, None, None, None]
            model.head.bias.copy_((model.head.bias - mean) * 3 / std)
    return model


@pytest.fixture(scope="module")
def real_crop() -> np.ndarray:
    """A 200 x 180 crop of a real SN7 tile of the demo sample, normalised as in training."""
    spec = InputSpec.from_dict(
        {"bands": [1, 2, 3, 4], "mean": [0.33, 0.33, 0.27, 0.0], "std": [0.17, 0.15, 0.14, 1.0],
         "alpha_band": 4, "crop_size": 64}
    )  # fmt: skip
    return spec.normalize(read_raster(SAMPLE_TILE, spec.bands))[:, 200:400, 300:480]


def predictor(model, backend, tmp_path, **kw) -> SlidingWindowPredictor:
    kw = {"window": 128, "overlap": 32, "batch_size": 2, "precision": "32-true", **kw}
    return SlidingWindowPredictor(model, backend=backend, checkpoint=tmp_path / "m.ckpt", **kw)


ARCHS = [{}, {"block": "residual", "out_ch": 3}]  # the plain net; residual blocks, three heads


@pytest.mark.parametrize("arch", ARCHS, ids=["plain", "residual3"])
def test_folding_batch_norm_keeps_the_function_and_removes_every_batch_norm(arch):
    model = cpu_best_shaped_model(**arch)
    folded = fold_batch_norm(model)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in folded.modules())
    assert any(isinstance(m, nn.BatchNorm2d) for m in model.modules())  # the original is kept
    x = torch.randn(2, 4, 48, 40)
    with torch.inference_mode():
        np.testing.assert_allclose(folded(x).numpy(), model(x).numpy(), atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("arch", ARCHS, ids=["plain", "residual3"])
@pytest.mark.parametrize("backend", ["torch", *RUNTIMES])
def test_every_backend_gives_torchs_probabilities_on_a_real_tile(
    backend, arch, real_crop, tmp_path
):
    """fp32, the blend of 2 x 2 overlapping windows; against torch eager, BN not folded."""
    model = cpu_best_shaped_model(calibrate_on=real_crop, **arch)
    reference = SlidingWindowPredictor(model, 128, 32, 2, "32-true")
    reference._torch = backends.TorchRunner(model, "32-true", False, CPU, fold=False)  # eager
    expected = reference(real_crop)
    got = predictor(model, backend, tmp_path)(real_crop)
    assert got.shape == expected.shape == real_crop.shape[1:]
    assert expected.std() > 0.1  # probabilities that vary, so the comparison means something
    assert np.abs(got - expected).max() <= 1e-3


def test_the_export_is_cached_per_weights_and_replaced_when_they_change(tmp_path, monkeypatch):
    backend = "onnxruntime"  # the cache is the same code for both runtimes
    if not backends.installed(backend):
        pytest.skip("onnxruntime missing")
    calls = []
    export = torch.onnx.export
    monkeypatch.setattr(torch.onnx, "export", lambda *a, **k: calls.append(1) or export(*a, **k))
    image = np.random.default_rng(0).normal(size=(4, 64, 64)).astype(np.float32)
    model = TinyUNet(in_ch=4, base=4, depth=2).eval()
    first = predictor(model, backend, tmp_path, window=64)(image)
    second = predictor(model, backend, tmp_path, window=64)(image)
    assert len(calls) == 1
    np.testing.assert_array_equal(first, second)
    (old,) = tmp_path.glob("m.ckpt.*.onnx")
    with torch.no_grad():
        model.head.bias += 1.0  # "retrained": other weights
    predictor(model, backend, tmp_path, window=64)(image)
    (new,) = tmp_path.glob("m.ckpt.*.onnx")  # the stale export is gone
    assert new != old and len(calls) == 2


def test_a_read_only_checkpoint_folder_caches_the_export_in_the_user_cache(tmp_path, monkeypatch):
    if not backends.installed("onnxruntime"):
        pytest.skip("onnxruntime missing")
    folder = tmp_path / "published"
    folder.mkdir()
    monkeypatch.setattr(backends, "_writable", lambda path: Path(path) != folder)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    model = TinyUNet(in_ch=4, base=4, depth=2).eval()
    image = np.zeros((4, 32, 32), np.float32)
    SlidingWindowPredictor(model, 32, 8, 1, backend="onnxruntime",
                           checkpoint=folder / "best.ckpt")(image)  # fmt: skip
    assert not list(folder.iterdir())
    assert len(list((tmp_path / "cache" / "sn7" / "onnx").glob("best.ckpt.*.onnx"))) == 1


def test_auto_takes_the_fastest_installed_runtime_on_a_cpu_and_torch_on_a_gpu(monkeypatch):
    monkeypatch.setattr(backends, "installed", lambda name: name != "openvino")
    assert resolve_backend("auto", CPU, "32-true") == "onnxruntime"
    assert resolve_backend("auto", CPU, "bf16-mixed") == "torch"  # ONNX Runtime has no bf16
    monkeypatch.setattr(backends, "installed", lambda name: name == "torch")
    assert resolve_backend("auto", CPU) == "torch"
    monkeypatch.setattr(backends, "installed", lambda name: True)
    assert resolve_backend("auto", CPU, "32-true") == resolve_backend("auto", CPU, "bf16-mixed")
    assert resolve_backend("auto", CPU) == "openvino"
    assert resolve_backend("auto", torch.device("cuda")) == "torch"


@pytest.mark.parametrize(
    ("name", "device", "installed", "message"),
    [
        ("tensorrt", "cpu", True, "must be one of"),
        ("openvino", "cpu", False, "not installed: pip install"),
        ("onnxruntime", "cuda", True, "runs on the CPU only"),
    ],
)
def test_an_impossible_backend_is_a_one_line_error(name, device, installed, message, monkeypatch):
    monkeypatch.setattr(backends, "installed", lambda _: installed)
    with pytest.raises(ConfigError, match=message) as info:
        resolve_backend(name, torch.device(device))
    assert "\n" not in str(info.value)


def test_the_export_never_needs_the_checkpoint_file(tmp_path):
    """The exported graph comes from the rebuilt model object; the checkpoint path only names the
    cache file, so a checkpoint that is absent (or hostile) is never read by the export."""
    if not backends.installed("onnxruntime"):
        pytest.skip("onnxruntime missing")
    model = TinyUNet(in_ch=4, base=4, depth=2).eval()
    ckpt = tmp_path / "never_written.ckpt"
    prob = SlidingWindowPredictor(model, 32, 8, 1, backend="onnxruntime", checkpoint=ckpt)(
        np.zeros((4, 32, 32), np.float32)
    )
    assert prob.shape == (32, 32) and not ckpt.exists()
    assert os.listdir(tmp_path) and all(p.endswith(".onnx") for p in os.listdir(tmp_path))


def test_a_model_already_run_by_torch_exports_and_is_left_unchanged(tmp_path):
    """The export happens inside the predictor's inference mode; the model had been run by a
    torch runner (channels_last, bf16) before: the export works and the model is not changed."""
    if not backends.installed("onnxruntime"):
        pytest.skip("onnxruntime missing")
    model = TinyUNet(in_ch=4, base=4, depth=2, upscale=2).eval()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    runner = backends.TorchRunner(model, "bf16-mixed", True, CPU, fold=False)
    with torch.inference_mode():
        runner(torch.zeros(1, 4, 32, 32))
    prob = predictor(model, "onnxruntime", tmp_path, window=32, overlap=8)(
        np.zeros((4, 32, 32), np.float32)
    )
    assert prob.shape == (32, 32)
    for key, value in model.state_dict().items():
        assert torch.equal(value, before[key]) and value.is_contiguous(), key


def test_stale_exports_of_another_checkpoint_name_are_kept(tmp_path):
    """`best.ckpt`'s cleanup removes only `best.ckpt.<key>.<h>x<w>.onnx` files with other
    weights, never the export of `best.ckpt.v2` beside it."""
    other = tmp_path / "best.ckpt.v2.0123456789abcdef.64x64.onnx"
    mine = tmp_path / "best.ckpt.0123456789abcdef.64x64.onnx"
    other.write_bytes(b"")
    mine.write_bytes(b"")
    path = backends.onnx_path(
        TinyUNet(in_ch=4, base=4, depth=2), (4, 64, 64), tmp_path / "best.ckpt"
    )
    assert other.exists() and not mine.exists()
    assert path.name.startswith("best.ckpt.") and path.name.endswith(".64x64.onnx")
