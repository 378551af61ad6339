"""SIGKILL of `python prepare.py` alone (not its process group), as the OOM killer does it (#19).

Before the fix, the mask-building pool workers lived on, re-parented to init and holding the cache
lock, and every later prepare printed "waiting for another sn7 run" forever. Here the parent alone
is killed at three moments of a 2-worker build; its workers must be gone within 5 s, the next
prepare must neither wait nor differ in any mask from a clean build.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from hydra import compose, initialize_config_dir

from sn7.data.mask_cache import masks_dir
from sn7.data.raster_io import read_png
from sn7.prepare import prepare
from sn7.testing.synthetic import make_sn7_root
from sn7.utils.atomic import TMP_MARK

REPO = Path(__file__).resolve().parents[1]
N_TILES = 4 * 12

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc"),
]


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> Path:
    """48 tiles of 384 px with 120 buildings: a 2-worker build of about a second."""
    tmp = tmp_path_factory.mktemp("kill")
    return make_sn7_root(tmp / "root", aois=4, months=12, size=(384, 384), n_buildings=120).root


@pytest.fixture(scope="module")
def clean(root, tmp_path_factory) -> Path:
    """The reference: the same root prepared without interruption, in-process on one worker."""
    work = tmp_path_factory.mktemp("clean") / "work"
    prepare(_prepare_cfg(root, work), quiet=True)
    return work


def _prepare_cfg(root: Path, work: Path):
    overrides = [f"data.root={root}", f"data.work_dir={work}", "data.workers=1"]
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        return compose("prepare", overrides=overrides)


def _session_members(sid: int) -> list[int]:
    """Live (non-zombie) processes of session `sid`: the killed run's children keep its session
    after they are re-parented, so none escapes the count."""
    members = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            fields = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if fields[0] != "Z" and int(fields[3]) == sid:  # state ppid pgrp session
            members.append(int(entry))
    return members


def _masks(work: Path) -> list[Path]:
    return [p for p in masks_dir(work).glob("*/*.png") if not p.name.startswith(TMP_MARK)]


def _prepare(root: Path, work: Path, log: Path, **kwargs) -> subprocess.Popen:
    return subprocess.Popen(
        [
            sys.executable,
            "prepare.py",
            f"data.root={root}",
            f"data.work_dir={work}",
            "data.workers=2",
            f"hydra.run.dir={work.parent / 'hydra'}",
        ],
        cwd=REPO,
        stdout=log.open("w"),
        stderr=subprocess.STDOUT,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
        **kwargs,
    )


MOMENTS = {
    # the pool has just forked: workers may not have reached their prctl yet
    "workers-forked": lambda members, work: len(members) > 1,
    "first-mask": lambda members, work: len(_masks(work)) >= 1,
    "half-built": lambda members, work: len(_masks(work)) >= N_TILES // 2,
}


@pytest.mark.parametrize("moment", list(MOMENTS))
def test_killing_prepare_alone_leaves_no_worker_and_no_lock(root, clean, tmp_path, moment, capfd):
    work = tmp_path / "work"
    proc = _prepare(root, work, tmp_path / "killed.log", start_new_session=True)
    seen: set[int] = set()
    try:
        deadline = time.monotonic() + 120
        while True:
            # the members that made the moment true are counted as seen: killed workers can be
            # gone (PDEATHSIG) before a second look
            members = _session_members(proc.pid)
            seen.update(members)
            if MOMENTS[moment](members, work):
                break
            assert proc.poll() is None, f"prepare ended before {moment}: make the root bigger"
            assert time.monotonic() < deadline, f"no {moment} within 120 s"
            time.sleep(0.005)
        os.kill(proc.pid, signal.SIGKILL)  # the parent only, not its process group
        proc.wait(timeout=30)
        seen.update(_session_members(proc.pid))
        workers = seen - {proc.pid}
        assert workers, "no pool worker was ever seen"

        deadline = time.monotonic() + 5
        while _session_members(proc.pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert _session_members(proc.pid) == [], "pool workers outlived prepare"
    finally:
        for pid in _session_members(proc.pid):
            os.kill(pid, signal.SIGKILL)

    # the rerun in-process (what the next `python prepare.py` runs), on one worker
    capfd.readouterr()
    prepare(_prepare_cfg(root, work), quiet=True)
    log = "".join(capfd.readouterr())
    assert "waiting" not in log
    assert f"previous holder pid {proc.pid} (dead) left the lock" in log

    built = {p.relative_to(work).as_posix(): p for p in _masks(work)}
    reference = {p.relative_to(clean).as_posix(): p for p in _masks(clean)}
    assert sorted(built) == sorted(reference) and len(built) == N_TILES
    for name, path in built.items():
        np.testing.assert_array_equal(read_png(path), read_png(reference[name]), err_msg=name)
