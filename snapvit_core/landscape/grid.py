"""The (MLP, head) sparsity grid: the sliders' axis, a configuration's key and the published path.

One owner for what the landscape, the budget search, the app's sliders, its links and the browser's
script must agree on. The browser gets the keys and the path as data (``path_keys``), never by re-deriving them.
"""

from __future__ import annotations

import math

import numpy as np

from snapvit_core.errors import SnapViTError
from snapvit_core.presets import PUBLISHED_SPARSITY_PAIRS

GRID_STEP = 0.05  # the sliders' step: 20 x 20 = 400 configurations
MAX_SPARSITY = 0.95  # the upper end of both axes
MAX_GRID_POINTS = 4096  # configurations in one landscape (64 x 64: a step of 0.015); each is a kNN pass
KEY_DECIMALS = 2  # a key prints values as the sliders do ('%.2f'); finer steps than 0.01 print more


def grid_axis(step: float = GRID_STEP) -> tuple[float, ...]:
    """Sparsities 0, step, ... up to MAX_SPARSITY (rounded to 6 decimals, so they compare exactly)."""
    if not (isinstance(step, (int, float)) and math.isfinite(step) and 0.0 < step <= 0.5):
        raise SnapViTError(f"The landscape grid step must be in (0, 0.5], got {step!r}.", "Use e.g. --grid 0.05.")
    per_axis = MAX_SPARSITY / step + 1e-9  # checked before anything is sized by it (1e-300 would overflow)
    largest = math.isqrt(MAX_GRID_POINTS)
    if not per_axis < largest:
        shown = f"{per_axis + 1:.3g}" if per_axis < 1e15 else "more than 1e15"
        raise SnapViTError(
            f"A landscape grid step of {step!r} gives {shown} x {shown} configurations, more than the "
            f"{MAX_GRID_POINTS:,} ({largest} x {largest}) a landscape may hold.",
            f"Use a step of at least {math.ceil(1000 * MAX_SPARSITY / (largest - 1)) / 1000} (e.g. --grid 0.05).",
        )
    count = int(math.floor(per_axis)) + 1
    return tuple(round(i * step, 6) for i in range(count))


def fine_axis(step: float) -> np.ndarray:
    """A finer axis than a landscape holds (the budget search's plane): 0, step, ... MAX_SPARSITY."""
    if not (math.isfinite(step) and 0.0 < step <= 0.5):
        raise SnapViTError(f"The search step must be in (0, 0.5], got {step}.", "Use e.g. 0.025.")
    return np.round(np.arange(0.0, MAX_SPARSITY + 1e-9, step), 6)


def on_grid(value: float, step: float = GRID_STEP) -> float | None:
    """``value`` as its grid point when it lies on the grid (to 1e-9), else None."""
    index = round(float(value) / step)
    snapped = round(index * step, 6)
    return snapped if abs(snapped - float(value)) < 1e-9 and 0.0 <= snapped <= MAX_SPARSITY + 1e-9 else None


def snap(value: float, step: float = GRID_STEP) -> float:
    """The grid point nearest ``value``, within [0, MAX_SPARSITY]."""
    return float(min(MAX_SPARSITY, max(0.0, round(round(float(value) / step) * step, 6))))


def in_range(value: float) -> bool:
    """Whether ``value`` is a sparsity the grid spans (finite, 0..MAX_SPARSITY)."""
    return math.isfinite(value) and 0.0 <= value <= MAX_SPARSITY + 1e-9


def value_text(value: float) -> str:
    """A sparsity as the sliders print it, and as keys hold it: '0.15'."""
    return f"{value:.{KEY_DECIMALS}f}"


def grid_key(mlp_sparsity: float, head_sparsity: float) -> str:
    """The key of a configuration: '0.15|0.25' (the browser's tables are keyed by it)."""
    return f"{value_text(mlp_sparsity)}|{value_text(head_sparsity)}"


def neighbours(configuration: tuple[float, float], axis: tuple[float, ...]) -> list[tuple[float, float]]:
    """The up-to-8 grid neighbours of a grid configuration (nearest first: edges, then corners)."""
    index = {value: i for i, value in enumerate(axis)}
    if configuration[0] not in index or configuration[1] not in index:
        return []
    i, j = index[configuration[0]], index[configuration[1]]
    steps = [(-1, 0), (1, 0), (0, -1), (0, 1), (-1, -1), (-1, 1), (1, -1), (1, 1)]
    return [(axis[i + a], axis[j + b]) for a, b in steps if 0 <= i + a < len(axis) and 0 <= j + b < len(axis)]


def published_points(step: float = GRID_STEP) -> list[tuple[float, float]]:
    """The published (MLP, head) pairs that lie on the grid (where the landscape marks the path)."""
    on = [(on_grid(m, step), on_grid(h, step)) for m, h in PUBLISHED_SPARSITY_PAIRS]
    return [(m, h) for m, h in on if m is not None and h is not None]


def published_path(overall: float, step: float = GRID_STEP) -> tuple[float, float]:
    """(MLP, head) sparsity on the published path at MLP sparsity ``overall``, snapped to the grid.

    Interpolates PUBLISHED_SPARSITY_PAIRS; past the last published pair the head sparsity keeps the
    path's final slope. The "overall" slider moves both sparsities along it.
    """
    mlp = np.array([p[0] for p in PUBLISHED_SPARSITY_PAIRS])
    head = np.array([p[1] for p in PUBLISHED_SPARSITY_PAIRS])
    if overall <= mlp[-1]:
        value = float(np.interp(overall, mlp, head))
    else:
        slope = (head[-1] - head[-2]) / (mlp[-1] - mlp[-2])
        value = float(head[-1] + slope * (overall - mlp[-1]))
    return snap(overall, step), snap(value, step)


def path_keys(step: float = GRID_STEP) -> dict[str, str]:
    """The overall slider's printed values -> the keys of the published-path points they move to."""
    return {value_text(overall): grid_key(*published_path(overall, step)) for overall in grid_axis(step)}
