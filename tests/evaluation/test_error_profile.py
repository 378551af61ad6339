"""The error profile (sn7.evaluation.error_profile) reads back what a known degradation did, so the
`network` preset it writes imitates the network it was measured on."""

from __future__ import annotations

import json

import numpy as np
import pytest
import yaml
from shapely.geometry import box

from sn7.errors import ConfigError
from sn7.evaluation.degrade import Degradation
from sn7.evaluation.error_profile import combine, id_raster, main, measure, preset_steps


def _city(months: int = 6, size: int = 256, seed: int = 0) -> np.ndarray:
    """(T, H, W) ids: 60 small (4x4 = 16 px) and 30 large (12x12 = 144 px) buildings, apart."""
    rng = np.random.default_rng(seed)
    ids = np.zeros((months, size, size), np.uint32)
    cells = rng.permutation(15 * 15)[:90]
    for k, cell in enumerate(cells):
        r, c = 4 + 17 * (cell // 15), 4 + 17 * (cell % 15)
        side = 4 if k < 60 else 12
        ids[:, r : r + side, c : c + side] = k + 1
    return ids


KNOWN = [
    {"kind": "missed", "by_area": [[50, 0.5], [1e9, 0.0]]},
    {"kind": "levels", "inside": 0.6, "outside": 0.08},
    {"kind": "false_positives", "density": 150, "radius": [2, 3], "value": 0.6},
    {"kind": "blur", "sigma": 1.5},
    {"kind": "noise", "sd": 0.03, "corr": 1.0},
    {"kind": "gain", "sd": 0.2},
]


def _measured(steps=KNOWN, threshold: float = 0.3):
    ids = _city()
    _, probs = Degradation.from_config({"name": "known", "steps": steps}).apply(ids, 3, "x")
    return measure(probs, ids, np.ones(ids.shape, bool), threshold)


def test_a_known_degradation_is_read_back():
    p = _measured()
    assert p["inside"] == pytest.approx(0.6, abs=0.12)  # gain moves months around 0.6
    assert p["outside"] == pytest.approx(0.08, abs=0.03)
    assert p["blur_sigma"] in (1.0, 1.5, 2.0)
    assert p["noise_sd"] == pytest.approx(0.03, abs=0.015)
    assert 0.5 < p["noise_corr"] < 2.0
    bins = {b["max_area"]: b for b in p["misses"]["bins"]}  # <10, 10-25, 25-50, 50-100, >=100
    small, large = bins[25], bins[None]  # the 16 px and 144 px buildings
    assert small["buildings"] == 60 and small["persistent_miss"] == pytest.approx(0.5, abs=0.2)
    assert large["buildings"] == 30 and large["persistent_miss"] == 0.0
    assert p["false_positives"]["per_million_px"] == pytest.approx(150, rel=0.5)
    assert 0.05 < p["gain_sd"] < 0.5


def test_truth_itself_has_no_misses_noise_or_false_positives():
    p = _measured(steps=[])
    assert p["inside"] == pytest.approx(0.95) and p["outside"] == pytest.approx(0.05)
    assert all(b["persistent_miss"] == 0 and b["dropout"] == 0 for b in p["misses"]["bins"])
    assert p["false_positives"]["count"] == 0 and p["blur_sigma"] == 0.0
    assert p["gain_sd"] == 0.0


def test_preset_steps_make_a_valid_degradation_that_errs_alike():
    p = _measured()
    steps = preset_steps(p)
    again = Degradation.from_config({"name": "network", "steps": steps})
    ids = _city(seed=1)
    _, probs = again.apply(ids, 5, "y")
    q = measure(probs, ids, np.ones(ids.shape, bool), 0.3)
    assert q["inside"] == pytest.approx(p["inside"], abs=0.12)
    assert q["misses"]["bins"][1]["persistent_miss"] == pytest.approx(0.5, abs=0.25)


def test_combine_weights_misses_by_buildings():
    a, b = _measured(), _measured(steps=[])
    both = combine([a, b])
    assert both["misses"]["bins"][1]["persistent_miss"] == pytest.approx(
        a["misses"]["bins"][1]["persistent_miss"] / 2
    )
    assert both["months"] == 12


def test_id_raster_keeps_ids_across_months():
    index: dict = {}
    first = id_raster([box(0, 0, 4, 4), box(10, 10, 14, 14)], ["a", "b"], index, (20, 20))
    second = id_raster([box(10, 10, 14, 14)], ["b"], index, (20, 20))
    assert first[2, 2] == 1 and first[12, 12] == 2 and second[12, 12] == 2 and second[2, 2] == 0


def test_shapes_must_agree():
    with pytest.raises(ConfigError, match="differ"):
        measure(np.zeros((2, 8, 8)), np.zeros((2, 8, 9), np.uint32), np.ones((2, 8, 8), bool), 0.5)


def test_preset_file_names_its_source(tmp_path):
    profile = _measured()
    src = tmp_path / "error_profile.json"
    src.write_text(json.dumps({
        "checkpoint": "/x/best.ckpt", "checkpoint_sha256": "ab" * 32, "aois": ["A"],
        "command": "python evaluate.py ckpt_path=/x/best.ckpt eval.error_profile=true",
        "profile": profile, "steps": preset_steps(profile),
    }))  # fmt: skip
    out = tmp_path / "network.yaml"
    main([str(src), "--out", str(out)])
    text = out.read_text()
    assert "eval.error_profile=true" in text and "/x/best.ckpt" in text
    node = yaml.safe_load(text)
    assert node["name"] == "network" and node["reference_threshold"] == 0.3
    assert Degradation.from_config(node).reference_threshold == 0.3
