"""Atomic writes (sn7.utils.atomic): the data, then the rename, are made durable."""

from __future__ import annotations

import errno
import os
import stat

import pytest

from sn7.utils.atomic import write_bytes_atomic


def _open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


@pytest.fixture
def fsyncs(monkeypatch):
    """Every os.fsync call as (what, inode, target content at that moment); the real fsync runs."""
    calls = []
    real_fsync = os.fsync

    def recording_fsync(fd):
        st = os.fstat(fd)
        calls.append(("dir" if stat.S_ISDIR(st.st_mode) else "file", st.st_ino))
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", recording_fsync)
    return calls


def test_the_folder_is_fsynced_after_the_rename(tmp_path, fsyncs, monkeypatch):
    target = tmp_path / "sub" / "out.bin"
    renamed = []
    real_replace = os.replace

    def recording_replace(src, dst):
        real_replace(src, dst)
        renamed.append(len(fsyncs))  # how many fsyncs had happened before the rename

    monkeypatch.setattr(os, "replace", recording_replace)
    write_bytes_atomic(target, b"new")
    assert target.read_bytes() == b"new"
    assert renamed == [1]
    assert fsyncs == [("file", target.stat().st_ino), ("dir", target.parent.stat().st_ino)]


def test_a_folder_that_refuses_fsync_is_no_error(tmp_path, monkeypatch):
    real_fsync = os.fsync

    def refusing_fsync(fd):
        if stat.S_ISDIR(os.fstat(fd).st_mode):
            raise OSError(errno.EINVAL, "Invalid argument")
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", refusing_fsync)
    before = _open_fds()
    write_bytes_atomic(tmp_path / "out.bin", b"data")
    assert (tmp_path / "out.bin").read_bytes() == b"data"
    assert _open_fds() == before  # the folder's descriptor was closed all the same
