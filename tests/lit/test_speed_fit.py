"""speed_fit (sn7.lit.speed_fit, sn7.train.fit_to_speed): a time-budget recipe falls back to a
cheaper candidate on a machine too slow to train it enough steps, and says so."""

from __future__ import annotations

import json

import pytest
import torch
from omegaconf import OmegaConf

from sn7.errors import ConfigError
from sn7.lit.speed_fit import SpeedFitSettings, choose, time_training_step
from sn7.train import apply_overrides, fit_to_speed, train

pytestmark = pytest.mark.usefixtures("one_torch_thread")

CANDIDATES = [{}, {"model.upscale": 1}, {"model.upscale": 1, "model.base": 8}]


def settings(min_steps: int = 250, **kwargs) -> SpeedFitSettings:
    node = {"candidates": CANDIDATES, "min_steps": min_steps, "budget_minutes": 28, **kwargs}
    return SpeedFitSettings.from_config(node)


def timer(seconds: dict[int, float]):
    """A fake clock: candidate i takes seconds[i] a step; records which were timed."""
    timed = []

    def seconds_per_step(candidate):
        i = CANDIDATES.index(candidate)
        timed.append(i)
        return seconds[i]

    return seconds_per_step, timed


def test_a_fast_machine_runs_the_recipe_and_times_nothing_else():
    clock, timed = timer({0: 2.7, 1: 0.7, 2: 0.3})  # a 2-core EPYC with bf16
    fit = choose(settings(), clock)
    assert fit.chosen == {} and fit.fits and timed == [0]
    assert fit.measured == [{"overrides": {}, "s_per_step": 2.7, "projected_steps": 528}]


def test_a_slow_machine_falls_back_to_the_first_candidate_that_trains_enough():
    clock, timed = timer({0: 15.0, 1: 3.8, 2: 1.0})  # AVX2 at fp32
    fit = choose(settings(), clock)
    assert fit.chosen == {"model.upscale": 1} and fit.fits and timed == [0, 1]
    assert [m["projected_steps"] for m in fit.measured] == [95, 375]


def test_when_nothing_fits_the_cheapest_is_taken_and_marked():
    clock, timed = timer({0: 60.0, 1: 30.0, 2: 20.0})
    fit = choose(settings(), clock)
    assert fit.chosen == CANDIDATES[-1] and not fit.fits and timed == [0, 1, 2]
    assert fit.as_dict()["fits"] is False


@pytest.mark.parametrize(
    ("node", "message"),
    [
        ({"candidates": [], "min_steps": 1, "budget_minutes": 1}, "at least one"),
        ({"candidates": [{}], "min_steps": 0, "budget_minutes": 1}, "min_steps=0"),
        ({"candidates": [{}], "min_steps": 1, "budget_minutes": 1, "share": 1}, "unknown keys"),
        (
            {"candidates": [{}], "min_steps": 1, "budget_minutes": 1, "train_share": 0},
            "train_share",
        ),
    ],
)
def test_bad_settings_are_one_line_config_errors(node, message):
    with pytest.raises(ConfigError, match=message):
        SpeedFitSettings.from_config(node)


def test_a_candidate_key_the_config_lacks_is_an_error():
    cfg = OmegaConf.create({"model": {"base": 16}})
    apply_overrides(cfg, {"model.base": 8})
    assert cfg.model.base == 8
    with pytest.raises(ConfigError, match=r"model\.bsae"):
        apply_overrides(cfg, {"model.bsae": 8})


def test_timing_runs_real_training_steps():
    torch.manual_seed(0)
    model = torch.nn.Conv2d(4, 1, 3, padding=1)
    before = model.weight.detach().clone()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    loss_fn = torch.nn.functional.binary_cross_entropy_with_logits

    def loss_of(x, target):
        return loss_fn(model(x)[:, 0], target.float())

    seconds = time_training_step(model, loss_of, optimizer, (2, 4, 16, 16), "32-true")
    assert seconds > 0 and not torch.equal(before, model.weight)


def test_train_applies_the_choice_and_a_resumed_run_keeps_it(synthetic_root, train_cfg, tmp_path):
    fallback = {
        "candidates": [{}, {"model.base": 2}],
        "min_steps": 10**9,  # unreachable: the cheapest candidate is taken
        "budget_minutes": 1,
        "timed_steps": 1,
    }
    cfg = train_cfg(synthetic_root.root, tmp_path, "logger=none")
    cfg.speed_fit = fallback
    train(cfg)
    summary = json.loads((tmp_path / "train_summary.json").read_text())
    assert summary["speed_fit"]["chosen"] == {"model.base": 2}
    assert summary["speed_fit"]["fits"] is False and len(summary["speed_fit"]["measured"]) == 2
    ckpt = torch.load(tmp_path / "checkpoints" / "last.ckpt", weights_only=True)
    assert ckpt["hyper_parameters"]["model"]["base"] == 2
    # resuming: the checkpoint's choice, even where this machine would now choose otherwise
    resume = train_cfg(
        synthetic_root.root,
        tmp_path / "resumed",
        f"ckpt_path={tmp_path / 'checkpoints' / 'last.ckpt'}",
    )
    resume.speed_fit = {**fallback, "min_steps": 1}
    fit = fit_to_speed(resume, "32-true", False)
    assert fit.chosen == {"model.base": 2} and resume.model.base == 2


def test_ranks_of_a_torchrun_job_do_not_time_themselves(monkeypatch, compose_config, tmp_path):
    """Each rank would time its own steps and might choose another model: under torchrun
    (WORLD_SIZE > 1) the recipe runs as written."""
    cfg = compose_config("train", ["experiment=cpu_best", f"paths.run_dir={tmp_path}"])
    monkeypatch.setenv("WORLD_SIZE", "2")
    assert fit_to_speed(cfg, "32-true", False) is None
    assert cfg.model.upscale == 2
