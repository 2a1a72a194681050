"""Plotly figures for the app (pure plotly: no streamlit import, so benchmarks and tests can use them too).

Every figure has axis titles with units and a title saying what it measures.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
import plotly.graph_objects as go

from snapvit_core.scoring.scores import ImportanceScores
from ui.chart_overlay import ChartMarks, PlotArea

KEPT_COLOUR = "#1f77b4"
# Structure charts have fixed margins with room for their colour bar and legend: plotly's auto-expanding
# margins make plotly draw such a figure twice (results/code_choices.md), and the explorer places
# the marks it lays over them (ui.chart_overlay) from fixed margins.
FIXED_MARGIN = {"l": 60, "r": 80, "t": 50, "b": 110, "autoexpand": False}
PRUNED_COLOUR = "#d62728"
PARETO_COLOUR = "#2ca02c"


def _rank_normalise(values: np.ndarray) -> np.ndarray:
    """Scores as within-array percentiles in [0, 1] (scores span orders of magnitude)."""
    flat = values.reshape(-1)
    ranks = np.empty_like(flat, dtype=float)
    ranks[np.argsort(flat, kind="stable")] = np.linspace(0.0, 1.0, flat.size) if flat.size > 1 else 1.0
    return ranks.reshape(values.shape)


STRUCTURE_HEIGHT = 450  # px, fixed for the charts the explorer lays marks over (ui.chart_overlay)
OVERLAY_MARGIN = {**FIXED_MARGIN, "b": 60}  # no legend below: the overlay's marks are explained in a caption


def head_map(scores: ImportanceScores, kept_heads: np.ndarray | None = None) -> go.Figure:
    """Blocks x heads grid coloured by head-score percentile; pruned heads crossed out.

    Without ``kept_heads`` nothing is crossed out and the title is left to the caller: the explorer lays
    the crosses and the title over the chart (``head_marks``), so a head move does not redraw it.

    Args:
        scores: the importance scores (heads [B, H]).
        kept_heads: boolean [B, H] mask in the original head order (True = kept), or None.
    """
    heads = scores.heads.float().numpy()
    blocks, count = heads.shape
    # Hover: score, rank within its block (1 = most important) and rank in the whole model.
    block_rank = np.argsort(np.argsort(-heads, axis=1, kind="stable"), axis=1, kind="stable") + 1
    model_rank = (np.argsort(np.argsort(-heads.reshape(-1), kind="stable"), kind="stable") + 1).reshape(heads.shape)
    customdata = np.stack([heads, block_rank, model_rank], axis=-1).astype(np.float64)
    state = ""
    if kept_heads is not None:
        kept = np.asarray(kept_heads, dtype=bool)
        customdata = np.empty((*heads.shape, 4), dtype=object)  # mixed numbers and words: no string upcast
        customdata[..., 0], customdata[..., 1], customdata[..., 2], customdata[..., 3] = (
            heads,
            block_rank,
            model_rank,
            np.where(kept, "kept", "pruned"),
        )
        state = ": %{customdata[3]}"
    figure = go.Figure(
        go.Heatmap(
            z=_rank_normalise(heads),
            x=list(range(count)),
            y=list(range(blocks)),
            customdata=customdata,
            colorscale="Viridis",
            zmin=0,
            zmax=1,
            colorbar={"title": "score<br>percentile"},
            hovertemplate=f"block %{{y}}, head %{{x}}{state}<br>score %{{customdata[0]:.3g}}"
            f"<br>rank %{{customdata[1]}} of {count} in its block, %{{customdata[2]}} of {heads.size} overall"
            "<br>percentile %{z:.2f}<extra></extra>",
        )
    )
    figure.update_layout(
        xaxis={"title": "head index", "dtick": 1, "range": [-0.5, count - 0.5]},
        yaxis={"title": "block (0 = input side)", "dtick": 1, "range": [blocks - 0.5, -0.5]},  # block 0 on top
        height=STRUCTURE_HEIGHT,
    )
    if kept_heads is None:
        figure.update_layout(margin=OVERLAY_MARGIN)
        return figure
    pruned_y, pruned_x = np.nonzero(~kept)
    figure.add_trace(
        go.Scatter(
            x=pruned_x,
            y=pruned_y,
            mode="markers",
            marker={"symbol": "x", "size": 14, "color": PRUNED_COLOUR, "line": {"width": 2}},
            name="pruned head",
            hoverinfo="skip",  # the heatmap below carries the score, rank and state
        )
    )
    figure.update_layout(
        title=heads_title(kept),
        legend={"orientation": "h", "y": -0.2, "yanchor": "top"},
        margin=FIXED_MARGIN,
    )
    return figure


def heads_title(kept_heads: np.ndarray) -> str:
    """The head map's title: how many heads a configuration keeps (boolean [B, H] mask, True = kept)."""
    kept = np.asarray(kept_heads, dtype=bool)
    return f"Heads: {int(kept.sum())} of {kept.size} kept"


def head_marks(figure: go.Figure) -> ChartMarks:
    """The title and a cross on each pruned head, laid over ``figure``, a ``head_map`` drawn without
    ``kept_heads`` (``ui.chart_overlay``: a move changes these marks, not the figure)."""
    style = {"colour": PRUNED_COLOUR, "size": 14, "class": "pruned-head", "title_class": "chart-title"}
    return ChartMarks("heads", PlotArea.of(figure), style)


def mlp_kept_chart(kept_neurons: Sequence[int], hidden: int) -> go.Figure:
    """Kept vs pruned MLP neurons per block (stacked bars, neurons)."""
    kept = np.asarray(kept_neurons)
    blocks = list(range(len(kept)))
    figure = go.Figure(
        [
            go.Bar(x=blocks, y=kept, name="kept", marker_color=KEPT_COLOUR),
            go.Bar(x=blocks, y=hidden - kept, name="pruned", marker_color=PRUNED_COLOUR),
        ]
    )
    figure.update_layout(
        barmode="stack",
        title=neurons_title(kept, hidden),
        xaxis_title="block (0 = input side)",
        yaxis_title="hidden neurons (count)",
        xaxis={"dtick": 1},
        legend={"orientation": "h", "y": -0.2, "yanchor": "top"},
        margin=FIXED_MARGIN,
    )
    return figure


def mlp_kept_axes(blocks: int, hidden: int) -> go.Figure:
    """The axes of ``mlp_kept_chart`` without bars, of fixed geometry: the explorer lays the bars and the
    title over it (``kept_bar_marks``), so an MLP move does not redraw it."""
    figure = go.Figure(go.Scatter(x=[], y=[], hoverinfo="skip", showlegend=False))
    figure.update_layout(
        xaxis={"title": "block (0 = input side)", "dtick": 1, "range": [-0.5, blocks - 0.5], "showgrid": False},
        yaxis={"title": "hidden neurons (count)", "range": [0, hidden * 1.05]},
        height=STRUCTURE_HEIGHT,
        margin=OVERLAY_MARGIN,
    )
    return figure


def neurons_title(kept_neurons: Sequence[int], hidden: int) -> str:
    """The kept-neuron chart's title: how many MLP neurons a configuration keeps, of ``hidden`` per block."""
    kept = [int(k) for k in kept_neurons]
    return f"MLP neurons: {sum(kept)} of {hidden * len(kept)} kept"


def kept_bar_marks(figure: go.Figure, hidden: int) -> ChartMarks:
    """Stacked kept (blue) / pruned (red) bars per block and the title, laid over ``mlp_kept_axes``; each
    bar names its block and count on hover."""
    style = {
        "hidden": int(hidden),
        "half_width": 0.4,  # plotly's default bar width (bargap 0.2)
        "kept_colour": KEPT_COLOUR,
        "pruned_colour": PRUNED_COLOUR,
        "kept_class": "kept-bar",
        "pruned_class": "pruned-bar",
        "kept_tip": "block {block}: {count} kept",
        "pruned_tip": "block {block}: {count} pruned",
        "title_class": "chart-title",
    }
    return ChartMarks("bars", PlotArea.of(figure), style)


KEEP_BOUNDARY_KEY = "Red line per block: the keep boundary (the neurons to its right are pruned)."
HEAD_MAP_KEY = "Colour: each head's score percentile; red X: a pruned head."
KEPT_BARS_KEY = "Blue: kept neurons; red: pruned (hover a bar for its count)."


def mlp_score_heatmap(scores: ImportanceScores, kept_neurons: np.ndarray | None = None) -> go.Figure:
    """Blocks x neurons, each block's neurons sorted by score (percentile colour); kept boundary marked.

    Without ``kept_neurons`` no boundary is drawn: the explorer lays it over the chart instead
    (``keep_boundary_marks``), so an MLP move does not redraw this chart in any viewer's browser. Its
    geometry is fixed (height, margins, axis ranges) for that. The hover data is numeric only (score,
    rank, the block's kept count), so plotly sends it as typed arrays (a mixed text/number grid of
    blocks x neurons x 3 values was 120 kB of JSON to build, send and parse).
    """
    mlp = scores.mlp.float().numpy()
    ordered = -np.sort(-mlp, axis=1)
    blocks, hidden = mlp.shape
    ranks = np.broadcast_to(np.arange(1, hidden + 1, dtype=np.float32), mlp.shape)
    kept = np.full(blocks, hidden) if kept_neurons is None else np.asarray(kept_neurons)
    customdata = np.stack(
        [ordered.astype(np.float32), ranks, np.broadcast_to(kept[:, None], mlp.shape).astype(np.float32)], axis=-1
    )
    keeps = "" if kept_neurons is None else "; the block keeps the top %{customdata[2]:.0f}"
    figure = go.Figure(
        go.Heatmap(
            z=_rank_normalise(ordered).astype(np.float32),
            customdata=customdata,
            colorscale="Viridis",
            zmin=0,
            zmax=1,
            colorbar={"title": "score<br>percentile"},
            hovertemplate=f"block %{{y}}, neuron ranked %{{customdata[1]:.0f}} of {hidden} in its block{keeps}"
            "<br>score %{customdata[0]:.3g}<br>percentile in the model %{z:.2f}<extra></extra>",
        )
    )
    if kept_neurons is not None:
        figure.add_trace(
            go.Scatter(
                x=kept - 0.5,
                y=np.arange(blocks),
                mode="markers",
                marker={"symbol": "line-ns", "size": 16, "line": {"width": 3, "color": PRUNED_COLOUR}},
                name="keep boundary (neurons to the right are pruned)",
            )
        )
    figure.update_layout(
        title="Neuron scores, sorted per block",
        height=STRUCTURE_HEIGHT,
        xaxis={"title": "neuron rank within block (0 = most important)", "range": [-0.5, hidden - 0.5]},
        yaxis={"title": "block (0 = input side)", "range": [blocks - 0.5, -0.5], "dtick": 1},  # block 0 on top
        legend={"orientation": "h", "y": -0.2, "yanchor": "top"},
        margin=FIXED_MARGIN if kept_neurons is not None else OVERLAY_MARGIN,
    )
    return figure


def keep_boundary_marks(figure: go.Figure) -> ChartMarks:
    """Each block's keep boundary as a red line, laid over ``figure``, an ``mlp_score_heatmap`` drawn
    without ``kept_neurons`` (``ui.chart_overlay``: a move changes these marks, not the figure)."""
    style = {"colour": PRUNED_COLOUR, "width": 3, "class": "keep-boundary"}
    return ChartMarks("boundaries", PlotArea.of(figure), style)


def fitness_curve(fitness: Sequence[float], best_so_far: Sequence[float]) -> go.Figure:
    """Search progress: every evaluated fitness and the best so far (lower is better)."""
    steps = list(range(1, len(fitness) + 1))
    figure = go.Figure(
        [
            go.Scatter(x=steps, y=list(fitness), mode="markers", name="candidate", marker={"color": "#7f7f7f"}),
            go.Scatter(x=steps, y=list(best_so_far), mode="lines", name="best so far", line={"color": PARETO_COLOUR}),
        ]
    )
    figure.update_layout(
        title="Search fitness (1 - mean cosine similarity to the teacher; lower is better)",
        xaxis_title="fitness evaluation (count)",
        yaxis_title="fitness (unitless)",
        legend={"orientation": "h", "y": -0.2},
    )
    return figure


COST_AXIS_TITLES = {
    "flops_pct": "FLOPs (% of unpruned)",
    "GFLOPs": "GFLOPs per image",
    "latency_ms": "latency at batch 1 (ms)",
    "params_m": "parameters (millions)",
}


def tradeoff_chart(
    table: pd.DataFrame, cost: str, pareto: np.ndarray, title: str | None = None, accuracy: str = "kNN top-1 (%)"
) -> go.Figure:
    """An accuracy column (kNN or linear-probe top-1) vs a cost column, one colour per scores source,
    Pareto-optimal points outlined."""
    short = "linear" if accuracy.startswith("Linear") else "kNN"
    figure = go.Figure()
    for label, rows in table.groupby("scores", sort=False):
        figure.add_trace(
            go.Scatter(
                x=rows[cost],
                y=rows[accuracy],
                mode="markers+lines",
                name=str(label),
                customdata=rows[["MLP sparsity", "head sparsity"]].to_numpy(),
                hovertemplate="MLP %{customdata[0]:.2f}, heads %{customdata[1]:.2f}<br>"
                f"%{{x:.3g}}<br>{short} %{{y:.2f}}%<extra>%{{fullData.name}}</extra>",
            )
        )
    front = table[np.asarray(pareto, dtype=bool)].sort_values(cost)
    figure.add_trace(
        go.Scatter(
            x=front[cost],
            y=front[accuracy],
            mode="lines+markers",
            name="Pareto front",
            line={"color": PARETO_COLOUR, "dash": "dot", "width": 2},
            marker={"size": 14, "symbol": "circle-open", "color": PARETO_COLOUR, "line": {"width": 2}},
            hoverinfo="skip",
        )
    )
    figure.update_layout(
        title=title or f"{accuracy.removesuffix(' (%)')} vs {COST_AXIS_TITLES.get(cost, cost)}",
        xaxis_title=COST_AXIS_TITLES.get(cost, cost),
        yaxis_title=accuracy,
        legend={"orientation": "h", "y": -0.25},
    )
    return figure


def budget_chart(answer, budget_label: str) -> go.Figure:
    """The budget search on the (MLP, head) plane: the boundary of fitting configurations, the evaluated
    candidates coloured by accuracy, and the answer (star).

    Args:
        answer: a ``snapvit_core.landscape.budget.BudgetAnswer``.
        budget_label: how the page names the budgeted quantity.
    """
    accuracy_title = {
        "knn": "kNN top-1 (%)",
        "linear": "linear-probe top-1 (%)",
        "similarity": "embedding cosine",
    }.get(answer.accuracy_kind, "")
    boundary, candidates = answer.boundary, answer.candidates
    figure = go.Figure()
    if not boundary.empty:
        figure.add_trace(
            go.Scatter(
                x=boundary["MLP sparsity"],
                y=boundary["head sparsity"],
                mode="lines",
                name=f"budget boundary ({budget_label} <= {answer.limit:.3g})",
                line={"color": "#7f7f7f", "dash": "dot"},
                customdata=boundary[answer.column],
                hovertemplate="MLP %{x:.3f}, heads %{y:.3f}<br>cost %{customdata:.3f}<extra></extra>",
            )
        )
    if not candidates.empty:
        figure.add_trace(
            go.Scatter(
                x=candidates["MLP sparsity"],
                y=candidates["head sparsity"],
                mode="markers",
                name="evaluated candidates",
                marker={
                    "size": 11,
                    "color": candidates["accuracy"],
                    "colorscale": "Viridis",
                    "colorbar": {"title": accuracy_title},
                },
                customdata=np.stack([candidates["accuracy"], candidates[answer.column]], axis=-1),
                hovertemplate="MLP %{x:.3f}, heads %{y:.3f}<br>accuracy %{customdata[0]:.3f}"
                "<br>cost %{customdata[1]:.3f}<extra></extra>",
            )
        )
    figure.add_trace(
        go.Scatter(
            x=[answer.mlp_sparsity],
            y=[answer.head_sparsity],
            mode="markers",
            name="best within budget",
            marker={"symbol": "star", "size": 20, "color": PARETO_COLOUR, "line": {"width": 1, "color": "black"}},
            hovertemplate="answer: MLP %{x:.3f}, heads %{y:.3f}<extra></extra>",
        )
    )
    figure.update_layout(
        title="Budget search: configurations on the budget's boundary (more sparsity = cheaper)",
        xaxis_title="MLP sparsity (fraction of neurons removed)",
        yaxis_title="head sparsity (fraction of heads removed)",
        xaxis={"range": [0, 1]},
        yaxis={"range": [0, 1]},
        legend={"orientation": "h", "y": -0.25},
    )
    return figure
