"""The explorer's sliders as a view of the session's configuration (``ui.state.Configuration``).

Streamlit deletes the session-state entry of a widget that a run did not draw (any page switch), so
the configuration lives in the session state and the slider keys are restored from it before the
sliders are drawn. The explorer, Compare & budget and Export all read ``current()``; the budget
finder's "open" and "export" buttons and links write it with ``set_config``.
"""

from __future__ import annotations

import streamlit as st

from snapvit_core.landscape.grid import path_keys, snap, value_text
from ui import state
from ui.instant_cards import SliderLink
from ui.state import Configuration

WIDGET_KEYS = ("mlp_sparsity", "head_sparsity", "overall_sparsity")
OVERALL_LABEL = "Overall sparsity (moves both sliders below along the published (MLP, head) path)"
MLP_LABEL = "MLP sparsity (fraction of neurons removed)"
HEAD_LABEL = "Head sparsity (fraction of heads removed)"


def current() -> Configuration:
    return state.get().configuration


def set_config(mlp_sparsity: float, head_sparsity: float, overall: float | None = None) -> None:
    """Make (MLP, head) the session's configuration; the sliders show it the next time they are drawn.

    Values are kept as given (the budget finder's answers lie on a finer grid than the sliders' 0.05);
    the sliders show the nearest grid point only if the user moves them.
    """
    previous = current()
    state.update(
        configuration=Configuration(
            float(mlp_sparsity), float(head_sparsity), previous.overall_sparsity if overall is None else float(overall)
        )
    )
    for key in WIDGET_KEYS:  # the widgets take the new value on their next draw
        st.session_state.pop(key, None)


def restore_widgets() -> None:
    """Before drawing the sliders: give every slider key that Streamlit dropped its configuration value."""
    now = current()
    values = (now.mlp_sparsity, now.head_sparsity, now.overall_sparsity)
    for key, value in zip(WIDGET_KEYS, values):
        if key not in st.session_state:
            st.session_state[key] = snap(value)


def store_from_widgets(mlp_sparsity: float, head_sparsity: float, overall: float) -> Configuration:
    """After drawing the sliders: their values become the configuration.

    A budget answer off the slider grid (e.g. MLP 0.475) stays the configuration while the sliders still
    show its nearest grid point untouched, so opening it does not silently round it.
    """
    now = current()
    shown = tuple(snap(v) for v in (now.mlp_sparsity, now.head_sparsity, now.overall_sparsity))
    if (mlp_sparsity, head_sparsity, overall) != shown:
        now = Configuration(float(mlp_sparsity), float(head_sparsity), float(overall))
        state.update(configuration=now)
    return now


def slider_link() -> SliderLink:
    """How the browser finds the sliders and which configuration they showed when the server drew them: the
    cards and the marks over the charts follow a move from there (``ui.instant_cards``)."""
    now = current()
    shown = (now.overall_sparsity, now.mlp_sparsity, now.head_sparsity)
    return SliderLink((OVERALL_LABEL, MLP_LABEL, HEAD_LABEL), tuple(value_text(snap(v)) for v in shown), path_keys())
