"""clean_mask (sn7.inference.postprocess) on hand-made masks, and the `post` config group that
evaluate and predict pass to it as keyword arguments."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from sn7.errors import ConfigError
from sn7.inference.footprints import PostSettings
from sn7.inference.postprocess import clean_mask


def grid(*rows: str) -> np.ndarray:
    """Rows of '#' (building) and '.' (background) -> bool mask."""
    return np.array([[c == "#" for c in row] for row in rows])


def components(mask: np.ndarray) -> int:
    return ndimage.label(mask)[1]  # 4-connected, as vectorize cuts buildings


def test_defaults_change_nothing():
    mask = grid(
        "#...#",
        ".###.",
        ".#.#.",
        ".###.",
    )
    before = mask.copy()
    out = clean_mask(mask.astype(np.uint8))
    assert out.dtype == bool
    np.testing.assert_array_equal(out, mask)
    np.testing.assert_array_equal(mask, before)  # the input is not modified


def test_opening_cuts_a_one_pixel_bridge_and_drops_specks():
    mask = grid(
        "..............",
        ".####...####..",
        ".############.",
        ".####...####..",
        ".####...####..",
        "..............",
        "#..........#..",
    )
    assert components(mask) == 3  # two blocks joined by a bridge, two specks
    # erosion keeps the 2x2 cores plus the pixels whose 4 neighbours are all set (where the
    # bridge and the spur attach); dilation grows those back by one pixel in the 4 directions
    expected = grid(
        "..............",
        "..###...####..",
        ".#####.######.",
        ".####...####..",
        "..##.....##...",
        "..............",
        "..............",
    )
    out = clean_mask(mask, opening=1)
    np.testing.assert_array_equal(out, expected)
    assert components(out) == 2
    assert not (out & ~mask).any()  # an opening only removes


def test_opening_corners_of_a_square_by_hand():
    """A 3x3-cross opening of a 5x5 square: erosion leaves the 3x3 core, dilation grows it back
    to the square without its four corners."""
    mask = np.zeros((7, 7), bool)
    mask[1:6, 1:6] = True
    expected = mask.copy()
    for r, c in [(1, 1), (1, 5), (5, 1), (5, 5)]:
        expected[r, c] = False
    np.testing.assert_array_equal(clean_mask(mask, opening=1), expected)


def test_opening_iterations_remove_wider_structures():
    band = np.zeros((9, 12), bool)
    band[3:6, :] = True  # a 3-px-wide road-like strip
    assert clean_mask(band, opening=1)[4].all()  # survives one iteration
    assert not clean_mask(band, opening=2).any()  # two erosions eat it whole


def test_fill_holes_fills_enclosed_background_only():
    mask = grid(
        "#####....",
        "#...#.#.#",
        "#.#.#.#.#",
        "#...#.###",
        "#####....",
    )
    expected = grid(
        "#####....",
        "#####.#.#",
        "#####.#.#",
        "#####.###",
        "#####....",
    )
    np.testing.assert_array_equal(clean_mask(mask, fill_holes=True), expected)


def test_fill_holes_uses_4_connectivity_for_the_background():
    """Background touching the outside only at a corner is enclosed: filled."""
    mask = grid(
        ".....",
        ".##..",
        ".#.#.",
        "..##.",
        ".....",
    )
    out = clean_mask(mask, fill_holes=True)
    assert out[2, 2] and (out ^ mask).sum() == 1


def test_opening_runs_before_fill_holes():
    """A thick ring whose right wall is one pixel thin: the opening breaks that wall first, so
    the hole is no longer enclosed and stays empty (filling first would have filled it)."""
    ring = np.zeros((11, 11), bool)
    ring[1:10, 1:10] = True
    ring[4:7, 4:9] = False  # the hole; column 9 is all that closes it on the right
    assert clean_mask(ring, fill_holes=True)[4:7, 4:9].all()
    out = clean_mask(ring, opening=1, fill_holes=True)
    assert not out[4:7, 4:10].any()  # wall gone, hole open to the outside, not filled
    assert out[2, 2] and out[8, 2]  # the thick walls stay


def test_post_config_is_the_post_settings(compose_config):
    """conf/post composes into PostSettings with the dataclass's defaults, the clean-up keys reach
    clean_mask, and an unknown key is a one-line error naming it."""
    for name in ("evaluate", "predict"):
        post = compose_config(
            name,
            ["ckpt_path=x.ckpt", "input=x.tif"] if name == "predict" else ["ckpt_path=x.ckpt"],
        ).post
        assert PostSettings.from_config(post) == PostSettings()
    cfg = compose_config("evaluate", ["ckpt_path=x.ckpt", "post.opening=1", "post.fill_holes=true"])
    mask = np.zeros((7, 7), bool)
    mask[1:6, 1:6] = True
    mask[3, 3] = False
    np.testing.assert_array_equal(
        PostSettings.from_config(cfg.post).clean(mask),
        clean_mask(clean_mask(mask, opening=1), fill_holes=True),
    )
    with pytest.raises(ConfigError, match="closing"):
        PostSettings.from_config({**cfg.post, "closing": 1})
    with pytest.raises(ConfigError, match="seed_threshold"):
        PostSettings.from_config({"seed_threshold": 1.5})
