"""Matplotlib figures written atomically: PR curve of a threshold sweep, per-tile galleries."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only; never needs a display
import matplotlib.pyplot as plt
import numpy as np

from sn7.utils.atomic import atomic_path


def save_figure(fig, path: str | Path, dpi: int = 100) -> None:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=dpi, bbox_inches="tight", format=Path(path).suffix.lstrip("."))
    plt.close(fig)


def pr_curve_figure(sweep: Sequence[dict], best: dict, title: str):
    """Precision-recall curve with each threshold marked and the best-IoU threshold highlighted."""
    recall = [r["recall"] for r in sweep]
    precision = [r["precision"] for r in sweep]
    fig, (ax, ax2) = plt.subplots(1, 2, figsize=(11, 4.5))
    ax.plot(recall, precision, "o-", ms=3)
    for r in sweep[::2]:
        ax.annotate(
            f"{r['threshold']:.2f}",
            (r["recall"], r["precision"]),
            fontsize=7,
            xytext=(3, 3),
            textcoords="offset points",
        )
    ax.plot(
        best["recall"], best["precision"], "r*", ms=14, label=f"best IoU @ {best['threshold']:.2f}"
    )
    ax.set(xlabel="recall", ylabel="precision", xlim=(0, 1), ylim=(0, 1), title="precision-recall")
    ax.grid(alpha=0.3)
    ax.legend(loc="lower left")
    thresholds = [r["threshold"] for r in sweep]
    for key in ("iou", "precision", "recall", "f1"):
        ax2.plot(thresholds, [r[key] for r in sweep], label=key)
    ax2.axvline(best["threshold"], color="r", ls="--", lw=1)
    ax2.set(xlabel="threshold", ylim=(0, 1), title="pixel metrics vs threshold")
    ax2.grid(alpha=0.3)
    ax2.legend()
    fig.suptitle(title)
    return fig


def tile_figure(panels: Sequence[np.ndarray], titles: Sequence[str], suptitle: str):
    """One row of image panels (H, W, 3) with a title each."""
    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 4.6))
    for ax, panel, title in zip(np.atleast_1d(axes), panels, titles, strict=True):
        ax.imshow(panel, interpolation="nearest")
        ax.set_title(title, fontsize=10)
        ax.axis("off")
    fig.suptitle(suptitle, fontsize=11)
    fig.tight_layout()
    return fig


def contact_sheet(rows: Sequence[np.ndarray], labels: Sequence[str], max_width: int = 1600):
    """Stack panel rows (each an (H, W, 3) strip) into one overview figure."""
    scale = [min(1.0, max_width / r.shape[1]) for r in rows]
    thumbs = [
        r[:: max(1, round(1 / s)), :: max(1, round(1 / s))]
        for r, s in zip(rows, scale, strict=True)
    ]
    fig, axes = plt.subplots(len(thumbs), 1, figsize=(16, 4.2 * len(thumbs)), squeeze=False)
    for ax, thumb, label in zip(axes[:, 0], thumbs, labels, strict=True):
        ax.imshow(thumb, interpolation="nearest")
        ax.set_title(label, fontsize=10, loc="left")
        ax.axis("off")
    fig.tight_layout()
    return fig
