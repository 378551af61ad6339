"""Training augmentation with albumentations that keeps the alpha band and the ignore mask intact.

Geometric transforms move colour bands, label mask and alpha together; label and alpha travel as
one two-channel mask (nearest interpolation, so 0/1/255 and 0/255 survive) and borders exposed by
rotation/scaling are filled as *no data*: label 255 (ignore), alpha 0. Photometric transforms touch
the colour bands only.
"""

from __future__ import annotations

from collections.abc import Mapping

import albumentations as A
import cv2
import numpy as np

from sn7.constants import IGNORE


class Augment:
    def __init__(self, cfg: Mapping, alpha_channel: int | None, n_channels: int):
        self.alpha_channel = alpha_channel
        self.color_channels = [c for c in range(n_channels) if c != alpha_channel]
        self.geometric = A.Compose(
            [
                A.HorizontalFlip(p=cfg.get("hflip", 0.5)),
                A.VerticalFlip(p=cfg.get("vflip", 0.5)),
                A.RandomRotate90(p=cfg.get("rot90", 0.5)),
                A.Affine(
                    scale=tuple(cfg.get("scale", (0.9, 1.1))),
                    rotate=tuple(cfg.get("rotate", (-15, 15))),
                    border_mode=cv2.BORDER_CONSTANT,
                    fill=0,
                    fill_mask=(IGNORE, 0),
                    p=cfg.get("affine_p", 0.3),
                ),
            ]
        )
        photometric = [
            A.RandomBrightnessContrast(
                brightness_limit=cfg.get("brightness", 0.1),
                contrast_limit=cfg.get("contrast", 0.1),
                p=cfg.get("brightness_contrast_p", 0.5),
            )
        ]
        if len(self.color_channels) == 3:  # hue/saturation are defined for RGB only
            photometric.append(
                A.HueSaturationValue(
                    hue_shift_limit=cfg.get("hue", 5),
                    sat_shift_limit=cfg.get("saturation", 10),
                    val_shift_limit=0,
                    p=cfg.get("hue_p", 0.2),
                )
            )
        self.photometric = A.Compose(photometric)

    def set_seed(self, seed: int) -> None:
        self.geometric.set_random_seed(seed)
        self.photometric.set_random_seed(seed + 1)

    def __call__(self, image: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(C, H, W) uint8 image and (H, W) uint8 mask -> the same, augmented."""
        hwc = np.ascontiguousarray(image.transpose(1, 2, 0))
        color = np.ascontiguousarray(hwc[..., self.color_channels])
        alpha = (
            hwc[..., self.alpha_channel]
            if self.alpha_channel is not None
            else np.full_like(mask, 255)
        )
        out = self.geometric(image=color, mask=np.stack([mask, alpha], axis=-1))
        color = self.photometric(image=out["image"])["image"]
        result = np.empty(image.shape, np.uint8)
        result[self.color_channels] = color.transpose(2, 0, 1)
        if self.alpha_channel is not None:
            result[self.alpha_channel] = out["mask"][..., 1]
        return result, np.ascontiguousarray(out["mask"][..., 0])


def build_augment(
    cfg: Mapping | None, alpha_channel: int | None, n_channels: int
) -> Augment | None:
    if not cfg or not cfg.get("enabled", True):
        return None
    return Augment(cfg, alpha_channel, n_channels)
