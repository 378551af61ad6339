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


def pass_through_unet(upscale: int) -> TinyUNet:
    """A TinyUNet whose plain output is its input's first channel (for inputs >= 0): every conv
    carries channel 0 through its centre tap, the decoders take it from the full-resolution skip,
    batch norm is the identity (running var 1 - eps) and the ReLUs pass non-negative values."""
    model = TinyUNet(in_ch=3, base=2, depth=2, upscale=upscale).eval()
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.reset_parameters()
                module.running_var.fill_(1 - module.eps)
            elif isinstance(module, torch.nn.Conv2d | torch.nn.ConvTranspose2d):
                module.weight.zero_()
                if module.bias is not None:
                    module.bias.zero_()
        for block in [model.encoders[0], model.decoders[0]]:
            for conv in (block[0], block[3]):
                k = conv.kernel_size[0] // 2
                # decoder 0's first conv sees [upsampled, skip]: channel 0 of the skip
                source = (
                    conv.in_channels // 2 if block is model.decoders[0] and conv is block[0] else 0
                )
                conv.weight[0, source, k, k] = 1.0
        model.head.weight[0, 0, 0, 0] = 1.0
    return model


def smoothed(image: torch.Tensor, kernel: list[float]) -> torch.Tensor:
    """`image` (H, W) convolved with kernel x kernel, the border pixels repeated."""
    k = torch.tensor(kernel, dtype=image.dtype)
    padded = torch.nn.functional.pad(image[None, None], (1, 1, 1, 1), mode="replicate")[0, 0]
    rows = sum(k[i] * padded[i : i + image.shape[0], :] for i in range(3))
    return sum(k[i] * rows[:, i : i + image.shape[1]] for i in range(3))


# Bilinear enlargement (align_corners=False) by u, then the mean of each u x u block, is a 3-tap
# filter per axis. u = 2: the two sub-pixels of x[i] are 1/4 x[i-1] + 3/4 x[i] and
# 3/4 x[i] + 1/4 x[i+1], mean [1/8, 3/4, 1/8]; u = 3: 1/3 x[i-1] + 2/3 x[i], x[i] and
# 2/3 x[i] + 1/3 x[i+1], mean [1/9, 7/9, 1/9]. At the border bilinear repeats the edge pixel.
UPSCALE_FILTERS = {2: [1 / 8, 6 / 8, 1 / 8], 3: [1 / 9, 7 / 9, 1 / 9]}


@pytest.mark.parametrize("upscale", sorted(UPSCALE_FILTERS))
@pytest.mark.parametrize(("height", "width"), [(12, 20), (7, 10)], ids=str)
def test_upscale_averages_the_logits_of_the_bilinearly_enlarged_input(upscale, height, width):
    """The documented contract, on a net whose output is known: the pass-through net gives its
    input back at upscale 1, and at upscale u the mean of the logits of the u x u bilinear
    sub-pixels of every input pixel: values computed by hand above."""
    x = torch.rand(1, 3, height, width)
    with torch.no_grad():
        plain = pass_through_unet(upscale=1)(x)
        out = pass_through_unet(upscale=upscale)(x)
    torch.testing.assert_close(plain[0, 0], x[0, 0])
    assert out.shape == (1, 1, height, width)
    torch.testing.assert_close(out[0, 0], smoothed(x[0, 0], UPSCALE_FILTERS[upscale]))
    # a constant image stays constant, however the border is handled
    with torch.no_grad():
        flat = pass_through_unet(upscale=upscale)(torch.full((1, 3, height, width), 0.6))
    torch.testing.assert_close(flat, torch.full_like(flat, 0.6))


def test_residual_blocks_keep_sizes_and_project_shortcuts_where_widths_change():
    model = TinyUNet(in_ch=4, base=8, depth=2, block="residual").eval()
    with torch.no_grad():
        assert model(torch.randn(2, 4, 17, 33)).shape == (2, 1, 17, 33)
    assert isinstance(model.encoders[0].skip[0], nn.Conv2d)  # 4 -> 8 channels: a 1x1 projection
    same = TinyUNet(in_ch=4, base=4, depth=2, block="residual")
    assert isinstance(same.encoders[0].skip, nn.Identity)  # 4 -> 4: the identity
    plain = TinyUNet(in_ch=4, base=8, depth=2)
    extra = sum(p.numel() for p in model.parameters()) - sum(p.numel() for p in plain.parameters())
    assert 0 < extra < 0.1 * sum(p.numel() for p in plain.parameters())  # shortcuts are cheap
    with pytest.raises(ConfigError, match="block='dense'"):
        TinyUNet(block="dense")
