"""One browser session's state: a frozen value under one key, replaced whole on every change.

``SessionState`` holds what the session chose (backbone and data, scores, width alignment, the
configuration) and what it started or got (jobs and results). Pages read it with ``get()`` and change
it only with ``update()``, which derives what goes stale from what changed: results and the session's
own jobs belong to one subject (selection, scores, alignment), so a new subject drops the results and
cancels those jobs. Nothing is cleared by key name.

The URL (``ui.links``) and the explorer's sliders (``ui.config_state``) are views of it. Server-wide
resources (explorers, landscapes, caches) live in ``ui.shared``; this module holds no lock: a session's
runs are serial.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from types import MappingProxyType
from typing import Any

import streamlit as st

from snapvit_core.engine.devices import resolve_device
from snapvit_core.runtime.jobs import Job
from snapvit_core.scoring.scores import ImportanceScores

STATE_KEY = "snapvit_state"
SUBJECT_JOBS = ("budget", "sweep")  # jobs computed for the subject: cancelled when it changes
EMPTY: Mapping[str, Any] = MappingProxyType({})


@dataclass(frozen=True)
class Selection:
    """The backbone and data the user chose on the first page."""

    model_id: str = "embedded"
    random_init: bool = False
    device: str = "auto"
    data: str = "embedded"

    @property
    def resolved_device(self) -> str:
        return resolve_device(self.device)


@dataclass(frozen=True)
class Configuration:
    """The explorer's configuration: (MLP, head) sparsity, and the overall slider's value.

    Values are kept as given: a budget answer lies on a finer grid than the sliders' 0.05, and the
    sliders show its nearest grid point until the user moves them.
    """

    mlp_sparsity: float = 0.0
    head_sparsity: float = 0.0
    overall_sparsity: float = 0.0

    @property
    def pair(self) -> tuple[float, float]:
        return self.mlp_sparsity, self.head_sparsity


@dataclass(frozen=True)
class ScoresChoice:
    """The session's scores, how the page names them and how a link names them."""

    scores: ImportanceScores
    label: str
    scores_id: str  # file:NAME, method:NAME or digest:HEX
    warning: str | None = None  # why they may not fit the backbone (allowed anyway), else None


@dataclass(frozen=True)
class SessionState:
    """Everything one browser session holds. Replace it whole (``update``); never mutate it."""

    selection: Selection = Selection()
    scores: ScoresChoice | None = None  # None: the selection's default scores, chosen on first use
    align: int | None = None  # None: the device's default MLP width alignment
    configuration: Configuration = Configuration()
    jobs: Mapping[str, Job] = field(
        default_factory=lambda: EMPTY
    )  # by name: "scoring", "budget", "sweep", "unpruned_knn"
    results: Mapping[str, Any] = field(
        default_factory=lambda: EMPTY
    )  # by name: "budget_answer", "sweep_table", "last_export" ...
    handled: Mapping[str, Job] = field(
        default_factory=lambda: EMPTY
    )  # job name -> the job whose end the page has handled
    link_restored: bool = False  # the page URL's configuration was applied (once per session)
    link_notes: tuple[str, ...] = ()  # what the link named that this server does not have
    knn_on_random: bool = False  # run kNN on random weights anyway
    # what this session's browser holds: component key -> (table id sent, the browser's report answered)
    tables_sent: Mapping[str, tuple[str, int]] = field(default_factory=lambda: EMPTY)

    def same_subject(self, other: SessionState) -> bool:
        """Whether results computed for ``other`` hold for this state: the same selection, and the same
        scores and alignment where ``other`` had chosen them (a default filled in changes nothing)."""
        if self.selection != other.selection:
            return False
        if other.scores is not None and (self.scores is None or self.scores.scores_id != other.scores.scores_id):
            return False
        return other.align is None or self.align == other.align


def get() -> SessionState:
    """This session's state (the defaults before anything was chosen)."""
    return st.session_state.get(STATE_KEY) or SessionState()


def update(**changes: Any) -> SessionState:
    """Replace the session's state with ``changes`` applied (``applied``), and store it."""
    new = applied(get(), **changes)
    st.session_state[STATE_KEY] = new
    return new


def applied(old: SessionState, **changes: Any) -> SessionState:
    """``old`` with ``changes``: when the subject (selection, scores, alignment) changes, the old subject's
    results go and its jobs (``SUBJECT_JOBS``) are cancelled, unless ``changes`` itself sets them."""
    new = replace(old, **{name: _frozen(value) for name, value in changes.items()})
    if new.same_subject(old):
        return new
    jobs = dict(new.jobs)
    for name in SUBJECT_JOBS:
        job = old.jobs.get(name)
        if job is not None and jobs.get(name) is job:
            job.cancel()
            del jobs[name]
    jobs.pop("unpruned_knn", None)  # shared by sessions: left running for the others
    results = new.results if "results" in changes else EMPTY
    return replace(new, jobs=_frozen(jobs), results=results)


def _frozen(value: Any) -> Any:
    return MappingProxyType(dict(value)) if isinstance(value, Mapping) else value


def job(name: str) -> Job | None:
    return get().jobs.get(name)


def set_job(name: str, started: Job) -> None:
    update(jobs={**get().jobs, name: started})


def result(name: str, default: Any = None) -> Any:
    return get().results.get(name, default)


def set_results(**values: Any) -> None:
    """Set results by name; a value of None removes that result."""
    results = {**get().results, **values}
    update(results={name: value for name, value in results.items() if value is not None})


def mark_handled(name: str, finished: Job) -> None:
    update(handled={**get().handled, name: finished})
