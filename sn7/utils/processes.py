"""Worker processes that never outlive the process that started them.

A SIGKILLed parent (OOM killer, preemption) runs no cleanup: its pool workers lived on, re-parented
to init, asleep on their task queue and holding the descriptors they had inherited, the cache lock
among them, so every later prepare waited for them forever (#19). Workers made here ask the kernel
to kill them when their parent dies; the cache lock is closed in forked children by `filelock`.

Workers are forked where fork is safe (Linux): a spawned worker starts a fresh interpreter that
re-imports the parent's `__main__`, which costs ~1 s per build from `prepare.py` and several seconds
(plus torch's memory, per worker) from `train.py`, against 0.4 s for the sample's whole build.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import sys
import threading
import time
from concurrent.futures import ProcessPoolExecutor

_PR_SET_PDEATHSIG = 1  # <linux/prctl.h>


def _kernel_kills_us_with_parent() -> bool:
    """Linux prctl(PR_SET_PDEATHSIG, SIGKILL); False where it is unavailable."""
    if not sys.platform.startswith("linux"):
        return False
    import ctypes

    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) == 0
    except (OSError, AttributeError):
        return False


def _watch_parent(parent_pid: int) -> None:
    while os.getppid() == parent_pid:
        time.sleep(1.0)
    os._exit(1)


def die_with_parent(parent_pid: int) -> None:
    """Pool initializer: end this worker as soon as `parent_pid` (the pool's process) is gone.

    The kernel's parent-death signal fires when the *thread* that started the worker exits, so the
    pool must be driven from a thread that outlives it (a `with` block does that). Where prctl is
    missing, a watchdog thread polls the parent pid instead.
    """
    if not _kernel_kills_us_with_parent():
        threading.Thread(target=_watch_parent, args=(parent_pid,), daemon=True).start()
    if os.getppid() != parent_pid:  # the parent died before prctl: no signal will come
        os._exit(1)


def _start_method() -> str:
    # fork is unsafe on macOS (system frameworks) and absent on Windows
    if sys.platform.startswith("linux") and "fork" in multiprocessing.get_all_start_methods():
        return "fork"
    return "spawn"


def bound_process_pool(max_workers: int, start_method: str | None = None) -> ProcessPoolExecutor:
    """A ProcessPoolExecutor whose workers end with this process, even when it is SIGKILLed.

    start_method: "fork" or "spawn" (both make this process the workers' parent, which
    `die_with_parent` checks); default fork on Linux, spawn elsewhere.
    """
    method = start_method or _start_method()
    if method not in ("fork", "spawn"):
        raise ValueError(f"start_method={method!r}: workers must be children of this process")
    return ProcessPoolExecutor(
        max_workers=max_workers,
        mp_context=multiprocessing.get_context(method),
        initializer=die_with_parent,
        initargs=(os.getpid(),),
    )
