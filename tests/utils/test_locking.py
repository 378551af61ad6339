"""The cache lock (sn7.utils.locking): who holds it, who waits, and what a killed run leaves.

Holders and waiters are separate processes, as two sn7 runs are; every wait has a timeout.
"""

from __future__ import annotations

import contextlib
import json
import os
import queue
import signal
import socket
import subprocess
import sys
import threading
import time
from datetime import datetime
from pathlib import Path

import pytest

from sn7.utils.atomic import TMP_MARK
from sn7.utils.locking import HOLDER_NAME, exclusive_lock, read_holder

REPO = Path(__file__).resolve().parents[2]
TIMEOUT = 30

# Takes the lock, says "held", keeps it until its stdin closes.
HOLD = """
import sys
from sn7.utils.atomic import TMP_MARK
from sn7.utils.locking import exclusive_lock
with exclusive_lock(sys.argv[1], "the test cache"):
    print("held", flush=True)
    sys.stdin.read()
"""

# An sn7 run of before #19: flock on .lock, a forked worker sharing it, then the run is SIGKILLed.
# The worker (the orphan) prints its pid and sleeps; `holder_file` says whether a holder record
# was written (a newer run killed while old workers hold the lock) or not (all runs old).
ORPHAN = """
import fcntl, json, os, signal, socket, sys, time
folder, holder_file = sys.argv[1], sys.argv[2] == "1"
fd = os.open(os.path.join(folder, ".lock"), os.O_RDWR | os.O_CREAT)
fcntl.flock(fd, fcntl.LOCK_EX)
if holder_file:
    with open(os.path.join(folder, ".lock.holder"), "w") as fh:
        json.dump({"pid": os.getpid(), "host": socket.gethostname(),
                   "started": "2026-01-01T00:00:00+00:00", "program": "prepare"}, fh)
child = os.fork()
if child == 0:
    time.sleep(60)
    os._exit(0)
print(child, flush=True)
os.kill(os.getpid(), signal.SIGKILL)
"""


class Lines:
    """A process's stdout lines, read by a thread so that a test can wait with a timeout."""

    def __init__(self, proc: subprocess.Popen):
        self.proc = proc
        self.lines: queue.Queue[str] = queue.Queue()
        threading.Thread(target=self._pump, daemon=True).start()

    def _pump(self) -> None:
        for line in self.proc.stdout:
            self.lines.put(line.rstrip("\n"))

    def next(self) -> str:
        return self.lines.get(timeout=TIMEOUT)

    def rest(self) -> list[str]:
        self.proc.wait(timeout=TIMEOUT)
        time.sleep(0.1)  # let the pump drain the pipe
        out = []
        while not self.lines.empty():
            out.append(self.lines.get())
        return out


def start(code: str, *args: str) -> Lines:
    proc = subprocess.Popen(
        [sys.executable, "-c", code, *map(str, args)],
        cwd=REPO,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    return Lines(proc)


@pytest.fixture
def procs():
    """Processes started by a test; whatever is still running at the end is killed."""
    started: list[int] = []
    yield started
    for pid in started:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def test_holder_record_names_this_process_while_held_and_goes_on_release(tmp_path):
    half_written = tmp_path / f"{TMP_MARK}x1y2.holder"  # a holder killed while writing its record
    half_written.write_text('{"pid": 12')
    with exclusive_lock(tmp_path, "the test cache"):
        assert not half_written.exists()
        holder = read_holder(tmp_path)
        assert holder["pid"] == os.getpid()
        assert holder["host"] == socket.gethostname()
        started = datetime.fromisoformat(holder["started"])
        assert started.tzinfo is not None
        assert abs((datetime.now().astimezone() - started).total_seconds()) < 60
    assert not (tmp_path / HOLDER_NAME).exists()
    assert (tmp_path / ".lock").exists()  # stays, so every waiter locks the same file


def test_a_waiting_run_names_the_live_holder_once(tmp_path, procs):
    holder = start(HOLD, tmp_path)
    procs.append(holder.proc.pid)
    assert holder.next() == "held"
    waiter = start(HOLD, tmp_path)
    procs.append(waiter.proc.pid)
    line = waiter.next()
    assert line.startswith(f"waiting for sn7 python pid {holder.proc.pid} on host ")
    assert socket.gethostname() in line and str(tmp_path) in line

    holder.proc.stdin.close()  # release
    assert waiter.next() == "held"
    waiter.proc.stdin.close()
    assert waiter.rest() == []  # one waiting line, and no note: the holder released cleanly
    assert holder.proc.wait(timeout=TIMEOUT) == 0 and waiter.proc.returncode == 0


def test_a_sigkilled_holder_frees_the_lock_and_the_next_run_notes_it(tmp_path, procs):
    holder = start(HOLD, tmp_path)
    procs.append(holder.proc.pid)
    assert holder.next() == "held"
    holder.proc.kill()
    holder.proc.wait(timeout=TIMEOUT)
    assert read_holder(tmp_path)["pid"] == holder.proc.pid  # left behind by the kill

    next_run = start(HOLD, tmp_path)
    procs.append(next_run.proc.pid)
    assert next_run.next() == (
        f"note: previous holder pid {holder.proc.pid} (dead) left the lock on the test cache "
        f"({tmp_path}); taking over"
    )
    assert next_run.next() == "held"
    assert read_holder(tmp_path)["pid"] == next_run.proc.pid
    next_run.proc.stdin.close()
    assert next_run.rest() == []


@pytest.mark.parametrize("holder_file", [True, False], ids=["holder-record", "no-record"])
def test_orphans_that_hold_the_lock_of_a_dead_run_are_named(tmp_path, procs, holder_file, alive):
    killed = start(ORPHAN, tmp_path, int(holder_file))
    orphan = int(killed.next())
    procs.append(orphan)
    killed.proc.wait(timeout=TIMEOUT)
    assert alive(orphan)

    waiter = start(HOLD, tmp_path)
    procs.append(waiter.proc.pid)
    line = waiter.next()
    if holder_file:
        assert f"holder sn7 prepare pid {killed.proc.pid} on host" in line
        assert "is dead" in line and f"kill {orphan}" in line
    else:
        assert line.startswith("waiting for another sn7 run that is using the test cache")
        assert line.endswith(f"pid(s) {orphan} hold the lock ...")

    os.kill(orphan, signal.SIGKILL)  # what the message asks the user to do
    if holder_file:
        assert waiter.next().startswith(f"note: previous holder pid {killed.proc.pid} (dead)")
    assert waiter.next() == "held"
    waiter.proc.stdin.close()
    assert waiter.rest() == []


def test_a_forked_child_does_not_keep_the_lock_after_its_parent_dies(tmp_path, procs, alive):
    """Pool workers are forked while prepare holds the lock; they must not inherit it."""
    code = """
import os, signal, sys, time
from sn7.utils.atomic import TMP_MARK
from sn7.utils.locking import exclusive_lock
with exclusive_lock(sys.argv[1], "the test cache"):
    child = os.fork()
    if child == 0:
        time.sleep(60)
        os._exit(0)
    print(child, flush=True)
    os.kill(os.getpid(), signal.SIGKILL)
"""
    killed = start(code, tmp_path)
    child = int(killed.next())
    procs.append(child)
    killed.proc.wait(timeout=TIMEOUT)

    with exclusive_lock(tmp_path, "the test cache"):  # would block while the child held it
        assert alive(child)
        assert json.loads((tmp_path / HOLDER_NAME).read_text())["pid"] == os.getpid()
