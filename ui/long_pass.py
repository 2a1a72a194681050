"""Long passes (kNN embedding of the data, sweeps, budget searches) as background jobs with a
progress bar, a time estimate from the first timed batch, and Cancel.

``job_progress(job)`` turns the library's ``progress(done, total)`` callback into job reports;
``render(name, ...)`` draws the bar, the estimate and the Cancel button in a polling fragment and
reruns the page once the job has ended.
"""

from __future__ import annotations

from collections.abc import Callable

import streamlit as st

from snapvit_core.runtime.jobs import JobSnapshot
from ui import state

POLL_S = 0.5


def job_progress(report: Callable[..., None], what: str = "images") -> Callable[[float, float], None]:
    """A ``progress(done, total)`` for the library that reports to a job (counts kept for the estimate)."""

    def progress(done: float, total: float) -> None:
        report(done / max(total, 1), f"{int(done):,} of {int(total):,} {what}", done=done, total=total)

    return progress


def estimate(snapshot: JobSnapshot) -> str:
    """'about 40 s left' once the first batch is timed; 'timing the first batch …' before."""
    done, total = snapshot.extra.get("done", 0), snapshot.extra.get("total", 0)
    if not done or not total:
        return "timing the first batch …"
    left = snapshot.seconds / done * (total - done)
    if left >= 90:
        return f"about {left / 60:.0f} min left"
    return f"about {left:.0f} s left"


def render(name: str, title: str, on_done: Callable[[JobSnapshot], None]) -> JobSnapshot | None:
    """Progress of the session's job ``name``; ``on_done`` gets its final snapshot once."""
    job = state.job(name)
    if job is None:
        return None

    @st.fragment(run_every=POLL_S if job.running else None)
    def panel() -> None:
        snapshot = job.snapshot()
        if snapshot.state == "running":
            st.progress(
                snapshot.fraction,
                text=f"{title}: {snapshot.message} · {estimate(snapshot)} ({snapshot.seconds:.0f} s so far)",
            )
            if st.button("Cancel", key=f"cancel_{name}"):
                job.cancel()
        elif state.get().handled.get(name) is not job:
            state.mark_handled(name, job)
            on_done(snapshot)
            st.rerun(scope="app")

    panel()
    return job.snapshot()
