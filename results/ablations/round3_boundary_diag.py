"""Diagnostic, not a grid row: where the boundary lever's pixel IoU goes.

    python results/ablations/round3_boundary_diag.py FOLD SEED

Oracle pixel IoU (best threshold of 0.05..0.95 on the report AOI itself: a diagnostic, never a
reported number) of the baseline checkpoint's map, and of the boundary checkpoint's fused map
p_b x (1 - p_c) and its building head alone. Whole tiles in one forward pass at bf16 (evaluate
uses overlapping windows: the baseline's oracle agrees to 0.001). Needs the runs' checkpoints in
outputs/round3/ and the sample's prepare cache in outputs/prepared/.
"""

import sys
from pathlib import Path

import numpy as np
import torch

from sn7.data.prepared import load_prepared
from sn7.data.raster_io import read_png
from sn7.inference.backends import fold_batch_norm
from sn7.inference.checkpoint import load_model
from sn7.inference.tiles import read_tile
from sn7.utils.hardware import autocast

torch.set_num_threads(1)
p = load_prepared(next(Path("outputs/prepared").glob("sn7_sample-*")))
report_aoi = {0: "L15-0357E-1223N_1429_3296_13", 1: "L15-0331E-1257N_1327_3160_13"}
fold, seed = int(sys.argv[1]), int(sys.argv[2])
rows = p.manifest[p.manifest.aoi == report_aoi[fold]]
thr = np.round(np.arange(0.05, 0.96, 0.05), 2)


def maps(ckpt):
    m = load_model(ckpt)
    model = fold_batch_norm(m.model)
    for _, r in rows.iterrows():
        t = read_tile(r.image, m.spec)
        with torch.inference_mode(), autocast("bf16-mixed"):
            z = model(torch.from_numpy(t.model_input)[None]).float()[0]
        yield z, t.valid, read_png(r["mask"])


def counts(prob, truth, valid):
    ok = valid & (truth != 255)
    y = truth == 1
    return np.array(
        [
            [
                ((prob >= c) & y & ok).sum(),
                ((prob >= c) & ~y & ok).sum(),
                ((prob < c) & y & ok).sum(),
            ]
            for c in thr
        ]
    )


acc = {}
for name, ckpt in [
    ("baseline", f"outputs/round3/baseline/fold{fold}_seed{seed}/checkpoints/best.ckpt"),
    ("boundary", f"outputs/round3/boundary/fold{fold}_seed{seed}/checkpoints/best.ckpt"),
]:
    for z, valid, truth in maps(ckpt):
        pb = torch.sigmoid(z[0]).numpy()
        variants = (
            {name: pb}
            if z.shape[0] == 1
            else {
                "boundary fused": pb * (1 - torch.sigmoid(z[2]).numpy()),
                "boundary building head": pb,
            }
        )
        for k, v in variants.items():
            acc[k] = acc.get(k, 0) + counts(v, truth, valid)
for k, c in acc.items():
    iou = c[:, 0] / np.maximum(c.sum(1), 1)
    i = iou.argmax()
    print(f"fold {fold} seed {seed} {k:24s} oracle IoU {iou[i]:.3f} @ {thr[i]:.2f}")
