"""The evaluate stage (sn7.evaluate, evaluate.py): full-tile metrics of a checkpoint."""

from __future__ import annotations

import importlib.util
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import torch
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig
from PIL import Image
from rasterio import features
from shapely.geometry import box

from sn7.constants import IGNORE
from sn7.data.input_spec import InputSpec
from sn7.data.prepared import load_prepared
from sn7.data.raster_io import read_png
from sn7.errors import ConfigError
from sn7.evaluate import evaluate
from sn7.evaluation.scope import data_config
from sn7.evaluation.scoring import Truth, scored_buildings
from sn7.evaluation.thresholds import SelectedThresholds, read_selected, thresholds_path
from sn7.inference.checkpoint import check_against_checkpoint, load_model
from sn7.inference.sliding_window import InferSettings, predictor_for
from sn7.inference.tiles import read_tile
from sn7.metrics.buildings import match_buildings
from sn7.metrics.pixel import scores, threshold_grid
from sn7.models.tiny_unet import TinyUNet
from sn7.testing.synthetic import aoi_name, make_sn7_root
from sn7.train import train

REPO = Path(__file__).resolve().parents[1]
PUBLIC = {"threshold", "iou", "precision", "recall", "f1"}


def evaluate_cfg(*overrides: str) -> DictConfig:
    """The evaluate config of a command line `evaluate.py OVERRIDES`, at fp32 so in-process and
    CLI runs compute the same numbers."""
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        return compose("evaluate", ["trainer.precision=32-true", "track=match", *overrides])


def run_evaluate(*overrides: str) -> dict:
    """evaluate() as `evaluate.py OVERRIDES` runs it: the overridden keys count as given."""
    keys = {o.lstrip("+~").split("=", 1)[0] for o in overrides}
    return evaluate(evaluate_cfg(*overrides), given=keys | {"trainer.precision"})


def data_overrides(root: Path, tmp: Path) -> list[str]:
    """Data root and a prepare cache inside the test's folder (never outputs/prepared)."""
    return [f"data.root={root}", f"data.work_dir={tmp / 'work'}"]


# --- a perfect model -----------------------------------------------------------------------------


def mostly_visible(tile) -> int:
    """How many true buildings of a synthetic tile have at most half their pixels ignored."""
    n = 0
    for building in tile.buildings:
        inside = features.rasterize([(building, 1)], out_shape=tile.mask.shape).astype(bool)
        n += (tile.mask[inside] == IGNORE).sum() <= 0.5 * inside.sum()
    return int(n)


def test_perfect_model_scores_one_end_to_end(tmp_path, synthetic_root, stub_checkpoint):
    """Probabilities equal to the truth give pixel IoU 1 and building F1 1: through several
    blended windows, on a month without buildings (no division by zero) and on months where
    alpha = 0, a UDM raster and a cloud polygon hide parts of buildings."""
    ckpt = stub_checkpoint(tmp_path / "stub.ckpt")
    run = tmp_path / "run"
    m = run_evaluate(
        f"ckpt_path={ckpt}",
        *data_overrides(synthetic_root.root, tmp_path),
        f"paths.run_dir={run}",
        "eval.split=all",
        "eval.gallery=0",
        "infer.window=48",
        "infer.overlap=16",
    )
    assert m["n_tiles"] == len(synthetic_root.tiles) == 8
    for row in m["pixel"]["sweep"]:
        assert (row["iou"], row["precision"], row["recall"], row["f1"]) == (1.0, 1.0, 1.0, 1.0)
    # chosen on the selection split (every threshold ties there; the lowest wins), never here
    assert m["pixel"]["headline"] == {
        "threshold": 0.05,
        **dict.fromkeys(PUBLIC - {"threshold"}, 1.0),
    }
    assert m["held_out"] is False  # "all" holds the images the thresholds were chosen on
    assert m["crop"]["iou"] == 1.0
    b = m["building"]
    scored = {t.stem: mostly_visible(t) for t in synthetic_root.tiles.values()}
    n = sum(scored.values())
    assert n < sum(len(t.buildings) for t in synthetic_root.tiles.values())  # some are hidden
    # one synthetic building is hidden exactly half: whether it counts flips with 1e-9 px of
    # reprojection (labels_match, which carries the ids, is EPSG:3857), so allow it either way
    assert (b["fp"], b["fn"], b["fp_sn7"], b["fn_sn7"]) == (0, 0, 0, 0)
    assert n - 1 <= b["tp"] == b["tp_sn7"] <= n
    assert (b["precision"], b["recall"], b["f1"], b["f1_sn7"]) == (1.0, 1.0, 1.0, 1.0)
    assert m["tracked_mask"]["iou"] == 1.0
    # SCOT: perfect footprints tracked by matching keep every id (a month without buildings and
    # clouded months in between), so tracking and change are perfect in both AOIs
    assert m["scot"]["n_aois"] == 2
    assert (m["scot"]["scot"], m["scot"]["track_score"], m["scot"]["change_score"]) == (1, 1, 1)
    assert len(m["change_maps"]) == 2 and all(Path(p).is_file() for p in m["change_maps"])

    per_tile = pd.read_csv(run / "per_tile.csv", dtype={"date": str}).set_index("stem")
    differ = {k for k, v in per_tile["building_tp"].to_dict().items() if v != scored[k]}
    assert len(differ) <= 1 and per_tile["building_tp"].sum() == b["tp"]
    assert (per_tile[["iou", "precision", "recall", "f1", "building_f1"]] == 1.0).all().all()
    empty = per_tile.loc[per_tile["date"] == "2018-02"]
    assert len(empty) == 2
    assert (empty[["building_tp", "building_fp", "building_fn", "truth_frac"]] == 0).all().all()


def test_hidden_buildings_and_their_visible_slivers_are_not_scored():
    mask = np.zeros((20, 40), np.uint8)
    mask[:, 20:] = IGNORE  # e.g. a cloud over the right half
    visible = box(2, 2, 8, 8)
    hidden = box(16, 2, 26, 8)  # 60 % under the cloud: not scored
    half = box(14, 10, 24, 16)  # 40 % under the cloud: scored, on its visible part
    sliver, background = box(16, 2, 20, 8), box(2, 12, 6, 16)  # predictions (valid pixels)
    preds, pred_ids, truth = scored_buildings(
        [visible, sliver, box(14, 10, 20, 16), background],
        Truth([visible, hidden, half], [7, 8, 9]),
        mask,
        pred_ids=[1, 2, 3, 4],
    )
    assert preds == [visible, box(14, 10, 20, 16), background]
    assert pred_ids == [1, 3, 4]  # ids follow their footprints
    assert truth.ids == [7, 9] and len(truth.geoms) == 2
    assert truth.geoms[0] == visible
    assert truth.geoms[1].symmetric_difference(box(14, 10, 20, 16)).area == 0
    counts = match_buildings(preds, truth.geoms)
    assert (counts.tp, counts.fp, counts.fn) == (2, 1, 0)
    no_ignore = np.zeros((20, 40), np.uint8)
    kept = scored_buildings([sliver], Truth([hidden], None), no_ignore)
    assert (kept[0], kept[2].geoms) == ([sliver], [hidden])


# --- a real (tiny) model: one sweep shared by several tests ------------------------------------


@pytest.fixture(scope="module")
def swept(tmp_path_factory, tiny_checkpoint, synthetic_root):
    """evaluate.py on a copy of the tiny checkpoint: thresholds chosen on its selection split (the
    last month of its training AOI), numbers reported on its report AOI."""
    tmp = tmp_path_factory.mktemp("evaluate_sweep")
    ckpt = Path(shutil.copy(tiny_checkpoint, tmp / "best.ckpt"))
    root = synthetic_root.root  # the root it was trained on (read-only; its own prepare cache)
    overrides = [f"data.work_dir={tmp / 'work'}", "eval.gallery=2", f"paths.run_dir={tmp / 'run'}"]
    cfg = evaluate_cfg(f"ckpt_path={ckpt}", *overrides)
    metrics = run_evaluate(f"ckpt_path={ckpt}", *overrides)
    return {
        "ckpt": ckpt,
        "cfg": cfg,
        "run": tmp / "run",
        "metrics": metrics,
        "tmp": tmp,
        "root": root,
    }


def test_metrics_json_has_the_documented_keys(swept):
    m = json.loads((swept["run"] / "metrics.json").read_text())
    assert m == swept["metrics"]
    expected = {"checkpoint", "split", "n_tiles", "pixel", "building", "crop", "scot"}
    assert expected | {"selected_on", "reported_on", "held_out", "track"} <= set(m)
    assert m["checkpoint"] == str(swept["ckpt"].resolve())
    assert m["data_root"] == str(swept["root"].resolve())
    assert (m["split"], m["n_tiles"]) == ("test", 4)  # one report AOI x 4 months
    assert {"headline", "oracle", "sweep"} <= set(m["pixel"])
    assert set(m["pixel"]["headline"]) == PUBLIC
    assert len(m["pixel"]["sweep"]) == 19
    assert all(set(row) == PUBLIC for row in m["pixel"]["sweep"])
    assert [row["threshold"] for row in m["pixel"]["sweep"]] == threshold_grid()
    building = {"threshold", "tp", "fp", "fn", "precision", "recall", "f1", "f1_sn7", "tp_sn7"}
    assert building <= set(m["building"])
    assert {"threshold", "iou"} <= set(m["crop"])
    for value in [*m["pixel"]["headline"].values(), m["crop"]["iou"]]:
        assert isinstance(value, float) and 0.0 <= value <= 1.0
    assert all(isinstance(m["building"][k], int) for k in ("tp", "fp", "fn", "tp_sn7"))
    assert {"scot", "track_score", "change_score"} <= set(m["scot"])


def test_thresholds_are_chosen_on_the_selection_split_and_reported_elsewhere(swept):
    m = swept["metrics"]
    test_aoi = m["reported_on"]["aois"]
    assert m["selected_on"]["split"] == "val" and m["selected_on"]["kind"] == "time"
    assert m["selected_on"]["months"] == ["2018-04"]  # the training AOI's last month
    assert not set(m["selected_on"]["aois"]) & set(test_aoi)
    assert m["held_out"] is True
    stored = read_selected(swept["ckpt"])
    assert stored.selected_on == m["selected_on"]
    assert m["pixel"]["headline"]["threshold"] == stored.pixel
    assert m["building"]["threshold"] == stored.building
    sweep = {row["threshold"]: row for row in m["pixel"]["sweep"]}
    assert m["pixel"]["headline"] == sweep[stored.pixel]  # the headline is not a maximum
    ious = [row["iou"] for row in m["pixel"]["sweep"]]
    assert m["pixel"]["oracle"]["iou"] == max(ious)
    assert m["crop"]["threshold"] == stored.pixel


def test_the_headline_is_whatever_the_selection_split_chose(swept, tmp_path):
    """A stored selection (valid for this file and these settings) is used as is: the headline
    follows it even where the report split itself would prefer another threshold."""
    ckpt = Path(shutil.copy(swept["ckpt"], tmp_path / "best.ckpt"))
    stored = read_selected(swept["ckpt"])
    oracle = swept["metrics"]["pixel"]["oracle"]["threshold"]
    stored.pixel = 0.9 if oracle < 0.5 else 0.1
    stored.save(ckpt)
    m = run_evaluate(
        f"ckpt_path={ckpt}",
        f"data.work_dir={swept['tmp'] / 'work'}",
        f"paths.run_dir={tmp_path / 'run'}",
        "eval.gallery=0",
        "eval.crop_metrics=false",
    )
    assert m["pixel"]["headline"]["threshold"] == stored.pixel != m["pixel"]["oracle"]["threshold"]
    # another post-processing than the stored one's: chosen again on the selection split
    m = run_evaluate(
        f"ckpt_path={ckpt}",
        f"data.work_dir={swept['tmp'] / 'work'}",
        f"paths.run_dir={tmp_path / 'run2'}",
        "eval.gallery=0",
        "eval.crop_metrics=false",
        "eval.min_area=6",
    )
    again = read_selected(ckpt)
    assert again.min_area == 6 and again.pixel == swept["metrics"]["pixel"]["headline"]["threshold"]


def test_pixel_metrics_pool_the_counts_of_every_tile(swept):
    """Recount the headline row with numpy on independently predicted report tiles: metrics pool
    TP/FP/FN over tiles (not an average of per-tile IoUs) and skip ignored pixels."""
    cfg, m = swept["cfg"], swept["metrics"]
    loaded = load_model(swept["ckpt"])
    predictor = predictor_for(InferSettings.from_config(cfg), loaded)
    prepared = load_prepared(swept["tmp"] / "work")
    threshold = m["pixel"]["headline"]["threshold"]
    tp = fp = fn = 0
    for row in prepared.rows("test").itertuples():
        prob = predictor(loaded.spec.normalize(read_tile(row.image, loaded.spec).pixels))
        truth = read_png(row.mask)
        pred = prob >= np.float32(threshold)
        tp += int((pred & (truth == 1)).sum())
        fp += int((pred & (truth == 0)).sum())
        fn += int((~pred & (truth == 1)).sum())
    expected = scores(tp, fp, fn)
    for key in ("iou", "precision", "recall", "f1"):
        assert m["pixel"]["headline"][key] == pytest.approx(expected[key], abs=1e-12)


def test_report_files_are_written(swept):
    run, m = swept["run"], swept["metrics"]
    md = (run / "metrics.md").read_text()
    assert md.startswith("# Evaluation: best.ckpt")
    assert f"{m['pixel']['headline']['iou']:.4f}" in md
    assert "oracle" in md and "SCOT" in md and "selection" in md
    assert md.count("\n| 0.") >= 19  # the sweep table
    per_tile = pd.read_csv(run / "per_tile.csv")
    assert len(per_tile) == m["n_tiles"]
    assert {"stem", "iou", "building_tp", "building_fp", "building_fn"} <= set(per_tile.columns)
    assert per_tile["building_tp"].sum() == m["building"]["tp"]
    assert per_tile["building_fn"].sum() == m["building"]["fn"]
    for png in [run / "pr_curve.png", run / "gallery" / "index.png", *map(Path, m["change_maps"])]:
        with Image.open(png) as img:
            assert img.format == "PNG" and min(img.size) > 100
    assert len(list((run / "gallery").glob("*.png"))) == 2 + 1  # eval.gallery=2 + index


@pytest.mark.slow
def test_fixed_threshold_multirun_rows_equal_the_sweep_rows(swept):
    sweep_dir = swept["tmp"] / "multirun"
    eval_json = thresholds_path(swept["ckpt"])
    before = eval_json.read_text()
    result = subprocess.run(
        [
            sys.executable,
            "evaluate.py",
            "-m",
            f"ckpt_path={swept['ckpt']}",
            "eval.threshold=0.3,0.5",
            f"data.work_dir={swept['tmp'] / 'work'}",
            "trainer.precision=32-true",
            "eval.gallery=0",
            "eval.crop_metrics=false",
            f"hydra.sweep.dir={sweep_dir}",
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    jobs = [json.loads(p.read_text()) for p in sorted(sweep_dir.glob("*/metrics.json"))]
    assert len(jobs) == 2
    sweep = {row["threshold"]: row for row in swept["metrics"]["pixel"]["sweep"]}
    assert sorted(job["pixel"]["headline"]["threshold"] for job in jobs) == [0.3, 0.5]
    for job in jobs:
        assert job["selected_on"]["split"] == "given"
        fixed = job["pixel"]["headline"]
        assert fixed == sweep[fixed["threshold"]]
        assert job["building"]["threshold"] == fixed["threshold"]
        assert job["n_tiles"] == swept["metrics"]["n_tiles"]
        assert job["data_root"] == str(swept["root"].resolve())  # command line > checkpoint
    assert eval_json.read_text() == before  # a fixed threshold never replaces the stored one


# --- which data, which model ---------------------------------------------------------------------


@pytest.mark.parametrize("n_aois", [1, 3])
def test_a_foreign_root_never_takes_the_training_split(tmp_path, tiny_checkpoint, n_aois):
    """The checkpoint was trained on synthetic_root; another root (one AOI, or three, with an odd
    tile size) is scored whole with no split override, at thresholds chosen on the checkpoint's
    own selection split, and counts as held out (none of its AOIs was seen)."""
    aois = [aoi_name(1400, 3200), aoi_name(1403, 3201), aoi_name(1406, 3202)][:n_aois]
    root = make_sn7_root(tmp_path / "second", aois=aois, months=2, size=(72, 90), n_buildings=5)
    ckpt = Path(shutil.copy(tiny_checkpoint, tmp_path / "best.ckpt"))
    m = run_evaluate(
        f"ckpt_path={ckpt}",
        *data_overrides(root.root, tmp_path),
        f"paths.run_dir={tmp_path / 'run'}",
        "eval.gallery=1",
    )
    assert m["split"] == "all" and m["n_tiles"] == 2 * n_aois
    assert m["held_out"] is True
    assert m["selected_on"]["split"] == "val" and not set(m["selected_on"]["aois"]) & set(aois)
    # chosen on the checkpoint's own root, not on the one just scored: predict's `auto` is the same
    stored = thresholds_path(ckpt).read_text()
    assert read_selected(ckpt).selected_on["data_root"] != str(root.root.resolve())
    run_evaluate(
        f"ckpt_path={ckpt}",
        *data_overrides(root.root, tmp_path),
        f"paths.run_dir={tmp_path / 'run2'}",
        "eval.gallery=0",
        "eval.crop_metrics=false",
    )
    assert thresholds_path(ckpt).read_text() == stored
    assert m["data_root"] == str(root.root.resolve())
    assert m["aois"] == sorted(aois)
    per_tile = pd.read_csv(tmp_path / "run" / "per_tile.csv")
    assert sorted(per_tile["stem"]) == sorted(t.stem for t in root.tiles.values())
    assert m["building"]["tp"] + m["building"]["fn"] == sum(
        len(t.buildings) for t in root.tiles.values()
    )


def test_checkpoint_trained_with_base_8_evaluates_without_model_options(tmp_path, train_cfg):
    root = make_sn7_root(tmp_path / "root", aois=2, months=2, size=(64, 64), n_buildings=4)
    train(train_cfg(root.root, tmp_path / "train", "model.base=8", "logger=none"))
    ckpt = tmp_path / "train" / "checkpoints" / "best.ckpt"
    m = run_evaluate(
        f"ckpt_path={ckpt}",
        f"paths.run_dir={tmp_path / 'eval'}",
        "eval.gallery=0",
        "eval.crop_metrics=false",
    )
    assert m["model"]["base"] == 8 and m["model"]["depth"] == 2
    assert m["data_root"] == str(root.root.resolve())  # the data root it was trained on
    assert m["n_tiles"] == 2  # its report AOI


def test_an_override_that_contradicts_the_checkpoint_is_an_error(tmp_path, tiny_checkpoint):
    ckpt = Path(shutil.copy(tiny_checkpoint, tmp_path / "best.ckpt"))
    cfg = evaluate_cfg(f"ckpt_path={ckpt}", "model.base=8", f"paths.run_dir={tmp_path / 'run'}")
    with pytest.raises(ConfigError) as exc:
        evaluate(cfg)
    message = str(exc.value)
    assert "contradict the checkpoint" in message
    assert "model.base=8 (checkpoint: 4)" in message
    assert str(ckpt) in message
    assert not (tmp_path / "run").exists()  # nothing evaluated

    loaded = load_model(ckpt)
    agreeing = evaluate_cfg(f"ckpt_path={ckpt}", "model.base=4", "model.depth=2")
    check_against_checkpoint(agreeing, loaded, {"model.base", "model.depth"})  # no error
    bands = evaluate_cfg(f"ckpt_path={ckpt}", "data.bands=[1,2,3]")
    with pytest.raises(
        ConfigError, match=r"data\.bands=\[1, 2, 3\] \(checkpoint: \[1, 2, 3, 4\]\)"
    ):
        check_against_checkpoint(bands, loaded, {"data.bands"})


def test_bad_split_name(tmp_path):
    with pytest.raises(ConfigError, match=re.escape("eval.split='report'")):
        evaluate(evaluate_cfg(f"ckpt_path={tmp_path / 'x.ckpt'}", "eval.split=report"))


# --- the CLI --------------------------------------------------------------------------------------


def _bad_checkpoints(folder: Path, tiny_checkpoint: Path) -> dict[str, tuple[Path, str]]:
    folder.mkdir()
    truncated = folder / "truncated.ckpt"
    data = tiny_checkpoint.read_bytes()
    truncated.write_bytes(data[: len(data) // 3])
    text = folder / "readme.ckpt"
    text.write_text("this is not a checkpoint\n")
    foreign = folder / "foreign.ckpt"
    torch.save({"state_dict": TinyUNet(4, 4, 2).state_dict(), "epoch": 1}, foreign)
    return {
        "missing": (folder / "missing.ckpt", "checkpoint not found"),
        "truncated": (truncated, "not a readable PyTorch checkpoint (truncated?)"),
        "not a checkpoint": (text, "not a readable PyTorch checkpoint"),
        "not sn7": (foreign, "not an sn7 checkpoint"),
    }


def test_cli_reports_a_bad_checkpoint_in_one_line(tmp_path, tiny_checkpoint, capsys, monkeypatch):
    """evaluate.py's main() (Hydra's decorator aside) on each bad checkpoint: exit 1 and one
    `sn7 error:` line naming the file and what is wrong. In-process, so the four cases cost no
    torch import each; tests/inference/test_checkpoint.py runs the real `evaluate.py` process
    on a hostile checkpoint."""
    monkeypatch.delenv("SN7_DEBUG", raising=False)
    spec = importlib.util.spec_from_file_location("sn7_evaluate_entry", REPO / "evaluate.py")
    entry = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(entry)
    for name, (path, message) in _bad_checkpoints(tmp_path / "ckpts", tiny_checkpoint).items():
        cfg = evaluate_cfg(f"ckpt_path={path}", f"paths.run_dir={tmp_path / 'run' / name}")
        with pytest.raises(SystemExit) as exc:
            entry.main.__wrapped__(cfg)
        assert exc.value.code == 1, name
        lines = capsys.readouterr().err.strip().splitlines()
        assert len(lines) == 1, (name, lines)
        assert lines[0].startswith(f"sn7 error: {path}: {message}"), (name, lines)


def test_building_threshold_is_chosen_on_the_selection_split(
    tmp_path, synthetic_root, stub_checkpoint, capsys
):
    """eval.building_thresholds are swept on the selection split and the best SN7 F1 is stored
    for predict; with the perfect stub every threshold scores F1 1 and the lowest wins the tie."""
    ckpt = stub_checkpoint(tmp_path / "stub.ckpt")
    m = run_evaluate(
        f"ckpt_path={ckpt}",
        *data_overrides(synthetic_root.root, tmp_path),
        f"paths.run_dir={tmp_path / 'run'}",
        "eval.gallery=0",
        "eval.crop_metrics=false",
        "eval.building_thresholds=[0.7,0.3]",
    )
    stored = read_selected(ckpt)
    assert stored.building == 0.3 == m["building"]["threshold"]
    assert stored.building_f1 == 1.0
    assert stored.post == dict(evaluate_cfg("ckpt_path=x").post) and stored.min_area == 4
    assert stored.building_grid == [0.3, 0.7] and len(stored.pixel_grid) == 19

    def again(*grid: str) -> SelectedThresholds:
        run_evaluate(
            f"ckpt_path={ckpt}",
            *data_overrides(synthetic_root.root, tmp_path),
            f"paths.run_dir={tmp_path / 'again'}",
            "eval.gallery=0",
            "eval.crop_metrics=false",
            *grid,
        )
        return read_selected(ckpt)

    # the same candidates: the stored choice is reused as it is (0.7 ties 0.3 at F1 1, so only a
    # reuse keeps it); other candidates: chosen again
    stored.building = 0.7
    stored.save(ckpt)
    assert again("eval.building_thresholds=[0.7,0.3]").building == 0.7
    capsys.readouterr()
    assert again("eval.building_thresholds=[0.6]").building == 0.6
    assert "not used: they were chosen among other candidate thresholds" in capsys.readouterr().out


def test_an_older_threshold_file_is_replaced_with_a_note(
    tmp_path, synthetic_root, stub_checkpoint, capsys
):
    ckpt = stub_checkpoint(tmp_path / "stub.ckpt")
    Path(f"{ckpt}.eval.json").write_text(json.dumps({"threshold": 0.9}))
    m = run_evaluate(
        f"ckpt_path={ckpt}",
        *data_overrides(synthetic_root.root, tmp_path),
        f"paths.run_dir={tmp_path / 'run'}",
        "eval.gallery=0",
        "eval.crop_metrics=false",
    )
    assert "older sn7" in capsys.readouterr().out
    assert m["pixel"]["headline"]["threshold"] == read_selected(ckpt).pixel


def test_an_old_split_is_read_with_todays_roles(compose_config):
    """sn7 before the selection split called the held-out AOI `val`: it is the report AOI now."""
    cfg = compose_config("evaluate", ["ckpt_path=x.ckpt"])
    spec = InputSpec(bands=(1, 2, 3, 4), mean=(0.3,) * 4, std=(0.2,) * 4)
    old = {"val_aois": ["A"], "val_fraction": 0.3, "seed": 1}
    loaded = SimpleNamespace(spec=spec, run_config={"seed": 7, "split": old})
    merged = data_config(cfg, loaded, set())
    assert merged.split.test_aois == ["A"] and merged.split.test_fraction == 0.3
    assert merged.split.val_aois is None


@pytest.mark.parametrize(
    ("trained_split", "given", "expected"),
    [
        ({"folds": 2, "fold": 1}, set(), 7),  # before split.seed: the training seed chose folds
        ({"folds": 2, "fold": 1, "seed": 42}, set(), 42),  # its own seed, kept as trained
        ({"folds": 2, "fold": 1}, {"split.seed"}, 3),  # the command line wins
    ],
)
def test_split_seed_of_the_checkpoint(compose_config, trained_split, given, expected):
    overrides = ["ckpt_path=x.ckpt", *(["split.seed=3"] if given else [])]
    cfg = compose_config("evaluate", overrides)
    spec = InputSpec(bands=(1, 2, 3, 4), mean=(0.3,) * 4, std=(0.2,) * 4)
    loaded = SimpleNamespace(spec=spec, run_config={"seed": 7, "split": trained_split})
    merged = data_config(cfg, loaded, given)
    assert merged.split.seed == expected and merged.split.fold == 1
