"""The gallery shows the IoU its caller measured (sn7.viz.gallery.Gallery)."""

from __future__ import annotations

import numpy as np

from sn7.viz.gallery import Gallery


def test_labels_show_the_given_iou_or_no_truth(tmp_path):
    rgb = np.zeros((32, 32, 3), np.uint8)
    prob = np.linspace(0, 1, 32 * 32, dtype=np.float32).reshape(32, 32)
    truth = (prob > 0.5).astype(np.uint8)
    gallery = Gallery(tmp_path, thumb=16)
    assert gallery.add("a", rgb, prob, 0.5, truth, iou=0.25).is_file()
    gallery.add("b", rgb, prob, 0.5)
    assert gallery.labels == ["a  IoU 0.250 @ 0.50", "b  (no truth found)"]
    assert gallery.finish() == tmp_path / "index.png"
