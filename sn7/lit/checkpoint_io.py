"""Checkpoints written atomically: a job killed while saving keeps the previous last.ckpt.

Lightning's default writer stages the file in the system temp folder and then moves it; when that
folder is on another filesystem the move is a copy, and a kill mid-copy leaves a truncated
checkpoint where the resumable one was. Here the temp file sits beside the target and is renamed.
"""

from __future__ import annotations

from typing import Any

import torch
from pytorch_lightning.plugins.io import TorchCheckpointIO

from sn7.utils.atomic import atomic_path


class AtomicCheckpointIO(TorchCheckpointIO):
    def save_checkpoint(self, checkpoint: dict[str, Any], path, storage_options=None) -> None:
        if storage_options is not None or "://" in str(path):
            return super().save_checkpoint(checkpoint, path, storage_options)
        with atomic_path(path) as tmp:
            torch.save(checkpoint, tmp)
