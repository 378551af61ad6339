"""Every entry point's multirun folder resolves before a job runs (`python evaluate.py -m ...`
without hydra.sweep.dir used to fail: its sweep dir asked the ${hydra:} resolver, which is empty
until a job starts)."""

from __future__ import annotations

from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

REPO = Path(__file__).resolve().parents[1]
NEEDED = {
    "train": [],
    "prepare": [],
    "evaluate": ["ckpt_path=x.ckpt"],
    "predict": ["ckpt_path=x.ckpt", "input=x.tif"],
    "series": ["data.root=x"],
}


@pytest.mark.parametrize("name", sorted(NEEDED))
def test_the_sweep_dir_resolves_without_a_running_job(name):
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        cfg = compose(name, NEEDED[name], return_hydra_config=True)
    sweep_dir = OmegaConf.select(cfg, "hydra.sweep.dir")  # resolves; raised before the fix
    assert f"/{name}/multirun/" in sweep_dir
