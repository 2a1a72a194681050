"""Numeric precision of forward passes: the one rule scoring and the multiplier search share.

``auto`` (the default): bfloat16 autocast on CUDA GPUs with bf16 (Ampere and later), float32 elsewhere.
CPU results stay reproducible and equal to the published implementation's (scores to 6e-7 on
identical crops).
``fp32``: float32 everywhere.
``bf16``: bfloat16 autocast on any device that computes bf16 natively: CUDA GPUs with bf16, and CPUs
with AVX512-BF16 or AMX (through oneDNN). On such a CPU matrix products, scoring and fitness evaluations
run faster than in fp32; scores and fitness values then differ from fp32 at bf16 round-off (the figures in
``results/scale.md``, from ``benchmarks/bench_scoring.py`` and ``benchmarks/bench_search.py --fitness-only``).
A device that would emulate bf16, which is slower than fp32, is refused.
"""

from __future__ import annotations

import contextlib

import torch

from snapvit_core.errors import SnapViTError

PRECISIONS = ("auto", "fp32", "bf16")


def check_precision(precision: str) -> str:
    """``precision`` if it is one of PRECISIONS, else a ``SnapViTError`` naming them."""
    if precision not in PRECISIONS:
        raise SnapViTError(f"Unknown precision {precision!r}.", f"Choose one of: {', '.join(PRECISIONS)}.")
    return precision


def native_bf16(device: str | torch.device) -> bool:
    """Whether ``device`` computes bfloat16 matrix products in hardware."""
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    if device.type == "cpu":
        return torch.backends.mkldnn.is_available() and bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    return False


def autocast_dtype(precision: str, device: str | torch.device) -> torch.dtype | None:
    """The autocast dtype ``precision`` means on ``device``: ``torch.bfloat16``, or None for float32."""
    device = torch.device(device)
    check_precision(precision)
    if precision == "fp32":
        return None
    if precision == "auto":  # bf16 on a GPU that has it (a pre-Ampere GPU would emulate it: fp32 there)
        return torch.bfloat16 if device.type == "cuda" and native_bf16(device) else None
    if not native_bf16(device):
        raise SnapViTError(
            f"precision 'bf16' was asked for on {device}, which has no native bfloat16 support "
            "(emulated bf16 is slower than fp32).",
            "Use --precision fp32 (or auto) on this machine.",
        )
    return torch.bfloat16


def autocast_context(dtype: torch.dtype | None, device: str | torch.device) -> contextlib.AbstractContextManager:
    """A fresh autocast context for ``dtype`` on ``device`` (a null context for float32)."""
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(torch.device(device).type, dtype=dtype)
