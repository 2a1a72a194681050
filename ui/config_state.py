"""The session's one configuration: (MLP sparsity, head sparsity) plus the overall slider's value.

Streamlit deletes the session-state entry of a widget that a run did not draw (any page switch), so
the canonical value lives in a non-widget key (``CONFIG_KEY``) and the explorer's slider keys are
restored from it before the sliders are drawn. The explorer, Compare & budget and Export all read
``current()``; the budget finder's "open" and "export" buttons write it with ``set_config``.
"""

from __future__ import annotations

from dataclasses import dataclass

import streamlit as st

from ui.sliders import snap

CONFIG_KEY = "configuration"
WIDGET_KEYS = ("mlp_sparsity", "head_sparsity", "overall_sparsity")


@dataclass(frozen=True)
class SliderState:
    """What the explorer's three sliders show."""

    mlp_sparsity: float = 0.0
    head_sparsity: float = 0.0
    overall_sparsity: float = 0.0

    @property
    def pair(self) -> tuple[float, float]:
        return self.mlp_sparsity, self.head_sparsity


def current() -> SliderState:
    return st.session_state.get(CONFIG_KEY, SliderState())


def set_config(mlp_sparsity: float, head_sparsity: float, overall: float | None = None) -> None:
    """Make (MLP, head) the session's configuration; the sliders show it the next time they are drawn.

    Values are kept as given (the budget finder's answers lie on a finer grid than the sliders' 0.05);
    the sliders show the nearest grid point only if the user moves them.
    """
    previous = current()
    st.session_state[CONFIG_KEY] = SliderState(
        float(mlp_sparsity), float(head_sparsity), previous.overall_sparsity if overall is None else float(overall)
    )
    for key in WIDGET_KEYS:  # the widgets take the new value on their next draw
        st.session_state.pop(key, None)


def restore_widgets() -> None:
    """Before drawing the sliders: give every slider key that Streamlit dropped its canonical value."""
    state = current()
    values = (state.mlp_sparsity, state.head_sparsity, state.overall_sparsity)
    for key, value in zip(WIDGET_KEYS, values):
        if key not in st.session_state:
            st.session_state[key] = snap_for_slider(value)


def snap_for_slider(value: float) -> float:
    """The slider's own grid value for ``value`` (a finer budget answer is shown at its nearest step)."""
    return snap(value)


def store_from_widgets(mlp_sparsity: float, head_sparsity: float, overall: float) -> SliderState:
    """After drawing the sliders: their values become the canonical configuration.

    A budget answer off the slider grid (e.g. MLP 0.475) stays canonical while the sliders still show
    its nearest grid point untouched, so opening it does not silently round it.
    """
    state = current()
    shown = tuple(snap_for_slider(v) for v in (state.mlp_sparsity, state.head_sparsity, state.overall_sparsity))
    if (mlp_sparsity, head_sparsity, overall) != shown:
        state = SliderState(float(mlp_sparsity), float(head_sparsity), float(overall))
        st.session_state[CONFIG_KEY] = state
    return state


def forget_results() -> None:
    """Drop everything computed for the previous backbone or scores (called when either changes)."""
    for key in list(st.session_state):
        if isinstance(key, str) and key.startswith(("live_", "budget_", "measured_", "unpruned_")):
            del st.session_state[key]
