"""The mask cache (sn7.data.mask_cache): built once, rebuilt exactly when a source changes."""

from __future__ import annotations

import json
import os
import re

import numpy as np
import pytest

from sn7.data.layout import discover_images
from sn7.data.mask_cache import (
    MaskIndex,
    build_mask_cache,
    mask_path,
    masks_dir,
    verify_mask_cache,
)
from sn7.data.masks import RasterizeSettings
from sn7.data.raster_io import read_png, write_png
from sn7.testing.synthetic import make_every_case_root
from sn7.utils.atomic import TMP_MARK

SETTINGS = RasterizeSettings()


class Cache:
    """A fresh synthetic root (2 AOIs x 3 months, 64 px, every special case) and its cache
    folder."""

    def __init__(self, tmp_path):
        self.truth = make_every_case_root(tmp_path / "root", aois=2, months=3)
        self.tiles = discover_images(self.truth.root)
        self.work = tmp_path / "work"
        self.keys = [t.key for t in self.tiles]

    def build(self, settings=SETTINGS, workers=1, tiles=None):
        return build_mask_cache(tiles or self.tiles, self.work, settings, workers)

    def png(self, i: int):
        return mask_path(self.work, self.tiles[i])

    def assert_masks_exact(self):
        for tile in self.tiles:
            expected = self.truth.tiles[tile.key].mask
            np.testing.assert_array_equal(read_png(mask_path(self.work, tile)), expected)


@pytest.fixture
def cache(tmp_path):
    return Cache(tmp_path)


def bump_mtime(path, seconds=5):
    st = path.stat()
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + seconds * 1_000_000_000))


def test_first_run_builds_every_mask_exactly(cache):
    report, index = cache.build()
    assert report.built == cache.keys and not report.cached and not report.failed
    assert report.summary().startswith("0 cached, 6 built")
    cache.assert_masks_exact()
    doc = json.loads((masks_dir(cache.work) / "index.json").read_text())
    assert sorted(doc["entries"]) == sorted(cache.keys)
    for tile in cache.tiles:
        stats = index.entries[tile.key]["stats"]
        truth = cache.truth.tiles[tile.key]
        assert (stats["height"], stats["width"]) == truth.mask.shape
        assert stats["n_buildings"] == len(truth.buildings)
        assert stats["valid_frac"] == pytest.approx((truth.mask != 255).mean())


def test_second_run_builds_nothing(cache):
    cache.build()
    mtimes = [cache.png(i).stat().st_mtime_ns for i in range(len(cache.tiles))]
    report, _ = cache.build()
    assert report.summary().startswith("6 cached, 0 built")
    assert report.cached == cache.keys and not report.built
    assert [cache.png(i).stat().st_mtime_ns for i in range(len(cache.tiles))] == mtimes


@pytest.mark.parametrize("source", ["labels", "image", "udm_vectors", "udm_raster"])
def test_touching_one_source_file_rebuilds_exactly_that_mask(cache, source):
    cache.build()
    i = next(i for i, t in enumerate(cache.tiles) if t.udm_raster is not None)
    bump_mtime(getattr(cache.tiles[i], source))
    report, _ = cache.build()
    assert report.built == [cache.keys[i]]
    assert len(report.cached) == len(cache.tiles) - 1


def test_edited_label_file_gives_the_new_mask(cache):
    cache.build()
    tile = cache.tiles[0]
    tile.labels.write_text('{"type": "FeatureCollection", "features": []}')
    report, _ = cache.build()
    assert report.built == [tile.key]
    assert not (read_png(cache.png(0)) == 1).any()


def test_changing_rasterize_settings_rebuilds_everything(cache):
    cache.build()
    report, _ = cache.build(RasterizeSettings(all_touched=True))
    assert report.built == cache.keys
    report, _ = cache.build(RasterizeSettings(alpha_band=None))
    assert report.built == cache.keys
    report, _ = cache.build()
    assert report.built == cache.keys
    cache.assert_masks_exact()


def test_deleted_png_is_rebuilt(cache):
    cache.build()
    cache.png(4).unlink()
    report, _ = cache.build()
    assert report.built == [cache.keys[4]]
    cache.assert_masks_exact()


def test_unreadable_index_rebuilds_everything(cache):
    cache.build()
    (masks_dir(cache.work) / "index.json").write_text("{ not json")
    report, _ = cache.build()
    assert report.built == cache.keys
    assert MaskIndex(cache.work).entries.keys() == set(cache.keys)


def test_stale_temp_files_of_a_killed_run_are_removed(cache):
    cache.build()
    stale = masks_dir(cache.work) / cache.tiles[0].aoi / f"{TMP_MARK}abc123.png"
    stale.write_bytes(b"\x89PNG half a file")
    cache.build()
    assert not stale.exists()


def test_two_workers_build_the_same_masks(cache):
    report, _ = cache.build(workers=2)
    assert sorted(report.built) == sorted(cache.keys)
    cache.assert_masks_exact()


def test_failed_tile_does_not_stop_the_others_and_is_retried(cache):
    cache.tiles[2].labels.write_text("{")
    report, index = cache.build()
    assert list(report.failed) == [cache.keys[2]]
    assert "not valid JSON" in report.failed[cache.keys[2]]
    assert len(report.built) == len(cache.tiles) - 1
    assert not cache.png(2).exists() and cache.keys[2] not in index.entries
    # a failed tile has no index entry, so the next run tries it again
    report, _ = cache.build()
    assert list(report.failed) == [cache.keys[2]] and not report.built


def test_on_done_reports_every_tile(cache):
    seen = []
    build_mask_cache(
        cache.tiles[:2], cache.work, SETTINGS, on_done=lambda k, s: seen.append((k, s))
    )
    build_mask_cache(
        cache.tiles[:3], cache.work, SETTINGS, on_done=lambda k, s: seen.append((k, s))
    )
    k = cache.keys
    assert seen == [
        (k[0], "built"),
        (k[1], "built"),
        (k[0], "cached"),
        (k[1], "cached"),
        (k[2], "built"),
    ]


# --- verify -----------------------------------------------------------------------------------


def test_verify_passes_on_a_good_cache(cache):
    _, index = cache.build()
    assert (
        verify_mask_cache(cache.tiles, cache.work, SETTINGS, index, sample=len(cache.tiles)) == {}
    )


def _damage(png, how):
    mask = read_png(png)
    if how == "garbage":
        png.write_bytes(b"this is not a PNG")
    elif how == "truncated":
        png.write_bytes(png.read_bytes()[:60])
    elif how == "wrong-values":
        mask = mask.copy()
        mask[0, 0] = 7
        write_png(png, mask)
    elif how == "wrong-size":
        write_png(png, mask[:32])
    elif how == "flipped-pixels":  # valid values, wrong content: only a fresh rasterization sees it
        write_png(png, np.where(mask == 1, 0, mask))


@pytest.mark.parametrize(
    ("how", "message"),
    [
        ("garbage", "unreadable"),
        ("truncated", "unreadable"),
        ("wrong-values", r"values \[7\]"),
        ("wrong-size", r"mask is \(32, 64\), expected \(64, 64\)"),
        ("flipped-pixels", "differs from a fresh rasterization"),
    ],
)
def test_verify_detects_a_damaged_png(cache, how, message):
    _, index = cache.build()
    i = next(i for i, t in enumerate(cache.tiles) if cache.truth.tiles[t.key].buildings)
    _damage(cache.png(i), how)
    problems = verify_mask_cache(cache.tiles, cache.work, SETTINGS, index, sample=len(cache.tiles))
    assert list(problems) == [cache.keys[i]]
    assert re.search(message, problems[cache.keys[i]]), problems


def test_verify_detects_a_mask_older_than_its_labels(cache):
    _, index = cache.build()
    bump_mtime(cache.tiles[1].labels)
    problems = verify_mask_cache(cache.tiles, cache.work, SETTINGS, index, sample=0)
    assert problems == {cache.keys[1]: "mask is older than its sources or settings"}
    other = RasterizeSettings(all_touched=True)
    assert set(verify_mask_cache(cache.tiles, cache.work, other, index, sample=0)) == set(
        cache.keys
    )


@pytest.mark.parametrize(("how", "message"), [("garbage", "unreadable"), ("wrong-values", "7")])
def test_a_verified_mask_is_not_decoded_again_until_its_file_changes(
    cache, monkeypatch, how, message
):
    """Warm runs stat verified masks instead of decoding them; any write (new mtime) to a mask
    brings the full check back, so damage after verification is still found."""
    import sn7.data.mask_cache as mask_cache

    _, index = cache.build()
    assert verify_mask_cache(cache.tiles, cache.work, SETTINGS, index, sample=0) == {}
    decoded = []
    monkeypatch.setattr(mask_cache, "read_png", lambda p: decoded.append(p) or read_png(p))
    assert verify_mask_cache(cache.tiles, cache.work, SETTINGS, index, sample=0) == {}
    assert decoded == []  # every mask verified before, none changed
    _, index = cache.build()  # a new run: the index on disk remembers the verification
    assert all("verified" in index.entries[k] for k in cache.keys)
    i = next(i for i, t in enumerate(cache.tiles) if cache.truth.tiles[t.key].buildings)
    _damage(cache.png(i), how)
    bump_mtime(cache.png(i), 1)  # a write within the same clock tick still moves the stamp here
    problems = verify_mask_cache(cache.tiles, cache.work, SETTINGS, index, sample=0)
    assert list(problems) == [cache.keys[i]] and message in problems[cache.keys[i]]
    assert decoded == [cache.png(i)]
