"""TinyUNet: a small U-Net for building segmentation, sized by `base` (channels base, 2*base...)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from sn7.errors import ConfigError
from sn7.models.heads import check_out_channels

BLOCKS = ("plain", "residual")


def conv_block(in_ch: int, out_ch: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(in_ch, out_ch, 3, padding=1, bias=False),
        nn.BatchNorm2d(out_ch),
        nn.ReLU(inplace=True),
        nn.Conv2d(out_ch, out_ch, 3, padding=1, bias=False),
        nn.BatchNorm2d(out_ch),
        nn.ReLU(inplace=True),
    )


class ResidualBlock(nn.Module):
    """conv_block with an identity (or 1x1 projection) shortcut: ReLU(body(x) + skip(x)), the
    U-Net-with-residual-blocks of the SN7 and xView2 solutions. Its Conv-BN pairs sit in
    nn.Sequentials, so inference folds them like the plain block's."""

    def __init__(self, in_ch: int, out_ch: int):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(in_ch, out_ch, 3, padding=1, bias=False),
            nn.BatchNorm2d(out_ch),
            nn.ReLU(inplace=True),
            nn.Conv2d(out_ch, out_ch, 3, padding=1, bias=False),
            nn.BatchNorm2d(out_ch),
        )
        self.skip = (
            nn.Identity()
            if in_ch == out_ch
            else nn.Sequential(nn.Conv2d(in_ch, out_ch, 1, bias=False), nn.BatchNorm2d(out_ch))
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.body(x) + self.skip(x))


class TinyUNet(nn.Module):
    """Encoder-decoder with skips; `depth` 2x2 poolings; `out_ch` output logit channels (1, or 3
    for building / edge / contact: sn7.models.heads).

    Any input size works: the input is reflect-padded to a multiple of 2**depth and the output
    cropped back, so a 1023-px tile comes out 1023 px.

    `block`: `plain` (two conv-BN-ReLU) or `residual` (ResidualBlock: the same convolutions
    and a shortcut; a 1x1 projection where the width changes).

    `upscale` > 1 runs the network on a bilinearly enlarged input and averages the logits back to
    the input grid: SN7 buildings are a few pixels wide at 4.8 m, and more pixels per building give
    the convolutions room to separate neighbours (the SN7 winners upsampled 3x). Cost: upscale^2.
    """

    def __init__(
        self,
        in_ch: int = 4,
        base: int = 32,
        depth: int = 4,
        upscale: int = 1,
        out_ch: int = 1,
        block: str = "plain",
    ):
        super().__init__()
        check_out_channels(out_ch)
        if block not in BLOCKS:
            raise ConfigError(f"TinyUNet block={block!r} must be one of {list(BLOCKS)}")
        make_block = ResidualBlock if block == "residual" else conv_block
        if upscale < 1:
            raise ConfigError(f"TinyUNet upscale must be >= 1 (got {upscale})")
        self.upscale = int(upscale)
        if in_ch < 1 or base < 1 or depth < 1:
            raise ConfigError(
                f"TinyUNet needs in_ch, base, depth >= 1 (got {in_ch}, {base}, {depth})"
            )
        widths = [base * 2**i for i in range(depth + 1)]
        self.depth = depth
        self.encoders = nn.ModuleList(
            make_block(in_ch if i == 0 else widths[i - 1], widths[i]) for i in range(depth + 1)
        )
        self.ups = nn.ModuleList(
            nn.ConvTranspose2d(widths[i + 1], widths[i], 2, stride=2) for i in range(depth)
        )
        self.decoders = nn.ModuleList(make_block(2 * widths[i], widths[i]) for i in range(depth))
        self.head = nn.Conv2d(widths[0], out_ch, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h0, w0 = x.shape[-2:]
        if self.upscale > 1:
            x = F.interpolate(x, scale_factor=self.upscale, mode="bilinear", align_corners=False)
        h, w = x.shape[-2:]
        multiple = 2**self.depth
        pad_h, pad_w = (-h) % multiple, (-w) % multiple
        if pad_h or pad_w:
            mode = "reflect" if pad_h < h and pad_w < w else "replicate"
            x = F.pad(x, (0, pad_w, 0, pad_h), mode=mode)
        skips = []
        for i, encoder in enumerate(self.encoders):
            x = encoder(x)
            if i < self.depth:
                skips.append(x)
                x = F.max_pool2d(x, 2)
        for i in reversed(range(self.depth)):
            x = self.decoders[i](torch.cat([self.ups[i](x), skips[i]], dim=1))
        logits = self.head(x)[..., :h, :w]
        if self.upscale > 1:
            logits = F.avg_pool2d(logits, self.upscale)[..., :h0, :w0]
        return logits
