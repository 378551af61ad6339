"""Clean-up of a binary building mask before it is cut into buildings (evaluate and predict).

Each step is optional and off by default; the ablations in results/cpu_best/ show which help.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

_CROSS = ndimage.generate_binary_structure(2, 1)


def clean_mask(mask: np.ndarray, opening: int = 0, fill_holes: bool = False) -> np.ndarray:
    """`opening`: iterations of a 3x3-cross binary opening (removes 1-px spurs and bridges
    that merge neighbouring buildings); `fill_holes`: fill enclosed background."""
    out = mask.astype(bool)
    if opening > 0:
        out = ndimage.binary_opening(out, structure=_CROSS, iterations=int(opening))
    if fill_holes:
        out = ndimage.binary_fill_holes(out, structure=_CROSS)
    return out
