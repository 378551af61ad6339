"""Segmentation losses that skip ignore pixels (255): BCE, soft Dice, focal, and weighted sums.

One class covers the whole `loss=` config group (bce, dice, bce_dice, focal, focal_dice): each
choice sets the weights. Dice is computed over the whole batch with smoothing, so crops without
buildings give a finite loss that pushes predictions towards 0.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from sn7.constants import IGNORE
from sn7.errors import ConfigError


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
        if pos_weight is not None and pos_weight <= 0:
            raise ConfigError(f"loss.pos_weight must be > 0, got {pos_weight}")
        self.bce_weight, self.dice_weight, self.focal_weight = bce_weight, dice_weight, focal_weight
        self.pos_weight = pos_weight
        self.focal_gamma, self.focal_alpha = focal_gamma, focal_alpha
        self.smooth = smooth

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """logits (B, 1, H, W) or (B, H, W); target (B, H, W) with 0/1 and 255 = ignore."""
        logits = logits.reshape(target.shape).float()
        valid = target != IGNORE
        y = (target == 1).float()
        z = logits[valid]
        t = y[valid]
        if z.numel() == 0:  # an all-ignore batch: zero loss, but keep the graph connected
            return logits.sum() * 0.0
        total = z.new_zeros(())
        if self.bce_weight or self.focal_weight:
            pos_weight = None if self.pos_weight is None else z.new_tensor(self.pos_weight)
            bce = F.binary_cross_entropy_with_logits(z, t, pos_weight=pos_weight, reduction="none")
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
            p = torch.sigmoid(z)
            dice = 1 - (2 * (p * t).sum() + self.smooth) / (p.sum() + t.sum() + self.smooth)
            total = total + self.dice_weight * dice
        return total
