"""One footprint path: the footprints evaluate scores, the ones its building threshold is chosen
with, the ones predict writes and the settings metrics.md prints are the same; options of the
eval/post/track config groups reach the numbers; a stage after prepare does not redo its work."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
import shapely
from hydra import compose, initialize_config_dir

import sn7.data.prepared
import sn7.evaluation.scoring
from sn7.errors import ConfigError
from sn7.evaluate import evaluate
from sn7.evaluation.thresholds import read_selected
from sn7.inference.track_choice import TrackChoice
from sn7.predict import predict

REPO = Path(__file__).resolve().parents[1]
FAST = ["trainer.precision=32-true", "infer.window=48", "infer.overlap=16", "eval.gallery=0"]


def _compose(name: str, overrides) -> object:
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        return compose(name, list(overrides))


def run_evaluate(ckpt: Path, root, tmp: Path, *overrides: str) -> dict:
    given = [f"ckpt_path={ckpt}", f"data.root={root}", f"data.work_dir={tmp / 'work'}",
             f"paths.run_dir={tmp / 'eval'}", "eval.split=all", *FAST, *overrides]  # fmt: skip
    keys = {o.split("=", 1)[0] for o in given}
    return evaluate(_compose("evaluate", given), given=keys)


@pytest.fixture
def soft(tmp_path, stub_checkpoint) -> Path:
    """A stub whose building probabilities spread over about [0.83, 0.98]: thresholds matter."""
    return stub_checkpoint(tmp_path / "soft.ckpt", gain=10.0)


class TrackSpy:
    """Records every tracked AOI that evaluate scores: (footprint settings, tracked months)."""

    def __init__(self, monkeypatch):
        self.calls = []
        real = sn7.evaluation.scoring.track_aoi

        def spy(track, probs, valids, footprint):
            tracked = real(track, probs, valids, footprint)
            self.calls.append((track, footprint, tracked))
            return tracked

        monkeypatch.setattr(sn7.evaluation.scoring, "track_aoi", spy)


def shapes(polygons) -> list[str]:
    return sorted(shapely.normalize(p).wkt for p in polygons)


@pytest.mark.parametrize(
    ("mode", "separate"),
    [
        ("aggregate", "false"),
        ("aggregate", "true"),
        ("match", "true"),
        ("auto", "false"),
        ("auto_relative", "false"),
    ],
)
def test_evaluate_scores_what_predict_writes_with_the_settings_it_prints(
    tmp_path, soft, synthetic_root, monkeypatch, mode, separate
):
    """track=aggregate with the building threshold chosen on the selection split: the tracked
    footprints evaluate scores are, month by month and id by id, the ones predict writes with
    threshold=auto; both use the stored building threshold, which metrics.json/md print. With
    post.separate=true too (it used to fail in evaluate and predict)."""
    auto = mode.startswith("auto")
    options = [f"track={'auto' if auto else mode}", f"post.separate={separate}"]
    if auto:  # the tracker chosen on a selection series: here winner, stored by hand
        choice = TrackChoice({"mode": "winner"}, 0.5, {"aois": ["X"], "degradations": ["mild"]},
                             0.9)  # fmt: skip
        options.append(f"track.file={choice.save(tmp_path / 'track.json')}")
    resolved = "winner" if auto else mode
    # building candidates that cut into the stub's buildings (p ~0.83-0.98 in a month; ~0.6-0.75
    # in the mean map, one month of four being empty), unlike the pixel threshold: footprints cut
    # at the wrong one would differ
    grid = [0.66, 0.7] if resolved == "aggregate" else [0.88, 0.92]
    candidates = f"eval.building_thresholds=[{grid[0]},{grid[1]}]"
    run_evaluate(soft, synthetic_root.root, tmp_path, *options, candidates)  # chooses, stores
    stored = read_selected(soft)
    assert stored.building in grid and stored.pixel < 0.6
    assert stored.track["mode"] == resolved and stored.post["separate"] is (separate == "true")
    building = stored.building
    if mode == "auto_relative":  # chosen on maps of a model whose pixel threshold was `ref`:
        ref = 0.5 * stored.pixel / 0.9  # 0.5 there is 0.9 for this checkpoint
        choice.reference_threshold = ref
        choice.save(tmp_path / "track.json")
        building = pytest.approx(0.9)
    spy = TrackSpy(monkeypatch)
    m = run_evaluate(soft, synthetic_root.root, tmp_path, *options, candidates)  # report only
    assert [fp.threshold for _, fp, _ in spy.calls] == [building] * len(spy.calls)
    assert m["footprints"]["threshold"] == m["thresholds"]["building"] == building
    assert m["footprints"]["post"]["separate"] is (separate == "true")
    text = (tmp_path / "eval" / "metrics.md").read_text()
    cut_from = {"aggregate": "the temporal mean map", "match": "each month"}.get(
        resolved, "the collapsed map"
    )
    assert f"footprints cut from {cut_from}" in text
    assert f"at threshold {m['thresholds']['building']:.2f}" in text
    if auto:
        assert "set by track=auto: chosen on X" in text and m["track"]["mode"] == "winner"

    aoi = synthetic_root.aois[0]
    scored = spy.calls[0][2]  # AOIs are scored in sorted order, the report pass only
    assert len(spy.calls) == len(synthetic_root.aois)
    images = next(t for t in synthetic_root.tiles.values() if t.aoi == aoi).image.parent
    out = tmp_path / "predict"
    cfg = _compose("predict", [f"ckpt_path={soft}", f"input={images}", f"predict.out_dir={out}",
                               "predict.gallery=false", *FAST[:3], *options])  # fmt: skip
    predict(cfg)
    written = pd.read_csv(out / f"{aoi}_sn7.csv")
    stems = sorted(written["filename"].unique())
    assert len(stems) == len(scored) == 4
    n_buildings = 0
    for t, stem in enumerate(stems):
        month = written[(written["filename"] == stem) & (written["id"] >= 0)]
        assert sorted(month["id"]) == sorted(scored.ids(t))
        wkt = dict(zip(month["id"], month["geometry"], strict=True))
        for building_id, polygon in zip(scored.ids(t), scored.polygons(t), strict=True):
            assert shapes([shapely.from_wkt(wkt[building_id])]) == shapes([polygon])
        n_buildings += len(month)
    assert n_buildings > 0
    if mode == "auto_relative":  # a given eval.threshold is used as given, not scaled
        fixed = run_evaluate(soft, synthetic_root.root, tmp_path / "fixed", *options, candidates,
                             "eval.threshold=0.7")  # fmt: skip
        assert fixed["thresholds"]["building"] == fixed["footprints"]["threshold"] == 0.7


def test_iou_match_reaches_the_building_rule(tmp_path, soft, synthetic_root, monkeypatch):
    seen = []
    real = sn7.evaluation.scoring.match_buildings

    def spy(preds, truths, iou_match=0.5):
        seen.append(iou_match)
        return real(preds, truths, iou_match)

    monkeypatch.setattr(sn7.evaluation.scoring, "match_buildings", spy)
    m = run_evaluate(soft, synthetic_root.root, tmp_path, "eval.iou_match=0.7")
    assert seen and set(seen) == {0.7}
    assert m["building"]["iou_match"] == 0.7
    assert "SpaceNet: IoU >= 0.7" in (tmp_path / "eval" / "metrics.md").read_text()


def test_min_truth_area_drops_small_true_buildings(tmp_path, soft, synthetic_root):
    """No true building has 10^6 px: with that minimum there is nothing to find, so every
    predicted building is a false positive and none is missed."""
    m = run_evaluate(soft, synthetic_root.root, tmp_path, "eval.min_truth_area=1000000")
    b = m["building"]
    assert (b["tp"], b["fn"], b["tp_sn7"], b["fn_sn7"]) == (0, 0, 0, 0) and b["fp"] > 0


def test_publish_copies_the_report(tmp_path, soft, synthetic_root):
    target = tmp_path / "results" / "run"
    run_evaluate(soft, synthetic_root.root, tmp_path, f"eval.publish={target}")
    for name in ("metrics.md", "metrics.json", "pr_curve.png"):
        assert (target / name).read_bytes() == (tmp_path / "eval" / name).read_bytes()


def test_publish_gallery_keeps_the_latest_pictures(tmp_path, soft, synthetic_root):
    """eval.publish_gallery=1 commits one tile picture, the last by name (the latest month), and
    not the contact sheet (index.png, which sorts last); the full gallery stays in the run folder.
    A negative count is refused before any work."""
    target = tmp_path / "results" / "run"
    run_evaluate(soft, synthetic_root.root, tmp_path, f"eval.publish={target}",
                 "eval.gallery=3", "eval.publish_gallery=1")  # fmt: skip
    drawn = sorted(p.name for p in (tmp_path / "eval" / "gallery").glob("*.png"))
    tiles = [name for name in drawn if name != "index.png"]
    assert "index.png" in drawn and len(tiles) > 1
    assert [p.name for p in (target / "gallery").glob("*.png")] == tiles[-1:]
    with pytest.raises(ConfigError, match=r"eval\.publish_gallery"):
        run_evaluate(soft, synthetic_root.root, tmp_path, "eval.publish_gallery=-1")


def test_track_options_reach_the_tracker_through_the_config(tmp_path, soft, synthetic_root):
    """The soft stub's buildings score at most ~0.98 in any month: asking for a mean monthly score
    of 0.99 leaves no building; a min_valid outside [0, 1] is refused before any work."""
    base = run_evaluate(soft, synthetic_root.root, tmp_path, "track=aggregate")
    assert base["building"]["tp_sn7"] > 0
    none = run_evaluate(
        soft, synthetic_root.root, tmp_path, "track=aggregate", "track.presence_threshold=0.99"
    )
    assert none["building"]["tp_sn7"] == none["building"]["fp_sn7"] == 0
    with pytest.raises(ConfigError, match=r"track\.min_valid"):
        run_evaluate(soft, synthetic_root.root, tmp_path, "track=aggregate", "track.min_valid=1.5")


def test_evaluate_prepares_at_most_once_and_not_at_all_when_fresh(
    tmp_path, soft, synthetic_root, prepare_builds
):
    """The report scope, the selection scope and the held-out check all need the prepared root:
    the first run builds it once, a second run only reads it, and other split or subset settings
    make it stale again."""
    builds = prepare_builds
    run_evaluate(soft, synthetic_root.root, tmp_path)
    assert len(builds) == 1
    run_evaluate(soft, synthetic_root.root, tmp_path, "eval.threshold=0.5")
    assert len(builds) == 1
    prepare_cfg = _compose(
        "prepare", [f"data.root={synthetic_root.root}", f"data.work_dir={tmp_path / 'work'}"]
    )
    assert sn7.data.prepared.stale_reason(prepare_cfg) is None  # python prepare.py would agree
    run_evaluate(soft, synthetic_root.root, tmp_path, "subset.per_aoi=2")  # other settings
    assert len(builds) == 2


def test_probabilities_are_cached_per_checkpoint_and_input(
    tmp_path, soft, stub_checkpoint, synthetic_root, monkeypatch
):
    """A second evaluation of the same checkpoint reads every tile's probabilities from the cache
    (the network is not called) and gives the same metrics; another checkpoint misses it."""
    import sn7.evaluate

    calls = []
    real = sn7.evaluate.CachedPredictor

    class Counting(real):
        def __init__(self, predictor, folder, salt):
            super().__init__(predictor, folder, salt)
            calls.append(self)

    monkeypatch.setattr(sn7.evaluate, "CachedPredictor", Counting)
    cache = f"eval.prob_cache={tmp_path / 'probs'}"
    first = run_evaluate(soft, synthetic_root.root, tmp_path, cache, "eval.crop_metrics=false")
    second = run_evaluate(soft, synthetic_root.root, tmp_path, cache, "eval.crop_metrics=false")
    # the first run also scored the selection split (thresholds); the second reads stored ones
    assert calls[0].misses > 0 and (calls[1].misses, calls[1].hits) == (0, second["n_tiles"])
    assert first["pixel"] == second["pixel"] and first["scot"] == second["scot"]
    other = stub_checkpoint(tmp_path / "other.ckpt", gain=11.0)
    run_evaluate(other, synthetic_root.root, tmp_path, cache, "eval.crop_metrics=false")
    assert (calls[2].misses, calls[2].hits) == (calls[0].misses, calls[0].hits)  # same tiles
    assert len(list((tmp_path / "probs").rglob("*.npy"))) == 2 * calls[0].misses


def test_error_profile_measures_the_model_evaluate_scores(
    tmp_path, stub_checkpoint, synthetic_root
):
    """eval.error_profile=true writes error_profile.json per AOI with the degrade steps that
    imitate the model; the perfect stub model finds every building and makes no false blobs."""
    import json

    from sn7.evaluation.degrade import Degradation

    perfect = stub_checkpoint(tmp_path / "perfect.ckpt")
    run_evaluate(perfect, synthetic_root.root, tmp_path, "eval.error_profile=true",
                 "eval.crop_metrics=false")  # fmt: skip
    raw = json.loads((tmp_path / "eval" / "error_profile.json").read_text())
    assert raw["aois"] and set(raw["per_aoi"]) == set(raw["aois"])
    p = raw["profile"]
    assert p["inside"] > 0.99 and p["outside"] < 0.01
    assert all(b["persistent_miss"] == 0 for b in p["misses"]["bins"] if b["buildings"])
    assert p["false_positives"]["count"] == 0
    assert Degradation.from_config({"name": "n", "steps": raw["steps"]}).steps  # a valid preset
