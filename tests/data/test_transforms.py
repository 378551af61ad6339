"""Training augmentation (sn7.data.transforms): geometry moves image, label and alpha together;
labels stay 0/1/255 and alpha 0/255; exposed borders are no-data (label 255, alpha 0)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from omegaconf import OmegaConf

from sn7.constants import IGNORE
from sn7.data.transforms import AUGMENT_KEYS, Augment, build_augment
from sn7.errors import ConfigError

AUGMENT_DIR = Path(__file__).resolve().parents[2] / "conf" / "augment"
LIGHT = OmegaConf.to_container(OmegaConf.load(AUGMENT_DIR / "light.yaml"))
OFF = LIGHT | {"hflip": 0.0, "vflip": 0.0, "rot90": 0.0, "affine_p": 0.0}
OFF |= {"brightness_contrast_p": 0.0, "hue_p": 0.0}
S = 48  # crop side


def sample(seed: int, alpha_follows_ignore: bool = True, ignore_frac: float = 0.2):
    """(4, S, S) uint8 RGBA + (S, S) mask with blobs of 0/1/255; alpha 0 exactly where label 255
    (as for mosaic no-data), so alpha traces where each label pixel came from."""
    rng = np.random.default_rng(seed)
    coarse = rng.choice(
        np.array([0, 1, IGNORE], np.uint8),
        size=(S // 4, S // 4),
        p=[0.8 - ignore_frac / 2, 0.2 - ignore_frac / 2, ignore_frac],
    )
    mask = np.kron(coarse, np.ones((4, 4), np.uint8))
    image = rng.integers(30, 220, size=(4, S, S), dtype=np.uint8)
    image[3] = 255
    if alpha_follows_ignore:
        image[3][mask == IGNORE] = 0
    return image, mask


def assert_valid_output(image, mask, out_image, out_mask):
    assert out_image.shape == image.shape and out_image.dtype == np.uint8
    assert out_mask.shape == mask.shape and out_mask.dtype == np.uint8
    assert set(np.unique(out_mask)) <= {0, 1, IGNORE}
    assert set(np.unique(out_image[3])) <= {0, 255}


def test_config_choices_build():
    for path in sorted(AUGMENT_DIR.glob("*.yaml")):
        cfg = OmegaConf.load(path)
        if "defaults" in cfg:  # strong.yaml extends light.yaml
            cfg = OmegaConf.merge(OmegaConf.load(AUGMENT_DIR / "light.yaml"), cfg)
            cfg.pop("defaults")
        aug = build_augment(cfg, alpha_channel=3, n_channels=4)
        assert (aug is None) == (path.stem == "none"), path.stem


def test_disabled_or_missing_config_means_no_augmentation():
    assert build_augment(None, 3, 4) is None
    assert build_augment({"enabled": False, "hflip": 1.0}, 3, 4) is None


def test_a_missing_key_is_a_one_line_config_error():
    """The YAML is the one source of the values: no key falls back to a default in the code."""
    with pytest.raises(ConfigError, match=r"^augment is missing hue, saturation; conf/augment"):
        build_augment({k: v for k, v in LIGHT.items() if k not in ("hue", "saturation")}, 3, 4)
    with pytest.raises(ConfigError, match=r"^augment is missing vflip;"):
        Augment({k: v for k, v in OFF.items() if k != "vflip"}, 3, 4)
    with pytest.raises(ConfigError, match=r"^augment.enabled is missing"):
        build_augment({"hflip": 0.5}, 3, 4)
    assert set(AUGMENT_KEYS) | {"enabled"} == set(LIGHT)  # light.yaml sets each key, no more


@pytest.mark.parametrize("axis_flip", ["hflip", "vflip"])
def test_flips_move_image_label_and_alpha_together(axis_flip):
    aug = Augment({**OFF, axis_flip: 1.0}, alpha_channel=3, n_channels=4)
    image, mask = sample(0)
    out_image, out_mask = aug(image, mask)
    axis = -1 if axis_flip == "hflip" else -2
    np.testing.assert_array_equal(out_image, np.flip(image, axis))
    np.testing.assert_array_equal(out_mask, np.flip(mask, axis))


def test_rot90_turns_image_label_and_alpha_by_the_same_angle():
    aug = Augment({**OFF, "rot90": 1.0}, alpha_channel=3, n_channels=4)
    image, mask = sample(1)
    seen = set()
    for seed in range(12):
        aug.set_seed(seed)
        out_image, out_mask = aug(image, mask)
        ks = [k for k in range(4) if np.array_equal(out_image, np.rot90(image, k, axes=(1, 2)))]
        assert len(ks) == 1, "the image is not a 90-degree rotation of the input"
        np.testing.assert_array_equal(out_mask, np.rot90(mask, ks[0]))
        seen.add(ks[0])
    assert len(seen) > 1  # the angle is random


def test_alpha_may_be_any_model_channel():
    """With the alpha band first, flips still move it with the labels and leave its values."""
    image, mask = sample(2)
    image = image[[3, 0, 1, 2]]  # alpha is channel 0 now
    aug = Augment({**OFF, "hflip": 1.0, "brightness_contrast_p": 1.0}, 0, 4)
    out_image, out_mask = aug(image, mask)
    np.testing.assert_array_equal(out_image[0], np.flip(image[0], -1))
    np.testing.assert_array_equal(out_mask, np.flip(mask, -1))


@pytest.mark.parametrize("seed", range(6))
def test_affine_keeps_label_and_alpha_aligned_and_in_range(seed):
    """Alpha is 0 exactly where the label is 255 on input; after any geometric transform that
    must still hold pixel by pixel: an ignore pixel never turns into 0/1, a 0/1 pixel never
    turns into 255, and borders exposed by the rotation are label 255 *and* alpha 0."""
    cfg = {**OFF, "hflip": 0.5, "vflip": 0.5, "rot90": 0.5, "affine_p": 1.0}
    cfg |= {"scale": (0.7, 1.3), "rotate": (-45, 45)}
    aug = Augment(cfg, alpha_channel=3, n_channels=4)
    aug.set_seed(seed)
    image, mask = sample(seed)
    out_image, out_mask = aug(image, mask)
    assert_valid_output(image, mask, out_image, out_mask)
    np.testing.assert_array_equal(out_mask == IGNORE, out_image[3] == 0)
    assert not np.array_equal(out_mask, mask)  # it really moved


def test_exposed_borders_are_no_data_and_nothing_else_is():
    """A crop without any ignore pixel, shrunk and rotated: 255 appears at the exposed corners
    only, together with alpha 0; the centre keeps real labels."""
    cfg = {**OFF, "affine_p": 1.0, "scale": (0.7, 0.7), "rotate": (30, 30)}
    aug = Augment(cfg, alpha_channel=3, n_channels=4)
    aug.set_seed(0)
    image, mask = sample(3, ignore_frac=0.0)
    assert IGNORE not in mask
    out_image, out_mask = aug(image, mask)
    assert_valid_output(image, mask, out_image, out_mask)
    exposed = out_mask == IGNORE
    np.testing.assert_array_equal(exposed, out_image[3] == 0)
    for corner in (exposed[0, 0], exposed[0, -1], exposed[-1, 0], exposed[-1, -1]):
        assert corner
    c = S // 2
    assert not exposed[c - 8 : c + 8, c - 8 : c + 8].any()
    # buildings survive in proportion (nearest-neighbour labels, no smearing into 255)
    assert (out_mask == 1).sum() > 0.25 * (mask == 1).sum()


def test_borders_are_ignore_without_an_alpha_band():
    """bands [1, 2, 3]: no alpha channel to carry, the labels still get 255 at exposed borders."""
    cfg = {**OFF, "affine_p": 1.0, "scale": (0.7, 0.7), "rotate": (30, 30)}
    aug = Augment(cfg, alpha_channel=None, n_channels=3)
    aug.set_seed(0)
    image, mask = sample(4, ignore_frac=0.0)
    out_image, out_mask = aug(image[:3], mask)
    assert out_image.shape == (3, S, S)
    assert out_mask[0, 0] == IGNORE and out_mask[S // 2, S // 2] != IGNORE
    assert set(np.unique(out_mask)) <= {0, 1, IGNORE}


def test_flips_and_rot90_never_create_or_remove_ignore():
    cfg = {**OFF, "hflip": 0.5, "vflip": 0.5, "rot90": 0.5}
    aug = Augment(cfg, alpha_channel=3, n_channels=4)
    image, mask = sample(5)
    for seed in range(8):
        aug.set_seed(seed)
        out_image, out_mask = aug(image, mask)
        for value in (0, 1, IGNORE):
            assert (out_mask == value).sum() == (mask == value).sum()
        np.testing.assert_array_equal(out_mask == IGNORE, out_image[3] == 0)


def test_photometric_changes_colour_only():
    cfg = {**OFF, "brightness_contrast_p": 1.0, "brightness": 0.3, "contrast": 0.3}
    cfg |= {"hue_p": 1.0, "hue": 10, "saturation": 20}
    aug = Augment(cfg, alpha_channel=3, n_channels=4)
    image, mask = sample(6)
    aug.set_seed(0)
    out_image, out_mask = aug(image, mask)
    assert not np.array_equal(out_image[:3], image[:3])
    np.testing.assert_array_equal(out_image[3], image[3])  # alpha untouched in value
    np.testing.assert_array_equal(out_mask, mask)


def test_photometric_without_rgb_skips_hue():
    """Two colour bands + alpha: hue/saturation need RGB; brightness still works."""
    cfg = {**OFF, "brightness_contrast_p": 1.0, "brightness": 0.3, "hue_p": 1.0}
    aug = Augment(cfg, alpha_channel=2, n_channels=3)
    image, mask = sample(7)
    image = image[[0, 1, 3]]
    out_image, out_mask = aug(image, mask)
    np.testing.assert_array_equal(out_image[2], image[2])
    np.testing.assert_array_equal(out_mask, mask)


def test_set_seed_makes_it_reproducible():
    cfg = LIGHT | {"affine_p": 1.0}
    image, mask = sample(8)
    runs = []
    for _ in range(2):
        aug = Augment(cfg, alpha_channel=3, n_channels=4)
        aug.set_seed(123)
        runs.append([aug(image, mask) for _ in range(3)])
    for (img_a, mask_a), (img_b, mask_b) in zip(*runs, strict=True):
        np.testing.assert_array_equal(img_a, img_b)
        np.testing.assert_array_equal(mask_a, mask_b)
    aug = Augment(cfg, alpha_channel=3, n_channels=4)
    aug.set_seed(124)
    other = [aug(image, mask) for _ in range(3)]
    assert any(
        not np.array_equal(a[1], b[1]) for a, b in zip(runs[0], other, strict=True)
    )  # another seed, other transforms


def test_input_arrays_are_not_modified():
    aug = Augment({**OFF, "hflip": 1.0, "brightness_contrast_p": 1.0}, 3, 4)
    image, mask = sample(9)
    before = image.copy(), mask.copy()
    aug(image, mask)
    np.testing.assert_array_equal(image, before[0])
    np.testing.assert_array_equal(mask, before[1])
