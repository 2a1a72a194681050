"""Page 3: the elastic explorer. Cost cards and maps follow a slider move at once (from the plan, no
forward pass); kNN accuracy and embedding similarity follow from a background worker, marked
"updating…" until they are for the configuration on the sliders."""

from __future__ import annotations

import streamlit as st

from snapvit_core.errors import SnapViTError
from snapvit_core.explorer import DATA_FREE_METHODS
from ui import charts, config_state, session
from ui.explorer_view import accuracy_panel, cost_cards, live_request, measure_now
from ui.sliders import MAX_SPARSITY, SLIDER_STEP, published_path

st.title("Elastic explorer")
if session.guarded_backbone() is None:
    st.stop()
try:
    explorer = session.explorer()
except SnapViTError as error:
    session.show_error(error)
    st.stop()
scores, scores_label = session.scores()
st.caption(
    f"Backbone `{session.selection().model_id}` · scores: **{scores_label}** · data `{session.selection().data}`"
)
config_state.restore_widgets()


# Only the overall slider writes other sliders' values, never the reverse. A widget value the server
# writes reaches the browser only when the run gets as far as drawing that widget; Streamlit's fast
# reruns abandon runs part-way, and the browser's next message then carries its old value for the
# widget, which Streamlit takes for a user move. A two-way coupling turned such a stale value into a
# jump of both sliders back to (0, 0) while an arrow key was held (seen in the browser test).
def follow_published_path() -> None:
    mlp, head = published_path(st.session_state["overall_sparsity"])
    st.session_state["mlp_sparsity"], st.session_state["head_sparsity"] = mlp, head


slider_args = {"min_value": 0.0, "max_value": MAX_SPARSITY, "step": SLIDER_STEP, "format": "%.2f"}
overall = st.slider(
    "Overall sparsity (moves both sliders below along the published (MLP, head) path)",
    key="overall_sparsity",
    on_change=follow_published_path,
    help="Sets both sliders below along (0,0), (0.15,0), (0.25,0.1) ... (0.65,0.5); its value is the MLP sparsity.",
    **slider_args,
)
left, right = st.columns(2)
mlp_slider = left.slider("MLP sparsity (fraction of neurons removed)", key="mlp_sparsity", **slider_args)
head_slider = right.slider("Head sparsity (fraction of heads removed)", key="head_sparsity", **slider_args)
state = config_state.store_from_widgets(mlp_slider, head_slider, overall)
mlp_sparsity, head_sparsity = state.pair
if (mlp_slider, head_slider) != (mlp_sparsity, head_sparsity):
    st.caption(f"Configuration from the budget finder: (MLP {mlp_sparsity:.3f}, head {head_sparsity:.3f}).")
elif (mlp_sparsity, head_sparsity) != published_path(overall):
    st.caption(
        f"Set by hand: (MLP {mlp_sparsity:.2f}, head {head_sparsity:.2f}). The overall slider reads "
        f"{overall:.2f}, the path point it last set; move it to return to the published path."
    )

cost = explorer.cost(mlp_sparsity, head_sparsity)
worker = session.live_worker(explorer)
cost_cards(cost, worker, (mlp_sparsity, head_sparsity))
measure_now(explorer, (mlp_sparsity, head_sparsity))

if session.selection().random_init and session.has_labelled_data():
    session.knn_on_random_checkbox()
request = live_request(explorer, mlp_sparsity, head_sparsity)
worker.request(request)
maps, neurons = st.columns(2)
maps.plotly_chart(charts.head_map(scores, cost.head_mask.numpy()), key="head_map")
neurons.plotly_chart(charts.mlp_kept_chart(cost.kept_neurons, explorer.backbone.shape.mlp_hidden), key="mlp_kept")
heat, similarity_column = st.columns(2)
heat.plotly_chart(charts.mlp_score_heatmap(scores, cost.kept_neurons), key="mlp_heatmap")
accuracy_panel(worker, request, similarity_column, key="main")

st.divider()
method = st.selectbox(
    "Side by side with another method at the same sparsity",
    ["(none)", *DATA_FREE_METHODS],
    key="side_by_side_method",
    help="Magnitude, LAMP and random scores need no data; compare their maps and accuracy with the current scores.",
)
if method != "(none)":
    other = session.comparison_explorer(method)
    other_cost = other.cost(mlp_sparsity, head_sparsity)
    other_worker = session.live_worker(other, name="comparison")
    other_request = live_request(other, mlp_sparsity, head_sparsity)
    other_worker.request(other_request)
    mine, theirs = st.columns(2)
    mine.markdown(f"**{scores_label}**")
    theirs.markdown(f"**{method} (data-free)**")
    accuracy_panel(worker, request, None, key="side_main", container=mine, compact=True)
    accuracy_panel(other_worker, other_request, None, key="side_other", container=theirs, compact=True)
    mine.plotly_chart(charts.head_map(scores, cost.head_mask.numpy()), key="side_head_map")
    theirs.plotly_chart(charts.head_map(other.scores, other_cost.head_mask.numpy()), key="side_other_head_map")
    mine.plotly_chart(charts.mlp_kept_chart(cost.kept_neurons, explorer.backbone.shape.mlp_hidden), key="side_mlp")
    theirs.plotly_chart(
        charts.mlp_kept_chart(other_cost.kept_neurons, other.backbone.shape.mlp_hidden), key="side_other_mlp"
    )
st.page_link("pages/6_learn.py", label="How to read this page (Learn)", icon=":material/school:")
