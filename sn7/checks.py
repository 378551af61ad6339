"""Up-front checks of config values, so a typo fails in a second, not after minutes of work.

Each stage (and the DataModule) calls the checks for the config nodes it uses before it touches
any data. Values that need the data (crop size vs tile size, AOIs of a split) are checked there.
A leaf module: it imports only the layout's option lists, the window check and the errors
(and, when infer.device is checked, sn7.utils.hardware's device check, lazily: it imports torch).
"""

from __future__ import annotations

from collections.abc import Mapping

from sn7.data.layout import check_layout_options
from sn7.data.split import SPLITS
from sn7.data.windows import check_window
from sn7.errors import ConfigError

ON_ERROR = ("fail", "skip")
EVAL_SPLITS = (*SPLITS, "all")


def _require(ok: bool, message: str) -> None:
    if not ok:
        raise ConfigError(message)


def check_data(data: Mapping) -> None:
    check_layout_options(data["image_dir"], data["label_source"])
    _require(
        data["on_error"] in ON_ERROR,
        f"data.on_error={data['on_error']!r} must be one of {list(ON_ERROR)}",
    )
    _require(
        data.get("workers") is None or int(data["workers"]) >= 1,
        f"data.workers={data.get('workers')} must be >= 1 (or null = all cores)",
    )


def check_training_data(data: Mapping) -> None:
    check_data(data)
    _require(int(data["crop_size"]) >= 16, f"data.crop_size={data['crop_size']} must be >= 16")
    _require(
        0.0 <= float(data["pos_fraction"]) <= 1.0,
        f"data.pos_fraction={data['pos_fraction']} must be in [0, 1]",
    )
    for key in ("batch_size", "val_batch_size", "samples_per_epoch"):
        _require(int(data[key]) >= 1, f"data.{key}={data[key]} must be >= 1")
    _require(
        int(data["samples_per_epoch"]) >= int(data["batch_size"]),
        f"data.samples_per_epoch={data['samples_per_epoch']} is smaller than one batch "
        f"(data.batch_size={data['batch_size']})",
    )
    _require(int(data["num_workers"]) >= 0, f"data.num_workers={data['num_workers']} must be >= 0")


def check_infer(infer: Mapping) -> None:
    window, overlap = int(infer["window"]), int(infer["overlap"])
    _require(window >= 16, f"infer.window={window} must be >= 16")
    check_window(window, overlap)
    batch = infer["batch_size"]
    _require(
        batch == "auto" or (isinstance(batch, int) and not isinstance(batch, bool) and batch >= 1),
        f"infer.batch_size={batch} must be auto or a whole number >= 1",
    )
    from sn7.inference.backends import resolve_backend  # lazily: they import torch
    from sn7.utils.hardware import resolve_device

    resolve_backend(infer.get("backend", "auto"), resolve_device(infer.get("device", "auto")))


def check_eval(ev: Mapping) -> None:
    _require(ev["split"] in EVAL_SPLITS, f"eval.split={ev['split']!r} must be one of {EVAL_SPLITS}")
    t = ev["thresholds"]
    _require(
        0 < t["start"] <= t["stop"] < 1 and t["step"] > 0,
        f"eval.thresholds={dict(t)} needs 0 < start <= stop < 1 and step > 0",
    )
    _require(
        ev["threshold"] is None or 0 < float(ev["threshold"]) < 1,
        f"eval.threshold={ev['threshold']} must be null or in (0, 1)",
    )
    _require(
        float(ev["min_area"]) >= 0 and float(ev["min_truth_area"]) >= 0,
        "eval.min_area and eval.min_truth_area must be >= 0",
    )
    _require(0 < float(ev["iou_match"]) <= 1, f"eval.iou_match={ev['iou_match']} must be in (0, 1]")
    n = ev.get("publish_gallery")
    _require(n is None or int(n) >= 0, f"eval.publish_gallery={n} must be null or >= 0")


def check_predict(p: Mapping) -> None:
    _require(
        p["prob_dtype"] in ("uint8", "float32"),
        f"predict.prob_dtype={p['prob_dtype']!r} must be uint8 or float32",
    )
    _require(
        p["threshold"] in ("auto", "auto_buildings") or 0 < float(p["threshold"]) < 1,
        f"predict.threshold={p['threshold']} must be 'auto' or in (0, 1)",
    )
    _require(float(p["min_area"]) >= 0, f"predict.min_area={p['min_area']} must be >= 0")
    _require(
        int(p.get("max_scene_px", 1)) >= 1,
        f"predict.max_scene_px={p.get('max_scene_px')} must be >= 1",
    )
