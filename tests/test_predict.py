"""The predict stage (sn7.predict, predict.py): GeoTIFF in -> GeoTIFFs, GeoJSON, gallery out."""

from __future__ import annotations

import json
import math
import re
import shutil
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import geopandas as gpd
import numpy as np
import pandas as pd
import pytest
import rasterio
from affine import Affine
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig
from PIL import Image
from pyproj import Transformer
from rasterio import features
from rasterio.warp import transform_bounds
from scipy import ndimage
from shapely.affinity import affine_transform
from shapely.geometry import box

import sn7.viz.gallery
from sn7.checks import check_predict
from sn7.errors import CheckpointError, ConfigError, DataError
from sn7.evaluation.thresholds import SelectedThresholds, file_sha256, thresholds_path
from sn7.inference.checkpoint import load_model
from sn7.inference.tracking import TrackSettings
from sn7.predict import PredictSettings, predict, resolve_thresholds
from sn7.testing.synthetic import PIXEL_SIZE, make_sn7_root

REPO = Path(__file__).resolve().parents[1]
UTM = "EPSG:32610"
UTM_TRANSFORM = Affine(0.5, 0.0, 500_000.0, 0.0, -0.5, 4_200_000.0)  # 0.5 m pixels
MIN_AREA = 4  # conf/predict.yaml


def predict_cfg(ckpt: Path, input_: Path | str, out_dir: Path, *overrides: str) -> DictConfig:
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        return compose(
            "predict",
            [
                f"ckpt_path={ckpt}",
                f"input={input_}",
                f"predict.out_dir={out_dir}",
                "trainer.precision=32-true",
                "infer.window=48",
                "infer.overlap=16",
                "track=match",
                # no evaluate ran for these checkpoints: a fixed threshold unless a test sets one
                *(
                    []
                    if any(o.startswith("predict.threshold=") for o in overrides)
                    else ["predict.threshold=0.5"]
                ),
                *overrides,
            ],
        )


def read(path: Path) -> tuple[np.ndarray, dict, np.ndarray]:
    """Band 1, profile and the GDAL mask of band 1 (0 = nodata)."""
    with rasterio.open(path) as src:
        return src.read(1), dict(src.profile), src.read_masks(1)


def copy_as_utm(image: Path, target: Path) -> Path:
    """The same pixels in another CRS and pixel size: nothing may assume web mercator."""
    with rasterio.open(image) as src:
        data, profile = src.read(), src.profile
    profile.update(crs=UTM, transform=UTM_TRANSFORM)
    with rasterio.open(target, "w", **profile) as dst:
        dst.write(data)
    return target


@pytest.fixture(scope="module")
def predicted(tmp_path_factory, stub_checkpoint):
    """The perfect stub model on a folder of 3 tiles: a clear month, a month whose right quarter
    is alpha = 0, and a UTM copy outside any SN7 layout (no truth)."""
    tmp = tmp_path_factory.mktemp("predict")
    root = make_sn7_root(
        tmp / "root", aois=1, months=2, size=(70, 100), n_buildings=12, blank_months=["2018_02"]
    )
    images = tmp / "root" / "train" / root.aois[0] / "images"
    utm = copy_as_utm(next(iter(root.tiles.values())).image, images / "utm_copy.tif")
    ckpt = stub_checkpoint(tmp / "stub.ckpt")
    out = tmp / "out"
    calls = []
    real_figure = sn7.viz.gallery.tile_figure

    def spy(panels, titles, suptitle):
        calls.append({"panels": len(panels), "titles": list(titles), "label": suptitle})
        return real_figure(panels, titles, suptitle)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(sn7.viz.gallery, "tile_figure", spy)
        done = predict(predict_cfg(ckpt, images, out))
    return {"root": root, "utm": utm, "ckpt": ckpt, "out": out, "done": done, "figures": calls}


def inputs(predicted) -> list[tuple[Path, np.ndarray | None]]:
    """(image, expected truth mask or None) of every predicted input."""
    return [(t.image, t.mask) for t in predicted["root"].tiles.values()] + [
        (predicted["utm"], None)
    ]


def test_outputs_keep_the_input_georeferencing(predicted):
    for image, _ in inputs(predicted):
        with rasterio.open(image) as src:
            crs, transform, size = src.crs, src.transform, (src.width, src.height)
            alpha = src.read(4)
        for kind in ("prob", "mask"):
            with rasterio.open(predicted["out"] / f"{image.stem}_{kind}.tif") as out:
                assert out.crs == crs, (image, kind)
                assert out.transform == transform
                assert (out.width, out.height, out.count) == (*size, 1)
        _, profile, prob_valid = read(predicted["out"] / f"{image.stem}_prob.tif")
        assert profile["dtype"] == "uint8"
        np.testing.assert_array_equal(prob_valid, np.where(alpha > 0, 255, 0))  # internal mask
        mask, profile, _ = read(predicted["out"] / f"{image.stem}_mask.tif")
        assert profile["nodata"] == 255
        assert (mask[alpha == 0] == 255).all()
        assert set(np.unique(mask[alpha > 0])) <= {0, 1}


def test_perfect_model_writes_the_truth(predicted):
    for image, truth in inputs(predicted)[:2]:
        assert (truth == 255).any() == ("2018_02" in image.stem)  # the alpha = 0 strip
        mask, _, _ = read(predicted["out"] / f"{image.stem}_mask.tif")
        np.testing.assert_array_equal(mask, truth)
        prob, _, _ = read(predicted["out"] / f"{image.stem}_prob.tif")
        valid = truth != 255
        np.testing.assert_array_equal(prob[valid], np.where(truth[valid] == 1, 255, 0))


def buildings(predicted, image: Path) -> gpd.GeoDataFrame:
    return gpd.read_file(predicted["out"] / f"{image.stem}_buildings.geojson")


def test_geojson_rasterizes_back_to_the_mask(predicted):
    for image, _ in inputs(predicted):
        mask, profile, _ = read(predicted["out"] / f"{image.stem}_mask.tif")
        frame = buildings(predicted, image)
        assert len(frame) > 0
        burned = features.rasterize(
            [(g, 1) for g in frame.geometry],
            out_shape=mask.shape,
            transform=profile["transform"],
        ).astype(bool)
        predicted_px = mask == 1
        iou = (burned & predicted_px).sum() / (burned | predicted_px).sum()
        assert iou >= 0.99, image
        labels, _ = ndimage.label(predicted_px)  # components under min_area are left out
        sizes = np.bincount(labels.ravel())
        big = (sizes >= MIN_AREA)[labels] & predicted_px
        np.testing.assert_array_equal(burned, big)


def test_geojson_geometries_are_valid_and_inside_the_tile(predicted):
    for image, _ in inputs(predicted):
        frame = buildings(predicted, image)
        with rasterio.open(image) as src:
            assert frame.crs == src.crs
            tile = box(*src.bounds)
        assert frame.geometry.is_valid.all()
        assert frame.geometry.apply(tile.covers).all()
        assert frame["building_id"].is_unique and (frame["building_id"] >= 1).all()
        assert (frame["area_px"] >= MIN_AREA).all()
        assert frame["mean_prob"].between(0.5, 1.0).all()
    groups = {d["aoi"]: d for d in predicted["done"]}  # what predict() returns: one per AOI
    aoi = predicted["root"].aois[0]
    assert set(groups) == {aoi, None}
    assert len(groups[aoi]["tiles"]) == 2 and groups[None]["tiles"] == [predicted["utm"].stem]


def test_buildings_keep_their_id_across_months(predicted):
    """One AOI, two months (the second with an alpha = 0 strip): a building seen in both keeps one
    building_id; first_seen is the month it appears, and nothing is new in the first month."""
    first, second = [buildings(predicted, t.image) for t in predicted["root"].tiles.values()]
    assert (first["first_seen"] == "2018_01").all() and not first["is_new"].any()
    both = first.merge(second, on="building_id", suffixes=("_1", "_2"))
    assert len(both) >= len(second) - second["is_new"].sum() > 0
    for row in both.itertuples():  # the same footprint (the perfect model; or its visible part)
        assert row.geometry_1.intersection(row.geometry_2).area > 0.5 * row.geometry_2.area
    aoi = predicted["root"].aois[0]
    tracks = pd.read_csv(predicted["out"] / f"{aoi}_tracks.csv")
    assert set(tracks["building_id"]) == set(first["building_id"]) | set(second["building_id"])
    assert tracks.set_index("building_id").loc[both["building_id"], "months_present"].eq(2).all()
    sn7 = pd.read_csv(predicted["out"] / f"{aoi}_sn7.csv")
    assert list(sn7.columns) == ["filename", "id", "geometry"]
    assert len(sn7) == len(first) + len(second)
    assert sn7["geometry"].str.startswith("POLYGON").all()  # pixel-coordinate WKT
    assert (predicted["out"] / "change_maps" / f"{aoi}.png").is_file()


def test_geojson_buildings_match_the_labels(predicted):
    """The perfect model's polygons are the labelled footprints, mapped through the transform."""
    clear = next(t for t in predicted["root"].tiles.values() if not (t.mask == 255).any())
    frame = buildings(predicted, clear.image)
    t = clear.transform
    # pixel (col, row) -> EPSG:3857 metres
    truths = [affine_transform(b, [t.a, t.b, t.d, t.e, t.c, t.f]) for b in clear.buildings]
    assert len(frame) == len(truths) == 6  # the first of 2 months holds half of 12 buildings
    for truth in truths:
        ious = [g.intersection(truth).area / g.union(truth).area for g in frame.geometry]
        assert max(ious) > 0.999


def test_area_m2_is_ground_area(predicted):
    utm = buildings(predicted, predicted["utm"])  # UTM: the area is the planar area
    np.testing.assert_allclose(utm["area_m2"], utm["area_px"] * 0.25, atol=0.01)
    clear = next(t for t in predicted["root"].tiles.values() if not (t.mask == 255).any())
    frame = buildings(predicted, clear.image)  # web mercator: scale 1/cos(latitude)
    _, lat = Transformer.from_crs("EPSG:3857", "EPSG:4326", always_xy=True).transform(
        *(clear.transform @ (0, 0))
    )
    ground_pixel = (PIXEL_SIZE * math.cos(math.radians(lat))) ** 2
    np.testing.assert_allclose(frame["area_m2"], frame["area_px"] * ground_pixel, rtol=0.01)


def test_gallery_has_a_figure_per_tile_and_an_index(predicted):
    gallery = predicted["out"] / "gallery"
    stems = [image.stem for image, _ in inputs(predicted)]
    assert sorted(p.stem for p in gallery.glob("*.png")) == sorted([*stems, "index"])
    for png in gallery.glob("*.png"):
        with Image.open(png) as img:
            assert img.format == "PNG"
    figures = {call["label"].split("  ")[0]: call for call in predicted["figures"]}
    assert set(figures) == set(stems)
    for image, truth in inputs(predicted):
        call = figures[image.stem]
        if truth is None:  # image | probability | mask
            assert call["panels"] == 3
            assert "no truth found" in call["label"]
        else:  # image | truth | probability | errors
            assert call["panels"] == 4
            assert call["titles"][1] == "truth"
            assert "IoU 1.000 @ 0.50" in call["label"]
    with (
        Image.open(gallery / f"{stems[0]}.png") as four,
        Image.open(gallery / "utm_copy.png") as three,
    ):
        assert four.width / three.width == pytest.approx(4 / 3, rel=0.1)


def test_min_area_filter(tmp_path, predicted):
    clear = next(t for t in predicted["root"].tiles.values() if not (t.mask == 255).any())
    areas = sorted(b.area for b in clear.buildings)
    min_area = areas[len(areas) // 2]  # keeps the larger half, ties included
    cfg = predict_cfg(
        predicted["ckpt"],
        clear.image,
        tmp_path,
        f"predict.min_area={min_area}",
        "predict.gallery=false",
    )
    predict(cfg)
    frame = gpd.read_file(tmp_path / f"{clear.stem}_buildings.geojson")
    assert sorted(frame["area_px"]) == [a for a in areas if a >= min_area]
    assert 0 < len(frame) < len(areas)
    assert not (tmp_path / "gallery").exists()


def test_output_crs_option_reprojects(tmp_path, predicted):
    clear = next(t for t in predicted["root"].tiles.values() if not (t.mask == 255).any())
    predict(
        predict_cfg(
            predicted["ckpt"],
            clear.image,
            tmp_path,
            "predict.crs=EPSG:4326",
            "predict.gallery=false",
        )
    )
    lonlat = gpd.read_file(tmp_path / f"{clear.stem}_buildings.geojson")
    assert lonlat.crs.to_epsg() == 4326
    native = buildings(predicted, clear.image).to_crs("EPSG:4326")
    assert len(lonlat) == len(native)
    for a, b in zip(lonlat.geometry, native.geometry, strict=True):
        assert a.symmetric_difference(b).area < 1e-6 * b.area
    with rasterio.open(clear.image) as src:
        bounds = box(*transform_bounds(src.crs, "EPSG:4326", *src.bounds))
    assert lonlat.geometry.apply(bounds.buffer(1e-9).covers).all()
    assert (lonlat.geometry.bounds["minx"] > -180).all()  # degrees, not metres
    np.testing.assert_array_equal(lonlat["area_m2"], buildings(predicted, clear.image)["area_m2"])
    # the rasters stay in the image CRS
    with rasterio.open(tmp_path / f"{clear.stem}_mask.tif") as out:
        assert out.crs.to_epsg() == 3857


def test_float32_probabilities_use_nan_for_nodata(tmp_path, predicted):
    blank = next(t for t in predicted["root"].tiles.values() if (t.mask == 255).any())
    predict(
        predict_cfg(
            predicted["ckpt"],
            blank.image,
            tmp_path,
            "predict.prob_dtype=float32",
            "predict.gallery=false",
        )
    )
    prob, profile, _ = read(tmp_path / f"{blank.stem}_prob.tif")
    assert profile["dtype"] == "float32" and math.isnan(profile["nodata"])
    invalid = blank.mask == 255
    assert np.isnan(prob[invalid]).all()
    assert not np.isnan(prob[~invalid]).any()
    assert ((prob[~invalid] >= 0) & (prob[~invalid] <= 1)).all()


# --- threshold ---------------------------------------------------------------------------------


def test_threshold_auto_reads_the_evaluated_threshold(tmp_path, stub_checkpoint, capsys):
    """A soft stub (building p in about [0.83, 0.98]) so that 0.9 and 0.5 give different masks."""
    root = make_sn7_root(tmp_path / "root", aois=1, months=1, size=(64, 64), n_buildings=8)
    (tile,) = root.tiles.values()
    ckpt = stub_checkpoint(tmp_path / "soft.ckpt", gain=10.0)
    loaded = load_model(ckpt)

    overrides = ["predict.prob_dtype=float32", "predict.gallery=false", "predict.threshold=auto"]

    def run(out: Path) -> tuple[np.ndarray, np.ndarray]:
        predict(predict_cfg(ckpt, tile.image, out, *overrides))
        return read(out / f"{tile.stem}_prob.tif")[0], read(out / f"{tile.stem}_mask.tif")[0]

    settings = PredictSettings.from_config(predict_cfg(ckpt, tile.image, tmp_path, *overrides))
    auto_buildings = replace(settings, threshold="auto_buildings")
    with pytest.raises(ConfigError, match="no thresholds chosen on a selection split"):
        resolve_thresholds(settings, loaded)
    Path(f"{ckpt}.eval.json").write_text(json.dumps({"threshold": 0.9, "iou": 0.7}))
    with pytest.raises(CheckpointError, match="older sn7"):  # chosen on any split: refused
        resolve_thresholds(settings, loaded)

    selected = SelectedThresholds(
        pixel=0.9,
        building=0.6,
        selected_on={"split": "val", "aois": ["A"], "data_root": "/d"},
        post=settings.post.as_dict(),
        min_area=MIN_AREA,
        checkpoint_sha256=file_sha256(ckpt),
        track=settings.track.as_dict(),
    )
    selected.save(ckpt)
    assert resolve_thresholds(settings, loaded) == (0.9, 0.6)  # mask: pixel; buildings: building
    assert resolve_thresholds(auto_buildings, loaded) == (0.6, 0.6)
    prob, mask = run(tmp_path / "evaluated")
    np.testing.assert_array_equal(mask, prob >= np.float32(0.9))
    assert 0 < mask.sum() < (prob >= 0.5).sum()  # 0.9 really cut some building pixels
    other_post = replace(settings, post=replace(settings.post, opening=1))
    with pytest.raises(ConfigError, match="chosen with"):  # other post-processing than chosen with
        resolve_thresholds(other_post, loaded)
    other_track = replace(settings, track=TrackSettings.from_config({"mode": "none"}))
    with pytest.raises(ConfigError, match="chosen with"):  # footprints of another tracker
        resolve_thresholds(other_track, loaded)
    with pytest.raises(ConfigError, match="tta"):  # chosen on plain, asked for flip-averaged
        resolve_thresholds(settings, loaded, tta=True)
    replace(selected, tta=True).save(ckpt)
    assert resolve_thresholds(settings, loaded, tta=True) == (0.9, 0.6)
    with pytest.raises(ConfigError, match="tta"):
        resolve_thresholds(settings, loaded)
    selected.save(ckpt)
    other = stub_checkpoint(tmp_path / "other.ckpt", gain=11.0)
    Path(f"{other}.thresholds.json").write_text(thresholds_path(ckpt).read_text())
    with pytest.raises(ConfigError, match="different checkpoint"):  # copied beside another file
        resolve_thresholds(settings, load_model(other))

    given = replace(settings, threshold=0.7)
    assert resolve_thresholds(given, loaded) == (0.7, 0.7)  # an explicit value wins
    for bad in (0, 1.5, -0.1):  # checked up front, before the model is loaded
        with pytest.raises(ConfigError, match=re.escape("predict.threshold")):
            check_predict({"prob_dtype": "uint8", "threshold": bad, "min_area": 0})

    # p equal to the threshold is a building, as in the metrics (p >= threshold)
    half = stub_checkpoint(tmp_path / "half.ckpt", gain=0.0)  # logit 0: p = 0.5 exactly
    predict(predict_cfg(half, tile.image, tmp_path / "half", "predict.gallery=false"))
    assert (read(tmp_path / "half" / f"{tile.stem}_mask.tif")[0] == 1).all()


# --- bad inputs -----------------------------------------------------------------------------------


def bad_input_folder(folder: Path, good: Path) -> tuple[Path, dict[Path, str]]:
    """A folder with one good GeoTIFF and three bad inputs; returns the good copy and
    {bad file: what its error must say}."""
    folder.mkdir(parents=True)
    good_copy = Path(shutil.copy(good, folder / "b_good.tif"))
    not_tiff = folder / "a_notes.tif"
    not_tiff.write_text("this is not a GeoTIFF\n")
    three_band = folder / "c_rgb.tif"
    with rasterio.open(good) as src:
        data, profile = src.read([1, 2, 3]), src.profile
    profile.update(count=3)
    with rasterio.open(three_band, "w", **profile) as dst:
        dst.write(data)
    missing = folder / "d_gone.tif"
    missing.symlink_to(folder / "deleted.tif")  # listed in the folder, but no file behind it
    return good_copy, {
        not_tiff: "not a readable GeoTIFF",
        three_band: "has 3 band(s) but bands [1, 2, 3, 4] are needed",
        missing: "image file not found",
    }


def test_bad_inputs_are_named_after_the_good_ones_are_written(tmp_path, predicted):
    tile = next(iter(predicted["root"].tiles.values()))
    good, bad = bad_input_folder(tmp_path / "in", tile.image)
    out = tmp_path / "out"
    with pytest.raises(DataError) as exc:
        predict(predict_cfg(predicted["ckpt"], tmp_path / "in", out))
    message = str(exc.value)
    assert message.startswith("3 of 4 input(s) could not be predicted")
    for path, reason in bad.items():
        assert f"{path}: {reason}" in message
        assert not list(out.glob(f"{path.stem}_*"))
    for suffix in ("_prob.tif", "_mask.tif", "_buildings.geojson"):
        assert (out / f"{good.stem}{suffix}").is_file()
    assert sorted(p.name for p in (out / "gallery").iterdir()) == ["b_good.png", "index.png"]


def test_a_missing_single_input_is_named(tmp_path, predicted):
    missing = tmp_path / "nowhere.tif"
    with pytest.raises(DataError, match=re.escape(f"{missing}: image file not found")):
        predict(predict_cfg(predicted["ckpt"], missing, tmp_path / "out"))
    with pytest.raises(DataError, match="no file matches"):
        predict(predict_cfg(predicted["ckpt"], tmp_path / "*.tif", tmp_path / "out"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match=re.escape("folder holds no .tif")):
        predict(predict_cfg(predicted["ckpt"], tmp_path / "empty", tmp_path / "out"))


@pytest.mark.slow
def test_cli_writes_the_good_tiles_and_exits_non_zero(tmp_path, predicted):
    tile = next(iter(predicted["root"].tiles.values()))
    good, bad = bad_input_folder(tmp_path / "in", tile.image)
    run_dir = tmp_path / "run"
    result = subprocess.run(
        [
            sys.executable,
            "predict.py",
            f"ckpt_path={predicted['ckpt']}",
            f"input={tmp_path / 'in'}",
            "predict.gallery=false",
            "predict.threshold=0.5",
            f"hydra.run.dir={run_dir}",
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("sn7 error:")]
    assert errors == ["sn7 error: 3 of 4 input(s) could not be predicted:"], result.stderr
    for path, reason in bad.items():
        assert f"  - {path}: {reason}" in result.stderr
    for suffix in ("_prob.tif", "_mask.tif", "_buildings.geojson"):
        assert (run_dir / f"{good.stem}{suffix}").is_file()


def test_a_data_override_that_contradicts_the_checkpoint_is_refused(tmp_path, predicted):
    """predict takes the data group (for ground truth) but the model's bands come from the
    checkpoint: `data.bands=...` on the command line is an error, not silently ignored."""
    tile = next(iter(predicted["root"].tiles.values()))
    cfg = predict_cfg(predicted["ckpt"], tile.image, tmp_path / "out", "data.bands=[1,2,3]")
    with pytest.raises(
        ConfigError, match=r"data\.bands=\[1, 2, 3\] \(checkpoint: \[1, 2, 3, 4\]\)"
    ):
        predict(cfg, given={"data.bands"})
    assert not (tmp_path / "out").exists()
