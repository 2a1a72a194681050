"""Device names: the one rule set the command line (``--device``) and the app's device choice share.

Accepted: ``cpu``, ``cuda``, ``cuda:N`` and ``auto`` (``cuda`` when PyTorch sees a GPU, else ``cpu``).
A CUDA device that PyTorch cannot see, or any other name, is refused with a ``SnapViTError``.
"""

from __future__ import annotations

import re

import torch

from snapvit_core.errors import SnapViTError

_CUDA = re.compile(r"cuda(?::(\d+))?")


def resolve_device(name: str) -> str:
    """'auto' -> 'cuda' when a GPU is visible, else 'cpu'; 'cpu', 'cuda' and 'cuda:N' are checked and returned."""
    name = str(name).strip()
    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cpu":
        return name
    match = _CUDA.fullmatch(name)
    if match is None:
        raise SnapViTError(f"Unknown device '{name}'.", "Use cpu, cuda, cuda:N or auto.")
    if not torch.cuda.is_available():
        raise SnapViTError(
            f"Device '{name}' was requested but no CUDA GPU is visible to PyTorch.", "Use cpu or auto instead."
        )
    if match.group(1) is not None and int(match.group(1)) >= torch.cuda.device_count():
        raise SnapViTError(
            f"Device '{name}' does not exist: PyTorch sees {torch.cuda.device_count()} CUDA GPU(s).",
            f"Use cuda:0 ... cuda:{torch.cuda.device_count() - 1}, cuda or auto.",
        )
    return name
