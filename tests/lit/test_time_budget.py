"""Time-budget schedule (sn7.lit.time_budget): the one-cycle shape on the budget's axis, the clock
that stops training and survives a resume, and the wiring of scheduler=time_onecycle."""

from __future__ import annotations

import itertools
import logging
from types import SimpleNamespace

import pandas as pd
import pytest
import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, TensorDataset

from sn7.errors import ConfigError
from sn7.lit.time_budget import OneCycleShape, TimeBudget, TimeOneCycleLR
from sn7.train import build_task, instantiate_group, train

pytestmark = pytest.mark.usefixtures("one_torch_thread")

# pct_start 0.5, div 10, final_div 10: lr factors 0.1 -> 1 -> 0.01. With
# cos_anneal(a, b, p) = b + (a - b) / 2 * (cos(pi p) + 1), at the sixths of the budget:
#   warm-up  p = f / 0.5:         f=1/6 (p=1/3): 1 - 0.45 * 1.5 = 0.325,
#                                 f=2/6 (p=2/3): 1 - 0.45 * 0.5 = 0.775
#   anneal   p = (f - 0.5) / 0.5: f=4/6 (p=1/3): 0.01 + 0.495 * 1.5 = 0.7525,
#                                 f=5/6 (p=2/3): 0.01 + 0.495 * 0.5 = 0.2575
SIXTHS = [0.1, 0.325, 0.775, 1.0, 0.7525, 0.2575, 0.01]
SHAPE = {"pct_start": 0.5, "div_factor": 10.0, "final_div_factor": 10.0}


class FakeClock:
    def __init__(self, t: float = 1000.0):
        self.t = t

    def __call__(self) -> float:
        return self.t


# --- the shape --------------------------------------------------------------------------------


def test_one_cycle_shape_at_hand_computed_fractions():
    shape = OneCycleShape(pct_start=0.25, div_factor=10, final_div_factor=100)
    # start max/10, peak 1 at pct_start, end max/10/100; half-way through each phase the cosine
    # is half-way between its ends
    expected = {0.0: 0.1, 0.125: 0.55, 0.25: 1.0, 0.625: 0.5005, 1.0: 0.001}
    for fraction, factor in expected.items():
        assert shape.lr_factor(fraction) == pytest.approx(factor, rel=1e-12), fraction
    assert shape.lr_factor(-0.5) == pytest.approx(0.1)  # clamped to [0, 1]
    assert shape.lr_factor(3.0) == pytest.approx(0.001)
    # momentum mirrors the lr: 0.95 -> 0.85 at the peak -> 0.95
    for fraction, m in {0.0: 0.95, 0.125: 0.90, 0.25: 0.85, 0.625: 0.90, 1.0: 0.95}.items():
        assert shape.momentum(fraction, 0.85, 0.95) == pytest.approx(m), fraction


def test_shape_and_budget_reject_impossible_values():
    with pytest.raises(ConfigError, match="pct_start"):
        OneCycleShape(pct_start=1.0)
    with pytest.raises(ConfigError, match="div_factor"):
        OneCycleShape(div_factor=0)
    with pytest.raises(ConfigError, match="budget_minutes"):
        TimeBudget(0)
    with pytest.raises(ConfigError, match="TimeBudget callback"):
        TimeBudget.of(SimpleNamespace(callbacks=[pl.callbacks.LearningRateMonitor()]))


def test_scheduler_sets_lr_and_beta1_from_the_clock_and_keeps_it_out_of_its_state(tmp_path):
    clock = SimpleNamespace(fraction=0.0)
    params = [torch.nn.Parameter(torch.zeros(2))]
    optimizer = torch.optim.AdamW(params, lr=0.02)
    scheduler = TimeOneCycleLR(optimizer, clock, **SHAPE)
    group = optimizer.param_groups[0]
    assert group["lr"] == pytest.approx(0.002) and group["betas"][0] == pytest.approx(0.95)
    for fraction, factor in zip([1 / 6, 0.5, 5 / 6, 1.0], [0.325, 1.0, 0.2575, 0.01], strict=True):
        clock.fraction = fraction
        optimizer.step()
        scheduler.step()
        assert group["lr"] == pytest.approx(0.02 * factor), fraction
    assert group["betas"] == pytest.approx((0.95, 0.999))

    state = scheduler.state_dict()
    assert "clock" not in state  # the callback checkpoints the time, not the scheduler
    torch.save(state, tmp_path / "sched.pt")  # plain data: loads with weights_only=True
    other_clock = SimpleNamespace(fraction=0.5)
    resumed = TimeOneCycleLR(torch.optim.AdamW(params, lr=0.02), other_clock, **SHAPE)
    resumed.load_state_dict(torch.load(tmp_path / "sched.pt", weights_only=True))
    assert resumed.clock is other_clock and resumed.last_epoch == 4

    with pytest.raises(ConfigError, match="cycle_momentum"):
        TimeOneCycleLR(torch.optim.Adagrad(params), clock)
    TimeOneCycleLR(torch.optim.Adagrad(params), clock, cycle_momentum=False)


# --- the clock --------------------------------------------------------------------------------


def stub_trainer() -> SimpleNamespace:
    return SimpleNamespace(
        should_stop=False,
        is_global_zero=True,
        global_step=0,
        max_epochs=-1,
        fast_dev_run=False,
        strategy=SimpleNamespace(broadcast=lambda obj, src=0: obj),
    )


def play(budget: TimeBudget, clock: FakeClock, trainer, events) -> None:
    for t, hook in events:
        clock.t = t
        if hook == "batch":
            budget.on_train_batch_start(trainer, None, None, 0)
        elif hook == "step":
            budget.on_before_optimizer_step(trainer, None, None)
        elif hook == "val":
            budget.on_validation_start(trainer, None)
        elif hook == "save":
            budget.on_save_checkpoint(trainer, None, {})
        else:
            getattr(budget, hook)(trainer, None)


# Set-up until 1050 is free; then two batches (20 s, then 2 s of loading + 8 s), validation from
# 1081 and a checkpoint write at 1100, and the next batch from 1110.
EVENTS = [
    (1000, "on_fit_start"),
    (1050, "batch"),
    (1070, "step"),
    (1072, "batch"),
    (1080, "step"),
    (1081, "val"),
    (1100, "save"),
    (1110, "batch"),
    (1115, "step"),
]


def test_budget_counts_from_the_first_step_and_stops_when_spent():
    clock = FakeClock()
    budget = TimeBudget(budget_minutes=1, clock=clock)
    trainer = stub_trainer()
    play(budget, clock, trainer, EVENTS[:5])
    assert budget.elapsed_seconds == 30 and budget.fraction == 0.5 and not trainer.should_stop
    play(budget, clock, trainer, EVENTS[5:])
    # validation and the checkpoint write count (as they do for trainer.max_time): 30+35 >= 60
    assert budget.elapsed_seconds == 65 and budget.fraction == 1.0 and trainer.should_stop


def test_budget_can_leave_validation_and_checkpoint_writes_out():
    clock = FakeClock()
    budget = TimeBudget(budget_minutes=1, pause_for_validation=True, clock=clock)
    trainer = stub_trainer()
    play(budget, clock, trainer, EVENTS)
    assert budget.elapsed_seconds == 36 and not trainer.should_stop  # 30 + 1 + 5
    play(budget, clock, trainer, [(1120, "batch"), (1138, "step")])
    assert budget.elapsed_seconds == 59 and not trainer.should_stop
    play(budget, clock, trainer, [(1139, "batch"), (1140, "step")])
    assert budget.elapsed_seconds == 61 and trainer.should_stop


def test_under_ddp_every_rank_takes_rank_zeros_time():
    clock = FakeClock()
    budget = TimeBudget(budget_minutes=1, clock=clock)
    trainer = stub_trainer()
    trainer.strategy.broadcast = lambda obj, src=0: 60.0  # rank 0 has spent the budget
    play(budget, clock, trainer, EVENTS[1:3])
    assert budget.elapsed_seconds == 60 and trainer.should_stop


def test_resume_restores_the_elapsed_time(tmp_path, caplog):
    clock = FakeClock()
    budget = TimeBudget(budget_minutes=1, clock=clock)
    play(budget, clock, stub_trainer(), EVENTS[:5])
    torch.save(budget.state_dict(), tmp_path / "state.pt")

    later = FakeClock(50_000.0)  # another process: its clock has another origin
    resumed = TimeBudget(budget_minutes=1, clock=later)
    resumed.load_state_dict(torch.load(tmp_path / "state.pt"))
    assert resumed.elapsed_seconds == 30 and resumed.fraction == 0.5
    trainer = stub_trainer()
    play(resumed, later, trainer, [(50_000, "on_fit_start"), (50_100, "batch"), (50_112, "step")])
    assert resumed.elapsed_seconds == 42 and resumed.fraction == pytest.approx(0.7)

    with caplog.at_level(logging.WARNING, logger="sn7.lit.time_budget"):
        longer = TimeBudget(budget_minutes=2)
        longer.load_state_dict(torch.load(tmp_path / "state.pt"))
    assert longer.fraction == 0.25 and "jumps to 25 %" in caplog.text


# --- in Lightning, on the fake clock -----------------------------------------------------------


class TenSecondSteps(pl.LightningModule):
    """A linear model whose every training step takes 10 s of the fake clock."""

    def __init__(self, clock: FakeClock, lr: float = 0.1):
        super().__init__()
        self.layer = torch.nn.Linear(2, 1)
        self.clock = clock
        self.lr = lr

    def training_step(self, batch, batch_idx):
        self.clock.t += 10
        x, y = batch
        return torch.nn.functional.mse_loss(self.layer(x), y)

    def configure_optimizers(self):
        optimizer = torch.optim.AdamW(self.parameters(), lr=self.lr)
        scheduler = TimeOneCycleLR(optimizer, TimeBudget.of(self.trainer), **SHAPE)
        schedule = {"scheduler": scheduler, "interval": "step"}
        return {"optimizer": optimizer, "lr_scheduler": schedule}


class RecordLr(pl.Callback):
    def __init__(self):
        self.lrs: list[float] = []
        self.batches: list[tuple[int, int]] = []  # (epoch, batch_idx)

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self.lrs.append(trainer.optimizers[0].param_groups[0]["lr"])
        self.batches.append((trainer.current_epoch, batch_idx))


def batches(n: int) -> DataLoader:
    g = torch.Generator().manual_seed(0)
    return DataLoader(TensorDataset(torch.randn(4 * n, 2, generator=g), torch.zeros(4 * n, 1)), 4)


def fit(tmp_path, clock, max_epochs, n_batches, ckpt_path=None):
    budget, record = TimeBudget(budget_minutes=1, clock=clock), RecordLr()
    trainer = pl.Trainer(
        accelerator="cpu",
        max_epochs=max_epochs,
        callbacks=[budget, record],
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=tmp_path,
    )
    trainer.fit(TenSecondSteps(clock), train_dataloaders=batches(n_batches), ckpt_path=ckpt_path)
    return trainer, budget, record


def test_lightning_stops_mid_epoch_when_the_budget_is_spent(tmp_path):
    # 4 batches an epoch, no epoch limit: 6 steps of 10 s spend the minute, in epoch 1
    trainer, budget, record = fit(tmp_path, FakeClock(), max_epochs=-1, n_batches=4)
    assert trainer.global_step == 6 and record.batches[-1] == (1, 1)
    assert budget.elapsed_seconds == 60 and budget.fraction == 1.0
    # step k runs at the fraction spent before it; after the last step the lr is the final one
    assert record.lrs == pytest.approx([0.1 * f for f in SIXTHS[:6]])
    assert trainer.optimizers[0].param_groups[0]["lr"] == pytest.approx(0.1 * SIXTHS[6])


def test_lightning_resume_continues_the_schedule(tmp_path):
    # epoch 0 (3 steps, 30 s), checkpoint, then resume in a process whose clock starts elsewhere
    first, _, before = fit(tmp_path, FakeClock(), max_epochs=1, n_batches=3)
    first.save_checkpoint(tmp_path / "epoch0.ckpt")
    ckpt = torch.load(tmp_path / "epoch0.ckpt", weights_only=False)
    assert ckpt["callbacks"]["TimeBudget"]["elapsed_seconds"] == 30
    assert "clock" not in ckpt["lr_schedulers"][0]

    trainer, budget, after = fit(
        tmp_path, FakeClock(9000.0), max_epochs=-1, n_batches=3, ckpt_path=tmp_path / "epoch0.ckpt"
    )
    assert before.batches + after.batches == [(0, 0), (0, 1), (0, 2), (1, 0), (1, 1), (1, 2)]
    assert before.lrs + after.lrs == pytest.approx([0.1 * f for f in SIXTHS[:6]])
    assert trainer.global_step == 6 and budget.elapsed_seconds == 60


# --- the config -------------------------------------------------------------------------------


def test_time_onecycle_config_brings_its_callback(compose_config, tmp_path):
    cfg = compose_config(
        "train",
        [
            f"paths.run_dir={tmp_path}",
            "scheduler=time_onecycle",
            "scheduler.budget_minutes=5",
            "model.base=2",
            "model.depth=1",
        ],
    )
    callbacks = instantiate_group(cfg.callbacks)
    (budget,) = [c for c in callbacks if isinstance(c, TimeBudget)]
    assert budget.budget_seconds == 300
    task = build_task(cfg, SimpleNamespace(spec=_spec(cfg)), channels_last=False)
    task.trainer = pl.Trainer(accelerator="cpu", callbacks=callbacks, logger=False)
    configured = task.configure_optimizers()
    scheduler = configured["lr_scheduler"]["scheduler"]
    assert isinstance(scheduler, TimeOneCycleLR) and scheduler.clock is budget
    assert configured["lr_scheduler"]["interval"] == "step"
    assert configured["optimizer"].param_groups[0]["lr"] == pytest.approx(cfg.optimizer.lr / 25)


def _spec(cfg):
    from sn7.data.input_spec import InputSpec

    return InputSpec.from_data_cfg(cfg.data)


def test_cpu_best_trains_to_a_28_minute_budget_under_a_30_minute_cap(compose_config):
    cfg = compose_config("train", ["experiment=cpu_best"])
    assert cfg.scheduler.scheduler._target_ == "sn7.lit.time_budget.TimeOneCycleLR"
    assert cfg.callbacks.time_budget.budget_minutes == 28
    assert cfg.trainer.max_epochs == -1 and cfg.trainer.max_time == "00:00:30:00"
    assert cfg.optimizer.lr == 0.003


def test_real_fit_stops_on_budget_with_the_lr_annealing(
    synthetic_root, train_cfg, tmp_path, monkeypatch
):
    """A 3-second budget through train(): the budget, not an epoch limit, ends the run, and the
    logged lr warms up from lr/25 and only falls after its peak."""
    budgets = []
    original = TimeBudget.on_train_end

    def keep(self, trainer, pl_module):
        budgets.append(self)
        original(self, trainer, pl_module)

    monkeypatch.setattr(TimeBudget, "on_train_end", keep)
    cfg = train_cfg(
        synthetic_root.root,
        tmp_path,
        "threads=1",
        "scheduler=time_onecycle",
        "scheduler.budget_minutes=0.05",
        "trainer.max_epochs=-1",
        "logger=csv",
        "callbacks.periodic_checkpoint=null",
    )
    train(cfg)  # max_epochs=-1, no max_time: only the budget can end it
    (budget,) = budgets
    assert budget.budget_seconds == 3.0 and budget.elapsed_seconds >= 3.0

    metrics = pd.read_csv(tmp_path / "csv" / "metrics.csv")
    lrs = metrics.dropna(subset=["lr-AdamW"]).sort_values("step")["lr-AdamW"].tolist()
    assert lrs[0] == pytest.approx(cfg.optimizer.lr / 25)
    peak = lrs.index(max(lrs))
    assert max(lrs) <= cfg.optimizer.lr * (1 + 1e-6)
    tail = lrs[peak:]
    assert all(b <= a for a, b in itertools.pairwise(tail))  # only falls after the peak
    assert lrs[-1] < max(lrs)


# Under DDP (trainer=ddp_sim) the clock broadcast from rank 0 is checked by
# tests/test_train.py::test_ddp_sim_fast_dev_run, which runs with scheduler=time_onecycle.
