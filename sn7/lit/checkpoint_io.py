"""How training writes and reads checkpoints: atomically, and without running their pickle.

Writing: Lightning's default writer stages the file in the system temp folder and then moves it;
when that folder is on another filesystem the move is a copy, and a kill mid-copy leaves a
truncated checkpoint where the resumable one was. Here the temp file sits beside the target and
is renamed.

Reading (resume, `ckpt_path=`): always `torch.load(weights_only=True)`, whatever the Trainer
asks for, so resuming from a checkpoint someone else sent runs no code from it. sn7 checkpoints
hold only tensors and plain values (hyperparameters are plain containers, see
SegmentationTask), so nothing legitimate needs more.
"""

from __future__ import annotations

from typing import Any

import torch
from pytorch_lightning.plugins.io import TorchCheckpointIO

from sn7.utils.atomic import atomic_path
from sn7.utils.safe_load import load_weights_only


class AtomicCheckpointIO(TorchCheckpointIO):
    def save_checkpoint(self, checkpoint: dict[str, Any], path, storage_options=None) -> None:
        if storage_options is not None or "://" in str(path):
            return super().save_checkpoint(checkpoint, path, storage_options)
        with atomic_path(path) as tmp:
            torch.save(checkpoint, tmp)

    def load_checkpoint(self, path, map_location=None, weights_only=None) -> dict[str, Any]:
        """`weights_only` is ignored: always True."""
        if "://" in str(path):  # remote (fsspec) paths: Lightning's reader, still weights_only
            return super().load_checkpoint(path, weights_only=True)
        return load_weights_only(path, map_location=map_location)
