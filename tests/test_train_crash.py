"""Crash safety of training: a job killed mid-epoch resumes from last.ckpt at the step it was
saved, with the optimizer state it had (not a fresh optimizer)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from sn7.train import train

REPO = Path(__file__).resolve().parents[1]


def _adam_step(ckpt: dict) -> float:
    state = ckpt["optimizer_states"][0]["state"]
    return float(next(iter(state.values()))["step"])


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore:The dirpath has changed")  # resumed into another run dir
@pytest.mark.filterwarnings("ignore:.*could not find the monitored key")  # no validation yet
@pytest.mark.filterwarnings("ignore:You're resuming from a checkpoint that ended before")  # sure
def test_sigkill_mid_epoch_then_resume(
    tmp_path, synthetic_root, tiny_train_overrides, train_cfg, one_torch_thread
):
    run = tmp_path / "run"
    last = run / "checkpoints" / "last.ckpt"
    settings = [
        "logger=none",
        "callbacks.periodic_checkpoint.every_n_train_steps=2",
        "data.samples_per_epoch=4000",  # one epoch far longer than the test: the kill is mid-epoch
    ]
    data = [f"data.root={synthetic_root.root}", f"data.work_dir={tmp_path / 'work'}"]
    proc = subprocess.Popen(
        [
            sys.executable,
            "train.py",
            *data,
            *tiny_train_overrides,
            *settings,
            f"hydra.run.dir={run}",
        ],
        cwd=REPO,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if last.is_file() and torch.load(last, weights_only=False)["global_step"] >= 4:
                break
            time.sleep(0.2)
        else:
            pytest.fail("training never wrote last.ckpt at step >= 4")
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()

    saved = torch.load(last, weights_only=False)  # loads: the file is whole after the kill
    step = saved["global_step"]
    assert step % 2 == 0 and saved["epoch"] == 0  # saved mid-epoch by the periodic callback
    assert _adam_step(saved) == step

    # the resume runs in-process (train() as train.py calls it): no second torch import
    resume = tmp_path / "resume"
    train(
        train_cfg(
            synthetic_root.root,
            resume,
            *settings,
            f"ckpt_path={last}",
            f"+trainer.max_steps={step + 2}",
        )
    )
    resumed = torch.load(resume / "checkpoints" / "last.ckpt", weights_only=False)
    assert resumed["global_step"] == step + 2
    # Adam's step count continued from the saved state: a fresh optimizer would say 2
    assert _adam_step(resumed) == step + 2
