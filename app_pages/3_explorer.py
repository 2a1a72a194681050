"""Page 3: the elastic explorer. Cost cards and maps follow a slider move at once (from the plan, no
forward pass); kNN accuracy and embedding similarity come from the shared accuracy landscape (exact,
full test set) or, until it has the configuration, from a quick estimate marked as one."""

from __future__ import annotations

from typing import Any

import streamlit as st

from snapvit_core.errors import SnapViTError
from snapvit_core.explorer import DATA_FREE_METHODS
from snapvit_core.landscape.grid import GRID_STEP, MAX_SPARSITY, published_path
from ui import config_state, links, session
from ui.explorer_view import (
    accuracy_panel,
    cost_cards,
    difference_chart,
    head_map,
    kept_neuron_chart,
    landscape_chart,
    landscape_progress,
    latency_watch,
    measure_now,
    neuron_map,
    selected_configuration,
)
from ui.instant_cards import SliderLink
from ui.landscape_charts import LANDSCAPE_KEY

st.title("Elastic explorer")
if session.guarded_backbone() is None:
    st.stop()
try:
    links.restore()
    state = session.current()
except SnapViTError as error:
    session.show_error(error)
    st.stop()
shared, scores_label = state.shared, state.scores_label
st.caption(f"Backbone `{state.selection.model_id}` · scores: **{scores_label}** · data `{state.selection.data}`")
links.show_notes()
config_state.restore_widgets()


# Only the overall slider writes other sliders' values, never the reverse. A widget value the server
# writes reaches the browser only when the run gets as far as drawing that widget; Streamlit's fast
# reruns abandon runs part-way, and the browser's next message then carries its old value for the
# widget, which Streamlit takes for a user move. A two-way coupling turned such a stale value into a
# jump of both sliders back to (0, 0) while an arrow key was held (seen in the browser test).
def follow_published_path() -> None:
    mlp, head = published_path(st.session_state["overall_sparsity"])
    st.session_state["mlp_sparsity"], st.session_state["head_sparsity"] = mlp, head


def move_to_clicked_cell() -> None:
    clicked = selected_configuration("landscape_chart")
    if clicked is not None:
        config_state.set_config(*clicked)


# The page is drawn in two parts. The charts are drawn by page runs only: a slider move changes none
# of their figures, only the marks laid over them (ui/chart_overlay.py). Everything that follows the
# sliders is one fragment, whose run on a move redraws only what it draws (sliders, cards, the marks).
# Neither the cards nor the marks wait for that run: the browser redraws them from the tables sent with
# them the moment a slider moves (ui/instant_cards.py), so a viewer never waits for the server's queue
# of other viewers' runs. With a side-by-side method chosen, the page runs whole on a move (its accuracy
# panels poll in fragments of their own, and Streamlit leaves the elements of a fragment nested in
# another fragment's outside container behind).
top = st.container()
chart_column, maps = st.columns(2)
with chart_column:
    star = landscape_chart(shared, move_to_clicked_cell) if shared.landscape is not None else None
    if star is not None:
        st.caption(f"Click a cell to move the sliders there. {LANDSCAPE_KEY}")
with maps:
    pruned_heads = head_map(shared)
neurons, heat = st.columns(2)
with neurons:
    kept_bars = kept_neuron_chart(shared)
with heat:
    keep_boundaries = neuron_map(shared)
st.divider()
method = st.selectbox(
    "Side by side with another method at the same sparsity",
    ["(none)", *DATA_FREE_METHODS],
    key="side_by_side_method",
    help="Magnitude, LAMP and random scores need no data; compare their maps and accuracy with the current scores.",
)
side_area = st.container()
ALIGNMENTS = (1, 8, 16, 32, 64)


def live() -> None:
    config, cost, run_knn, link = sliders_and_cards()
    for overlay in (star, pruned_heads, kept_bars, keep_boundaries):
        if overlay is not None:
            overlay(config, cost)
    if method != "(none)":
        with side_area:
            side_by_side(config, run_knn, link)


def sliders_and_cards() -> tuple[tuple[float, float], Any, bool, SliderLink]:
    """The sliders, the cost and accuracy cards and the tools; returns (configuration, its cost, kNN shown,
    the sliders' link for the browser's instant cards)."""
    slider_args = {"min_value": 0.0, "max_value": MAX_SPARSITY, "step": GRID_STEP, "format": "%.2f"}
    overall = st.slider(
        config_state.OVERALL_LABEL,
        key="overall_sparsity",
        on_change=follow_published_path,
        help="Sets both sliders below along (0,0), (0.15,0), (0.25,0.1) ... (0.65,0.5); its value is the MLP sparsity.",
        **slider_args,
    )
    left, right = st.columns(2)
    mlp_slider = left.slider(config_state.MLP_LABEL, key="mlp_sparsity", **slider_args)
    head_slider = right.slider(config_state.HEAD_LABEL, key="head_sparsity", **slider_args)
    config = config_state.store_from_widgets(mlp_slider, head_slider, overall).pair
    link = config_state.slider_link()
    mlp_sparsity, head_sparsity = config
    if (mlp_slider, head_slider) != config:
        st.caption(f"Configuration from the budget finder: (MLP {mlp_sparsity:.3f}, head {head_sparsity:.3f}).")
    elif config != published_path(overall):
        st.caption(
            f"Set by hand: (MLP {mlp_sparsity:.2f}, head {head_sparsity:.2f}). The overall slider reads "
            f"{overall:.2f}, the path point it last set; move it to return to the published path."
        )
    links.publish(config)
    align = st.selectbox(
        "MLP width alignment (kept neurons per block rounded to a multiple of)",
        ALIGNMENTS,
        index=ALIGNMENTS.index(state.align) if state.align in ALIGNMENTS else 0,
        key="align_choice",
        help="Matrix kernels run fastest on widths that are multiples of 8-64; the global neuron count stays as "
        "close as possible to the MLP sparsity. 1 = the widths the scores give (the published rule). The "
        "default is the measured one for this device (README 'Width alignment'); each alignment has its own "
        "landscape.",
    )
    if align != state.align:
        session.set_align(int(align))
        st.rerun()  # the whole page: another alignment is another shared explorer and landscape

    explorer = shared.explorer
    cost = explorer.cost(mlp_sparsity, head_sparsity)
    cost_cards(shared, cost, link)
    latency_watch(shared)
    if session.selection().random_init and session.has_labelled_data():
        session.knn_on_random_checkbox()
    run_knn = session.run_knn_on_random_weights()
    accuracy_panel(shared, config, run_knn, link)
    landscape_progress(shared)
    tools = st.columns([1, 1, 3])
    with tools[0]:
        measure_now(explorer, config)
    with tools[1]:
        links.share_box(config)
    return config, cost, run_knn, link


def side_by_side(config: tuple[float, float], run_knn: bool, link: SliderLink) -> None:
    try:
        other = session.comparison(method)
    except SnapViTError as error:
        session.show_error(error)
        return
    mine, theirs = st.columns(2)
    with mine:
        st.markdown(f"**{scores_label}**")
        accuracy_panel(shared, config, run_knn, link, compact=True, key="side_knn_cards")
        st.plotly_chart(shared.figure("head_map", config), key="side_head_map")
        st.plotly_chart(shared.figure("mlp_kept", config), key="side_mlp")
    with theirs:
        st.markdown(f"**{method} (data-free)**")
        accuracy_panel(other, config, run_knn, link, compact=True, key="side_other_knn_cards")
        st.plotly_chart(other.figure("head_map", config), key="side_other_head_map")
        st.plotly_chart(other.figure("mlp_kept", config), key="side_other_mlp")
    if shared.landscape is not None and other.landscape is not None and run_knn:
        other.filler.start()
        difference_chart(shared, other, ("these scores", method))


with top:
    (st.fragment(live) if method == "(none)" else live)()
st.page_link("app_pages/6_learn.py", label="How to read this page (Learn)", icon=":material/school:")
