"""Where inference runs (`infer.device`, `infer.batch_size: auto`; sn7.inference.sliding_window).

CPU tests run everywhere; the CUDA ones only where torch sees a GPU."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch
from torch import nn

from sn7.checks import check_infer
from sn7.errors import ConfigError
from sn7.inference.backends import device_autocast
from sn7.inference.sliding_window import (
    CPU_BATCH_SIZE,
    MAX_AUTO_BATCH,
    InferSettings,
    SlidingWindowPredictor,
    cpu_auto_batch,
    predictor_for,
)
from sn7.utils.hardware import resolve_device, resolve_precision

needs_gpu = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA GPU")
INFER = {"window": 64, "overlap": 16, "batch_size": "auto", "device": "auto", "tta": False}


def pixelwise_model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(4, 8, 1), nn.ReLU(), nn.Conv2d(8, 1, 1)).eval()


@pytest.fixture
def no_gpu(monkeypatch):
    """This machine as one without a GPU, whatever it has."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)


def test_auto_is_cpu_without_a_gpu_and_cuda_with_one(no_gpu, monkeypatch):
    assert resolve_device("auto") == torch.device("cpu")
    assert resolve_device("cpu") == torch.device("cpu")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert resolve_device("auto") == torch.device("cuda")
    assert resolve_device("cuda:1") == torch.device("cuda", 1)


def test_cuda_without_a_gpu_is_a_one_line_config_error(no_gpu):
    with pytest.raises(ConfigError) as exc:
        resolve_device("cuda")
    assert str(exc.value) == (
        "infer.device=cuda but torch sees no CUDA GPU; use infer.device=auto or cpu"
    )
    with pytest.raises(ConfigError, match="sees no CUDA GPU"):
        check_infer({**INFER, "device": "cuda"})  # the up-front check says the same
    with pytest.raises(ConfigError, match="sees no CUDA GPU"):
        SlidingWindowPredictor(pixelwise_model(), 64, 16, device="cuda")


@pytest.mark.parametrize("device", ["gpu", "tpu", "cudax", "", "cuda:", "cuda:x"])
def test_unknown_devices_are_refused(device):
    with pytest.raises(ConfigError, match=r"must be auto, cpu or cuda"):
        resolve_device(device)
    with pytest.raises(ConfigError, match=r"must be auto, cpu or cuda"):
        check_infer({**INFER, "device": device})


@pytest.mark.parametrize(("batch", "ok"), [("auto", True), (1, True), (6, True), (0, False)])
def test_check_infer_batch_size(batch, ok):
    if ok:
        check_infer({**INFER, "batch_size": batch})
    else:
        with pytest.raises(ConfigError, match="must be auto or a whole number >= 1"):
            check_infer({**INFER, "batch_size": batch})


@pytest.mark.parametrize("batch", ["big", 2.5, True])
def test_check_infer_refuses_batch_sizes_that_are_not_whole_numbers(batch):
    with pytest.raises(ConfigError, match="must be auto or a whole number >= 1"):
        check_infer({**INFER, "batch_size": batch})


def test_default_config_on_cpu_keeps_todays_choices(compose_config, no_gpu):
    cfg = compose_config("predict", ["ckpt_path=x", "input=y"])
    assert (cfg.infer.device, cfg.infer.batch_size) == ("auto", "auto")
    check_infer(cfg.infer)
    predictor = predictor_for(
        InferSettings.from_config(cfg), SimpleNamespace(model=pixelwise_model())
    )
    assert predictor.device == torch.device("cpu")
    assert predictor.batch_size == cpu_auto_batch(predictor.backend)
    assert cpu_auto_batch("torch") == CPU_BATCH_SIZE == 1
    assert cpu_auto_batch("openvino") == cpu_auto_batch("onnxruntime") == 4
    assert predictor.precision == resolve_precision("auto", "cpu")  # CPU flags decide, as before
    assert all(p.device.type == "cpu" for p in predictor.model.parameters())


def test_cuda_config_without_a_gpu_fails_in_predictor_for(compose_config, no_gpu):
    cfg = compose_config("evaluate", ["ckpt_path=x", "infer.device=cuda"])
    with pytest.raises(ConfigError, match=r"infer\.device=cuda but torch sees no CUDA GPU"):
        predictor_for(InferSettings.from_config(cfg), SimpleNamespace(model=pixelwise_model()))


@pytest.mark.parametrize(("precision", "autocast_on"), [("32-true", False), ("bf16-mixed", True)])
def test_cpu_autocast_is_the_hardware_modules(precision, autocast_on):
    with device_autocast(precision, torch.device("cpu")):
        assert torch.is_autocast_enabled("cpu") is autocast_on
        assert not torch.is_autocast_enabled("cuda")


def test_cpu_outputs_are_numpy_and_forward_returns_cpu_tensors():
    predictor = SlidingWindowPredictor(pixelwise_model(), 64, 16, batch_size=2, device="cpu")
    image = np.random.default_rng(0).normal(size=(4, 100, 90)).astype(np.float32)
    prob = predictor(image)
    assert isinstance(prob, np.ndarray) and prob.dtype == np.float32 and prob.shape == (100, 90)
    out = predictor.forward(torch.from_numpy(image[None, :, :64, :64]))
    assert out.device.type == "cpu" and out.dtype == torch.float32


# --- on a GPU ------------------------------------------------------------------------------------


class DtypeProbe(nn.Module):
    """Records the dtype its convolution computes in (autocast's choice)."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.conv = nn.Conv2d(4, 1, 1)
        self.seen = []

    def forward(self, x):
        out = self.conv(x)
        self.seen.append(out.dtype)
        return out


@needs_gpu
def test_auto_runs_on_the_gpu_in_its_mixed_precision(compose_config):
    cfg = compose_config("evaluate", ["ckpt_path=x", "infer.window=64", "infer.overlap=16"])
    model = DtypeProbe()
    cpu_prob = SlidingWindowPredictor(DtypeProbe(), 64, 16)(np.ones((4, 80, 70), np.float32))
    predictor = predictor_for(InferSettings.from_config(cfg), SimpleNamespace(model=model))
    assert predictor.device.type == "cuda"
    assert all(p.device.type == "cuda" for p in predictor.model.parameters())
    expected = "bf16-mixed" if torch.cuda.is_bf16_supported() else "16-mixed"
    assert predictor.precision == expected
    assert 1 <= predictor.batch_size <= MAX_AUTO_BATCH
    model.seen.clear()
    prob = predictor(np.ones((4, 80, 70), np.float32))
    assert isinstance(prob, np.ndarray) and prob.dtype == np.float32 and prob.shape == (80, 70)
    half = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    assert set(model.seen) == {half}
    np.testing.assert_allclose(prob, cpu_prob, atol=2e-2)  # same weights, half precision


@needs_gpu
def test_forward_takes_cpu_batches_and_returns_cpu_tensors():
    predictor = SlidingWindowPredictor(pixelwise_model(), 64, 16, device="cuda")
    out = predictor.forward(torch.zeros(3, 4, 32, 32))
    assert out.device.type == "cpu" and out.shape == (3, 32, 32)


@needs_gpu
def test_explicit_batch_size_is_kept_on_the_gpu(compose_config):
    cfg = compose_config("evaluate", ["ckpt_path=x", "infer.device=cuda", "infer.batch_size=3"])
    assert (
        predictor_for(
            InferSettings.from_config(cfg), SimpleNamespace(model=pixelwise_model())
        ).batch_size
        == 3
    )
