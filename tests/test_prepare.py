"""The prepare stage (sn7.prepare): SN7 folder -> mask cache, manifest, subset and split."""

from __future__ import annotations

import json
import os
import random
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from sn7.data.layout import discover_images
from sn7.data.manifest import COLUMNS
from sn7.data.mask_cache import MaskIndex, mask_path, masks_dir, verify_mask_cache
from sn7.data.masks import RasterizeSettings
from sn7.data.prepared import load_prepared
from sn7.data.raster_io import read_png, write_png
from sn7.errors import ConfigError, DataError
from sn7.prepare import prepare
from sn7.testing.synthetic import make_every_case_root, make_sn7_root
from sn7.utils.atomic import TMP_MARK

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def root(tmp_path):
    """3 AOIs x 3 months of 64 px, with alpha=0, a cloud and a UDM raster; editable."""
    return make_every_case_root(tmp_path / "root", aois=3, months=3)


@pytest.fixture
def work(tmp_path):
    return tmp_path / "work"


def test_prepare_writes_every_artifact(root, work, prepare_cfg):
    prepared = prepare(prepare_cfg(root.root, work), quiet=True)
    for name in ("manifest.csv", "subset.csv", "split.csv", "prepare.json", "masks/index.json"):
        assert (work / name).is_file(), name

    manifest = pd.read_csv(work / "manifest.csv", dtype={"date": str})
    assert list(manifest.columns) == COLUMNS
    assert list(manifest["aoi"] + "/" + manifest["stem"]) == list(root.tiles)
    for row in manifest.itertuples():
        truth = root.tiles[f"{row.aoi}/{row.stem}"]
        assert row.date == truth.month.replace("_", "-")
        assert Path(row.image) == truth.image
        np.testing.assert_array_equal(read_png(row.mask), truth.mask)
        assert (row.height, row.width) == truth.mask.shape
        assert row.n_buildings == len(truth.buildings)
        valid = truth.mask != 255
        assert row.valid_frac == pytest.approx(valid.mean(), abs=1e-6)
        assert row.building_frac == pytest.approx((truth.mask == 1).sum() / valid.sum(), abs=1e-6)
        assert row.label_source == "labels"

    split = pd.read_csv(work / "split.csv", dtype={"date": str})
    assert list(split.columns) == ["aoi", "stem", "date", "split"]
    assert sorted(split["stem"]) == sorted(manifest["stem"]) and split["stem"].is_unique
    roles = split.groupby("aoi")["split"].agg(set).to_dict()
    # 3 AOIs: one reported on (test_fraction 0.2, at least one), one selects (val), one trains
    assert sorted(map(sorted, roles.values())) == [["test"], ["train"], ["val"]]

    subset = pd.read_csv(work / "subset.csv", dtype={"date": str})
    assert set(subset["stem"]) == set(manifest["stem"])  # no caps in subset/all

    meta = json.loads((work / "prepare.json").read_text())
    assert (meta["n_images"], meta["n_prepared"], meta["failed"]) == (9, 9, {})
    assert meta["data_root"] == str(root.root.resolve())

    loaded = load_prepared(work)
    pd.testing.assert_frame_equal(loaded.manifest, prepared.manifest, check_dtype=False)
    pd.testing.assert_frame_equal(loaded.split, prepared.split)
    for name in ("train", "val", "test"):
        assert set(loaded.rows(name)["aoi"]) == set(split.loc[split["split"] == name, "aoi"])
    assert len(loaded.rows("all")) == 9
    with pytest.raises(ConfigError, match="split 'report'"):
        loaded.rows("report")


def test_image_without_a_date_in_its_name_keeps_an_empty_date(root, work, prepare_cfg):
    tile = discover_images(root.root)[0]
    for path in (tile.image, tile.labels):
        path.rename(path.with_name(path.name.replace(tile.stem, "my_own_tile")))
    prepared = prepare(prepare_cfg(root.root, work), quiet=True)
    loaded = load_prepared(work)
    for manifest in (prepared.manifest, loaded.manifest):
        dates = manifest.set_index("stem")["date"]
        assert dates["my_own_tile"] == ""
        assert dates.map(type).eq(str).all()


def test_second_prepare_builds_nothing(root, work, prepare_cfg):
    cfg = prepare_cfg(root.root, work)
    prepare(cfg, quiet=True)
    again = prepare(cfg, quiet=True)
    assert again.report.summary().startswith("9 cached, 0 built")


def test_load_prepared_before_prepare_says_what_to_run(work):
    with pytest.raises(DataError, match=re.escape("run `python prepare.py` first")):
        load_prepared(work)


def _add_bad_files(root) -> list[Path]:
    """Break three images in three ways; return the files an error message must name."""
    aoi_dir = root.root / "train" / root.aois[0]
    tiles = discover_images(root.root)
    zero = aoi_dir / "images" / f"global_monthly_2019_06_mosaic_{root.aois[0]}.tif"
    zero.write_bytes(b"")  # a new month whose image is empty
    (aoi_dir / "labels" / f"{zero.stem}_Buildings.geojson").write_text(
        '{"type": "FeatureCollection", "features": []}'
    )
    not_json = tiles[4].labels
    not_json.write_text("<html>404</html>")
    truncated = tiles[8].image
    truncated.write_bytes(truncated.read_bytes()[:5000])
    return [zero, not_json, truncated]


def test_on_error_fail_prepares_the_good_files_then_lists_every_bad_one(root, work, prepare_cfg):
    bad = _add_bad_files(root)
    with pytest.raises(DataError) as exc:
        prepare(prepare_cfg(root.root, work, "data.on_error=fail"), quiet=True)
    message = str(exc.value)
    assert "3 of 10 image(s) failed" in message
    for path in bad:
        assert str(path) in message
    assert "data.on_error=skip" in message
    manifest = pd.read_csv(work / "manifest.csv")
    assert len(manifest) == 7
    assert all(Path(m).is_file() for m in manifest["mask"])


def test_on_error_skip_warns_and_leaves_bad_files_out(root, work, prepare_cfg, capsys):
    bad = _add_bad_files(root)
    prepared = prepare(prepare_cfg(root.root, work, "data.on_error=skip"), quiet=True)
    out = " ".join(capsys.readouterr().out.split())  # undo the console's line wrapping
    assert "warning: 3 of 10 image(s) failed" in out
    assert "left out of the manifest" in out
    manifest = pd.read_csv(work / "manifest.csv")
    assert len(manifest) == len(prepared.manifest) == 7
    bad_stems = {p.name.split("_Buildings")[0].removesuffix(".tif") for p in bad}
    assert not bad_stems & set(manifest["stem"])
    assert not bad_stems & set(pd.read_csv(work / "subset.csv")["stem"])
    meta = json.loads((work / "prepare.json").read_text())
    assert len(meta["failed"]) == 3


def test_nothing_preparable_is_an_error(tmp_path, work, prepare_cfg):
    truth = make_sn7_root(tmp_path / "root", aois=1, months=2, size=(64, 64), n_buildings=2)
    for tile in truth.tiles.values():
        tile.image.write_bytes(b"")
    with pytest.raises(DataError, match="no image could be prepared"):
        prepare(prepare_cfg(truth.root, work, "data.on_error=skip"), quiet=True)


def test_bad_on_error_value(root, work, prepare_cfg):
    with pytest.raises(ConfigError, match=re.escape("data.on_error='ignore'")):
        prepare(prepare_cfg(root.root, work, "data.on_error=ignore"), quiet=True)


@pytest.mark.parametrize("damage", ["garbage", "wrong-values"])
def test_prepare_self_heals_a_damaged_mask(root, work, prepare_cfg, damage):
    cfg = prepare_cfg(root.root, work)
    prepare(cfg, quiet=True)
    tile = discover_images(root.root)[5]
    key, png = tile.key, mask_path(work, tile)
    assert png.is_file()
    if damage == "garbage":
        png.write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    else:
        write_png(png, np.full(root.tiles[key].mask.shape, 9, np.uint8))
    prepared = prepare(cfg, quiet=True)
    assert prepared.report.built == [key]
    np.testing.assert_array_equal(read_png(png), root.tiles[key].mask)


@pytest.mark.parametrize("verify_sample", [0, 9])
def test_verify_sample_catches_a_plausible_wrong_mask(root, work, prepare_cfg, verify_sample):
    """A cached mask with valid values but the wrong content passes every cheap check; only the
    re-rasterised sample can catch it. With the sample covering all 9 masks prepare rebuilds it;
    with no sample it stays (which is why the sample exists)."""
    prepare(prepare_cfg(root.root, work), quiet=True)
    tile = discover_images(root.root)[3]
    key, png = tile.key, mask_path(work, tile)
    truth = root.tiles[key].mask
    assert (truth == 1).any()
    write_png(png, np.where(truth == 1, 0, truth).astype(np.uint8))  # buildings erased
    cfg = prepare_cfg(root.root, work, f"data.verify_sample={verify_sample}")
    prepared = prepare(cfg, quiet=True)
    if verify_sample:
        assert prepared.report.built == [key]
        np.testing.assert_array_equal(read_png(png), truth)
    else:
        assert prepared.report.built == []
        assert not (read_png(png) == 1).any()


def test_split_and_subset_options_reach_the_artifacts(root, work, prepare_cfg):
    val = root.aois[1]
    test = root.aois[2]
    overrides = [f"split.test_aois=[{test}]", f"split.val_aois=[{val}]", "subset.per_aoi=1"]
    prepare(prepare_cfg(root.root, work, *overrides), quiet=True)
    split = pd.read_csv(work / "split.csv")
    assert split.set_index("stem")["split"].to_dict() == {
        row.stem: {val: "val", test: "test"}.get(row.aoi, "train") for row in split.itertuples()
    }
    assert pd.read_csv(work / "subset.csv").groupby("aoi").size().to_dict() == dict.fromkeys(
        root.aois, 1
    )

    vals = []
    for fold in range(3):
        prepare(prepare_cfg(root.root, work, "split.folds=3", f"split.fold={fold}"), quiet=True)
        split = pd.read_csv(work / "split.csv")
        assert sorted(split["aoi"].unique()) == root.aois
        vals += list(split.loc[split["split"] == "test", "aoi"].unique())
    assert sorted(vals) == root.aois  # each AOI is reported on in exactly one fold

    first = pd.read_csv(work / "subset.csv")
    prepare(prepare_cfg(root.root, work, "split.folds=3", "split.fold=2"), quiet=True)
    pd.testing.assert_frame_equal(pd.read_csv(work / "subset.csv"), first)  # deterministic


def test_training_seed_leaves_split_and_subset_alone(root, work, prepare_cfg):
    """A new `seed` (e.g. to measure run-to-run noise) must keep fold 0 the same AOIs; the split
    and subset have their own seeds."""
    opts = ("split.folds=3", "split.fold=0", "subset.per_aoi=1")

    def artifacts(*extra):
        prepare(prepare_cfg(root.root, work, *opts, *extra), quiet=True)
        return pd.read_csv(work / "split.csv"), pd.read_csv(work / "subset.csv")

    split, subset = artifacts("seed=1")
    for seed in (2, 3, 4):
        other_split, other_subset = artifacts(f"seed={seed}")
        pd.testing.assert_frame_equal(other_split, split)
        pd.testing.assert_frame_equal(other_subset, subset)
    splits = {tuple(artifacts(f"split.seed={s}")[0]["split"]) for s in range(6)}
    subsets = {tuple(artifacts(f"subset.seed={s}")[1]["stem"]) for s in range(6)}
    assert len(splits) > 1 and len(subsets) > 1  # ...which do choose


def run_prepare_cli(tmp_path, *overrides: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [
            sys.executable,
            "prepare.py",
            f"data.root={tmp_path / 'missing'}",
            f"data.work_dir={tmp_path / 'work'}",
            f"hydra.run.dir={tmp_path / 'run'}",
            *overrides,
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
        env={k: v for k, v in os.environ.items() if k != "SN7_DEBUG"},
    )


MISSING_ROOT = "{}: data root does not exist (set data.root=...)"


def test_cli_reports_a_user_error_in_one_line(tmp_path):
    result = run_prepare_cli(tmp_path)
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        "sn7 error: " + MISSING_ROOT.format(tmp_path / "missing")
    ]


def test_debug_errors_shows_the_traceback_instead(tmp_path):
    result = run_prepare_cli(tmp_path, "debug_errors=true")
    assert result.returncode == 1
    assert "sn7 error:" not in result.stderr
    assert "Traceback (most recent call last):" in result.stderr
    assert "in discover_images" in result.stderr  # the frame that raised
    raised = "sn7.errors.DataError: " + MISSING_ROOT.format(tmp_path / "missing")
    assert raised in result.stderr.splitlines(), result.stderr


# --- crash safety -----------------------------------------------------------------------------


def _check_cache_after_kill(work: Path, truth) -> int:
    """Every mask PNG present is complete and right; temp files are recognisably temp.
    Returns how many masks exist."""
    expected = {f"{k}.png": t.mask for k, t in truth.tiles.items()}  # key = AOI/stem
    n_masks = 0
    for png in masks_dir(work).rglob("*.png"):
        if png.name.startswith(TMP_MARK):
            continue  # a write cut short; never read as a mask, removed by the next run
        rel = png.relative_to(masks_dir(work)).as_posix()
        assert rel in expected, f"unexpected file {rel} in the mask cache"
        np.testing.assert_array_equal(read_png(png), expected[rel], err_msg=rel)
        n_masks += 1
    index = masks_dir(work) / "index.json"
    if index.exists():
        entries = json.loads(index.read_text())["entries"]  # never half-written
        assert set(entries) <= set(truth.tiles)
    if (work / "manifest.csv").exists():
        masks = pd.read_csv(work / "manifest.csv")["mask"]
        assert not masks.str.contains(TMP_MARK, regex=False).any()
    return n_masks


def _wait_for_first_mask(work: Path, since_ns: int, running) -> None:
    """Block until the run has started writing masks, i.e. its build phase has begun."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and running():
        for png in masks_dir(work).glob("*/*.png"):  # a temp file left by a kill is older
            try:
                if png.stat().st_mtime_ns >= since_ns:
                    return
            except FileNotFoundError:  # renamed or removed meanwhile
                pass
        time.sleep(0.002)


# Forks one prepare per line of stdin (the work dir) and prints the child's pid; at the next
# line, its wait status. The server imports sn7 and Hydra once, so a round costs the build, not
# Python's start-up.
PREPARE_SERVER = """
import os, sys, traceback
from hydra import compose, initialize_config_dir
import sn7
from sn7.prepare import prepare
conf, root = sys.argv[1:3]
with initialize_config_dir(config_dir=conf, version_base="1.3"):
    cfg = compose("prepare", overrides=[f"data.root={root}", "data.workers=1"])
for line in sys.stdin:
    cfg.data.work_dir = line.strip()
    pid = os.fork()
    if pid == 0:
        os.dup2(os.open(os.devnull, os.O_WRONLY), 1)  # stdout is the pid channel
        code = 0
        try:
            prepare(cfg, quiet=True)
        except BaseException:
            traceback.print_exc()
            code = 1
        os._exit(code)
    print(pid, flush=True)
    sys.stdin.readline()  # reaped only when asked: until then the pid stays ours, a zombie
    print(os.waitpid(pid, 0)[1], flush=True)
"""


class PrepareServer:
    def __init__(self, root: Path):
        self.proc = subprocess.Popen(
            [sys.executable, "-c", PREPARE_SERVER, str(REPO / "conf"), str(root)],
            cwd=REPO,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env={**os.environ, "OMP_NUM_THREADS": "1"},
        )

    def start(self, work: Path) -> int:
        self.proc.stdin.write(f"{work}\n")
        self.proc.stdin.flush()
        return int(self.proc.stdout.readline())

    def status(self) -> int:
        """The wait status of the last run, once it has ended."""
        self.proc.stdin.write("reap\n")
        self.proc.stdin.flush()
        return int(self.proc.stdout.readline())

    def close(self) -> None:
        self.proc.stdin.close()
        self.proc.wait(timeout=30)


KILLS = 20


@pytest.mark.slow
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="forks, reads /proc")
def test_prepare_survives_sigkill_at_random_moments(tmp_path, alive):
    """SIGKILL prepare 20 times while it (re)builds 24 masks, then resume.

    Each run is a forked copy of a process that has imported everything, so it starts building
    at once. Kill moments are seeded-random, one in each twentieth of the build phase, so kills
    land while masks are being written: a PNG written in place rather than renamed into place is
    caught in most runs.
    """
    truth = make_sn7_root(tmp_path / "root", aois=4, months=6, size=(384, 384), n_buildings=120)
    work = tmp_path / "work"
    labels = [p for p in truth.root.rglob("*_Buildings.geojson") if p.parent.name == "labels"]
    server = PrepareServer(truth.root)
    try:
        server.start(tmp_path / "calibration")
        assert server.status() == 0
        written = [p.stat().st_mtime_ns for p in masks_dir(tmp_path / "calibration").rglob("*.png")]
        build_seconds = (max(written) - min(written)) / 1e9  # first mask to last

        rng = random.Random(20)
        moments = [(k + rng.random()) / KILLS * build_seconds for k in range(KILLS)]
        rng.shuffle(moments)
        cut_mid_build = 0
        for round_, moment in enumerate(moments):
            # make every mask stale, so that each run rewrites PNGs over existing ones
            for path in labels:
                st = path.stat()
                os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))
            started_ns = time.time_ns()
            pid = server.start(work)
            _wait_for_first_mask(work, started_ns, lambda pid=pid: alive(pid))
            time.sleep(moment)
            os.kill(pid, signal.SIGKILL)
            status = server.status()
            assert os.WIFSIGNALED(status) or os.waitstatus_to_exitcode(status) == 0, round_
            _check_cache_after_kill(work, truth)
            pngs = [p for p in masks_dir(work).rglob("*.png") if not p.name.startswith(TMP_MARK)]
            rewritten = sum(p.stat().st_mtime_ns >= started_ns for p in pngs)
            cut_mid_build += 0 < rewritten < len(truth.tiles)
        assert cut_mid_build >= KILLS // 2, f"{cut_mid_build} of {KILLS} kills landed mid-build"
        server.start(work)  # the resume
        assert server.status() == 0
    finally:
        server.close()

    assert _check_cache_after_kill(work, truth) == len(truth.tiles)
    assert not list(masks_dir(work).rglob(f"{TMP_MARK}*"))
    tiles = discover_images(truth.root)
    index = MaskIndex(work)
    assert verify_mask_cache(tiles, work, RasterizeSettings(), index, sample=len(tiles)) == {}
    assert len(pd.read_csv(work / "manifest.csv")) == len(truth.tiles)
