"""The explorer's slider grid and the published (MLP, head) path the "overall" slider follows."""

from __future__ import annotations

import numpy as np

from snapvit_core.presets import PUBLISHED_SPARSITY_PAIRS

SLIDER_STEP = 0.05  # sparsity sliders move in 5% steps
MAX_SPARSITY = 0.95  # the sliders' upper end
GRID = tuple(round(i * SLIDER_STEP, 2) for i in range(round(MAX_SPARSITY / SLIDER_STEP) + 1))  # 0, 0.05 ... 0.95


def snap(value: float) -> float:
    """Round to the slider grid (0.05 steps, within [0, 0.95])."""
    return float(min(MAX_SPARSITY, max(0.0, round(round(value / SLIDER_STEP) * SLIDER_STEP, 2))))


def published_path(overall: float) -> tuple[float, float]:
    """(MLP, head) sparsity on the published path at MLP sparsity ``overall``.

    Interpolates PUBLISHED_SPARSITY_PAIRS; past the last published pair the head sparsity keeps the
    path's final slope. Both values are snapped to the slider grid.
    """
    mlp = np.array([p[0] for p in PUBLISHED_SPARSITY_PAIRS])
    head = np.array([p[1] for p in PUBLISHED_SPARSITY_PAIRS])
    if overall <= mlp[-1]:
        value = float(np.interp(overall, mlp, head))
    else:
        slope = (head[-1] - head[-2]) / (mlp[-1] - mlp[-2])
        value = float(head[-1] + slope * (overall - mlp[-1]))
    return snap(overall), snap(value)
