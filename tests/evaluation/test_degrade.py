"""Degradations of rendered truth (sn7.evaluation.degrade): seeded, composable, as described."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from sn7.errors import ConfigError
from sn7.evaluation.degrade import INSIDE, OUTSIDE, Degradation, blur, render


def _ids(months: int = 4, size: int = 64) -> np.ndarray:
    """(T, H, W): 20 buildings of 4x4 px on a 5 x 4 lattice, each standing in every month."""
    ids = np.zeros((months, size, size), np.uint32)
    for k in range(20):
        r, c = 4 + 12 * (k // 5), 4 + 12 * (k % 5)
        ids[:, r : r + 4, c : c + 4] = k + 1
    return ids


def degrade(steps: list[dict], ids=None, seed: int = 0, aoi: str = "a"):
    d = Degradation.from_config({"name": "test", "steps": steps})
    return d.apply(_ids() if ids is None else ids, seed, aoi)


def test_none_renders_the_truth():
    shown, probs = degrade([])
    assert np.array_equal(shown, _ids())
    assert set(np.unique(probs)) == {np.float32(INSIDE), np.float32(OUTSIDE)}
    assert np.array_equal(probs == np.float32(INSIDE), _ids() > 0)


def test_same_seed_same_maps_other_seed_other_maps():
    steps = [{"kind": "missed", "share": 0.2}, {"kind": "blur", "sigma": 1}, {"kind": "noise"}]
    a, b, c = (degrade(steps, seed=s)[1] for s in (1, 1, 2))
    assert np.array_equal(a, b)
    assert not np.array_equal(a, c)
    assert not np.array_equal(a, degrade(steps, seed=1, aoi="other")[1])  # AOIs draw apart


def test_missed_hides_its_share_of_ids_in_every_month():
    shown, _ = degrade([{"kind": "missed", "share": 0.1}])
    gone = set(range(1, 21)) - set(np.unique(shown).tolist())
    assert len(gone) == 2  # round(0.1 * 20)
    for month in shown:  # never shown in any month, the others untouched
        assert not np.isin(month, list(gone)).any()
    assert np.array_equal(shown > 0, (_ids() > 0) & ~np.isin(_ids(), list(gone)))


def test_flicker_removes_chosen_buildings_for_one_month_each():
    shown, _ = degrade([{"kind": "flicker", "share": 0.25}])
    absences = [(t, k) for k in range(1, 21) for t in range(4) if not (shown[t] == k).any()]
    assert len(absences) == 5 and len({k for _, k in absences}) == 5  # 5 buildings, 1 month each
    assert set(np.unique(shown).tolist()) == set(range(21))  # each still shown in other months


def test_blur_keeps_the_mean_and_softens_edges():
    probs = render(_ids())
    blurred = blur(probs, np.random.default_rng(0), sigma=1.0)
    assert blurred.mean() == pytest.approx(probs.mean(), rel=1e-5)
    assert 0.05 < blurred[0, 3, 5] < 0.95  # a pixel beside a building edge


def test_month_shift_scales_one_month_only():
    _, base = degrade([])
    _, shifted = degrade([{"kind": "scale", "factor": 0.6, "month": 2}])
    assert np.allclose(shifted[2], base[2] * 0.6)
    for t in (0, 1, 3):
        assert np.array_equal(shifted[t], base[t])
    with pytest.raises(ConfigError, match="month=7"):
        degrade([{"kind": "scale", "month": 7}])


def test_merge_bridges_gaps_of_two_pixels_but_not_three():
    ids = np.zeros((1, 20, 30), np.uint32)
    ids[0, 5:10, 2:6], ids[0, 5:10, 8:12] = 1, 2  # gap of 2 px (columns 6, 7)
    ids[0, 5:10, 15:19] = 3  # gap of 3 px (columns 12-14)
    _, probs = degrade([{"kind": "merge", "gap": 2}], ids)
    assert (probs[0, 5:10, 6:8] == np.float32(INSIDE)).all()
    assert (probs[0, 5:10, 12:15] == np.float32(OUTSIDE)).all()


def test_boundary_erodes_and_dilates_by_k_pixels():
    eroded, _ = degrade([{"kind": "boundary", "px": -1}])
    dilated, _ = degrade([{"kind": "boundary", "px": 1}])
    assert (eroded[0] == 1).sum() == 4  # 4x4 -> 2x2
    assert (dilated[0] == 1).sum() == 32  # 4x4 grown by a 1-px disk: 16 + 4 * 4


def test_false_positives_add_blobs_at_the_density():
    shown, probs = degrade([{"kind": "false_positives", "density": 2000, "radius": [1, 2]}])
    assert np.array_equal(shown, _ids())
    extra = (probs >= 0.5) & (_ids() == 0)
    assert extra.any(axis=(1, 2)).all()  # 2000 per Mpx ~ 8 blobs in each 64x64 month


def test_steps_are_checked_once():
    with pytest.raises(ConfigError, match="kind must be one of"):
        Degradation.from_config({"steps": [{"kind": "smudge"}]})
    with pytest.raises(ConfigError, match="unknown keys"):
        Degradation.from_config({"steps": [{"kind": "blur", "radius": 2}]})
    with pytest.raises(ConfigError, match=r"share=1\.5"):
        Degradation.from_config({"steps": [{"kind": "missed", "share": 1.5}]})
    with pytest.raises(ConfigError, match="must come before"):
        Degradation.from_config({"steps": [{"kind": "blur"}, {"kind": "missed"}]})


def test_every_preset_in_conf_degrade_builds(compose_config):
    presets = sorted((Path(__file__).resolve().parents[2] / "conf" / "degrade").glob("*.yaml"))
    assert {p.stem for p in presets} >= {"none", "mild", "month_shift", "missed", "flicker"}
    for path in presets:
        cfg = compose_config("series", ["data.root=x", f"degrade={path.stem}"])
        d = Degradation.from_config(dict(cfg.degrade))
        assert d.name == path.stem
    mild = compose_config("series", ["data.root=x", "degrade=mild"]).degrade
    mild = Degradation.from_config(dict(mild))
    assert [s.kind for s in mild.steps] == ["blur", "noise"]


def test_contact_cuts_touching_buildings_apart():
    """Two 2x3 buildings sharing an edge lose the two columns along it; a building touching
    another only at one pixel loses that pixel and its neighbour's; a lone building is kept."""
    from sn7.evaluation.degrade import contact

    ids = np.zeros((1, 6, 8), np.uint32)
    ids[0, 1:3, 0:3] = 1
    ids[0, 1:3, 3:6] = 2
    ids[0, 0, 5] = 3
    ids[0, 4:6, 6:8] = 4
    out = contact(ids, np.random.default_rng(0))[0]
    assert (out[1:3, 0:2] == 1).all() and (out[1:3, 2:4] == 0).all()
    assert out[1, 5] == 0 and out[2, 5] == 2 and out[0, 5] == 0  # 2 and 3 touched there
    assert (out[4:6, 6:8] == 4).all()
    assert Degradation.from_config({"steps": [{"kind": "contact"}]}).steps[0].on_labels


def _sized_ids(months: int = 4) -> np.ndarray:
    """(T, 64, 64): ids 1-10 small (3x3 px = 9), 11-20 large (6x6 = 36), every month."""
    ids = np.zeros((months, 64, 64), np.uint32)
    for k in range(20):
        r, c = 2 + 12 * (k // 5), 2 + 12 * (k % 5)
        side = 3 if k < 10 else 6
        ids[:, r : r + side, c : c + side] = k + 1
    return ids


def test_missed_by_area_hides_only_the_bins_it_names():
    shown, _ = degrade([{"kind": "missed", "by_area": [[20, 1.0], [1e9, 0.0]]}], _sized_ids())
    assert set(np.unique(shown).tolist()) == {0, *range(11, 21)}  # every small one, no large one


def test_dropout_hides_building_months_independently():
    ids = _sized_ids(months=40)
    shown, _ = degrade([{"kind": "dropout", "by_area": [[20, 0.5], [1e9, 0.0]]}], ids)
    small = [(shown[t] == k).any() for k in range(1, 11) for t in range(40)]
    assert 0.35 < 1 - np.mean(small) < 0.65  # about half the small building-months
    assert all((shown[t] == k).any() for k in range(11, 21) for t in range(40))  # large: all


@pytest.mark.parametrize(
    "step",
    [
        {"kind": "missed", "by_area": [[50, 1.5]]},
        {"kind": "dropout", "by_area": [[50, 0.1], [20, 0.1]]},
        {"kind": "dropout", "by_area": "many"},
        {"kind": "levels", "inside": 1.2},
        {"kind": "noise", "corr": -1},
    ],
)
def test_bad_new_step_parameters_are_one_line_errors(step):
    with pytest.raises(ConfigError, match=r"degrade\.steps\[0\]"):
        Degradation.from_config({"name": "bad", "steps": [step]})


def test_levels_move_the_rendered_confidence():
    _, probs = degrade([{"kind": "levels", "inside": 0.4, "outside": 0.1}])
    assert np.allclose(probs[_ids() > 0], 0.4) and np.allclose(probs[_ids() == 0], 0.1)


def test_correlated_noise_keeps_its_sd_and_is_smooth():
    flat = np.zeros((2, 128, 128), np.uint32)
    _, white = degrade([{"kind": "levels", "outside": 0.5}, {"kind": "noise", "sd": 0.05}], flat)
    _, smooth = degrade(
        [{"kind": "levels", "outside": 0.5}, {"kind": "noise", "sd": 0.05, "corr": 2.0}], flat
    )
    assert abs(white.std() - 0.05) < 0.005 and abs(smooth.std() - 0.05) < 0.01

    def lag1(x):
        return np.corrcoef(x[:, :, :-1].ravel(), x[:, :, 1:].ravel())[0, 1]

    assert abs(lag1(white)) < 0.05 and lag1(smooth) > 0.8  # exp(-1 / 16) = 0.94


def test_gain_scales_each_month_by_its_own_factor():
    _, probs = degrade([{"kind": "gain", "sd": 0.3}], _ids(months=6))
    outside = [np.unique(p[_ids(months=6)[0] == 0]) for p in probs]  # 0.05: never clipped
    assert all(len(v) == 1 for v in outside)  # one factor per month, whole map
    assert len({round(float(v[0]), 5) for v in outside}) == 6  # months differ


def test_strength_scales_every_step_between_truth_and_the_preset():
    preset = {
        "name": "p",
        "steps": [
            {"kind": "missed", "by_area": [[20, 0.5], [1e9, 0.2]]},
            {"kind": "levels", "inside": 0.35, "outside": 0.01},
            {"kind": "blur", "sigma": 2.0},
            {"kind": "noise", "sd": 0.1, "corr": 1.0},
            {"kind": "scale", "factor": 0.6, "month": 0},
        ],
    }
    half = Degradation.from_config({**preset, "strength": 0.5}).as_dict()
    assert half["strength"] == 0.5
    missed, levels, blur_, noise_, scale_ = half["steps"]
    assert missed["by_area"] == ((20.0, 0.25), (1e9, 0.1))
    assert levels["inside"] == pytest.approx(0.65) and levels["outside"] == pytest.approx(0.03)
    assert blur_["sigma"] == 1.0 and noise_["sd"] == 0.05 and noise_["corr"] == 1.0
    assert scale_["factor"] == pytest.approx(0.8)
    _, zero = Degradation.from_config({**preset, "strength": 0}).apply(_ids(), 0, "a")
    assert np.allclose(zero, render(_ids()))  # strength 0 is truth
    assert "strength" not in Degradation.from_config(preset).as_dict()
    with pytest.raises(ConfigError, match="strength"):
        Degradation.from_config({**preset, "strength": -1})
