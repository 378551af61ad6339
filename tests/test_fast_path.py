"""The fast CPU path (precision=auto, channels_last=auto) is chosen from CPU flags and is as
accurate as plain fp32.

bf16 autocast is only fast where the CPU has native bf16 (avx512_bf16 / amx_bf16); on AVX2-only
CPUs PyTorch emulates it ~9x slower, so the choice must follow the flags. On such a CPU the auto
path *is* fp32 and the accuracy test compares fp32 with itself, which is fine: it still guards
the path.
"""

from __future__ import annotations

import numpy as np
import pytest
import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, Dataset

from sn7.constants import IGNORE
from sn7.data.input_spec import InputSpec
from sn7.errors import ConfigError
from sn7.inference.sliding_window import SlidingWindowPredictor
from sn7.lit.module import SegmentationTask
from sn7.utils import hardware

# One torch thread: on a shared 2-core machine two OpenMP threads make these training steps many
# times slower whenever another job runs (see the one_torch_thread fixture).
pytestmark = pytest.mark.usefixtures("one_torch_thread")

AVX2 = frozenset({"sse4_2", "avx", "avx2", "fma"})
AVX512 = AVX2 | {"avx512f", "avx512bw", "avx512vl", "avx512_vnni"}


FLAG_CASES = [
    (frozenset(), "32-true"),
    (AVX2, "32-true"),
    (AVX512, "32-true"),  # AVX-512 without bf16 instructions still emulates bf16
    (AVX512 | {"avx512_bf16"}, "bf16-mixed"),
    (AVX512 | {"amx_tile", "amx_bf16"}, "bf16-mixed"),
    (AVX2 | {"amx_bf16"}, "bf16-mixed"),
]


@pytest.mark.parametrize(("flags", "expected"), FLAG_CASES)
def test_cpu_precision_follows_cpu_flags(flags, expected):
    assert hardware.cpu_precision(flags) == expected


@pytest.mark.parametrize(("flags", "expected"), FLAG_CASES)
def test_auto_precision_reads_this_cpus_flags(monkeypatch, flags, expected):
    monkeypatch.setattr(hardware, "cpu_flags", lambda: flags)
    assert hardware.resolve_precision("auto", "cpu") == expected


def test_cpu_flags_are_read_from_the_cpuinfo_flags_line(tmp_path):
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("model name\t: Fake CPU\nflags\t\t: fpu sse4_2 avx2 amx_bf16\nbugs\t: x\n")
    flags = hardware.cpu_flags(cpuinfo)
    assert flags == {"fpu", "sse4_2", "avx2", "amx_bf16"}
    assert hardware.cpu_precision(flags) == "bf16-mixed"
    assert hardware.cpu_flags(tmp_path / "missing") == frozenset()


@pytest.mark.parametrize("flags", [AVX2, AVX512 | {"avx512_bf16"}])
def test_explicit_precision_wins_over_flags(monkeypatch, flags):
    monkeypatch.setattr(hardware, "cpu_flags", lambda: flags)
    assert hardware.resolve_precision("32-true", "cpu") == "32-true"
    assert hardware.resolve_precision("bf16-mixed", "cpu") == "bf16-mixed"


def test_channels_last_auto_is_on_and_explicit_choices_win():
    assert hardware.resolve_channels_last("auto") is True  # NHWC is never slower on a CPU
    assert hardware.resolve_channels_last(True) is True
    assert hardware.resolve_channels_last(False) is False
    with pytest.raises(ConfigError, match="channels_last"):
        hardware.resolve_channels_last("yes")


# --- accuracy: auto path vs plain fp32 on a small synthetic task --------------------------------

SIZE, CHANNELS = 64, 4
SPEC = InputSpec(bands=(1, 2, 3, 4), mean=(0.0,) * 4, std=(1.0,) * 4, crop_size=SIZE)


def bright_rectangles(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Noisy (n, 4, 64, 64) images with 1-4 bright rectangles each; masks 0/1, ignore border."""
    rng = np.random.default_rng(seed)
    images = rng.normal(0.0, 0.35, (n, CHANNELS, SIZE, SIZE)).astype(np.float32)
    images[:, 3] = 1.0  # alpha: all valid
    masks = np.zeros((n, SIZE, SIZE), np.uint8)
    for i in range(n):
        for _ in range(rng.integers(1, 5)):
            r, c = rng.integers(0, SIZE - 12, size=2)
            h, w = rng.integers(6, 16, size=2)
            masks[i, r : r + h, c : c + w] = 1
        images[i, :3] += 1.5 * masks[i]
    masks[:, :, :2] = IGNORE  # a no-data strip: excluded from loss and IoU
    return torch.from_numpy(images), torch.from_numpy(masks)


class _Crops(Dataset):
    def __init__(self, images: torch.Tensor, masks: torch.Tensor):
        self.images, self.masks = images, masks

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> dict:
        return {"image": self.images[i], "mask": self.masks[i]}


def train_and_score(precision: str, channels_last: bool, steps: int = 80) -> float:
    """Train a tiny TinyUNet through the real Trainer path, then IoU of the real inference path."""
    # weights and shuffling; not pl.seed_everything, whose env vars would outlive this test
    torch.manual_seed(0)
    task = SegmentationTask(
        model={"_target_": "sn7.models.tiny_unet.TinyUNet", "in_ch": 4, "base": 8, "depth": 2},
        loss={"_target_": "sn7.models.losses.SegmentationLoss", "bce_weight": 1, "dice_weight": 1},
        optimizer={"_target_": "torch.optim.AdamW", "_partial_": True, "lr": 0.01},
        scheduler=None,
        input_spec=SPEC.to_dict(),
        channels_last=channels_last,
    )
    loader = DataLoader(_Crops(*bright_rectangles(64, seed=1)), batch_size=8, shuffle=True)
    trainer = pl.Trainer(
        accelerator="cpu",
        devices=1,
        precision=precision,
        max_steps=steps,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        limit_val_batches=0,
    )
    trainer.fit(task, train_dataloaders=loader)

    images, masks = bright_rectangles(32, seed=2)
    predictor = SlidingWindowPredictor(
        task.model, window=SIZE, overlap=0, precision=precision, channels_last=channels_last
    )
    pred = predictor.forward(images) >= 0.5
    valid = masks != IGNORE
    truth = masks == 1
    inter = (pred & truth & valid).sum().item()
    union = ((pred | truth) & valid).sum().item()
    return inter / union


@pytest.mark.filterwarnings("ignore:You defined a `validation_step` but have no `val_dataloader`")
def test_auto_path_matches_fp32_iou():
    precision = hardware.resolve_precision("auto", "cpu")
    channels_last = hardware.resolve_channels_last("auto")
    iou_fp32 = train_and_score("32-true", False)
    iou_auto = (
        iou_fp32
        if (precision, channels_last) == ("32-true", False)
        else train_and_score(precision, channels_last)
    )
    assert iou_fp32 > 0.8, f"the synthetic task did not train (fp32 IoU {iou_fp32:.3f})"
    assert abs(iou_auto - iou_fp32) <= 0.02, (
        f"{precision}/channels_last={channels_last} IoU {iou_auto:.3f} vs fp32 {iou_fp32:.3f}"
    )
