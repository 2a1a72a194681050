"""The session state: one frozen value, what goes stale derived from what changed (ui/state.py)."""

from __future__ import annotations

import dataclasses

import pytest

from ui.state import Configuration, ScoresChoice, Selection, SessionState, applied


class FakeJob:
    def __init__(self) -> None:
        self.cancelled = False

    def cancel(self) -> None:
        self.cancelled = True


def _scores(name: str) -> ScoresChoice:
    return ScoresChoice(scores=None, label=name, scores_id=f"method:{name}")  # type: ignore[arg-type]


def _chosen() -> tuple[SessionState, FakeJob, FakeJob]:
    budget, scoring = FakeJob(), FakeJob()
    state = applied(
        SessionState(),
        scores=_scores("magnitude"),
        align=1,
        jobs={"budget": budget, "scoring": scoring, "unpruned_knn": FakeJob()},
        results={"budget_answer": 1, "measured_latency": 2},
    )
    return state, budget, scoring


def test_the_state_is_frozen_and_its_mappings_read_only():
    state, _, _ = _chosen()
    with pytest.raises(dataclasses.FrozenInstanceError):
        state.align = 8  # type: ignore[misc]
    with pytest.raises(TypeError):
        state.results["budget_answer"] = 3  # type: ignore[index]


def test_a_configuration_move_keeps_results_and_jobs():
    state, budget, _ = _chosen()
    moved = applied(state, configuration=Configuration(0.5, 0.2, 0.5))
    assert moved.results == state.results and moved.jobs == state.jobs and not budget.cancelled


def test_filling_in_defaults_is_not_a_new_subject():
    budget = FakeJob()
    start = applied(SessionState(), jobs={"budget": budget}, results={"x": 1})
    filled = applied(start, scores=_scores("magnitude"), align=1)
    assert filled.results == {"x": 1} and not budget.cancelled


@pytest.mark.parametrize(
    "change",
    [
        {"scores": _scores("lamp")},
        {"align": 8},
        {"selection": Selection(model_id="embedded", random_init=True)},
    ],
)
def test_a_new_subject_drops_results_and_cancels_its_jobs(change):
    state, budget, scoring = _chosen()
    new = applied(state, **change)
    assert new.results == {} and budget.cancelled and not scoring.cancelled
    assert set(new.jobs) == {"scoring"}  # the scoring job applies its scores when it ends; the shared pass is left
    assert new.configuration == state.configuration


def test_results_set_with_the_new_subject_are_kept():
    state, _, _ = _chosen()
    new = applied(state, scores=_scores("lamp"), results={"job_notice": ("success", "now using lamp")})
    assert new.results == {"job_notice": ("success", "now using lamp")}
