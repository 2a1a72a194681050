"""The one background worker that fills a landscape, shared by every viewer of it.

``LandscapeFiller`` owns a private ``Explorer`` (its elastic copy is the only model it prunes) and one
``Landscape``. Viewers call ``request(mlp, head)`` on every slider move; the worker computes, in
priority order (``landscape.fill_order``), the requested configurations (latest first), their
neighbours, the published path and then the rest of the grid, and saves the cache file as points
arrive. A configuration a viewer is waiting for gets a quick estimate first (kNN on a stratified
subset, the explorer's live set) when the exact full-test-set value costs more than the subset,
so the page shows a number at once and the exact one replaces it. A newer request interrupts the
point in progress. With ``autofill`` off (a heavy backbone on the CPU), only requested points are
estimated; ``start_fill`` turns filling on. The worker exits when the plane is full or nothing is
wanted, so an idle server holds no threads.

Each point carries the linear-probe top-1 too (one feature pass serves both metrics; on the embedded
data the probe adds little to a point), unless the kNN bank is larger than ``LINEAR_FILL_MAX_TRAIN``
images: there a probe per point costs seconds to minutes, so the filler computes kNN only, and the
probe only on request along the published path (``request_linear_path``; the page offers it with a
time estimate); ``landscape --metrics knn,linear`` computes the whole column.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass

from snapvit_core.errors import CancelledError, SnapViTError
from snapvit_core.explorer import EvaluationResult, Explorer
from snapvit_core.landscape.grid import on_grid, published_points
from snapvit_core.landscape.store import Landscape, LandscapePoint, fill_order
from snapvit_core.runtime.cancel import Cancel
from snapvit_core.runtime.jobs import Job

log = logging.getLogger(__name__)

MAX_REQUESTS = 8  # latest configurations viewers asked for that still lead the queue
SAVE_EVERY_S = 1.0  # the cache file is rewritten at most this often while filling
LINEAR_FILL_MAX_TRAIN = 20_000  # kNN bank size up to which the filler computes the linear probe per point


@dataclass(frozen=True)
class Estimate:
    """A quick kNN value on a subset, for a configuration the landscape does not have yet. It has no linear
    probe: training one would cost more than the subset's kNN, and the exact probe follows the exact kNN."""

    knn_top1: float | None  # 0..1 on the subset
    mean_cosine: float | None
    knn_set: str  # e.g. "subset: 700 of 1,797 images"
    baseline_top1: float | None  # the unpruned model on the same subset (for the delta)


@dataclass(frozen=True)
class FillStatus:
    """What a progress line says."""

    done: int  # configurations in the landscape
    total: int  # configurations in the grid
    running: bool  # the worker is computing now
    filling: bool  # autofill on (the whole plane is being filled)
    seconds_per_point: float | None  # measured, None before the first exact point
    error: str | None  # the last failure, one line

    @property
    def eta_s(self) -> float | None:
        if self.seconds_per_point is None:
            return None
        return (self.total - self.done) * self.seconds_per_point


class LandscapeFiller:
    """Fills ``landscape`` with ``explorer`` in the background.

    Args:
        explorer: a private explorer with kNN data attached (never shared with a page's own pruning).
        landscape: the landscape of exactly this explorer's key.
        correction: optional ``(CorrectionConfig, calibration_images)``, as for ``Explorer.evaluate``.
        estimate_images: kNN set size of the quick estimates (train + test); None = no estimates.
        autofill: fill the whole plane (else only what viewers request).
        exact_requests: without autofill, compute requested configurations exactly too (after their
            estimate); off for a heavy backbone, where only the estimate is affordable.
        calibrate_latency: load or measure the explorer's latency model in the same thread, after the
            point a viewer waits for and before the rest of the plane (never timed against a fill).
    """

    def __init__(
        self,
        explorer: Explorer,
        landscape: Landscape,
        *,
        correction: tuple | None = None,
        estimate_images: int | None = None,
        autofill: bool = True,
        exact_requests: bool = True,
        calibrate_latency: bool = False,
    ) -> None:
        self.explorer, self.landscape = explorer, landscape
        knn = explorer.knn
        self.with_linear = knn is not None and len(knn.train_labels) <= LINEAR_FILL_MAX_TRAIN
        self.correction = correction
        self.estimate_images = estimate_images
        self._autofill = autofill
        self.exact_requests = exact_requests
        self._condition = threading.Condition()
        self._requested: list[tuple[float, float]] = []  # latest first
        self._estimates: dict[tuple[float, float], Estimate] = {}
        self._baseline: tuple[float | None, float | None] | None = None  # subset (knn, cosine) at (0, 0)
        self._job: Job | None = None
        self._seconds: list[float] = []  # exact-point times, for the time left
        self._error: str | None = None
        self._stopped = False
        self._last_save = 0.0
        self._latency = "waiting" if calibrate_latency else "off"  # waiting | calibrating | ready | failed | off
        self._linear_path = False  # a viewer asked for the probe along the published path (large data)
        self._latency_fraction = 0.0

    # ---- called by viewers -----------------------------------------------------------------------
    def request(self, mlp_sparsity: float, head_sparsity: float) -> None:
        """A viewer looks at this configuration: compute it (and around it) first."""
        configuration = self._snap(mlp_sparsity, head_sparsity)
        if configuration is None or configuration in self.landscape:
            return
        with self._condition:
            if configuration in self._requested:
                self._requested.remove(configuration)
            self._requested.insert(0, configuration)
            del self._requested[MAX_REQUESTS:]
            self._condition.notify_all()
        self._ensure_running()

    def request_linear_path(self) -> None:
        """Compute the linear probe at the published path's configurations (where the fill does not)."""
        with self._condition:
            self._linear_path = True
        self._ensure_running()

    def linear_path_missing(self) -> list[tuple[float, float]]:
        """Published-path configurations without a linear-probe value yet."""
        missing = set(self.landscape.missing("linear_top1"))
        return [c for c in published_points(self.landscape.key.grid) if c in missing]

    def start_fill(self) -> None:
        """Fill the whole plane (the heavy-backbone button)."""
        with self._condition:
            self._autofill = True
        self._ensure_running()

    def estimate(self, mlp_sparsity: float, head_sparsity: float) -> Estimate | None:
        configuration = self._snap(mlp_sparsity, head_sparsity)
        with self._condition:
            return self._estimates.get(configuration)

    def status(self) -> FillStatus:
        with self._condition:
            recent = sorted(self._seconds[-20:])
            per_point = recent[len(recent) // 2] if recent else None
            job = self._job
            return FillStatus(
                len(self.landscape),
                self.landscape.size,
                job is not None and job.running,
                self._autofill,
                per_point,
                self._error,
            )

    def latency_status(self) -> tuple[str, float]:
        """('waiting' | 'calibrating' | 'ready' | 'failed' | 'off', fraction done) of the latency model."""
        with self._condition:
            return self._latency, self._latency_fraction

    def stop(self) -> None:
        with self._condition:
            self._stopped = True
            job = self._job
            self._condition.notify_all()
        if job is not None:
            job.cancel()

    def wait(self, timeout: float = 120.0, until: tuple[float, float] | None = None) -> bool:
        """Block until the worker is idle (or ``until`` is in the landscape with every metric this filler
        computes); for tests and scripts."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            point = None if until is None else self.landscape.get(*until)
            if point is not None and (not self.with_linear or point.linear_top1 is not None):
                return True
            job = self._job
            if until is None and (job is None or not job.running):
                return True
            time.sleep(0.02)
        return False

    def start(self) -> LandscapeFiller:
        """Start filling now (when there is anything to do)."""
        self._ensure_running()
        return self

    def plane_done(self) -> bool:
        """Every grid point is exact, with its linear value where this filler computes one."""
        landscape = self.landscape
        return landscape.complete and (not self.with_linear or landscape.count("linear_top1") >= landscape.size)

    # ---- the worker --------------------------------------------------------------------------------
    def _snap(self, mlp_sparsity: float, head_sparsity: float) -> tuple[float, float] | None:
        step = self.landscape.key.grid
        mlp, head = on_grid(mlp_sparsity, step), on_grid(head_sparsity, step)
        return None if mlp is None or head is None else (mlp, head)

    def _ensure_running(self) -> None:
        with self._condition:
            if self._stopped or (self._job is not None and self._job.running):
                return
            pending_linear = self._linear_path and not self.with_linear and self.linear_path_missing()
            if self._latency != "waiting" and self.plane_done() and not pending_linear:
                return  # nothing to do: every page run asks, so a full plane is not ordered again each time
            if not self._next_tasks():
                return
            self._job = Job("landscape", self._run).start()

    def _next_tasks(self) -> list[tuple[str, tuple[float, float]]]:
        """(kind, configuration) still to do, first first; kind 'estimate' or 'exact'. Holds the condition."""
        missing = set(self.landscape.missing("linear_top1" if self.with_linear else None))
        done = [c for c in self.landscape.configurations() if c not in missing]
        requested = list(self._requested)
        tasks = []
        if self.estimate_images is not None and requested and requested[0] not in self._estimates:
            tasks.append(("estimate", requested[0]))
        order = fill_order(self.landscape.axis, done, requested, self.landscape.key.grid)
        if not self._autofill:  # only what viewers asked for: an estimate where one is cheaper, then exact
            for configuration in (c for c in order if c in requested):
                if self.estimate_images is not None and configuration not in self._estimates:
                    tasks.append(("estimate", configuration))
                if self.exact_requests:
                    tasks.append(("exact", configuration))
        else:
            tasks += [("exact", c) for c in order]
        if self._linear_path and not self.with_linear:  # asked for: before the rest of the plane
            tasks = [("linear", c) for c in self.linear_path_missing()] + tasks
        if self._latency == "waiting":  # after the point a viewer waits for, before the rest
            position = 1 if tasks and requested and tasks[0][1] == requested[0] else 0
            if tasks and tasks[0][0] == "estimate" and len(tasks) > 1 and tasks[1] == ("exact", requested[0]):
                position = 2
            tasks.insert(position, ("latency", (0.0, 0.0)))
        return tasks

    def _run(self, report, cancelled) -> None:
        while True:
            with self._condition:
                if self._stopped or cancelled():
                    break
                tasks = self._next_tasks()
                if not tasks:
                    break
                kind, configuration = tasks[0]
                head_request = self._requested[0] if self._requested else None
            report(len(self.landscape) / self.landscape.size, f"{kind} {configuration}")

            def interrupted(head=head_request) -> bool:
                # A newer request (or stop) preempts the point in progress; its work is redone later.
                with self._condition:
                    newest = self._requested[0] if self._requested else None
                    return self._stopped or cancelled() or newest != head

            try:
                if kind == "latency":
                    self._calibrate(interrupted)
                elif kind == "estimate":
                    self._estimate(configuration, interrupted)
                else:
                    self._exact(configuration, interrupted, linear=kind == "linear")
            except CancelledError:
                continue
            except SnapViTError as failure:
                self._fail(f"{failure.problem} {failure.fix}")
                return
            except Exception as failure:  # noqa: BLE001 - one line in the page, traceback in the log
                log.exception("landscape fill failed at %s", configuration)
                self._fail(f"{type(failure).__name__}: {failure}")
                return
        self.landscape.save()

    def _calibrate(self, cancel: Cancel) -> None:
        def progress(done: float, total: float) -> None:
            with self._condition:
                self._latency_fraction = float(done) / max(float(total), 1.0)

        with self._condition:
            self._latency = "calibrating"
        state = "waiting"  # cancelled: a viewer moved; resumed after their point
        try:
            self.explorer.ensure_latency_model(progress=progress, cancel=cancel)
            state = "ready"
        except CancelledError:
            raise
        except Exception:  # noqa: BLE001 - the cards then say the latency is unavailable
            log.exception("latency model calibration failed")
            state = "failed"
        finally:
            with self._condition:
                self._latency = state

    def _fail(self, message: str) -> None:
        with self._condition:
            self._error = message
        self.landscape.save()

    def _evaluate(
        self, configuration: tuple[float, float], knn_images: int | None, cancel: Cancel, linear: bool | None = None
    ) -> EvaluationResult:
        """The point's metrics; the linear probe when ``linear`` (None: when this filler computes it per point)."""
        with_probe = self.with_linear if linear is None else linear
        return self.explorer.evaluate(
            configuration[0],
            configuration[1],
            ("knn", "flops", "params", *(("linear",) if with_probe else ())),
            correction=self.correction,
            knn_images=knn_images,
            cancel=cancel,
        )

    def _exact(self, configuration: tuple[float, float], cancel: Cancel, linear: bool = False) -> None:
        start = time.perf_counter()
        knn_images = self.landscape.key.knn_images
        with self._condition:
            waited_for = configuration in self._requested
        if waited_for and self.with_linear and self.landscape.get(*configuration) is None:
            # A viewer waits for this point: its kNN goes in first, the probe follows on the cached features.
            self.landscape.add(LandscapePoint.from_result(self._evaluate(configuration, knn_images, cancel, False)))
        result = self._evaluate(configuration, knn_images, cancel, self.with_linear or linear)
        self.landscape.add(LandscapePoint.from_result(result))
        with self._condition:
            self._seconds.append(time.perf_counter() - start)
            if configuration in self._requested:
                self._requested.remove(configuration)
            self._estimates.pop(configuration, None)
            self._error = None
        if time.monotonic() - self._last_save >= SAVE_EVERY_S or self.plane_done():
            self.landscape.save()
            self._last_save = time.monotonic()

    def _estimate(self, configuration: tuple[float, float], cancel: Cancel) -> None:
        if self._baseline is None:
            base = self._evaluate((0.0, 0.0), self.estimate_images, cancel, False)
            self._baseline = (base.knn_top1, base.embedding_cosine)
        result = self._evaluate(configuration, self.estimate_images, cancel, False)
        with self._condition:
            if len(self._estimates) > 256:
                self._estimates.clear()
            self._estimates[configuration] = Estimate(
                result.knn_top1, result.embedding_cosine, result.knn_set or "", self._baseline[0]
            )
