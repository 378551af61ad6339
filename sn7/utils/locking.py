"""An exclusive lock on a folder, so two runs never rebuild the same cache at once.

The lock is an flock on <folder>/.lock (`filelock`): the kernel drops it when its holder dies, even
by SIGKILL, and `filelock` closes it in forked children, so no worker keeps it after its parent.
Beside it, <folder>/.lock.holder names the holder (pid, host, start time) for the messages of a
run that has to wait; it is removed on release, so one found on acquiring was left by a killed run.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import sys
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

from filelock import FileLock, Timeout

from sn7.utils.atomic import TMP_MARK, write_json_atomic

LOCK_NAME = ".lock"
HOLDER_NAME = ".lock.holder"
_GRACE_SECONDS = 0.5  # a lock freed this fast is not worth a message


@contextlib.contextmanager
def exclusive_lock(folder: str | Path, what: str = "this folder") -> Iterator[None]:
    """Hold an advisory lock on `folder`; wait (saying for whom, once) while another run has it."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    lock = FileLock(folder / LOCK_NAME)
    try:
        lock.acquire(timeout=_GRACE_SECONDS)
    except Timeout:
        print(busy_message(folder, what), flush=True)
        lock.acquire()
    try:
        previous = read_holder(folder)
        if previous is not None:
            print(f"note: {_left_behind(previous)} left the lock on {what} ({folder}); taking over")
        with contextlib.suppress(OSError):  # the messages are a courtesy; the flock is the lock
            for stale in folder.glob(f"{TMP_MARK}*.holder"):  # a holder killed mid-write
                stale.unlink()
            write_json_atomic(folder / HOLDER_NAME, _this_holder())
        yield
    finally:
        with contextlib.suppress(OSError):
            (folder / HOLDER_NAME).unlink(missing_ok=True)
        lock.release()


def read_holder(folder: str | Path) -> dict | None:
    """The holder record of `folder`'s lock, or None when there is none (or it is unreadable)."""
    try:
        holder = json.loads((Path(folder) / HOLDER_NAME).read_text())
    except (OSError, ValueError):
        return None
    return holder if isinstance(holder, dict) and isinstance(holder.get("pid"), int) else None


def busy_message(folder: Path, what: str) -> str:
    """One line for a run that finds the lock taken: who holds it, or why no one seems to."""
    holder = read_holder(folder)
    if holder is not None and is_dead(holder):
        pids = _processes_with_open(folder / LOCK_NAME)
        held_by = f" (pids {', '.join(map(str, pids))}; end them: kill {' '.join(map(str, pids))})"
        return (
            f"{what} ({folder}) is locked although its holder {_describe(holder)} is dead: "
            f"processes it left behind still hold the lock{held_by if pids else ''}, workers of an "
            "sn7 version that did not end them with their parent; waiting for them ..."
        )
    if holder is not None:
        return f"waiting for {_describe(holder)}: it holds {what} ({folder}) ..."
    pids = _processes_with_open(folder / LOCK_NAME)
    held_by = f"; pid(s) {', '.join(map(str, pids))} hold the lock" if pids else ""
    return f"waiting for another sn7 run that is using {what} ({folder}){held_by} ..."


def is_dead(holder: dict) -> bool:
    """True when the holder ran on this host and its pid no longer exists."""
    if holder.get("host") != socket.gethostname():
        return False  # cannot tell for another machine (a shared filesystem)
    try:
        os.kill(holder["pid"], 0)
    except ProcessLookupError:
        return True
    except PermissionError:  # alive, another user's
        return False
    return False


def _this_holder() -> dict:
    return {
        "pid": os.getpid(),
        "host": socket.gethostname(),
        "started": datetime.now().astimezone().isoformat(timespec="seconds"),
        "program": _program(),
        "argv": sys.argv,
    }


def _program() -> str:
    """prepare, train, evaluate, ... from sys.argv[0]; "python" for `python -c`."""
    argv0 = Path(sys.argv[0]) if sys.argv and sys.argv[0] not in ("", "-c") else None
    if argv0 is None:
        return "python"
    return argv0.parent.name if argv0.stem == "__main__" else argv0.stem


def _describe(holder: dict) -> str:
    return (
        f"sn7 {holder.get('program', '?')} pid {holder['pid']} on host {holder.get('host', '?')} "
        f"since {holder.get('started', '?')}"
    )


def _left_behind(holder: dict) -> str:
    if is_dead(holder):
        return f"previous holder pid {holder['pid']} (dead)"
    return f"previous holder {_describe(holder)}, which did not release it,"


def _processes_with_open(path: Path) -> list[int]:
    """Pids (other than this one) with `path` open, from /proc; [] where that cannot be read."""
    try:
        target = path.stat()
        entries = [p for p in Path("/proc").iterdir() if p.name.isdigit()]
    except OSError:
        return []
    pids = []
    for proc in entries:
        if int(proc.name) == os.getpid():
            continue
        with contextlib.suppress(OSError):  # gone meanwhile, or another user's
            for fd in (proc / "fd").iterdir():
                with contextlib.suppress(OSError):
                    st = fd.stat()  # follows the link to the open file
                    if (st.st_dev, st.st_ino) == (target.st_dev, target.st_ino):
                        pids.append(int(proc.name))
                        break
    return sorted(pids)
