"""Sizing of the quick kNN estimate (ui/live.py): a fixed function of FLOPs and device, never of load."""

from __future__ import annotations

from ui.live import LIVE_KNN_BUDGET_S, MIN_LIVE_KNN_IMAGES, live_knn_images, seconds_per_image_guess


def test_live_knn_images_fits_the_budget_in_whole_hundreds():
    assert live_knn_images(1e6, 1797, "cpu") is None  # a tiny model: everything fits
    flops = LIVE_KNN_BUDGET_S / 730 * 30e9  # 730 images fit at the CPU guess
    assert live_knn_images(flops, 1797, "cpu") == 700
    assert live_knn_images(flops * 2, 1797, "cpu") == 300  # twice the FLOPs: a smaller subset
    assert live_knn_images(1e15, 1797, "cpu") == MIN_LIVE_KNN_IMAGES  # never below the floor
    assert live_knn_images(flops, 1797, "cuda") is None  # a GPU embeds everything in time


def test_seconds_per_image_guess_is_faster_on_a_gpu():
    assert seconds_per_image_guess(1e9, "cuda:0") < seconds_per_image_guess(1e9, "cpu")
