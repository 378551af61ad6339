"""Reading GeoJSON labels into pixel space (sn7.data.footprints), checked through the masks.

Every test writes its own labels over a one-image synthetic root and compares the mask with one
filled by numpy. Rectangles have their corners on pixel edges, so the expected mask is exact.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import shapely
from shapely.geometry import (
    GeometryCollection,
    LineString,
    MultiPolygon,
    Point,
    Polygon,
    box,
)

from sn7.data.footprints import load_footprints, read_feature_collection
from sn7.data.layout import discover_images
from sn7.data.masks import RasterizeSettings, rasterize_tile
from sn7.data.raster_io import raster_info
from sn7.errors import DataError
from sn7.testing.synthetic import (
    CRS84,
    EPSG3857,
    make_sn7_root,
    pixels_to_crs,
    write_feature_collection,
)

H, W = 64, 80


@pytest.fixture
def tile(tmp_path):
    """The only tile of a fresh 64x80 root (fully valid: no alpha=0, no UDM)."""
    make_sn7_root(tmp_path, aois=1, months=1, size=(H, W), n_buildings=3, udm_geojson=False)
    (tile,) = discover_images(tmp_path)
    return tile


def write_labels(tile, pixel_geoms, crs="OGC:CRS84", urn=CRS84):
    """Write pixel-space geometries to the tile's label file, converted to `crs`."""
    geoms = pixels_to_crs(pixel_geoms, raster_info(tile.image).transform, crs)
    write_feature_collection(tile.labels, geoms, urn)


def pixel_source(tile):
    """The same tile read with data.label_source=labels_match_pix."""
    return replace(
        tile,
        labels=tile.labels.parents[1] / "labels_match_pix" / tile.labels.name,
        label_space="pixel",
    )


def mask_of(tile):
    return rasterize_tile(tile, RasterizeSettings()).mask


def filled(*rects):
    """Expected mask: (row0, col0, row1, col1) rectangles set to 1."""
    mask = np.zeros((H, W), np.uint8)
    for r0, c0, r1, c1 in rects:
        mask[max(r0, 0) : r1, max(c0, 0) : c1] = 1
    return mask


def rect(r0, c0, r1, c1):
    return box(c0, r0, c1, r1)  # pixel space is (x=col, y=row)


# --- malformed files: each a DataError that names the file -----------------------------------


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"", "empty"),
        (b"  \n\t ", "empty"),
        (b'{"type": "FeatureCollection", "features": [', "not valid JSON"),
        (b"\xff\xfe\x00garbage", "not valid JSON"),
        (b'{"type": "Feature", "geometry": null, "properties": {}}', "found 'Feature'"),
        (b"[1, 2, 3]", "found 'list'"),
        (b'{"type": "FeatureCollection"}', "no 'features' list"),
        (b'{"type": "FeatureCollection", "features": [1, "x"]}', "feature 0 is not a GeoJSON"),
        (
            b'{"type": "FeatureCollection", "features": [{"type": "Feature", "properties": {},'
            b' "geometry": {"type": "Polygon", "coordinates": [[1, 2]]}}]}',
            "feature 0 has a malformed geometry",
        ),
    ],
    ids=["zero-bytes", "whitespace", "truncated-json", "binary", "feature", "list", "no-features",
         "features-not-objects", "bad-coordinates"],
)  # fmt: skip
def test_bad_geojson_is_a_data_error_naming_the_file(tile, content, message):
    tile.labels.write_bytes(content)
    with pytest.raises(DataError, match=message) as exc:
        mask_of(tile)
    assert exc.value.path == tile.labels
    assert str(tile.labels) in str(exc.value)


def test_missing_label_file(tile):
    tile.labels.unlink()
    with pytest.raises(DataError, match="label file not found") as exc:
        mask_of(tile)
    assert exc.value.path == tile.labels


# --- valid but unusual contents ---------------------------------------------------------------


def test_empty_feature_collection_gives_all_background(tile):
    write_feature_collection(tile.labels, [])
    mask = mask_of(tile)
    assert mask.shape == (H, W)
    assert (mask == 0).all()


def test_reference_rectangles_are_exact(tile):
    write_labels(tile, [rect(2, 3, 10, 20), rect(40, 60, 63, 79)])
    np.testing.assert_array_equal(mask_of(tile), filled((2, 3, 10, 20), (40, 60, 63, 79)))


def test_null_geometries_are_skipped(tile):
    geoms = pixels_to_crs([rect(5, 5, 15, 25)], raster_info(tile.image).transform, "OGC:CRS84")
    write_feature_collection(tile.labels, [None, geoms[0], None])
    _, crs = read_feature_collection(tile.labels)
    assert crs == CRS84
    info = raster_info(tile.image)
    found = load_footprints(tile.labels, "geo", info)
    assert (found.n_features, found.n_null, len(found.geoms)) == (3, 2, 1)
    np.testing.assert_array_equal(mask_of(tile), filled((5, 5, 15, 25)))


def test_self_intersecting_bow_tie_is_repaired(tile):
    # Slopes of 2/3 keep every pixel centre off the edges, so the expected fill is unambiguous.
    bow_tie = Polygon([(10, 20), (22, 28), (22, 20), (10, 28)])
    assert not bow_tie.is_valid
    write_labels(tile, [bow_tie])
    found = load_footprints(tile.labels, "geo", raster_info(tile.image))
    assert found.n_repaired == 1
    assert all(g.is_valid for g in found.geoms)

    repaired = shapely.make_valid(bow_tie)
    rows, cols = np.mgrid[0:H, 0:W]
    expected = shapely.contains_xy(repaired, cols + 0.5, rows + 0.5).astype(np.uint8)
    mask = mask_of(tile)
    np.testing.assert_array_equal(mask, expected)
    # both lobes survive (the left one in cols 10-15, the right one in cols 16-21)
    assert mask[:, 10:16].any() and mask[:, 16:22].any()


def test_multipolygon(tile):
    write_labels(tile, [MultiPolygon([rect(1, 1, 5, 9), rect(30, 40, 42, 50)])])
    np.testing.assert_array_equal(mask_of(tile), filled((1, 1, 5, 9), (30, 40, 42, 50)))


def test_geometry_collection_keeps_its_polygons(tile):
    collection = GeometryCollection(
        [rect(4, 4, 12, 16), LineString([(0, 0), (60, 60)]), Point(70, 5), rect(20, 50, 30, 60)]
    )
    write_labels(tile, [collection, LineString([(0, 60), (70, 60)])])
    np.testing.assert_array_equal(mask_of(tile), filled((4, 4, 12, 16), (20, 50, 30, 60)))


def test_polygons_partly_outside_are_clipped_wholly_outside_dropped(tile):
    write_labels(
        tile,
        [
            rect(-6, 10, 4, 20),  # over the top edge
            rect(50, 70, 70, 90),  # over the bottom-right corner
            rect(100, 100, 110, 110),  # entirely outside
        ],
    )
    found = load_footprints(tile.labels, "geo", raster_info(tile.image))
    assert found.n_outside == 1
    assert all(shapely.box(0, 0, W, H).contains(g) for g in found.geoms)
    np.testing.assert_array_equal(mask_of(tile), filled((0, 10, 4, 20), (50, 70, H, W)))


def test_all_polygons_outside_is_an_error(tile):
    write_labels(tile, [rect(-30, -30, -20, -20), rect(H + 5, 0, H + 10, 10)])
    with pytest.raises(DataError, match="none of its 2 polygons overlaps the 80x64 image") as exc:
        mask_of(tile)
    assert exc.value.path == tile.labels


def test_udm_polygons_outside_are_not_an_error(tile):
    write_labels(tile, [rect(2, 2, 6, 6)])
    udm = tile.labels.parent / f"{tile.stem}_UDM.geojson"
    geoms = pixels_to_crs(
        [rect(-30, -30, -20, -20)], raster_info(tile.image).transform, "OGC:CRS84"
    )
    write_feature_collection(udm, geoms)
    np.testing.assert_array_equal(mask_of(replace(tile, udm_vectors=udm)), filled((2, 2, 6, 6)))


# --- coordinate reference systems ----------------------------------------------------------


@pytest.mark.parametrize(
    ("crs", "urn"),
    [
        ("EPSG:32610", "urn:ogc:def:crs:EPSG::32610"),  # UTM 10N, the zone of the tile
        ("EPSG:3857", EPSG3857),
        ("EPSG:4326", "EPSG:4326"),  # lat/lon axis order by the EPSG definition
        ("OGC:CRS84", CRS84),
    ],
)
def test_labels_in_another_crs_are_reprojected(tile, crs, urn):
    geoms = [rect(3, 4, 13, 24), rect(30, 50, 45, 66)]
    if crs == "EPSG:4326":
        # GeoJSON coordinates stay lon, lat whatever the EPSG axis order: GDAL/geopandas read
        # them as x=lon, y=lat, so the file is written the same way as CRS84.
        crs = "OGC:CRS84"
    write_labels(tile, geoms, crs=crs, urn=urn)
    np.testing.assert_array_equal(mask_of(tile), filled((3, 4, 13, 24), (30, 50, 45, 66)))


def test_utm_labels_are_not_mistaken_for_mercator(tile):
    # the same shape written in UTM but declared as EPSG:3857 lands kilometres away
    write_labels(tile, [rect(3, 4, 13, 24)], crs="EPSG:32610", urn=EPSG3857)
    with pytest.raises(DataError, match="none of its 1 polygons overlaps"):
        mask_of(tile)


def test_no_crs_member_with_lon_lat_coordinates_is_crs84(tile):
    write_labels(tile, [rect(3, 4, 13, 24)], urn=None)
    np.testing.assert_array_equal(mask_of(tile), filled((3, 4, 13, 24)))


def test_no_crs_member_with_projected_coordinates_is_a_clear_error(tile):
    write_labels(tile, [rect(3, 4, 13, 24)], crs="EPSG:3857", urn=None)
    with pytest.raises(DataError, match=r"declares no CRS .* not longitude/latitude") as exc:
        mask_of(tile)
    assert exc.value.path == tile.labels
    assert "labels_match_pix" in str(exc.value)  # says what to do


def test_unknown_crs_name(tile):
    write_labels(tile, [rect(3, 4, 13, 24)], urn="urn:ogc:def:crs:EPSG::99999999")
    with pytest.raises(DataError, match="unknown CRS") as exc:
        mask_of(tile)
    assert exc.value.path == tile.labels


def test_pixel_labels_are_never_reprojected_whatever_crs_they_declare(tile):
    pix = pixel_source(tile)
    for urn in (None, CRS84, EPSG3857):
        write_feature_collection(pix.labels, [rect(2, 3, 12, 30)], urn)
        np.testing.assert_array_equal(mask_of(pix), filled((2, 3, 12, 30)))


def test_pixel_labels_with_vertices_slightly_outside(tile):
    # real labels_match_pix files have vertices a few pixels beyond the tile
    pix = pixel_source(tile)
    write_feature_collection(pix.labels, [rect(H - 4, W - 6, H + 3, W + 2)], None)
    np.testing.assert_array_equal(mask_of(pix), filled((H - 4, W - 6, H, W)))


# --- persistent building ids (labels_match, for SCOT) ------------------------------------------


def match_source(tile):
    """The same tile read from labels_match (EPSG:3857, persistent Id)."""
    return replace(tile, labels=tile.labels.parents[1] / "labels_match" / tile.labels.name)


@pytest.mark.parametrize("source", [match_source, pixel_source])
def test_ids_come_with_their_geometries(tmp_path, source):
    root = make_sn7_root(tmp_path, aois=1, months=1, size=(H, W), n_buildings=3, udm_geojson=False)
    (truth,) = root.tiles.values()
    (tile,) = discover_images(tmp_path)
    tile = source(tile)
    info = raster_info(tile.image)
    found = load_footprints(tile.labels, tile.label_space, info, with_ids=True)
    assert found.ids == [0, 1, 2]  # make_sn7_root writes Id = index of the building
    for geom, building in zip(found.geoms, truth.buildings, strict=True):
        assert geom.symmetric_difference(building).area < 1e-6  # EPSG:3857 round trip
    assert load_footprints(tile.labels, tile.label_space, info).ids is None


def test_ids_stay_aligned_through_drops_and_repairs(tile):
    bow_tie = Polygon([(10, 20), (22, 28), (22, 20), (10, 28)])  # repaired, kept
    geoms = [
        rect(2, 2, 6, 6),  # Id 10: kept as is
        None,  # Id 11: null geometry, dropped
        rect(100, 100, 110, 110),  # Id 12: wholly outside the 64x80 image, dropped
        rect(-6, 40, 4, 50),  # Id 13: over the top edge, clipped and kept
        LineString([(0, 60), (70, 60)]),  # Id 14: no polygonal part, dropped
        bow_tie,  # Id 15: repaired, kept
        rect(30, 30, 40, 40),  # Id "b16": string ids are fine
    ]
    ids = [10, 11, 12, 13, 14, 15, "b16"]
    info = raster_info(tile.image)
    write_feature_collection(tile.labels, geoms, None, [{"Id": i} for i in ids])  # pixels
    found = load_footprints(tile.labels, "pixel", info, with_ids=True)
    assert found.ids == [10, 13, 15, "b16"]
    assert (found.n_null, found.n_outside, found.n_repaired) == (2, 1, 1)
    assert found.geoms[0].equals(rect(2, 2, 6, 6))
    assert found.geoms[1].equals(rect(0, 40, 4, 50))
    assert found.geoms[2].equals(shapely.make_valid(bow_tie))
    assert found.geoms[3].equals(rect(30, 30, 40, 40))


@pytest.mark.parametrize(
    ("props", "message"),
    [
        ([{"Id": 0}, {}], "feature 1 has no integer or string 'Id' property"),
        ([{"Id": 0}, None], "feature 1 has no integer or string 'Id' property"),
        ([{"Id": 0}, {"Id": 1.5}], r"feature 1 has no integer .* \(found 1.5\)"),
        ([{"Id": 0}, {"Id": True}], "feature 1 has no integer"),
        ([{"Id": 0}, {"Id": 0}], "Id 0 is used by 2 features"),  # as in labels/: all Id 0
    ],
)
def test_bad_ids_are_a_data_error_naming_the_file(tile, props, message):
    write_feature_collection(tile.labels, [rect(2, 2, 6, 6), rect(10, 10, 20, 20)], None, props)
    with pytest.raises(DataError, match=message) as exc:
        load_footprints(tile.labels, "pixel", raster_info(tile.image), with_ids=True)
    assert exc.value.path == tile.labels
    assert "\n" not in str(exc.value)
    load_footprints(tile.labels, "pixel", raster_info(tile.image))  # without ids: no error


def test_real_labels_match_ids_are_unique_integers(shared_sample):
    aoi = shared_sample / "train" / "L15-0357E-1223N_1429_3296_13"
    (image,) = sorted((aoi / "images").glob("*2018_01*.tif"))
    labels = aoi / "labels_match" / f"{image.stem}_Buildings.geojson"
    found = load_footprints(labels, "geo", raster_info(image), with_ids=True)
    assert len(found.ids) == len(found.geoms) == len(set(found.ids)) > 1000
    assert all(type(i) is int for i in found.ids)
    with pytest.raises(DataError, match="Id 0 is used by"):  # labels/: every feature has Id 0
        load_footprints(aoi / "labels" / labels.name, "geo", raster_info(image), with_ids=True)
