"""The explorer's background worker (ui/live.py): live kNN set sizing from the measured rate."""

from __future__ import annotations

import time
from types import SimpleNamespace

from ui.live import LIVE_KNN_BUDGET_S, MIN_LIVE_KNN_IMAGES, LiveRequest, LiveWorker, live_knn_images


def test_live_knn_images_fits_the_budget_in_whole_hundreds():
    assert live_knn_images(1e6, 1797, "cpu", ms_per_image=0.01) is None  # everything fits
    slow = 1e3 * LIVE_KNN_BUDGET_S / 730  # 730 images fit
    assert live_knn_images(1e6, 1797, "cpu", ms_per_image=slow) == 700
    assert live_knn_images(1e6, 1797, "cpu", ms_per_image=slow * 1.02) == 700  # a little load: same subset
    assert live_knn_images(1e6, 1797, "cpu", ms_per_image=slow * 2) == 300  # twice as slow: smaller subset
    assert live_knn_images(1e6, 1797, "cpu", ms_per_image=1e3) == MIN_LIVE_KNN_IMAGES  # never below the floor


class _FakeExplorer:
    """evaluate() takes ``seconds`` per call and reports a 500-image subset."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds

    def evaluate(self, mlp, head, metrics, knn_images=None, cancel=None):
        time.sleep(self.seconds)
        return SimpleNamespace(knn_set="subset: 500 of 1,797 images", knn_top1=0.9)


def _run(worker: LiveWorker, request: LiveRequest) -> None:
    worker.request(request)
    assert worker.wait_idle(timeout=30)


def test_worker_measures_its_time_per_image_and_ignores_cached_passes():
    explorer = _FakeExplorer(seconds=0.2)
    worker = LiveWorker(explorer, calibrate_latency=False)
    try:
        assert worker.observed_ms_per_image() is None
        _run(worker, LiveRequest(0.3, 0.2, ("knn",), 500))  # the (0, 0) baseline runs first, then the move
        measured = worker.observed_ms_per_image()
        assert measured is not None and 0.3 < measured < 2.0  # ~0.2 s / 500 images = 0.4 ms
        explorer.seconds = 0.0  # a configuration seen before: served from the feature cache
        _run(worker, LiveRequest(0.35, 0.2, ("knn",), 500))
        assert worker.observed_ms_per_image() == measured
        explorer.seconds = 0.6  # the machine got slower: the rate follows
        _run(worker, LiveRequest(0.4, 0.2, ("knn",), 500))
        assert worker.observed_ms_per_image() > measured
    finally:
        worker.stop()
        worker.join(5)
