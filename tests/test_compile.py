"""trainer.compile: how auto/true/false resolve, that the Trainer never sees the key, and that a
compiled run writes a checkpoint that load_model rebuilds (no `_orig_mod.` in its keys)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from hydra.utils import instantiate

from sn7.errors import ConfigError
from sn7.inference.checkpoint import load_model
from sn7.train import train, trainer_settings
from sn7.utils.hardware import resolve_compile

REPO = Path(__file__).resolve().parents[1]
TRAINERS = sorted(p.stem for p in (REPO / "conf" / "trainer").glob("*.yaml"))
AVX2 = frozenset({"avx2", "fma"})
AVX512_BF16 = frozenset({"avx2", "fma", "avx512f", "avx512_bf16"})
AMX = AVX512_BF16 | {"amx_tile", "amx_bf16"}

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.mark.parametrize("flags", [frozenset(), AVX2, AVX512_BF16, AMX])
def test_auto_is_off_on_every_cpu_kind(flags):
    # measured: no clear win on an AVX512-BF16 CPU (benchmarks/bench_profile.py)
    assert resolve_compile("auto", flags) is False


@pytest.mark.parametrize(
    ("value", "expected"), [(True, True), ("true", True), ("True", True), (False, False)]
)
def test_explicit_setting_wins(value, expected):
    assert resolve_compile(value, AVX2) is expected
    assert resolve_compile(value, AVX512_BF16) is expected


@pytest.mark.parametrize("value", ["yes", "inductor", 1])
def test_unknown_setting_is_a_config_error(value):
    with pytest.raises(ConfigError, match="compile="):
        resolve_compile(value)


@pytest.mark.parametrize("trainer", TRAINERS)
def test_every_trainer_defaults_to_auto_and_hides_it_from_lightning(
    compose_config, trainer, tmp_path
):
    cfg = compose_config("train", [f"trainer={trainer}", f"paths.run_dir={tmp_path}"])
    assert cfg.trainer.compile == "auto"
    settings = trainer_settings(cfg)
    assert "compile" not in settings
    assert set(settings) == set(cfg.trainer) - {"compile"}
    if cfg.trainer.accelerator == "cpu":
        trainer = instantiate(settings, precision="32-true", logger=False)
        assert trainer.max_epochs == cfg.trainer.max_epochs
        assert trainer.default_root_dir == str(tmp_path)  # interpolations still resolve


def test_compiled_run_checkpoint_loads(monkeypatch, synthetic_root, train_cfg, tmp_path):
    """trainer.compile=true compiles the model in place, so checkpoints keep plain `model.*`
    keys. Dynamo's eager backend stands in for inductor: it traces the same graphs (so the
    wrapping is real) without minutes of C++ compilation."""
    compiled = []
    original = torch.nn.Module.compile

    def eager_compile(self, *args, **kwargs):
        compiled.append(type(self).__name__)
        return original(self, *args, **{**kwargs, "backend": "eager"})

    monkeypatch.setattr(torch.nn.Module, "compile", eager_compile)
    torch._dynamo.reset()
    torch._dynamo.utils.counters.clear()
    run_dir = tmp_path / "run"
    train(train_cfg(synthetic_root.root, run_dir, "trainer.compile=true", "logger=csv"))

    assert compiled == ["TinyUNet"]
    assert torch._dynamo.utils.counters["stats"]["unique_graphs"] >= 1  # dynamo really traced
    ckpt_path = run_dir / "checkpoints" / "best.ckpt"
    keys = torch.load(ckpt_path, map_location="cpu", weights_only=False)["state_dict"]
    assert not [k for k in keys if "_orig_mod" in k]
    loaded = load_model(ckpt_path)  # strict load_state_dict: every key must fit
    assert type(loaded.model).__name__ == "TinyUNet"
    assert loaded.model.encoders[0][0].weight.shape[1] == 4
    torch._dynamo.reset()
