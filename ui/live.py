"""Background evaluation for the explorer: the latest slider position wins.

A slider move redraws the cost cards and maps at once (``Explorer.cost``, no forward pass) and hands
the configuration to the session's ``LiveWorker``. The worker evaluates kNN accuracy and embedding
similarity in its own thread, always for the newest requested configuration: its ``cancel`` returns
True as soon as a newer one is requested, so stale work stops instead of queueing. When nothing is
pending it loads or calibrates the latency model (cached on disk per backbone/device/dtype/threads).

Pages only call ``request``, ``latest`` and ``latency_status``; the explorer's own lock is taken
inside the library calls, never here or in a page.
"""

from __future__ import annotations

import atexit
import logging
import re
import threading
import time
import weakref
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from snapvit_core.errors import CancelledError, SnapViTError

log = logging.getLogger(__name__)

IDLE_EXIT_S = 600.0  # a worker whose session went away exits after this long without requests
LIVE_KNN_BUDGET_S = 0.6  # target time of one live kNN pass; the kNN set shrinks to fit it
MIN_LIVE_KNN_IMAGES = 200
CPU_FLOPS_PER_S = 30e9  # conservative CPU throughput guess until the latency model is calibrated
GPU_FLOPS_PER_S = 2e12


@dataclass(frozen=True)
class LiveRequest:
    """One configuration to evaluate and how."""

    mlp_sparsity: float
    head_sparsity: float
    metrics: tuple[str, ...]
    knn_images: int | None  # None: the whole kNN data


@dataclass(frozen=True)
class LiveResult:
    """The outcome of one request: a result, or an error message (never a traceback)."""

    request: LiveRequest
    result: Any | None  # snapvit_core.explorer.EvaluationResult
    error: str | None
    seconds: float


def live_knn_images(
    flops_per_image: float, total_images: int, device: str, ms_per_image: float | None = None
) -> int | None:
    """How many kNN images a live slider move can embed within ``LIVE_KNN_BUDGET_S``.

    Uses the latency model's per-image time when known, else a conservative FLOPs-rate guess.
    Returns None when the whole set fits (the usual case for the embedded backbone).
    """
    if ms_per_image is not None and ms_per_image > 0:
        seconds_per_image = ms_per_image / 1e3
    else:
        rate = GPU_FLOPS_PER_S if str(device).startswith("cuda") else CPU_FLOPS_PER_S
        seconds_per_image = flops_per_image / rate
    fits = int(LIVE_KNN_BUDGET_S / max(seconds_per_image, 1e-12))
    if fits >= total_images:
        return None
    # Whole hundreds: a size that changes with the machine's load changes the kNN subset (and needs a new
    # unpruned baseline on it), so small fluctuations of the measured rate must not move it.
    return max(min(MIN_LIVE_KNN_IMAGES, total_images), fits // 100 * 100)


_WORKERS: weakref.WeakSet[LiveWorker] = weakref.WeakSet()


@atexit.register
def _stop_all_workers() -> None:
    """At interpreter exit: stop the workers and let a running forward finish (no abort in torch code)."""
    workers = list(_WORKERS)
    for worker in workers:
        worker.stop()
    for worker in workers:
        worker.join(timeout=10.0)


class LiveWorker:
    """One daemon thread per session and explorer; ``request`` replaces any pending configuration."""

    def __init__(self, explorer: Any, calibrate_latency: bool = True) -> None:
        self.explorer = explorer
        self._calibrate = calibrate_latency
        self._condition = threading.Condition()
        self._wanted: LiveRequest | None = None
        self._results: dict[LiveRequest, LiveResult] = {}
        self._latest: LiveResult | None = None
        self._busy_with: LiveRequest | None = None
        self._latency_state = "waiting" if calibrate_latency else "off"
        self._latency_progress = 0.0
        self._stopped = False
        self._thread: threading.Thread | None = None
        self._ms_per_image: float | None = None  # measured kNN pass time per image (smoothed), None until one ran
        _WORKERS.add(self)

    # ---- called from script threads -------------------------------------------------------------
    def request(self, request: LiveRequest) -> None:
        with self._condition:
            if request in self._results:
                return
            self._wanted = request
            self._condition.notify_all()
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._loop, name="snapvit-live", daemon=True)
                self._thread.start()

    def result_for(self, request: LiveRequest) -> LiveResult | None:
        """The finished result of exactly this request, or None while it is pending."""
        with self._condition:
            return self._results.get(request)

    def latest(self) -> LiveResult | None:
        """The most recently finished result (possibly for another configuration)."""
        with self._condition:
            return self._latest

    def pending(self, request: LiveRequest) -> bool:
        with self._condition:
            return request not in self._results

    def observed_ms_per_image(self) -> float | None:
        """Measured time per image of this worker's kNN passes (smoothed): reflects the machine's load now."""
        with self._condition:
            return self._ms_per_image

    def latency_status(self) -> tuple[str, float]:
        """('waiting' | 'calibrating' | 'ready' | 'failed' | 'off', fraction done)."""
        with self._condition:
            return self._latency_state, self._latency_progress

    def stop(self) -> None:
        with self._condition:
            self._stopped = True
            self._condition.notify_all()

    def join(self, timeout: float | None = None) -> None:
        thread = self._thread
        if thread is not None:
            thread.join(timeout)

    def wait_idle(self, timeout: float = 120.0) -> bool:
        """Block until the latest request is done and the latency model is not calibrating (tests)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._condition:
                done = self._wanted is None or self._wanted in self._results
                if done and self._latency_state not in ("waiting", "calibrating"):
                    return True
            time.sleep(0.05)
        return False

    # ---- the worker thread ----------------------------------------------------------------------
    def _superseded(self, request: LiveRequest) -> bool:
        with self._condition:
            return self._stopped or self._wanted != request

    def _loop(self) -> None:
        idle_since = time.monotonic()
        while True:
            with self._condition:
                while not self._stopped and (self._wanted is None or self._wanted in self._results):
                    if self._latency_state == "waiting":
                        break
                    if time.monotonic() - idle_since > IDLE_EXIT_S:
                        return
                    self._condition.wait(timeout=1.0)
                if self._stopped:
                    return
                request = self._wanted if self._wanted is not None and self._wanted not in self._results else None
            if request is None:
                self._calibrate_latency()
                continue
            self._evaluate(request)
            idle_since = time.monotonic()

    def _evaluate(self, request: LiveRequest) -> None:
        """The unpruned reference on the same kNN set first (once), then the request."""
        baseline = LiveRequest(0.0, 0.0, request.metrics, request.knn_images)
        if baseline != request and "knn" in request.metrics and self.result_for(baseline) is None:
            self._run_one(baseline, cancel=lambda: self._stopped)
        self._run_one(request, cancel=lambda: self._superseded(request))

    def _run_one(self, request: LiveRequest, cancel: Callable[[], bool]) -> None:
        start = time.perf_counter()
        result, error = None, None
        try:
            result = self.explorer.evaluate(
                request.mlp_sparsity,
                request.head_sparsity,
                request.metrics,
                knn_images=request.knn_images,
                cancel=cancel,
            )
        except CancelledError:
            return  # a newer configuration was requested: it is next
        except SnapViTError as failure:
            error = f"{failure.problem} {failure.fix}"
        except Exception as failure:  # noqa: BLE001 - shown as one line, logged with its traceback
            log.exception("live evaluation failed")
            error = f"{type(failure).__name__}: {failure}"
        outcome = LiveResult(request, result, error, time.perf_counter() - start)
        images = _images_evaluated(result)
        with self._condition:
            # A pass served from the feature cache (a configuration seen before) says nothing about the
            # machine's speed: only passes that took a real share of the budget update the rate.
            if images and outcome.seconds >= 0.1 * LIVE_KNN_BUDGET_S:
                rate = 1e3 * outcome.seconds / images
                previous = self._ms_per_image
                self._ms_per_image = rate if previous is None else 0.5 * previous + 0.5 * rate
            if len(self._results) > 256:  # a long session: keep the memory bounded
                self._results.clear()
            self._results[request] = outcome
            self._latest = outcome

    def _calibrate_latency(self) -> None:
        """Load or measure the latency model; a slider move interrupts it (it resumes when idle)."""

        def progress(done: float, total: float) -> None:
            with self._condition:
                self._latency_progress = float(done) / max(float(total), 1.0)

        def cancel() -> bool:
            with self._condition:
                return self._stopped or (self._wanted is not None and self._wanted not in self._results)

        with self._condition:
            self._latency_state = "calibrating"
        try:
            self.explorer.ensure_latency_model(progress=progress, cancel=cancel)
            state = "ready"
        except CancelledError:
            state = "waiting"
        except Exception:  # noqa: BLE001 - the cards then say the latency is unavailable
            log.exception("latency model calibration failed")
            state = "failed"
        with self._condition:
            self._latency_state = state


def _images_evaluated(result: Any) -> int:
    """Images a finished pass embedded, from its kNN set label ('all 1,797 images' / 'subset: 700 of ...')."""
    label = getattr(result, "knn_set", None) or ""
    match = re.search(r"(?:subset: |all )([\d,]+)", label)
    return int(match.group(1).replace(",", "")) if match else 0


def knn_metrics(has_knn: bool, run_knn: bool) -> tuple[str, ...]:
    """The metrics a live move asks for: kNN (with embedding similarity) only where it means something."""
    return ("knn", "flops", "params") if has_knn and run_knn else ("flops", "params")


def describe_set(knn_images: int | None, total: Sequence[int] | int) -> str:
    """'all 1,797 kNN images' or 'subset: 600 of 1,797 kNN images' (used when the library gives no label)."""
    count = total if isinstance(total, int) else sum(total)
    if knn_images is None or knn_images >= count:
        return f"all {count:,} kNN images"
    return f"subset: {knn_images:,} of {count:,} kNN images"
