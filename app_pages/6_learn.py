"""Page 6: Learn. What SnapViT prunes and how to read every chart, with numbers from the loaded model."""

from __future__ import annotations

import streamlit as st

from snapvit_core.errors import SnapViTError
from ui import charts, config_state, session
from ui.labels import card, card_row, format_flops
from ui.learn_view import compare_landscapes, tradeoff_section, two_metrics_section

st.title("Learn: what the explorer shows")
if session.guarded_backbone() is None:
    st.stop()
try:
    state = session.current()
    magnitude_shared = session.comparison("magnitude")
except SnapViTError as error:
    session.show_error(error)
    st.stop()
explorer, magnitude = state.explorer, magnitude_shared.explorer
scores, scores_label = state.scores, state.scores_label
shape = explorer.backbone.shape
mlp_sparsity, head_sparsity = config_state.current().pair
full = explorer.cost(0.0, 0.0)
half_mlp = explorer.cost(0.5, 0.0)
half_heads = explorer.cost(0.0, 0.5)
st.caption(
    f"All numbers on this page come from the loaded backbone `{session.selection().model_id}` "
    f"({shape.num_blocks} blocks × {shape.num_heads} heads, width {shape.embed_dim}, "
    f"{shape.mlp_hidden} MLP neurons per block) and the explorer's configuration "
    f"(MLP {mlp_sparsity:.2f}, head {head_sparsity:.2f})."
)

st.header("1. What is pruned: MLP neurons and attention heads")
st.markdown(
    f"""
A Vision Transformer is a stack of **{shape.num_blocks} blocks**. Each block has two parts:

- **Attention** with **{shape.num_heads} heads**. A head is a small, independent attention unit of
  width {shape.head_dim}: it decides which image patches look at which. Removing a head deletes its
  slices of the query/key/value projection and of the output projection.
- An **MLP** with **{shape.mlp_hidden} hidden neurons**. A neuron is one row of the first MLP layer
  and one column of the second. Removing it deletes both.

SnapViT removes *whole* neurons and heads, so the pruned model is simply a smaller dense ViT: it needs
no sparse kernels and is faster on any hardware.
"""
)
cards = [card_row()] * 3
card(cards[0], "Unpruned FLOPs", format_flops(full.cost.flops).replace("FLOPs", ""), help="per image, analytic")
card(
    cards[1],
    "Half the neurons (% FLOPs)",
    f"{half_mlp.cost.flops_pct:.1f}",
    help="FLOPs left after removing 50 % of the MLP neurons (no heads removed)",
)
card(
    cards[2],
    "Half the heads (% FLOPs)",
    f"{half_heads.cost.flops_pct:.1f}",
    help="FLOPs left after removing 50 % of the heads (no neurons removed)",
)
st.markdown(
    f"""
On this backbone, removing half of the MLP neurons leaves **{half_mlp.cost.flops_pct:.1f} %** of the
FLOPs and removing half of the heads leaves **{half_heads.cost.flops_pct:.1f} %**. That is why the
explorer has two sliders: the two kinds of unit cost different amounts and hurt accuracy differently.
"""
)

st.header("2. What sparsity removes")
now = explorer.cost(mlp_sparsity, head_sparsity)
st.markdown(
    f"""
**MLP sparsity** is the fraction of *all* {shape.num_blocks * shape.mlp_hidden:,} MLP neurons removed,
**head sparsity** the fraction of all {shape.num_blocks * shape.num_heads} heads. The fraction is
global: the scores decide *which* blocks lose most, and every block keeps a minimum so none is emptied.
At the explorer's configuration (MLP {mlp_sparsity:.2f}, head {head_sparsity:.2f}) the model keeps
heads per block **{now.kept_heads}** and neurons per block **{now.kept_neurons}**: that is
{now.cost.params_pct:.1f} % of the parameters and {now.cost.flops_pct:.1f} % of the FLOPs.
"""
)
left, right = st.columns(2)
left.plotly_chart(charts.head_map(scores, now.head_mask.numpy()), key="learn_head_map")
right.plotly_chart(charts.mlp_kept_chart(now.kept_neurons, shape.mlp_hidden), key="learn_mlp_kept")
st.page_link("app_pages/3_explorer.py", label="Change the configuration in the explorer", icon=":material/tune:")

st.header("3. Why kNN accuracy measures what is left")
st.markdown(
    """
The backbone has no classifier: it turns an image into an **embedding** (a vector). To ask how much of
the model's knowledge survives pruning without training anything, the explorer embeds a labelled set
and classifies each test image by a vote of its **k = 20 nearest training images** in embedding space.
If pruning keeps similar images close together, kNN accuracy stays high; if it scrambles the
embedding, accuracy drops. No weights are trained, so the number reflects only what is left.

The **mean cosine** card needs no labels: it compares each test image's pruned embedding with its
unpruned one (1 = unchanged), averaged over the test images. They are what SnapViT's search
optimises, and what the budget finder ranks by when the data has no labels. Random-weight models
skip kNN: their embeddings carry no knowledge, so their accuracy is meaningless.
"""
)
two_metrics_section(state.shared)

st.header("4. SnapViT scores vs magnitude pruning")
compare_at = (mlp_sparsity, head_sparsity) if (mlp_sparsity, head_sparsity) != (0.0, 0.0) else (0.5, 0.5)
where = "(the explorer's configuration)" if compare_at == (mlp_sparsity, head_sparsity) else "(at (0, 0) both keep all)"
st.markdown(
    f"""
**Magnitude pruning** keeps the units with the largest weights. It needs no data, but a large weight
is not the same as an important one, and magnitudes are not comparable across blocks.

**SnapViT** scores each neuron and head by how much the model's *own embeddings* change when the
unit's weights move: squared gradients of a label-free self-distillation loss (the unpruned model
is the teacher). No labels, no classifier. Gradient scores are comparable within a block but not
across blocks, so a short **evolutionary search (xNES)** learns one multiplier per block's neurons
and per head, choosing the ones whose pruned models keep embeddings closest to the teacher's.
The result is one set of scores that cuts the model to *any* sparsity instantly.

The explorer starts with the shipped searched scores where they exist (now: **{scores_label}**).
Here is how many units the two methods keep in common at (MLP {compare_at[0]:.2f}, head {compare_at[1]:.2f})
{where}:
"""
)
ours, other = explorer.cost(*compare_at), magnitude.cost(*compare_at)
mine, theirs = ours.head_mask.numpy().astype(bool), other.head_mask.numpy().astype(bool)
neurons_mine, neurons_theirs = ours.neuron_mask.numpy().astype(bool), other.neuron_mask.numpy().astype(bool)
agree = [card_row()] * 2
card(
    agree[0],
    "Heads kept by both (%)",
    f"{100 * (mine & theirs).sum() / max(mine.sum(), 1):.0f}",
    help="share of the current scores' kept heads that magnitude pruning keeps too",
)
card(
    agree[1],
    "Neurons kept by both (%)",
    f"{100 * (neurons_mine & neurons_theirs).sum() / max(neurons_mine.sum(), 1):.0f}",
    help="share of the current scores' kept MLP neurons that magnitude pruning keeps too",
)
st.caption("The explorer's 'Side by side' selector shows both methods' maps and kNN accuracy at the same sparsity.")
compare_landscapes(state.shared, magnitude_shared, scores_label)

tradeoff_section(state.shared, (mlp_sparsity, head_sparsity))

st.header("6. How to read every chart")
st.markdown(
    """
- **Attention heads map** (blocks × heads): colour = the head's score percentile (yellow = most
  important); a red × marks a pruned head. Hover a head for its score and its rank in its block and
  in the whole model.
- **MLP neurons per block**: blue = kept, red = pruned neurons of each block. Blocks the scores
  consider important keep more.
- **MLP neuron scores**: each row is a block with its neurons sorted from most (left) to least
  important; the red bar is where the cut falls, everything to its right is pruned. Hover for the
  score and its rank.
- **Accuracy landscape** (explorer): kNN top-1 at every (MLP, head) configuration of the sliders'
  grid, computed once per backbone and scores and shared by every viewer. Dotted white lines join
  configurations of equal FLOPs, orange ones equal predicted latency; circles mark the Pareto-optimal
  configurations, the red line the published path and the star the sliders. Click a cell to go there.
  A configuration not computed yet shows a quick estimate on a subset first, labelled as such.
- **Cost cards**: parameters and FLOPs are exact (counted from the plan). Latency and speed-up are
  **predicted** by a latency model measured once on this device; "Measure now" times the pruned
  model directly. Speed-up is 1.00 x at (0, 0) by construction.
- **Compare & budget**: accuracy against FLOPs or latency for several score sources; circled points
  are the Pareto front (nothing else is both cheaper and more accurate). The budget finder searches
  the whole (MLP, head) plane and plots every candidate it evaluated.
"""
)
st.plotly_chart(charts.mlp_score_heatmap(scores, now.kept_neurons), key="learn_heatmap")
