"""The Learn page's landscape sections: the whole trade-off and the measured SnapViT-vs-magnitude comparison.

Every sentence is computed from the loaded backbone's landscapes; where a landscape is still being
filled, the text says how much of it the numbers cover.
"""

from __future__ import annotations

import numpy as np
import streamlit as st

from ui.explorer_view import cost_grids, difference_chart
from ui.landscape_charts import LANDSCAPE_KEY, landscape_heatmap
from ui.shared import SharedExplorer


def _coverage_note(*shared: SharedExplorer) -> str:
    done = min(len(s.landscape) for s in shared)
    total = shared[0].landscape.size
    return "" if done >= total else f" (so far {done} of {total} configurations are computed; this page updates)"


def _measured_difference(
    first: tuple[SharedExplorer, str], second: tuple[SharedExplorer, str], *, unlabelled: str, waiting: str
) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    """(first's metric, second's metric, first - second) over the plane in percent, the fillers started; None, with
    ``unlabelled`` as a note when there is no landscape (no labelled data), or ``waiting`` as a caption while no
    configuration has both values yet."""
    if first[0].landscape is None or second[0].landscape is None:
        st.info(unlabelled, icon=":material/info:")
        return None
    for shared, _ in (first, second):
        shared.filler.start()  # one filler started twice when both name it: starting is idempotent
    a, b = (100 * shared.landscape.matrix(metric) for shared, metric in (first, second))
    difference = a - b
    if np.isnan(difference).all():
        st.caption(waiting)
        return None
    return a, b, difference


def compare_landscapes(mine: SharedExplorer, magnitude: SharedExplorer, label: str) -> None:
    """Where the current scores beat magnitude pruning, measured over the whole plane."""
    unlabelled = "The measured comparison needs labelled data (kNN)."
    waiting = "The measured comparison appears here as both landscapes fill."
    measured = _measured_difference((mine, "knn_top1"), (magnitude, "knn_top1"), unlabelled=unlabelled, waiting=waiting)
    if measured is None:
        return
    difference = measured[2]
    known = ~np.isnan(difference)
    tie = 0.5  # points: about one test image in a few hundred; closer than this is a draw
    wins, losses = int((difference[known] > tie).sum()), int((difference[known] < -tie).sum())
    st.markdown(
        f"""
**Measured on this backbone** (kNN top-1 on the full test split, {int(known.sum())} configurations
{_coverage_note(mine, magnitude)}): **{label}** is more accurate than magnitude pruning by more than
{tie} points in **{wins}** configurations, less accurate in **{losses}**, and within {tie} points in the
remaining {int(known.sum()) - wins - losses}. The largest gain is {np.nanmax(difference):+.2f} points, the
largest loss {np.nanmin(difference):+.2f}. Blue cells below are where {label} wins, red where magnitude
does. Near zero sparsity every method keeps almost everything, so the two agree there.
"""
    )
    difference_chart(mine, magnitude, ("these scores", "magnitude"))


def two_metrics_section(shared: SharedExplorer) -> None:
    """kNN and the linear probe: what each measures, and where they disagree on this backbone."""
    st.markdown(
        """
**Two accuracy metrics.** SnapViT reports both. **kNN top-1** trains nothing: it asks whether the pruned
embedding still puts images of a class near each other. The **linear probe** trains one linear layer on
the frozen embeddings (DINOv1's linear evaluation: 100 epochs of SGD, a cosine schedule) and reports its
test accuracy: what a practitioner who fits a linear head on the pruned backbone actually gets. They can
disagree: a pruned embedding can scramble neighbourhoods that a linear layer still separates (the probe
keeps more), or keep neighbourhoods whose classes are no longer linearly separable (the probe loses more).
"""
    )
    unlabelled = "Both metrics need labelled data."
    waiting = "This backbone's numbers appear here as the landscape's linear-probe values are computed."
    measured = _measured_difference(
        (shared, "linear_top1"), (shared, "knn_top1"), unlabelled=unlabelled, waiting=waiting
    )
    if measured is None:
        return
    linear, knn, difference = measured
    known = ~np.isnan(difference)
    axis = shared.landscape.axis
    i, j = np.unravel_index(int(np.nanargmin(difference)), difference.shape)
    k, m = np.unravel_index(int(np.nanargmax(difference)), difference.shape)
    unpruned = (
        f"Unpruned, kNN gives **{knn[0, 0]:.2f} %** and the linear probe **{linear[0, 0]:.2f} %**. "
        if known[0, 0]
        else ""
    )
    st.markdown(
        f"""
{unpruned}Over the {int(known.sum())} configurations computed{_coverage_note(shared)}, the probe minus kNN
ranges from **{difference[i, j]:+.2f}** points at (MLP {axis[i]:.2f}, head {axis[j]:.2f}) (there kNN
understates the loss) to **{difference[k, m]:+.2f}** at (MLP {axis[k]:.2f}, head {axis[m]:.2f}); the mean
absolute difference is {np.nanmean(np.abs(difference)):.2f} points. The explorer's landscape switches
between kNN, the linear probe and their difference ("Linear − kNN").
"""
    )


def tradeoff_section(shared: SharedExplorer, config: tuple[float, float]) -> None:
    """Section 5: the accuracy landscape and what it says about where accuracy falls off."""
    st.header("5. The whole trade-off at a glance")
    if shared.landscape is None:
        st.info("The accuracy landscape needs labelled data (kNN).", icon=":material/info:")
        return
    shared.filler.start()
    axis, flops, latency = cost_grids(shared)
    knn = 100 * shared.landscape.matrix("knn_top1")
    from snapvit_core.landscape.grid import published_points

    figure = landscape_heatmap(axis, knn, flops, latency, published_points(shared.landscape.key.grid), config)
    unpruned = knn[0, 0]
    text = ""
    if not np.isnan(unpruned) and (~np.isnan(knn)).sum() > 1:
        within = (knn >= unpruned - 1.0) & ~np.isnan(knn)
        cheapest = np.where(within, flops, np.inf)
        i, j = np.unravel_index(int(np.argmin(cheapest)), cheapest.shape)
        mlp_only, heads_only = knn[:, 0], knn[0, :]
        text = (
            f"The unpruned model scores **{unpruned:.2f} %**. The cheapest configuration within one point of it is "
            f"(MLP {axis[i]:.2f}, head {axis[j]:.2f}) at **{flops[i, j]:.1f} % of the FLOPs**. Removing MLP "
            f"neurons alone, accuracy stays within a point up to MLP sparsity "
            f"{_last_within(axis, mlp_only, unpruned)}; removing heads alone, up to head sparsity "
            f"{_last_within(axis, heads_only, unpruned)}{_coverage_note(shared)}."
        )
    st.markdown(
        f"""
The explorer's sliders move on a grid of {len(axis)} x {len(axis)} configurations. The **accuracy
landscape** shows kNN top-1 at every one of them, so the whole trade-off is visible at once: where
accuracy falls off, and which mix of neuron and head pruning reaches a FLOPs or latency budget with
the least loss. Follow a dotted iso-FLOPs line: every cell on it costs the same, and the brightest
cell on it is the best use of that budget. {text}
"""
    )
    st.plotly_chart(figure, key="learn_landscape")
    st.caption(LANDSCAPE_KEY)


def _last_within(axis, values: np.ndarray, reference: float) -> str:
    last = None
    for value, accuracy in zip(axis, values):
        if np.isnan(accuracy):
            return f"{last:.2f} (or beyond: not computed yet)" if last is not None else "(not computed yet)"
        if accuracy < reference - 1.0:
            break
        last = value
    return "—" if last is None else f"{last:.2f}"
