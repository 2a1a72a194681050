"""Background jobs: the one abstraction for work that runs beside the caller (scoring, search, sweeps,
budget searches, filling a landscape), so the app never freezes.

A job runs a function in a daemon thread. The function receives ``report(fraction, message, **extra)``
and ``cancelled() -> bool``; pages poll ``job.snapshot()`` from an auto-refreshing fragment and call
``job.cancel()`` from a Cancel button. The function returns its result; a SnapViTError becomes a
clear message, any other exception a one-line message (never a traceback in the page).
"""

from __future__ import annotations

import atexit
import logging
import threading
import time
import weakref
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from snapvit_core.errors import CancelledError, SnapViTError

log = logging.getLogger(__name__)


_JOBS: weakref.WeakSet[Job] = weakref.WeakSet()


@atexit.register
def _cancel_running_jobs() -> None:
    """At interpreter exit: cancel running jobs and let them leave torch code (no abort at teardown)."""
    running = [job for job in list(_JOBS) if job.running]
    for job in running:
        job.cancel()
    for job in running:
        job.wait(timeout=10.0)


@dataclass
class JobSnapshot:
    """What a page shows about a job at one moment."""

    name: str
    state: str  # "running", "done", "cancelled", "failed"
    fraction: float
    message: str
    extra: dict[str, Any]
    result: Any
    error: str | None
    seconds: float


@dataclass(eq=False)  # identity semantics: jobs are compared and hashed as objects
class Job:
    name: str
    target: Callable[..., Any]
    kwargs: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self._lock = threading.Lock()
        self._cancel = threading.Event()
        self._state, self._fraction, self._message = "running", 0.0, "starting"
        self._extra: dict[str, Any] = {}
        self._result: Any = None
        self._error: str | None = None
        self._start = time.perf_counter()
        self._end: float | None = None
        self._thread = threading.Thread(target=self._run, name=f"snapvit-{self.name}", daemon=True)
        _JOBS.add(self)

    def start(self) -> Job:
        self._thread.start()
        return self

    def report(self, fraction: float, message: str = "", **extra: Any) -> None:
        with self._lock:
            self._fraction = float(min(1.0, max(0.0, fraction)))
            self._message = message
            self._extra.update(extra)

    def cancelled(self) -> bool:
        return self._cancel.is_set()

    def cancel(self) -> None:
        self._cancel.set()

    @property
    def running(self) -> bool:
        return self._thread.is_alive()

    def wait(self, timeout: float | None = None) -> JobSnapshot:
        self._thread.join(timeout)
        return self.snapshot()

    def snapshot(self) -> JobSnapshot:
        with self._lock:
            end = self._end or time.perf_counter()
            return JobSnapshot(
                self.name,
                self._state,
                self._fraction,
                self._message,
                dict(self._extra),
                self._result,
                self._error,
                end - self._start,
            )

    def _run(self) -> None:
        state, result, error = "done", None, None
        try:
            result = self.target(report=self.report, cancelled=self.cancelled, **self.kwargs)
        except CancelledError as cancelled:
            state, error = "cancelled", str(cancelled)
            result = getattr(cancelled, "partial_result", None)
        except SnapViTError as failure:
            state, error = "failed", str(failure)
        except Exception as failure:  # noqa: BLE001 - shown as one line instead of a traceback
            log.exception("job %s failed", self.name)
            state, error = "failed", f"{type(failure).__name__}: {failure}"
        with self._lock:
            self._state, self._result, self._error = state, result, error
            self._end = time.perf_counter()
            if state == "done":
                self._fraction = 1.0
