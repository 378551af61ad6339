"""Segmentation losses that skip ignore pixels (255): BCE, soft Dice, focal, and weighted sums.

`gap_weight` up-weights the background gaps between neighbouring buildings (see gap_pixels).
One class covers the whole `loss=` config group (bce, dice, bce_dice, focal, focal_dice): each
choice sets the weights. A 3-output model (`targets=boundary`, sn7.models.heads) adds BCE + Dice
terms for its edge and contact heads, weighted by `edge_weight` and `contact_weight`. Dice is
computed over the whole batch with smoothing, so crops without buildings give a finite loss that
pushes predictions towards 0.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from sn7.constants import BUILDING, IGNORE
from sn7.errors import ConfigError
from sn7.models.heads import BUILDING_CH, CONTACT_CH, EDGE_CH, check_out_channels

_DIRECTIONS = ((0, 1), (1, 0), (1, 1), (1, -1))


def gap_pixels(target: torch.Tensor, reach: int = 2) -> torch.Tensor:
    """Background pixels lying between two building pixels at most `reach` px away on opposite
    sides (along a row, a column or a diagonal): the narrow gaps that keep neighbouring buildings
    apart. A model that blurs over them merges buildings, which ruins building-level F1 though
    it barely moves pixel IoU; `gap_weight` makes the loss care (the weight map of the U-Net
    paper, computed from the mask alone)."""
    building = target == 1
    h, w = building.shape[-2:]
    padded = F.pad(building, (reach, reach, reach, reach))
    gap = torch.zeros_like(building)
    for dy, dx in _DIRECTIONS:
        ahead = torch.zeros_like(building)
        behind = torch.zeros_like(building)
        for d in range(1, reach + 1):
            r, c = reach + d * dy, reach + d * dx
            ahead |= padded[:, r : r + h, c : c + w]
            r, c = reach - d * dy, reach - d * dx
            behind |= padded[:, r : r + h, c : c + w]
        gap |= ahead & behind
    return gap & (target == 0)


def edge_pixels(target: torch.Tensor) -> torch.Tensor:
    """(B, H, W) bool: building pixels with a background pixel among their 8 neighbours (the
    building's inner outline). Ignore (255) neighbours do not make an edge."""
    background = (target == 0).float().unsqueeze(1)
    near_background = F.max_pool2d(background, 3, stride=1, padding=1)[:, 0] > 0
    return (target == BUILDING) & near_background


def boundary_targets(
    target: torch.Tensor, gap: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """(edge, contact) bool maps of a (B, H, W) mask with 0 / 1 / 255: the targets of a 3-output
    model's edge and contact heads. Contact pixels are the gap weight's `gap_pixels` (reach 2;
    pass them as `gap` when already computed): buildings that touch in the mask have none, as
    the mask holds no instance ids."""
    return edge_pixels(target), gap_pixels(target) if gap is None else gap


def _soft_dice(p: torch.Tensor, t: torch.Tensor, smooth: float) -> torch.Tensor:
    return 1 - (2 * (p * t).sum() + smooth) / (p.sum() + t.sum() + smooth)


class SegmentationLoss(nn.Module):
    def __init__(
        self,
        bce_weight: float = 1.0,
        dice_weight: float = 0.0,
        focal_weight: float = 0.0,
        pos_weight: float | None = None,
        focal_gamma: float = 2.0,
        focal_alpha: float | None = 0.25,
        smooth: float = 1.0,
        gap_weight: float = 0.0,
        edge_weight: float = 0.0,
        contact_weight: float = 0.0,
    ):
        super().__init__()
        weights = {
            "bce_weight": bce_weight,
            "dice_weight": dice_weight,
            "focal_weight": focal_weight,
        }
        bad = {k: v for k, v in weights.items() if v < 0}
        if bad or not any(weights.values()):
            raise ConfigError(f"loss weights must be >= 0 and not all 0, got {weights}")
        if gap_weight < 0:
            raise ConfigError(f"loss.gap_weight must be >= 0, got {gap_weight}")
        if edge_weight < 0 or contact_weight < 0:
            raise ConfigError(
                f"loss.edge_weight={edge_weight}, loss.contact_weight={contact_weight}: "
                "must be >= 0"
            )
        if pos_weight is not None and pos_weight <= 0:
            raise ConfigError(f"loss.pos_weight must be > 0, got {pos_weight}")
        self.bce_weight, self.dice_weight, self.focal_weight = bce_weight, dice_weight, focal_weight
        self.pos_weight = pos_weight
        self.focal_gamma, self.focal_alpha = focal_gamma, focal_alpha
        self.smooth = smooth
        self.gap_weight = gap_weight
        self.edge_weight, self.contact_weight = edge_weight, contact_weight

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """logits (B, K, H, W) with K = 1 or 3 (sn7.models.heads), or (B, H, W); target (B, H, W)
        with 0/1 and 255 = ignore."""
        if logits.dim() == 4 and logits.shape[1] != 1:
            # the gap weight's pixels are the contact target: computed once for both
            gap = gap_pixels(target) if self.gap_weight or self.contact_weight else None
            return self.building_loss(logits[:, BUILDING_CH], target, gap) + self.boundary_loss(
                logits, target, gap
            )
        if self.edge_weight or self.contact_weight:
            raise ConfigError(
                "loss.edge_weight / contact_weight need a 3-output model (targets=boundary sets "
                "model.out_ch=3)"
            )
        return self.building_loss(logits, target)

    def boundary_loss(
        self, logits: torch.Tensor, target: torch.Tensor, gap: torch.Tensor | None = None
    ) -> torch.Tensor:
        """BCE + soft Dice of the edge and contact heads on their targets (valid pixels only);
        `gap`: gap_pixels(target), when already computed."""
        check_out_channels(logits.shape[1])
        if not (self.edge_weight or self.contact_weight):
            raise ConfigError(
                "a 3-output model needs loss.edge_weight or loss.contact_weight > 0 "
                "(targets=boundary sets both)"
            )
        valid = target != IGNORE
        total = logits.new_zeros((), dtype=torch.float32)
        if not valid.any():
            return total + logits.sum() * 0.0
        edge, contact = boundary_targets(target, gap)
        for weight, channel, truth in (
            (self.edge_weight, EDGE_CH, edge),
            (self.contact_weight, CONTACT_CH, contact),
        ):
            if weight:
                z, t = logits[:, channel].float()[valid], truth[valid].float()
                bce = F.binary_cross_entropy_with_logits(z, t)
                total = total + weight * (bce + _soft_dice(torch.sigmoid(z), t, self.smooth))
        return total

    def building_loss(
        self, logits: torch.Tensor, target: torch.Tensor, gap: torch.Tensor | None = None
    ) -> torch.Tensor:
        """The building map's loss: the weighted BCE / focal / Dice of the config's choice;
        `gap`: gap_pixels(target), when already computed."""
        logits = logits.reshape(target.shape).float()
        valid = target != IGNORE
        y = (target == 1).float()
        z = logits[valid]
        t = y[valid]
        if self.gap_weight:
            gap = gap_pixels(target) if gap is None else gap
            w = 1 + self.gap_weight * gap[valid].float()
        else:
            w = None
        if z.numel() == 0:  # an all-ignore batch: zero loss, but keep the graph connected
            return logits.sum() * 0.0
        total = z.new_zeros(())
        if self.bce_weight or self.focal_weight:
            pos_weight = None if self.pos_weight is None else z.new_tensor(self.pos_weight)
            bce = F.binary_cross_entropy_with_logits(z, t, pos_weight=pos_weight, reduction="none")
            if w is not None:
                bce = bce * w
            if self.bce_weight:
                total = total + self.bce_weight * bce.mean()
            if self.focal_weight:
                p = torch.sigmoid(z)
                p_t = p * t + (1 - p) * (1 - t)
                focal = (1 - p_t) ** self.focal_gamma * bce
                if self.focal_alpha is not None:
                    focal = focal * (self.focal_alpha * t + (1 - self.focal_alpha) * (1 - t))
                total = total + self.focal_weight * focal.mean()
        if self.dice_weight:
            total = total + self.dice_weight * _soft_dice(torch.sigmoid(z), t, self.smooth)
        return total
