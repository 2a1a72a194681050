"""What the Streamlit pages still take from the library: the device choice, as a plain function.

The explorer's measurements moved to ``Explorer`` (``cost``, ``evaluate``, ``measure_latency_now``),
latency timing helpers to ``metrics`` (``paired_rounds``, ``median_speedup``), method sweeps and the
Pareto front to ``sweep``, the budget finder to ``budget``; the slider grid, budget labels and number
formats to the app (``ui/``).
"""

from __future__ import annotations

import torch

from .errors import SnapViTError


def resolve_device(choice: str) -> str:
    """'auto' -> 'cuda' when available else 'cpu'; 'cuda' without a GPU is refused."""
    if choice == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if choice == "cuda" and not torch.cuda.is_available():
        raise SnapViTError("CUDA was requested but no GPU is visible to PyTorch.", "Choose 'cpu' or 'auto'.")
    return choice
