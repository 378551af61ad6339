"""Hydra's submitit launcher (the `cluster` extra): a multirun through
`hydra/launcher=submitit_local` runs each job as a submitit job, the code path of a SLURM sweep
(`hydra/launcher=submitit_slurm`) without the scheduler. Skipped where hydra-submitit-launcher is
not installed (`pip install -e ".[cluster]"`)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

pytest.importorskip("hydra_plugins.hydra_submitit_launcher")

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_submitit_local_multirun_runs_every_job(synthetic_root, tiny_train_overrides, tmp_path):
    sweep = tmp_path / "sweep"
    cmd = [
        sys.executable,
        "train.py",
        "-m",
        "hydra/launcher=submitit_local",
        "hydra.launcher.timeout_min=10",
        "hydra.launcher.cpus_per_task=1",
        f"hydra.sweep.dir={sweep}",
        f"data.root={synthetic_root.root}",
        f"data.work_dir={tmp_path / 'work'}",
        f"paths.output_dir={tmp_path / 'outputs'}",
        *tiny_train_overrides,
        "debug=fast_dev_run",
        "seed=1,2",
    ]
    done = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]

    for job, seed in ((0, 1), (1, 2)):
        job_dir = sweep / str(job)
        overrides = yaml.safe_load((job_dir / ".hydra" / "overrides.yaml").read_text())
        assert f"seed={seed}" in overrides
        summary = json.loads((job_dir / "train_summary.json").read_text())
        assert summary["steps"] == 1  # fast_dev_run: one training batch
    # the jobs went through submitit (its <job id>_<task>_log.out files), not the basic launcher
    assert len(list((sweep / ".submitit").rglob("*_log.out"))) >= 2
    assert not (tmp_path / "outputs").exists()
