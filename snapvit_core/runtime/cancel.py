"""Cooperative cancellation and progress callbacks shared by long library calls.

A ``cancel`` callable either returns True (the caller wants the work stopped) or raises
``CancelledError`` itself; ``check_cancel`` turns the first into the second. ``progress(done, total)``
is called after each unit of work.
"""

from __future__ import annotations

from collections.abc import Callable

from snapvit_core.errors import CancelledError

Progress = Callable[[int, int], None]
Cancel = Callable[[], object]


def check_cancel(cancel: Cancel | None, what: str = "work") -> None:
    """Raise CancelledError when ``cancel()`` says so (or let the CancelledError it raises through)."""
    if cancel is not None and cancel():
        raise CancelledError(what)


def report(progress: Progress | None, done: int, total: int) -> None:
    if progress is not None:
        progress(done, total)
