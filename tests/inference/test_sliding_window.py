"""Full-tile inference by overlapping windows (sn7.inference.sliding_window)."""

from __future__ import annotations

import itertools
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from sn7.errors import ConfigError
from sn7.inference.sliding_window import (
    InferSettings,
    SlidingWindowPredictor,
    blend_weights,
    predictor_for,
    window_starts,
)


def pixelwise_model(in_ch: int = 4) -> nn.Module:
    """A 1x1 conv stack: translation-equivariant with no receptive field beyond the pixel, so
    any window sees exactly what the whole image does."""
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(in_ch, 8, 1), nn.ReLU(), nn.Conv2d(8, 8, 1), nn.Tanh(), nn.Conv2d(8, 1, 1)
    ).eval()


@pytest.mark.parametrize(
    ("height", "width", "window", "overlap", "batch_size"),
    [
        (1023, 1023, 544, 64, 4),  # the conf/infer default on a 1023-px tile: 2x2 windows
        (1024, 1023, 544, 64, 3),  # a batch that does not divide the window count
        (300, 1023, 256, 100, 2),  # wide tile, uneven window count per axis
        (96, 128, 64, 16, 1),
        (97, 131, 32, 24, 5),  # odd sizes, wide overlap: 10 x 14 windows
        (40, 50, 64, 16, 4),  # tile smaller than the window: one window
        (64, 200, 64, 8, 4),  # one axis exactly one window, the other several
    ],
)
def test_pixelwise_model_gives_the_whole_image_forward(height, width, window, overlap, batch_size):
    model = pixelwise_model()
    image = np.random.default_rng(height * width).normal(size=(4, height, width))
    image = image.astype(np.float32)
    predictor = SlidingWindowPredictor(model, window, overlap, batch_size)
    prob = predictor(image)
    with torch.inference_mode():
        whole = torch.sigmoid(model(torch.from_numpy(image)[None]))[0, 0].numpy()
    assert prob.shape == (height, width) and prob.dtype == np.float32
    np.testing.assert_allclose(prob, whole, rtol=0, atol=1e-5)
    if height > window or width > window:
        assert len(predictor.windows(height, width)) > 1  # the case is really windowed


def test_a_three_head_model_gives_building_times_no_contact():
    """A building / edge / contact model (targets=boundary): windows stitch the one map every
    stage reads, sn7.models.heads.building_probability of the whole-image forward."""
    torch.manual_seed(1)
    model = nn.Sequential(nn.Conv2d(4, 8, 1), nn.Tanh(), nn.Conv2d(8, 3, 1)).eval()
    image = np.random.default_rng(3).normal(size=(4, 70, 90)).astype(np.float32)
    prob = SlidingWindowPredictor(model, 32, 8, 3)(image)
    with torch.inference_mode():
        logits = model(torch.from_numpy(image)[None])[0]
    expected = torch.sigmoid(logits[0]) * (1 - torch.sigmoid(logits[2]))
    assert prob.shape == (70, 90)
    np.testing.assert_allclose(prob, expected.numpy(), rtol=0, atol=1e-5)


def test_tta_of_a_pixelwise_model_changes_nothing():
    model = pixelwise_model()
    image = np.random.default_rng(5).normal(size=(4, 300, 700)).astype(np.float32)
    plain = SlidingWindowPredictor(model, 256, 64)(image)
    flipped = SlidingWindowPredictor(model, 256, 64, tta=True)(image)
    np.testing.assert_allclose(flipped, plain, rtol=0, atol=1e-5)


def test_tta_averages_the_four_flips():
    """A model that sees where it is in its window: TTA makes its output mirror-symmetric."""

    class Ramp(nn.Module):
        def forward(self, x):
            h, w = x.shape[-2:]
            rows = torch.linspace(-3, 1, h)[:, None]
            cols = torch.linspace(-2, 4, w)[None, :]
            return (rows + cols).expand(x.shape[0], 1, h, w)

    image = np.zeros((1, 30, 50), np.float32)
    plain = SlidingWindowPredictor(Ramp(), window=64, overlap=8)(image)
    tta = SlidingWindowPredictor(Ramp(), window=64, overlap=8, tta=True)(image)
    assert not np.allclose(plain, plain[:, ::-1])
    np.testing.assert_allclose(tta, tta[:, ::-1], atol=1e-6)
    np.testing.assert_allclose(tta, tta[::-1, :], atol=1e-6)
    ramp = torch.from_numpy(plain)
    flips = [ramp, ramp.flip(0), ramp.flip(1), ramp.flip(0, 1)]
    np.testing.assert_allclose(tta, (sum(flips) / 4).numpy(), atol=1e-6)


def test_predictor_for_reads_the_infer_config(compose_config):
    cfg = compose_config(
        "evaluate",
        [
            "ckpt_path=x",
            "infer.window=128",
            "infer.overlap=24",
            "infer.batch_size=2",
            "infer.tta=true",
        ],
    )
    predictor = predictor_for(
        InferSettings.from_config(cfg), SimpleNamespace(model=pixelwise_model())
    )
    assert (predictor.window, predictor.overlap, predictor.batch_size) == (128, 24, 2)
    assert predictor.tta
    default = InferSettings.from_config(compose_config("predict", ["ckpt_path=x", "input=y"]))
    assert not predictor_for(default, SimpleNamespace(model=pixelwise_model())).tta


def test_default_windows_on_a_1023_tile():
    predictor = SlidingWindowPredictor(pixelwise_model(), window=544, overlap=64)
    assert predictor.windows(1023, 1023) == [(r, c, 544, 544) for r in (0, 479) for c in (0, 479)]


def coverage(predictor: SlidingWindowPredictor, height: int, width: int) -> np.ndarray:
    count = np.zeros((height, width), int)
    for r, c, h, w in predictor.windows(height, width):
        assert r >= 0 and c >= 0 and r + h <= height and c + w <= width  # never outside
        count[r : r + h, c : c + w] += 1
    return count


@settings(max_examples=300, deadline=None)
@given(
    size=st.integers(1, 3000),
    window=st.integers(2, 600),
    overlap_frac=st.floats(0, 0.99),
)
def test_windows_cover_the_tile_and_neighbours_overlap_enough(size, window, overlap_frac):
    overlap = min(int(window * overlap_frac), window - 1)
    starts = window_starts(size, window, overlap)
    assert starts == sorted(set(starts))
    assert starts[0] == 0
    if size <= window:
        assert starts == [0]
        return
    assert starts[-1] + window == size  # the last window is flush with the tile edge
    for a, b in itertools.pairwise(starts):
        assert a + window - b >= overlap  # overlap with the next window
    if len(starts) > 2:  # no more windows than the overlap needs
        stride = (size - window) / (len(starts) - 2)
        assert stride > window - overlap


@pytest.mark.parametrize(("height", "width"), [(1023, 1023), (545, 100), (40, 700), (50, 60)])
def test_every_pixel_is_covered(height, width):
    predictor = SlidingWindowPredictor(pixelwise_model(), window=128, overlap=32)
    assert coverage(predictor, height, width).min() >= 1
    big = SlidingWindowPredictor(pixelwise_model(), window=544, overlap=64)
    assert coverage(big, height, width).min() >= 1


def test_blend_weights_are_positive_and_peak_inside():
    w = blend_weights(64, 96, 16)
    assert w.shape == (64, 96) and w.dtype == np.float32
    assert w.min() > 0  # tile-edge pixels covered by one window edge stay defined
    assert w[16:-16, 16:-16].min() == pytest.approx(1.0)
    np.testing.assert_allclose(w, w[::-1, ::-1])
    assert w[0, 0] < w[8, 8] < w[16, 16]
    np.testing.assert_array_equal(blend_weights(10, 10, 0), np.ones((10, 10), np.float32))


def test_windows_are_blended_not_overwritten():
    """A model that sees where it is in its window (a border artefact) is smoothed: where two
    windows overlap, the output lies between theirs, weighted to the window whose centre is
    nearer."""

    class BorderArtefact(nn.Module):
        def forward(self, x):
            # logit 0 inside, -5 on the window's outer 4 px
            out = torch.zeros_like(x[:, :1])
            out[..., :4, :], out[..., -4:, :] = -5.0, -5.0
            out[..., :, :4], out[..., :, -4:] = -5.0, -5.0
            return out

    predictor = SlidingWindowPredictor(BorderArtefact(), window=64, overlap=32)
    prob = predictor(np.zeros((1, 64, 96), np.float32))  # windows at columns 0 and 32
    inner_seam = prob[20:44, 60:64]  # border of the first window, centre of the second
    assert inner_seam.min() > 0.45  # plain averaging would give ~0.25, overwriting ~0.007
    assert prob[20:44, 0:4].max() < 0.01  # the tile edge keeps the only window's value


@pytest.mark.parametrize(
    ("window", "overlap", "batch_size"), [(0, 0, 1), (64, 64, 1), (64, -1, 1), (64, 8, 0)]
)
def test_bad_window_settings_are_config_errors(window, overlap, batch_size):
    with pytest.raises(ConfigError):
        SlidingWindowPredictor(pixelwise_model(), window, overlap, batch_size)
