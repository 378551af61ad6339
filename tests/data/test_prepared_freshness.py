"""A stage after prepare reads its artifacts when they are fresh and prepares again when an input
file, a setting or a cached mask says they are not."""

from __future__ import annotations

import os
from pathlib import Path

from sn7.data.prepared import ensure_prepared, prepare, stale_reason


def test_fresh_artifacts_are_read_and_stale_ones_rebuilt(
    tmp_path, synthetic_root, prepare_cfg, prepare_builds
):
    builds = prepare_builds
    cfg = prepare_cfg(synthetic_root.root, tmp_path / "work")
    assert stale_reason(cfg) == "not prepared yet"
    first = ensure_prepared(cfg)
    assert len(builds) == 1 and stale_reason(cfg) is None
    again = ensure_prepared(cfg)
    assert len(builds) == 1  # read, not built
    assert again.split.equals(first.split) and again.manifest.equals(first.manifest)

    other = prepare_cfg(synthetic_root.root, tmp_path / "work", "split.val_months=2")
    assert stale_reason(other) == "prepared with other settings"

    Path(first.manifest["mask"][0]).unlink()  # a cached mask gone: prepare heals the cache
    ensure_prepared(cfg)
    assert len(builds) == 2 and Path(first.manifest["mask"][0]).is_file()


def test_an_edited_input_file_makes_the_artifacts_stale(tmp_path, prepare_cfg, prepare_builds):
    builds = prepare_builds
    from sn7.testing.synthetic import make_sn7_root

    root = make_sn7_root(tmp_path / "root", aois=2, months=2, size=(32, 32), n_buildings=2)
    cfg = prepare_cfg(root.root, tmp_path / "work")
    prepare(cfg, quiet=True)
    assert stale_reason(cfg) is None
    tile = next(iter(root.tiles.values()))
    label = tile.image.parents[1] / "labels" / f"{tile.image.stem}_Buildings.geojson"
    stat = label.stat()
    os.utime(label, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    assert stale_reason(cfg) == "input files changed since"
    ensure_prepared(cfg)
    assert len(builds) == 2 and stale_reason(cfg) is None
