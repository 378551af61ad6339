"""Change map of an AOI (sn7.viz.change_map): buildings coloured by their first month."""

from __future__ import annotations

import numpy as np
import pytest
from matplotlib import image as mpimg
from shapely.geometry import box

from sn7.inference.tracking import TrackedMonths, track_match
from sn7.viz.change_map import (
    STANDING,
    change_map,
    figure_size,
    first_seen_raster,
    month_colors,
)

MONTHS = ["2018_01", "2018_02", "2018_03", "2018_04"]


def _tracked() -> TrackedMonths:
    old, new = box(10, 10, 20, 20), box(40, 40, 50, 50)  # x = column, y = row
    later = box(15, 15, 25, 25)  # appears in month 3, over a corner of `old`
    return track_match([[old], [old], [old, new], [old, new, later]])


def test_first_seen_raster_puts_newer_buildings_on_top():
    first = first_seen_raster(_tracked(), (64, 64))
    assert first[12, 12] == 0 and first[45, 45] == 2 and first[22, 22] == 3
    assert first[17, 17] == 3  # the overlap shows the newer building
    assert (
        first[0, 0] == -1 and (first >= 0).sum() == 3 * 100 - 25
    )  # three squares, one 5x5 overlap


def test_month_colors_grey_first_then_distinct():
    colors = month_colors(4)
    assert colors.shape == (4, 3) and tuple(colors[0]) == STANDING
    assert len({tuple(c) for c in colors}) == 4


def test_change_map_writes_a_png_of_the_expected_size(tmp_path):
    # 64x64 raster: panels scaled by 512 // 64 = 8 to 512 px; width 10 + 2 * (512 + 10) + 190,
    # height 50 + 512 + 10
    truth = track_match([[box(10, 10, 20, 20)], [box(10, 10, 20, 20)], [], []])
    path = change_map(_tracked(), truth, MONTHS, (64, 64), tmp_path / "maps" / "aoi.png")
    assert figure_size((64, 64), 2) == (1244, 572)
    pixels = mpimg.imread(path)
    assert pixels.shape[:2] == (572, 1244)
    # the prediction panel starts at x = 10, y = 50 (from the top): pixel (12, 12) of the raster
    # is at (50 + 12 * 8 + 4, 10 + 12 * 8 + 4) and is the grey of a standing building
    np.testing.assert_allclose(pixels[150, 110, :3] * 255, STANDING, atol=1)
    # a building new in month 2 has month 2's colour, not grey
    np.testing.assert_allclose(
        pixels[50 + 45 * 8, 10 + 45 * 8, :3] * 255, month_colors(4)[2], atol=1
    )
    only = change_map(_tracked(), None, MONTHS, (128, 256), tmp_path / "pred_only.png")
    assert mpimg.imread(only).shape[:2] == (50 + 256 + 10, 10 + 512 + 10 + 190)  # scale 2


def test_change_map_refuses_mismatched_months(tmp_path):
    with pytest.raises(ValueError, match="month names"):
        change_map(_tracked(), None, MONTHS[:3], (64, 64), tmp_path / "x.png")


def test_change_errors_mark_found_missed_and_false_new(tmp_path):
    from sn7.viz.change_map import change_errors_map, change_errors_raster

    old, found, missed, false = (box(x, 5, x + 6, 11) for x in (2, 12, 22, 32))
    truth = TrackedMonths([[(1, old)], [(1, old), (2, found), (3, missed)]])
    pred = TrackedMonths([[(7, old)], [(7, old), (8, found), (9, false)]])
    classes = change_errors_raster(truth, pred, [set(), {9}], [set(), {3}], (16, 48))
    assert [classes[8, x] for x in (4, 14, 24, 34, 45)] == [1, 2, 3, 4, 0]
    path = change_errors_map(truth, pred, [set(), {9}], [set(), {3}], (16, 48), tmp_path / "e.png")
    assert mpimg.imread(path).shape[:2] == figure_size((16, 48), 1)[::-1]
