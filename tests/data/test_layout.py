"""Discovery of the SN7 folder layout (sn7.data.layout)."""

from __future__ import annotations

import pytest

from sn7.data.layout import date_of, discover_images
from sn7.data.mask_cache import build_mask_cache
from sn7.data.masks import RasterizeSettings
from sn7.errors import ConfigError, DataError
from sn7.testing.synthetic import make_sn7_root


def test_discovers_every_image_sorted_by_aoi_then_stem(synthetic_root):
    tiles = discover_images(synthetic_root.root)
    assert [t.key for t in tiles] == list(synthetic_root.tiles)
    assert len(tiles) == 2 * 4
    for tile in tiles:
        truth = synthetic_root.tiles[tile.key]
        assert tile.image == truth.image
        assert tile.date == truth.month.replace("_", "-")
        assert tile.labels == tile.image.parents[1] / "labels" / f"{tile.stem}_Buildings.geojson"
        assert tile.label_space == "geo"


def test_root_may_be_the_train_folder_or_its_parent(synthetic_root):
    from_root = discover_images(synthetic_root.root)
    from_train = discover_images(synthetic_root.root / "train")
    assert from_root == from_train


@pytest.mark.parametrize(
    ("label_source", "space"),
    [("labels", "geo"), ("labels_match", "geo"), ("labels_match_pix", "pixel")],
)
def test_label_source_picks_folder_and_coordinate_space(synthetic_root, label_source, space):
    for tile in discover_images(synthetic_root.root, label_source=label_source):
        assert tile.labels.parent.name == label_source
        assert tile.labels.is_file()
        assert tile.label_space == space


def test_images_masked_folder(tmp_path):
    make_sn7_root(tmp_path, aois=1, months=2, size=(64, 64), n_buildings=2, images_masked=True)
    tiles = discover_images(tmp_path, image_dir="images_masked")
    assert len(tiles) == 2
    assert all(t.image.parent.name == "images_masked" for t in tiles)
    # labels are found beside images_masked/ exactly as beside images/
    assert [t.labels for t in tiles] == [t.labels for t in discover_images(tmp_path)]


def test_images_masked_missing_is_a_clear_error(synthetic_root):
    with pytest.raises(DataError, match=r"images_masked/\*\.tif") as exc:
        discover_images(synthetic_root.root, image_dir="images_masked")
    assert str(synthetic_root.root) in str(exc.value)


def test_udm_files_are_attached_where_they_exist(synthetic_root):
    tiles = {t.date: t for t in discover_images(synthetic_root.root) if t.aoi.endswith("_3160_13")}
    # every month has a (possibly empty) UDM GeoJSON; only 2018-03 has a UDM_masks raster
    assert all(t.udm_vectors is not None and t.udm_vectors.is_file() for t in tiles.values())
    assert [d for d, t in sorted(tiles.items()) if t.udm_raster is not None] == ["2018-03"]


@pytest.mark.parametrize(
    ("stem", "date"),
    [
        ("global_monthly_2019_07_mosaic_L15-0331E-1257N_1327_3160_13", "2019-07"),
        ("global_monthly_2020_01_mosaic_X", "2020-01"),
        ("mosaic_without_a_date", ""),
        ("global_monthly_19_7_mosaic_X", ""),
    ],
)
def test_date_of(stem, date):
    assert date_of(stem) == date


def test_non_tif_files_are_ignored(tmp_path):
    make_sn7_root(tmp_path, aois=1, months=1, size=(64, 64), n_buildings=1)
    images = next((tmp_path / "train").iterdir()) / "images"
    (images / "notes.txt").write_text("not an image")
    (images / "x.tif.aux.xml").write_text("<PAMDataset/>")
    assert len(discover_images(tmp_path)) == 1


def test_missing_label_file_is_reported_for_that_tile_only(tmp_path):
    make_sn7_root(tmp_path, aois=1, months=3, size=(64, 64), n_buildings=3)
    tiles = discover_images(tmp_path)
    tiles[1].labels.unlink()
    assert len(discover_images(tmp_path)) == 3  # discovery does not read labels

    report, index = build_mask_cache(tiles, tmp_path / "work", RasterizeSettings())
    assert sorted(report.built) == sorted([tiles[0].key, tiles[2].key])
    assert list(report.failed) == [tiles[1].key]
    message = report.failed[tiles[1].key]
    assert str(tiles[1].labels) in message and "not found" in message
    assert tiles[1].key not in index.entries


def test_bad_root_and_bad_options(tmp_path, synthetic_root):
    with pytest.raises(DataError, match="does not exist") as exc:
        discover_images(tmp_path / "nowhere")
    assert str(tmp_path / "nowhere") in str(exc.value)
    with pytest.raises(DataError, match="no SN7 AOI folders"):
        discover_images(tmp_path)  # exists, but empty
    (tmp_path / "train" / "AOI" / "images").mkdir(parents=True)
    with pytest.raises(DataError, match=r"no \*\.tif"):
        discover_images(tmp_path)
    with pytest.raises(ConfigError, match="image_dir"):
        discover_images(synthetic_root.root, image_dir="imgs")
    with pytest.raises(ConfigError, match="label_source"):
        discover_images(synthetic_root.root, label_source="labels_pix")


@pytest.mark.shared
def test_real_sample_layout(shared_sample):
    tiles = discover_images(shared_sample)
    assert len(tiles) == 8  # 2 AOIs x 4 months (README)
    assert sorted({t.aoi for t in tiles}) == [
        "L15-0331E-1257N_1327_3160_13",
        "L15-0357E-1223N_1429_3296_13",
    ]
    assert sorted({t.date for t in tiles}) == ["2018-01", "2018-07", "2019-01", "2019-07"]
    assert all(t.labels.is_file() and t.udm_vectors is not None for t in tiles)
    assert all(t.udm_raster is None for t in tiles)
    masked = discover_images(shared_sample, image_dir="images_masked", label_source="labels_match")
    assert [t.key for t in masked] == [t.key for t in tiles]
