"""Pool workers that end with their parent (sn7.utils.processes)."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
linux_only = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")


def python(code: str, *args: str, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", code, *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
        **kwargs,
    )


@linux_only
@pytest.mark.parametrize("start_method", ["fork", "spawn"])
def test_workers_end_when_their_parent_is_sigkilled(start_method, alive):
    code = """
import os, signal, sys, time
from sn7.utils.processes import bound_process_pool
pool = bound_process_pool(2, sys.argv[1])
busy = [pool.submit(time.sleep, 60) for _ in range(2)]
time.sleep(0.5)  # both workers have taken a task
print(*[p.pid for p in pool._processes.values()], flush=True)
os.kill(os.getpid(), signal.SIGKILL)
"""
    result = python(code, start_method)
    assert result.returncode == -signal.SIGKILL, result.stderr
    workers = [int(pid) for pid in result.stdout.split()]
    assert len(workers) == 2
    try:
        deadline = time.monotonic() + 5
        while any(map(alive, workers)) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not any(map(alive, workers)), f"workers {workers} outlived their parent"
    finally:
        for pid in workers:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


def test_a_worker_whose_parent_is_already_gone_exits_at_once():
    """The parent can die between the worker's start and its prctl: no signal would come."""
    code = "import os; from sn7.utils.processes import die_with_parent\n"
    code += "die_with_parent(os.getppid() + 1_000_000); print('still running')"
    result = python(code)
    assert result.returncode == 1 and result.stdout == ""


@linux_only
def test_the_kernel_is_asked_for_sigkill_on_parent_death():
    code = """
import ctypes, os
from sn7.utils.processes import die_with_parent
die_with_parent(os.getppid())
sig = ctypes.c_int()
ctypes.CDLL(None).prctl(2, ctypes.byref(sig), 0, 0, 0)  # PR_GET_PDEATHSIG
print(sig.value)
"""
    result = python(code)
    assert result.returncode == 0, result.stderr
    assert int(result.stdout) == signal.SIGKILL


def test_a_pool_gives_the_results_of_its_tasks():
    from sn7.utils.processes import bound_process_pool

    with bound_process_pool(2) as pool:
        assert list(pool.map(abs, [-3, 4, -5])) == [3, 4, 5]
