"""The one window layout and window check (sn7.data.windows), shared by the validation crops, the
sliding-window predictor and the config checks."""

from __future__ import annotations

import pytest

from sn7.checks import check_infer
from sn7.data.windows import check_window, window_starts
from sn7.errors import ConfigError


def test_stride_is_window_minus_overlap_and_the_last_window_is_flush():
    assert window_starts(1023, 544, 64) == [0, 479]
    assert window_starts(1023, 256) == [0, 256, 512, 767]
    assert window_starts(1025, 544, 64) == [0, 480, 481]  # no more windows than 64 px need


@pytest.mark.parametrize(("window", "overlap"), [(0, 0), (64, 64), (64, 65), (64, -1)])
def test_windows_must_advance(window, overlap):
    with pytest.raises(ConfigError, match=r"smaller than infer\.window") as direct:
        check_window(window, overlap)
    if window >= 16:  # check_infer rejects smaller windows first
        with pytest.raises(ConfigError) as from_config:
            check_infer({"window": window, "overlap": overlap, "batch_size": 1})
        assert str(from_config.value) == str(direct.value)


def test_good_windows_pass():
    check_window(64, 0)
    check_window(544, 64)
