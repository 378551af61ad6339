"""Fixtures shared by the whole suite: synthetic SN7 data, the real sample, composed configs.

Data made here is session-scoped and read-only; a test that edits files makes its own root with
`make_every_case_root(tmp_path, ...)` or `make_sn7_root` (sn7.testing.synthetic; a few tens of
milliseconds).
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig, OmegaConf

import sn7  # noqa: F401  (registers the OmegaConf resolvers the configs use)
from sn7.testing.synthetic import SyntheticRoot, make_every_case_root

REPO = Path(__file__).resolve().parents[1]
CONF_DIR = REPO / "conf"
SHARED_SAMPLE = REPO.parent / "shared" / "sn7_sample"


def pytest_configure(config) -> None:
    """evaluate's probability cache (eval.prob_cache) goes to a temporary folder, not outputs/,
    also in the subprocesses tests start."""
    os.environ["SN7_PROB_CACHE"] = tempfile.mkdtemp(prefix="sn7_prob_cache_")


def _compose(config_name: str, overrides: Sequence[str] = ()) -> DictConfig:
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return compose(config_name, overrides=list(overrides))


@pytest.fixture(scope="session")
def synthetic_root(tmp_path_factory) -> SyntheticRoot:
    """2 AOIs x 4 months of 96x128 px: one month without buildings, one with an alpha=0 strip
    and a UDM_masks raster, one with a UDM cloud polygon. Read-only: tests must not edit it."""
    return make_every_case_root(
        tmp_path_factory.mktemp("sn7_synthetic"),
        aois=2,
        months=4,
        size=(96, 128),
        n_buildings=10,
        empty_month=True,
    )


@pytest.fixture
def shared_sample() -> Path:
    """The real SN7 excerpt in ../shared/sn7_sample; the test is skipped where it is absent."""
    if not (SHARED_SAMPLE / "train").is_dir():
        pytest.skip(f"real SN7 sample not found at {SHARED_SAMPLE}")
    return SHARED_SAMPLE


@pytest.fixture
def augment_cfg() -> Callable[..., dict]:
    """`augment_cfg(**values)`: conf/augment/light.yaml (every key Augment needs) with `values`."""
    light = OmegaConf.to_container(OmegaConf.load(CONF_DIR / "augment" / "light.yaml"))
    return lambda **values: {**light, **values}


@pytest.fixture
def compose_config() -> Callable[..., DictConfig]:
    """`compose_config(name, overrides)`: compose `conf/<name>.yaml` as the CLI would."""
    return _compose


@pytest.fixture
def prepare_builds(monkeypatch) -> list:
    """A list that grows by one each time prepare builds (or heals) the mask cache."""
    import sn7.data.prepared

    calls = []
    real = sn7.data.prepared.build_verified_masks

    def spy(*args, **kwargs):
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(sn7.data.prepared, "build_verified_masks", spy)
    return calls


@pytest.fixture
def prepare_cfg() -> Callable[..., DictConfig]:
    """`prepare_cfg(root, work_dir, *overrides)`: the prepare config for one data root, on one
    worker process (the machine is shared) and with the cache in `work_dir`."""

    def make(root: str | Path, work_dir: str | Path, *overrides: str) -> DictConfig:
        return _compose(
            "prepare",
            [f"data.root={root}", f"data.work_dir={work_dir}", "data.workers=1", *overrides],
        )

    return make


# Tiny settings that keep a training run to seconds even on an AVX2 CPU without bf16.
TINY_TRAIN = [
    "model.base=4",
    "model.depth=2",
    "data.crop_size=64",
    "data.batch_size=4",
    "data.val_batch_size=4",
    "data.samples_per_epoch=8",
    "data.num_workers=0",
    "data.workers=1",
    "trainer.max_epochs=1",
    "trainer.precision=32-true",
    "threads=1",  # tiny models run faster on one thread, and the machine may be shared
    "callbacks.rich_progress_bar=null",
    "+trainer.enable_progress_bar=false",
    "+trainer.enable_model_summary=false",
]


def _train_cfg(root: str | Path, run_dir: str | Path, *overrides: str) -> DictConfig:
    run_dir = Path(run_dir)
    return _compose(
        "train",
        [
            f"data.root={root}",
            f"data.work_dir={run_dir / 'work'}",
            f"paths.run_dir={run_dir}",
            *TINY_TRAIN,
            *overrides,
        ],
    )


@pytest.fixture
def train_cfg() -> Callable[..., DictConfig]:
    """`train_cfg(root, run_dir, *overrides)`: the train config with TINY_TRAIN settings."""
    return _train_cfg


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory, synthetic_root) -> Path:
    """best.ckpt of a TinyUNet (base 4, depth 2) trained for 2 short epochs on `synthetic_root`.
    Read-only: copy it before writing beside it (evaluate stores a threshold file there)."""
    from sn7.train import train

    run_dir = tmp_path_factory.mktemp("tiny_run")
    train(_train_cfg(synthetic_root.root, run_dir, "trainer.max_epochs=2", "logger=csv"))
    return run_dir / "checkpoints" / "best.ckpt"


# Input spec of conf/data/sn7.yaml with 64-px crops (the training-crop metric of small tiles).
STUB_SPEC = {
    "bands": [1, 2, 3, 4],
    "mean": [0.33, 0.33, 0.27, 0.0],
    "std": [0.17, 0.15, 0.14, 1.0],
    "alpha_band": 4,
    "crop_size": 64,
}
# Synthetic images draw building pixels with band 1 in [180, 235) and the rest in [40, 100) (or
# 0 where alpha = 0); the stub model's logit is zero half-way between.
_STUB_CUT = 140 / 255


def _write_stub_checkpoint(path: str | Path, gain: float = 200.0, run_config=None) -> Path:
    """Write an sn7 checkpoint of a 1x1 conv: p = sigmoid(gain * (band1/255 - 140/255)).

    Pixelwise, so sliding windows cannot change its output. With the default gain its logits
    are beyond +-30 on synthetic images, so in float32 p is 1.0 on buildings and < 1e-13
    elsewhere: a perfect model whose mask is the synthetic truth at every threshold. A small
    gain (e.g. 10) spreads p over (0, 1), for threshold tests.
    """
    import torch
    from torch import nn

    from sn7.lit.module import CHECKPOINT_FORMAT

    model = nn.Conv2d(len(STUB_SPEC["bands"]), 1, kernel_size=1)
    with torch.no_grad():
        model.weight.zero_()
        # the model sees z = (x/255 - mean) / std, so x/255 = z * std + mean
        model.weight[0, 0, 0, 0] = gain * STUB_SPEC["std"][0]
        model.bias.fill_(gain * (STUB_SPEC["mean"][0] - _STUB_CUT))
    model_config = {
        "_target_": "torch.nn.Conv2d",
        "in_channels": len(STUB_SPEC["bands"]),
        "out_channels": 1,
        "kernel_size": 1,
    }
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(
        {
            "sn7_format": CHECKPOINT_FORMAT,
            "hyper_parameters": {
                "model": model_config,
                "input_spec": STUB_SPEC,
                "run_config": run_config or {},
            },
            "state_dict": {f"model.{k}": v for k, v in model.state_dict().items()},
        },
        path,
    )
    return path


@pytest.fixture(scope="session")
def stub_checkpoint() -> Callable[..., Path]:
    """`stub_checkpoint(path, gain=200.0)`: write the checkpoint of a pixelwise model that
    thresholds band 1; with the default gain it predicts synthetic truth masks exactly."""
    return _write_stub_checkpoint


@pytest.fixture(scope="session")
def tiny_train_overrides() -> list[str]:
    """TINY_TRAIN, for tests that build their own command line (a `train.py` subprocess)."""
    return list(TINY_TRAIN)


@pytest.fixture(scope="session")
def session_train_cfg() -> Callable[..., DictConfig]:
    """`train_cfg` for module- and session-scoped fixtures (one run shared by several tests)."""
    return _train_cfg


def _alive(pid: int) -> bool:
    """Whether process `pid` runs (a zombie does not count). Reads /proc: Linux only."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


@pytest.fixture(scope="session")
def alive() -> Callable[[int], bool]:
    """`alive(pid)`: whether that process runs, a zombie not counted (reads /proc)."""
    return _alive


@pytest.fixture
def one_torch_thread():
    """Run the test on one torch thread, then restore the count. On a shared 2-core machine two
    OpenMP threads make a tiny training step up to ~8x slower whenever another job runs; tests
    that call train() pass `threads=1` for the same reason."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
