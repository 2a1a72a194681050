"""Sizing the quick kNN estimate a slider move shows while the landscape lacks its configuration.

The estimate runs on a stratified subset small enough to embed within ``LIVE_KNN_BUDGET_S``; the size
is a fixed function of the backbone's FLOPs and the device (never of the machine's momentary load),
so the same configuration always gets the same subset and its numbers stay comparable.
"""

from __future__ import annotations

LIVE_KNN_BUDGET_S = 0.6  # target time of one estimate pass; the kNN set shrinks to fit it
MIN_LIVE_KNN_IMAGES = 200
CPU_FLOPS_PER_S = 30e9  # conservative CPU throughput guess
GPU_FLOPS_PER_S = 2e12
HEAVY_POINT_S = 3.0  # a full-test-set point expected to cost more than this is not filled by default


def seconds_per_image_guess(flops_per_image: float, device: str) -> float:
    """Seconds to embed one image, from a conservative FLOPs rate for the device."""
    rate = GPU_FLOPS_PER_S if str(device).startswith("cuda") else CPU_FLOPS_PER_S
    return max(flops_per_image / rate, 1e-12)


def live_knn_images(flops_per_image: float, total_images: int, device: str) -> int | None:
    """How many kNN images an estimate can embed within ``LIVE_KNN_BUDGET_S``; None when all of them fit."""
    fits = int(LIVE_KNN_BUDGET_S / seconds_per_image_guess(flops_per_image, device))
    if fits >= total_images:
        return None
    return max(min(MIN_LIVE_KNN_IMAGES, total_images), fits // 100 * 100)


def fills_by_default(flops_per_image: float, images: int, device: str) -> bool:
    """Whether a landscape fills without being asked: on CUDA always; on the CPU when one full-test-set
    point (``images`` embedded) is expected to take at most ``HEAVY_POINT_S`` (the embedded ViT: ~0.1 s by
    this guess; a CPU ViT-B/16 on 2,000 images: minutes, so a button fills it on a chosen set size)."""
    return str(device).startswith("cuda") or images * seconds_per_image_guess(flops_per_image, device) <= HEAVY_POINT_S
