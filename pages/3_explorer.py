"""Page 3: sparsity sliders that live-prune the session's model, with metrics and maps."""

from __future__ import annotations

import streamlit as st

from snapvit_core.app_state import measure, per_image_similarity
from snapvit_core.errors import SnapViTError
from ui import charts, session
from ui.labels import format_flops
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

for key in ("mlp_sparsity", "head_sparsity", "overall_sparsity"):
    st.session_state.setdefault(key, 0.0)
if "pending_config" in st.session_state:  # sent here by the budget finder
    st.session_state["mlp_sparsity"], st.session_state["head_sparsity"] = st.session_state.pop("pending_config")


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
mlp_sparsity = left.slider("MLP sparsity (fraction of neurons removed)", key="mlp_sparsity", **slider_args)
head_sparsity = right.slider("Head sparsity (fraction of heads removed)", key="head_sparsity", **slider_args)
if (mlp_sparsity, head_sparsity) != published_path(overall):
    st.caption(
        f"Set by hand: (MLP {mlp_sparsity:.2f}, head {head_sparsity:.2f}). The overall slider reads "
        f"{overall:.2f}, the path point it last set; move it to return to the published path."
    )

try:
    if "unpruned_measurement" not in st.session_state or st.session_state.get("unpruned_for") != id(explorer):
        st.session_state["unpruned_measurement"] = measure(explorer, 0.0, 0.0, latency=False)
        st.session_state["unpruned_for"] = id(explorer)
    base = st.session_state["unpruned_measurement"]
    # Streamlit's fast reruns can start this page again in a new thread while the previous run is still
    # computing: everything read from the session's working model is taken together under its lock.
    with explorer.lock:
        now = measure(explorer, mlp_sparsity, head_sparsity, with_unpruned=True)
        _, kept_heads = explorer.elastic.kept_masks()  # (neurons, heads) in the original order
        similarity = per_image_similarity(explorer)
except SnapViTError as error:
    session.show_error(error)
    st.stop()

cards = st.columns(5)
if now.knn_top1_pct is not None:
    cards[0].metric(
        "kNN top-1",
        f"{now.knn_top1_pct:.2f} %",
        delta=f"{now.knn_top1_pct - base.knn_top1_pct:+.2f} pts vs unpruned",
        help="k=20 nearest-neighbour accuracy on the held-out split",
    )
else:
    cards[0].metric("kNN top-1", "n/a", help="The selected data has no labels.")
cards[1].metric(
    "Parameters",
    f"{now.params / 1e6:.3f} M",
    delta=f"{100 * (now.params / base.params - 1):+.1f} %",
    delta_color="inverse",
    help="embedding-path parameters",
)
cards[2].metric(
    "FLOPs",
    format_flops(now.flops),
    delta=f"{100 * (now.flops / base.flops - 1):+.1f} %",
    delta_color="inverse",
    help="per image, analytic",
)
# The unpruned model is timed interleaved with the pruned one, so machine load affects both alike.
base_latency = now.unpruned_latency_ms
cards[3].metric("Latency", f"{now.latency_ms:.2f} ms", help=f"batch 1, median of 15 forwards on {explorer.device}")
cards[4].metric(
    "Speed-up",
    f"{now.speedup:.2f} x",
    help=f"measured vs {base_latency:.2f} ms unpruned (median over 15 back-to-back pairs of forwards); "
    f"FLOPs ratio {base.flops / now.flops:.2f} x",
)
if now.embedding_cosine is not None:
    st.caption(f"Mean cosine similarity of pruned to unpruned embeddings: {now.embedding_cosine:.4f}")

hidden = explorer.backbone.shape.mlp_hidden
maps, neurons = st.columns(2)
maps.plotly_chart(charts.head_map(scores, kept_heads.numpy()), key="head_map")
neurons.plotly_chart(charts.mlp_kept_chart(now.kept_neurons, hidden), key="mlp_kept")
heat, similarity_column = st.columns(2)
heat.plotly_chart(charts.mlp_score_heatmap(scores, now.kept_neurons), key="mlp_heatmap")
if similarity is not None:
    similarity_column.plotly_chart(charts.similarity_histogram(similarity), key="similarity")
st.session_state["explorer_config"] = (mlp_sparsity, head_sparsity)
