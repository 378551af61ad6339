"""A checkpoint's full-tile probabilities, cached on disk, so that choosing or comparing trackers
and thresholds never runs the network twice on the same image.

The key is content, not names: sha256 of the checkpoint file's hash, the inference settings that
change the numbers (window, overlap, precision, test-time flips, device type, backend) and the
normalised input array itself. Files are plain `.npy` (float32, 4 MB per 1024^2 tile), written
atomically and read with `allow_pickle=False`, so a file placed there by someone else cannot run
code.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np

from sn7.utils.atomic import atomic_path


class CachedPredictor:
    """Wraps a predictor (tile input -> probabilities); everything else is passed through."""

    def __init__(self, predictor, folder: str | Path, salt: str):
        self.predictor = predictor
        self.folder = Path(folder)
        self.salt = salt
        self.hits = 0
        self.misses = 0

    def __getattr__(self, name):  # forward, batch_size, ... of the wrapped predictor
        return getattr(self.predictor, name)

    def path_of(self, model_input: np.ndarray) -> Path:
        digest = hashlib.sha256(self.salt.encode())
        digest.update(f"{model_input.shape}{model_input.dtype}".encode())
        digest.update(np.ascontiguousarray(model_input).tobytes())
        key = digest.hexdigest()
        return self.folder / key[:2] / f"{key}.npy"

    def __call__(self, model_input: np.ndarray) -> np.ndarray:
        path = self.path_of(model_input)
        if path.is_file():
            try:
                prob = np.load(path, allow_pickle=False)
                if prob.shape == model_input.shape[1:] and prob.dtype == np.float32:
                    self.hits += 1
                    return prob
            except (OSError, ValueError):
                pass  # a broken file is computed again and replaced
        prob = np.asarray(self.predictor(model_input), np.float32)
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(path) as tmp, open(tmp, "wb") as fh:
            np.save(fh, prob, allow_pickle=False)
        self.misses += 1
        return prob


def cache_salt(checkpoint_sha256: str, infer) -> str:
    """What, besides the input, decides the probabilities: the weights and how windows run."""
    return "|".join(
        str(v)
        for v in (
            checkpoint_sha256,
            infer.window,
            infer.overlap,
            infer.precision,
            infer.tta,
            infer.device.type,
            infer.backend,
        )
    )
