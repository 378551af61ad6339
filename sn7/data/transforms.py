"""Training augmentation with albumentations that keeps the alpha band and the ignore mask intact.

Geometric transforms move colour bands, label mask and alpha together; label and alpha travel as
one two-channel mask (nearest interpolation, so 0/1/255 and 0/255 survive) and borders exposed by
rotation/scaling are filled as *no data*: label 255 (ignore), alpha 0. Photometric transforms touch
the colour bands only.

Every value comes from the config (conf/augment/light.yaml names them all; other choices extend
it): no defaults here, so the YAML is the one place they are set.
"""

from __future__ import annotations

from collections.abc import Mapping

import albumentations as A
import cv2
import numpy as np

from sn7.constants import IGNORE
from sn7.errors import ConfigError

# every key Augment reads (conf/augment/light.yaml sets them all)
AUGMENT_KEYS = (
    "hflip",
    "vflip",
    "rot90",
    "affine_p",
    "scale",
    "rotate",
    "brightness_contrast_p",
    "brightness",
    "contrast",
    "hue_p",
    "hue",
    "saturation",
)


def check_augment(cfg: Mapping | None) -> None:
    """One-line ConfigError for an augment config without `enabled`, or enabled without every
    key of AUGMENT_KEYS; None (no augment group) means no augmentation."""
    if not cfg:
        return
    if "enabled" not in cfg:
        raise ConfigError("augment.enabled is missing (true or false)")
    if cfg["enabled"]:
        _check_keys(cfg)


def _check_keys(cfg: Mapping) -> None:
    missing = [key for key in AUGMENT_KEYS if key not in cfg]
    if missing:
        raise ConfigError(
            f"augment is missing {', '.join(missing)}; conf/augment/light.yaml lists every key"
        )


class Augment:
    def __init__(self, cfg: Mapping, alpha_channel: int | None, n_channels: int):
        _check_keys(cfg)
        self.alpha_channel = alpha_channel
        self.color_channels = [c for c in range(n_channels) if c != alpha_channel]
        self.geometric = A.Compose(
            [
                A.HorizontalFlip(p=cfg["hflip"]),
                A.VerticalFlip(p=cfg["vflip"]),
                A.RandomRotate90(p=cfg["rot90"]),
                A.Affine(
                    scale=tuple(cfg["scale"]),
                    rotate=tuple(cfg["rotate"]),
                    border_mode=cv2.BORDER_CONSTANT,
                    fill=0,
                    fill_mask=(IGNORE, 0),
                    p=cfg["affine_p"],
                ),
            ]
        )
        photometric = [
            A.RandomBrightnessContrast(
                brightness_limit=cfg["brightness"],
                contrast_limit=cfg["contrast"],
                p=cfg["brightness_contrast_p"],
            )
        ]
        if len(self.color_channels) == 3:  # hue/saturation are defined for RGB only
            photometric.append(
                A.HueSaturationValue(
                    hue_shift_limit=cfg["hue"],
                    sat_shift_limit=cfg["saturation"],
                    val_shift_limit=0,
                    p=cfg["hue_p"],
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
    check_augment(cfg)
    if not cfg or not cfg["enabled"]:
        return None
    return Augment(cfg, alpha_channel, n_channels)
