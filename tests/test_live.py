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


def test_heavy_backbones_fill_on_request_on_the_cpu_and_by_default_on_cuda():
    from ui.live import fills_by_default

    embedded, vit_b = 23.6e6, 17.6e9  # FLOPs per image
    assert fills_by_default(embedded, 1797, "cpu")
    assert not fills_by_default(vit_b, 2000, "cpu")  # minutes per point: a button fills it
    assert fills_by_default(vit_b, 2000, "cuda")
    assert fills_by_default(vit_b, 3, "cpu")  # a tiny kNN set is cheap enough


def test_filling_a_heavy_landscape_on_a_chosen_set_size(tmp_path, monkeypatch):
    import torch
    from conftest import make_vit

    from snapvit_core.engine.backbones import Backbone
    from snapvit_core.evaluation.features import KnnEvaluator
    from snapvit_core.explorer import Explorer
    from snapvit_core.landscape.fill import LandscapeFiller
    from snapvit_core.landscape.store import landscape_key, open_landscape
    from snapvit_core.scoring.data_free import magnitude_scores
    from ui.session import SharedExplorer

    monkeypatch.setenv("SNAPVIT_CACHE_DIR", str(tmp_path))
    model = make_vit()
    explorer = Explorer(Backbone(model, "tiny", {"input_size": (3, 32, 32)}), magnitude_scores(model))
    images, labels = torch.randn(60, 3, 32, 32, generator=torch.Generator().manual_seed(0)), torch.arange(60) % 3
    explorer.attach_knn(KnnEvaluator(images[:40], labels[:40], images[40:], labels[40:], k=5))
    landscape = open_landscape(landscape_key(explorer, "random", grid=0.5))
    shared = SharedExplorer(explorer, landscape, LandscapeFiller(explorer, landscape, autofill=False), heavy=True)
    assert not shared.filler.status().filling and len(shared.landscape) == 0
    shared.fill(30)  # the button: fill on 30 kNN images
    assert shared.landscape.key.knn_images == 30 and shared.filler.status().filling
    assert shared.filler.wait(timeout=120) and shared.landscape.complete
    point = shared.landscape.get(0.5, 0.5)
    assert point.knn_top1 == explorer.evaluate(0.5, 0.5, ("knn",), knn_images=30).knn_top1
