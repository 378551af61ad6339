"""metrics.md (sn7.viz.report.metrics_markdown): the sections a person reads, in a fixed order."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest

from sn7.utils.markdown import format_cell, markdown_table
from sn7.viz.report import metrics_markdown

GOLDEN = Path(__file__).parent / "data" / "metrics_golden.md"


def _row(threshold, iou, precision, recall, f1):
    return {"threshold": threshold, "iou": iou, "precision": precision, "recall": recall, "f1": f1}


def _buildings(threshold, tp, fp, fn, tp_sn7, fp_sn7, fn_sn7):
    def prf(tp, fp, fn):
        return tp / (tp + fp), tp / (tp + fn), 2 * tp / (2 * tp + fp + fn)

    p, r, f1 = prf(tp, fp, fn)
    p7, r7, f7 = prf(tp_sn7, fp_sn7, fn_sn7)
    return {
        "threshold": threshold,
        **{"tp": tp, "fp": fp, "fn": fn, "precision": p, "recall": r, "f1": f1},
        **{"tp_sn7": tp_sn7, "fp_sn7": fp_sn7, "fn_sn7": fn_sn7},
        **{"precision_sn7": p7, "recall_sn7": r7, "f1_sn7": f7},
    }


SWEEP = [_row(0.4, 0.5, 0.6, 0.75, 0.6667), _row(0.5, 0.55, 0.7, 0.72, 0.7097)]
SELECTED = {
    "split": "val",
    "role": "selection",
    "kind": "time",
    "aois": ["L15-0001E"],
    "months": ["2019-07"],
    "n_images": 1,
    "data_root": "/data/sn7",
}
REPORTED = {
    "split": "test",
    "role": "report",
    "kind": "aoi",
    "aois": ["L15-0002E"],
    "months": ["2018-01", "2018-02"],
    "n_images": 2,
    "data_root": "/data/sn7",
}
SCOT = {"scot": 0.2, "track_score": 0.4, "change_score": 0.1765, "mismatches": 3, "n_months": 2}
METRICS = {
    "checkpoint": "/runs/x/checkpoints/best.ckpt",
    "split": "test",
    "n_tiles": 2,
    "data_root": "/data/sn7",
    "aois": ["L15-0002E"],
    "model": {"_target_": "sn7.models.tiny_unet.TinyUNet", "base": 16, "depth": 3},
    "selected_on": SELECTED,
    "reported_on": REPORTED,
    "held_out": True,
    "track": {"mode": "match", "min_iou": 0.25, "max_missing": 3},
    "footprints": {
        "threshold": 0.5,
        "post": {"opening": 0, "fill_holes": False, "separate": True},
        "min_area": 8.0,
    },
    "thresholds": {"pixel": 0.4, "building": 0.5},
    "pixel": {"headline": SWEEP[0], "oracle": SWEEP[1], "sweep": SWEEP},
    "tracked_mask": {"iou": 0.45, "precision": 0.5, "recall": 0.8, "f1": 0.62},
    "building": {"min_area": 8, "iou_match": 0.5, **_buildings(0.5, 30, 10, 20, 35, 5, 15)},
    "scot": {
        "scot": 0.2,
        "track_score": 0.4,
        "change_score": 0.1765,
        "per_aoi": {"L15-0002E": SCOT},
    },
    "crop": {"threshold": 0.4, "iou": 0.6123},
    "seconds_per_tile": 3.25,
}
TABLE = [
    {
        "aoi": "L15-0001E",
        "date": "2018_01",
        "iou": 0.5,
        "precision": 0.6,
        "recall": 0.75,
        "f1": 0.6667,
        "building_tp": 12,
        "building_fp": 3,
        "building_fn": 9,
        "building_f1": 0.6667,
        "building_f1_sn7": 0.7,
    },
    {
        "aoi": "L15-0002E",
        "date": "2018_02",
        "iou": 0.6,
        "precision": 0.8,
        "recall": 0.7,
        "f1": 0.7467,
        "building_tp": 18,
        "building_fp": 7,
        "building_fn": 11,
        "building_f1": 0.6667,
        "building_f1_sn7": 0.75,
    },
]


def test_full_report_matches_the_golden_file():
    """metrics.md byte for byte (regenerate the golden file on purpose when the format changes)."""
    assert metrics_markdown(METRICS, TABLE, SWEEP) == GOLDEN.read_text()


def test_sections_come_in_reading_order():
    md = metrics_markdown(METRICS, TABLE, SWEEP)
    heads = [line for line in md.splitlines() if line.startswith("#")]
    assert heads == [
        "# Evaluation: best.ckpt",
        "## Full-tile pixel metrics",
        "## Buildings (tracked footprints, predictions >= 8 px)",
        "## SCOT (track=match)",
        "## Full tiles vs training crops",
        "## Threshold sweep (one pass)",
        "## Per tile",
    ]
    assert "| **headline** (threshold from the selection split) | 0.40 | 0.5000 |" in md
    assert "| oracle (best on this split itself; not held out) | 0.50 | 0.5500 |" in md
    assert "| L15-0002E 2018_02 | 0.6000 | 0.8000 | 0.7000 | 0.7467 | 18 | 7 | 11 | 0.6667 |" in md
    assert "**held out**" in md and "last month(s) of the training AOIs" in md


def test_a_report_that_is_not_held_out_says_so():
    md = metrics_markdown(dict(METRICS, held_out=False), TABLE, SWEEP)
    assert "**not held out**" in md and "**held out**" not in md


@pytest.mark.parametrize(
    ("key", "empty", "gone"),
    [
        ("scot", None, "## SCOT"),
        ("crop", None, "## Full tiles vs training crops"),
        ("building", None, "## Buildings (tracked"),
    ],
)
def test_a_section_without_data_is_left_out(key, empty, gone):
    for metrics in (dict(METRICS, **{key: empty}), {k: v for k, v in METRICS.items() if k != key}):
        md = metrics_markdown(copy.deepcopy(metrics), TABLE, SWEEP)
        assert gone not in md
        assert "## Full-tile pixel metrics" in md and "## Per tile" in md


def test_no_tiles_and_no_sweep_leave_those_sections_out():
    md = metrics_markdown(METRICS, [], [])
    assert "## Per tile" not in md and "## Threshold sweep" not in md
    assert md.endswith("\n")


def test_markdown_table_formats_floats_and_named_columns():
    table = markdown_table(
        ["a", "threshold"], [[0.123456, 0.5], ["x", 12.345]], {"threshold": ".2f"}
    )
    assert table == "| a | threshold |\n|---|---|\n| 0.1235 | 0.50 |\n| x | 12.35 |"
    assert [format_cell(v) for v in (0.5, 12.345, -3.0, 7, "s")] == [
        "0.5000",
        "12.3",
        "-3.0000",
        "7",
        "s",
    ]
