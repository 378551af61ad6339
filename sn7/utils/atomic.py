"""Atomic file writes: a reader (or a re-run after SIGKILL) sees the old file or the new one.

The temp file lives in the target's folder so that `os.replace` is a same-filesystem rename. The
folder is fsynced after the rename: until then a power cut can forget the rename itself.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

TMP_MARK = ".sn7tmp-"


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_path(target: str | Path) -> Iterator[Path]:
    """Yield a temp path beside `target`; on success fsync it and rename it over `target`."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=TMP_MARK, suffix=target.suffix, dir=target.parent)
    os.fchmod(fd, 0o666 & ~_umask())  # mkstemp makes 0600; outputs get the usual permissions
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        with open(tmp_path, "rb+") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp_path, target)
        fsync_dir(target.parent)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def fsync_dir(folder: str | Path) -> None:
    """Make a rename in `folder` durable; a no-op where folders cannot be opened or synced."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:  # e.g. Windows
        return
    try:
        with contextlib.suppress(OSError):  # some filesystems refuse fsync on a directory
            os.fsync(fd)
    finally:
        os.close(fd)


def write_bytes_atomic(target: str | Path, data: bytes) -> None:
    with atomic_path(target) as tmp:
        tmp.write_bytes(data)


def write_text_atomic(target: str | Path, text: str) -> None:
    write_bytes_atomic(target, text.encode("utf-8"))


def write_json_atomic(target: str | Path, obj: Any) -> None:
    write_text_atomic(target, json.dumps(obj, indent=2, sort_keys=True) + "\n")


def remove_stale_temps(folder: str | Path) -> int:
    """Delete temp files a killed run left behind under `folder`; returns how many."""
    folder = Path(folder)
    if not folder.exists():
        return 0
    stale = list(folder.rglob(f"{TMP_MARK}*"))
    for path in stale:
        path.unlink(missing_ok=True)
    return len(stale)
