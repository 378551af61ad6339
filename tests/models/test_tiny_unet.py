"""TinyUNet (sn7.models.tiny_unet): any input size in, the same size out; widths follow `base`."""

from __future__ import annotations

import pytest
import torch
from hydra.utils import instantiate
from torch import nn

from sn7.errors import ConfigError
from sn7.models.tiny_unet import TinyUNet

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.mark.parametrize(
    ("height", "width", "depth"),
    [(64, 64, 2), (63, 65, 2), (17, 33, 3), (5, 7, 2), (3, 2, 2), (1, 1, 3), (9, 40, 4)],
)
def test_output_size_equals_input_size(height, width, depth):
    model = TinyUNet(in_ch=4, base=2, depth=depth).eval()
    with torch.no_grad():
        out = model(torch.randn(2, 4, height, width))
    assert out.shape == (2, 1, height, width)
    assert torch.isfinite(out).all()


def test_full_tile_with_odd_side_keeps_its_size():
    """SN7 tiles are not always 1024 px (e.g. 1023): the model must not drop or add a row."""
    model = TinyUNet(in_ch=4, base=2, depth=4).eval()
    with torch.no_grad():
        out = model(torch.rand(1, 4, 1023, 1024))
    assert out.shape == (1, 1, 1023, 1024)


def test_padding_only_appends_rows_and_columns():
    """The input is padded at the bottom/right, so the output's top-left pixels see the same
    neighbourhood as without padding: a 61x62 input (padded to 64x64 inside) gives the same
    top-left corner as the 64x64 input it was cut from."""
    torch.manual_seed(0)
    model = TinyUNet(in_ch=1, base=2, depth=2).eval()
    x = torch.rand(1, 1, 64, 64)
    with torch.no_grad():
        full, cut = model(x), model(x[..., :61, :62])
    assert cut.shape[-2:] == (61, 62)
    # the top-left 16x16 block is beyond the receptive field of the cut for this 2-level net
    torch.testing.assert_close(cut[..., :16, :16], full[..., :16, :16])


@pytest.mark.parametrize(("base", "depth"), [(2, 1), (4, 2), (8, 4)])
def test_channel_widths_double_per_level(base, depth):
    model = TinyUNet(in_ch=3, base=base, depth=depth)
    widths = [base * 2**i for i in range(depth + 1)]
    assert len(model.encoders) == depth + 1
    assert len(model.ups) == len(model.decoders) == depth
    for i, encoder in enumerate(model.encoders):
        convs = [m for m in encoder if isinstance(m, nn.Conv2d)]
        assert convs[0].in_channels == (3 if i == 0 else widths[i - 1])
        assert all(c.out_channels == widths[i] for c in convs)
    for i, (up, decoder) in enumerate(zip(model.ups, model.decoders, strict=True)):
        assert (up.in_channels, up.out_channels) == (widths[i + 1], widths[i])
        assert decoder[0].in_channels == 2 * widths[i]  # upsampled + skip
    assert (model.head.in_channels, model.head.out_channels) == (base, 1)


def test_parameter_count_grows_with_base():
    def count(base: int) -> int:
        return sum(p.numel() for p in TinyUNet(in_ch=4, base=base, depth=2).parameters())

    # conv weights dominate and scale with base^2
    assert 3.5 < count(8) / count(4) < 4.1


@pytest.mark.parametrize(("in_ch", "base", "depth"), [(0, 4, 2), (4, 0, 2), (4, 4, 0), (4, -1, 2)])
def test_bad_sizes_raise_config_error(in_ch, base, depth):
    with pytest.raises(ConfigError, match="TinyUNet"):
        TinyUNet(in_ch=in_ch, base=base, depth=depth)


def test_in_ch_follows_data_bands(compose_config):
    default = compose_config("train", ["model.base=2", "model.depth=1"])
    assert default.model.in_ch == len(default.data.bands) == 4

    cfg = compose_config(
        "train",
        [
            "data.bands=[1,2,3]",
            "data.mean=[0.3,0.3,0.3]",
            "data.std=[0.2,0.2,0.2]",
            "model.base=2",
            "model.depth=1",
        ],
    )
    assert cfg.model.in_ch == 3
    model = instantiate(cfg.model)
    assert isinstance(model, TinyUNet)
    assert model.encoders[0][0].in_channels == 3
    with torch.no_grad():
        assert model.eval()(torch.rand(1, 3, 8, 8)).shape == (1, 1, 8, 8)


@pytest.mark.parametrize(("upscale", "height", "width"), [(2, 32, 32), (2, 17, 30), (3, 20, 21)])
def test_upscale_keeps_the_input_size_and_trains(upscale, height, width):
    """upscale > 1 runs on an enlarged input and pools the logits back: the output has the
    input's size and gradients reach every layer."""
    torch.manual_seed(0)
    model = TinyUNet(in_ch=4, base=2, depth=2, upscale=upscale)
    x = torch.randn(2, 4, height, width, requires_grad=True)
    out = model(x)
    assert out.shape == (2, 1, height, width)
    out.square().mean().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    for name, param in model.named_parameters():
        assert param.grad is not None and torch.isfinite(param.grad).all(), name
        assert param.grad.abs().sum() > 0, name


def test_upscale_is_the_plain_net_on_the_enlarged_input_pooled_back():
    """Same weights: upscale=2 on x equals upscale=1 on x enlarged 2x (bilinear), each output
    pixel the mean of the 2x2 logits it was enlarged into."""
    torch.manual_seed(0)
    model = TinyUNet(in_ch=3, base=2, depth=2, upscale=2).eval()
    plain = TinyUNet(in_ch=3, base=2, depth=2, upscale=1).eval()
    plain.load_state_dict(model.state_dict())
    x = torch.rand(1, 3, 12, 20)
    with torch.no_grad():
        out = model(x)
        big = torch.nn.functional.interpolate(x, scale_factor=2, mode="bilinear")
        expected = torch.nn.functional.avg_pool2d(plain(big), 2)
    torch.testing.assert_close(out, expected)
