"""A small evaluate gives the same metrics (to 3 decimals) whichever backend runs the network."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir

from sn7.evaluate import evaluate
from sn7.inference import backends

REPO = Path(__file__).resolve().parents[1]
BACKENDS = ["torch"] + [b for b in ("onnxruntime", "openvino") if backends.installed(b)]


def headline(metrics: dict) -> dict:
    """The numbers a user reads, rounded to 3 decimals."""
    pixel = metrics["pixel"]["headline"]
    numbers = {f"pixel_{k}": pixel[k] for k in ("iou", "precision", "recall", "f1")}
    numbers |= {f"building_{k}": metrics["building"][k] for k in ("f1", "precision", "recall")}
    numbers |= {"threshold_pixel": metrics["thresholds"]["pixel"],
                "threshold_building": metrics["thresholds"]["building"]}  # fmt: skip
    if metrics["scot"]:
        numbers |= {
            f"scot_{k}": metrics["scot"][k] for k in ("scot", "track_score", "change_score")
        }
    return {k: round(float(v), 3) for k, v in numbers.items()}


@pytest.mark.skipif(len(BACKENDS) < 2, reason="no inference runtime installed")
def test_every_backend_gives_the_same_metrics(tmp_path, synthetic_root, tiny_checkpoint):
    results = {}
    for backend in BACKENDS:
        ckpt = Path(shutil.copy(tiny_checkpoint, tmp_path / f"{backend}.ckpt"))
        overrides = [
            f"ckpt_path={ckpt}",
            f"data.root={synthetic_root.root}",
            f"data.work_dir={tmp_path / 'work'}",
            f"paths.run_dir={tmp_path / backend}",
            f"infer.backend={backend}",
            "trainer.precision=32-true",
            "eval.gallery=0",
            "eval.crop_metrics=false",
        ]
        with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
            cfg = compose("evaluate", overrides)
        keys = {o.split("=", 1)[0] for o in overrides}
        results[backend] = headline(evaluate(cfg, given=keys))
    reference = results["torch"]
    assert 0 < reference["pixel_iou"] < 1  # a model that is neither perfect nor blank
    for backend, numbers in results.items():
        assert numbers == reference, backend
