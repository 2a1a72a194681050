"""Plotly figures of the accuracy landscape: the (MLP, head) heatmap and the difference of two score sources.

Both put MLP sparsity on x and head sparsity on y. Every grid cell carries an invisible, clickable
point whose ``customdata`` is its (MLP, head) configuration, so a click on the heatmap selects it.

The landscape is drawn in every viewer's browser whenever it grows, and redrawn per move in the
explorer's side-by-side mode and on the Learn page, so the figure is built to draw fast (the costs are
in results/code_choices.md): the contour labels are placed here rather than by plotly.js, whose label
placement walks every contour path; the click targets are empty text points, not transparent markers,
which plotly styles one path each; there is no legend (``LANDSCAPE_KEY`` is the caption that says what
each mark is); and the margins are fixed (an auto-expanding margin makes plotly draw the figure twice).

On a slider move the explorer does not redraw it at all: its star (the sliders' configuration) is an
HTML mark laid over the plot (``landscape_marks``, ``ui.chart_overlay``), placed from the figure's
fixed size, margins and axis ranges, so the figure itself stays the same.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import plotly.graph_objects as go

from snapvit_core.landscape.sweep import pareto_mask
from ui.chart_overlay import ChartMarks, PlotArea
from ui.charts import FIXED_MARGIN

HEIGHT = 430
MARGIN = {**FIXED_MARGIN, "l": 55, "r": 75, "t": 40, "b": 50}  # room for the colour bar; no legend below
STAR_COLOUR = "#f58518"
STAR_SIZE = 18  # px
LANDSCAPE_KEY = (
    "Dotted white: iso-FLOPs (% of the unpruned model); orange: iso-latency (ms, predicted); red line: the "
    "published path; white rings: Pareto-optimal configurations (by FLOPs); star: the sliders' configuration."
)


def _click_targets(axis: Sequence[float], text: np.ndarray) -> go.Scatter:
    mlp, head = np.meshgrid(axis, axis, indexing="ij")  # (MLP, head)
    return go.Scatter(
        x=mlp.ravel(),
        y=head.ravel(),
        mode="text",  # hover and click find the nearest point; an empty text draws nothing to style
        text=[""] * mlp.size,
        customdata=np.stack([mlp.ravel(), head.ravel()], axis=1),
        hovertext=text.ravel(),
        hovertemplate="%{hovertext}<extra></extra>",
        showlegend=False,
        name="configurations",
    )


def nice_levels(values: np.ndarray, count: int = 7) -> np.ndarray:
    """``count`` to about ``2 * count`` contour levels at a 1-2-5 step strictly inside the range of ``values``."""
    finite = values[np.isfinite(values)]
    if finite.size == 0 or float(finite.max()) <= float(finite.min()):
        return np.empty(0)
    low, high = float(finite.min()), float(finite.max())
    raw = (high - low) / count
    magnitude = 10.0 ** np.floor(np.log10(raw))
    step = max(m * magnitude for m in (1, 2, 5) if m * magnitude <= raw)  # count to about 2 x count levels
    levels = np.arange(np.floor(low / step) + 1, np.ceil(high / step)) * step
    return levels[(levels > low) & (levels < high)]


LABEL_BOX = (0.13, 0.045)  # a contour label's extent in axis units (about 6 characters at 10 px on the chart)


def contour_label_points(
    axis: Sequence[float],
    grid: np.ndarray,
    levels: Sequence[float],
    fraction: float = 0.5,
    taken: list[tuple[float, float]] | None = None,
) -> list[tuple[float, float, float]]:
    """One (x, y, level) label position on each level's contour line of ``grid`` ((x, y) grid over ``axis``).

    The points where the contour crosses the grid's cell edges (linear interpolation, as the contour
    itself) are ordered along x; the label sits at ``fraction`` of the way, or at the nearest crossing
    from there whose ``LABEL_BOX`` overlaps no label placed before it (this family's and ``taken``,
    which it extends: close, near-parallel lines otherwise print their labels over each other). A level
    whose line has no free spot, or that the grid never crosses, gets none.
    """
    coords = np.asarray(axis, dtype=float)
    z = np.asarray(grid, dtype=float)
    taken = [] if taken is None else taken
    labels = []
    for level in levels:
        points = []
        for lo, hi, along_x in ((z[:-1, :], z[1:, :], True), (z[:, :-1], z[:, 1:], False)):
            crossing = np.isfinite(lo) & np.isfinite(hi) & ((lo - level) * (hi - level) < 0)
            for i, j in zip(*np.nonzero(crossing)):
                t = (level - lo[i, j]) / (hi[i, j] - lo[i, j])
                if along_x:
                    points.append((coords[i] + t * (coords[i + 1] - coords[i]), coords[j]))
                else:
                    points.append((coords[i], coords[j] + t * (coords[j + 1] - coords[j])))
        if not points:
            continue
        points.sort()
        start = min(int(fraction * len(points)), len(points) - 1)
        order = sorted(range(len(points)), key=lambda k: (abs(k - start), k))  # nearest the preferred spot first
        for k in order:
            x, y = points[k]
            if all(abs(x - tx) >= LABEL_BOX[0] or abs(y - ty) >= LABEL_BOX[1] for tx, ty in taken):
                taken.append((float(x), float(y)))
                labels.append((float(x), float(y), float(level)))
                break
    return labels


def _contours(
    axis: list[float],
    grid: np.ndarray,
    levels: np.ndarray,
    colour: str,
    dash: str,
    name: str,
    unit: str,
    where: float,
    taken: list[tuple[float, float]],
) -> list:
    """An unlabelled plotly contour of ``grid`` at ``levels`` and a text trace labelling each line (its
    labels clear of the ``taken`` positions, which it extends)."""
    if levels.size == 0:
        return []
    step = float(levels[1] - levels[0]) if levels.size > 1 else 1.0
    lines = go.Contour(
        x=axis,
        y=axis,
        z=grid.T,
        showscale=False,
        contours={"coloring": "none", "showlabels": False, "start": levels[0], "end": levels[-1], "size": step},
        line={"color": colour, "width": 1, "dash": dash},
        hoverinfo="skip",
        name=name,
    )
    digits = max(0, -int(np.floor(np.log10(step)))) if step < 1 else 0
    placed = contour_label_points(axis, grid, levels, where, taken)
    text = go.Scatter(
        x=[x for x, _, _ in placed],
        y=[y for _, y, _ in placed],
        text=[f"{level:.{digits}f}{unit}" for _, _, level in placed],
        mode="text",
        textfont={"color": colour, "size": 10},
        hoverinfo="skip",
        showlegend=False,
        name=f"{name} labels",
    )
    return [lines, text]


def axis_range(axis: Sequence[float]) -> tuple[float, float]:
    """The plotted range of either axis: the grid's cells, half a step beyond the first and last value."""
    values = [float(v) for v in axis]
    half = (values[1] - values[0]) / 2 if len(values) > 1 else 0.5
    return values[0] - half, values[-1] + half


def _layout(fig: go.Figure, title: str, axis: Sequence[float]) -> go.Figure:
    span = list(axis_range(axis))  # fixed (not autoranged): the explorer's star is placed from it
    fig.update_layout(
        title=title,
        height=HEIGHT,
        margin=MARGIN,
        showlegend=False,
        xaxis={"title": "MLP sparsity (fraction of neurons removed)", "range": span},
        yaxis={"title": "head sparsity", "range": span},
        clickmode="event+select",
        dragmode=False,
    )
    return fig


def landscape_marks(figure: go.Figure) -> ChartMarks:
    """A star marking the configuration, laid over ``figure``, a ``landscape_heatmap`` drawn without its
    own current point (``ui.chart_overlay``: a move changes this mark, not the figure)."""
    style = {"colour": STAR_COLOUR, "size": STAR_SIZE, "class": "landscape-current"}
    return ChartMarks("star", PlotArea.of(figure), style)


def landscape_heatmap(
    axis: Sequence[float],
    knn: np.ndarray,
    flops_pct: np.ndarray,
    latency_ms: np.ndarray | None,
    path: Sequence[tuple[float, float]],
    current: tuple[float, float] | None,
    title: str = "kNN top-1 over the (MLP, head) plane",
    metric: str = "kNN",
    difference: bool = False,
) -> go.Figure:
    """An accuracy heatmap (kNN or linear-probe top-1 %, or with ``difference`` a signed difference in
    points) with iso-FLOPs and iso-latency contours, the published path, the Pareto set by FLOPs (not for
    a difference) and the current point (none drawn when ``current`` is None: the explorer lays its own
    star over the chart, ``landscape_marks``). Arrays are (MLP, head) grids over ``axis``; NaN = not
    computed yet. ``metric`` names the values in the colour bar and the hover text."""
    axis = list(axis)
    fig = go.Figure()
    if difference:
        finite = knn[np.isfinite(knn)]
        limit = max(float(np.abs(finite).max()) if finite.size else 1.0, 0.5)
        colours = {"colorscale": "RdBu", "zmid": 0.0, "zmin": -limit, "zmax": limit}
    else:
        colours = {"colorscale": "Viridis"}
    fig.add_trace(
        go.Heatmap(
            x=axis,
            y=axis,
            z=knn.T,
            **colours,
            colorbar={"title": "points" if difference else f"{metric} %", "len": 0.8},
            hoverinfo="skip",
            name=metric,
        )
    )
    flops_levels = np.arange(10.0, 100.0, 10.0)
    taken: list[tuple[float, float]] = []  # label positions so far: the two families' labels keep apart
    fig.add_traces(_contours(axis, flops_pct, flops_levels, "white", "dot", "iso-FLOPs (%)", "%", 0.5, taken))
    if latency_ms is not None:
        latency_levels = nice_levels(latency_ms, count=5)
        latency = _contours(
            axis, latency_ms, latency_levels, "orange", "solid", "iso-latency (ms, predicted)", " ms", 0.2, taken
        )
        fig.add_traces(latency)
    fig.add_trace(
        go.Scatter(
            x=[p[0] for p in path],
            y=[p[1] for p in path],
            mode="lines+markers",
            name="published path",
            line={"color": "#e45756", "width": 2},
            marker={"size": 6},
            hoverinfo="skip",
        )
    )
    mlp, head = np.meshgrid(axis, axis, indexing="ij")
    known = ~np.isnan(knn)
    if known.any() and not difference:
        front = pareto_mask(flops_pct[known], knn[known])
        fig.add_trace(
            go.Scatter(
                x=mlp[known][front],
                y=head[known][front],
                mode="markers",
                name="Pareto-optimal (FLOPs)",
                marker={"symbol": "circle-open", "size": 11, "color": "white", "line": {"width": 2}},
                hoverinfo="skip",
            )
        )
    if current is not None:
        fig.add_trace(
            go.Scatter(
                x=[current[0]],
                y=[current[1]],
                mode="markers",
                name="current",
                marker={"symbol": "star", "size": 16, "color": STAR_COLOUR, "line": {"color": "black", "width": 1}},
                hoverinfo="skip",
            )
        )
    unit = " pts" if difference else " %"
    text = np.vectorize(lambda a, b, k, f: f"MLP {a:.2f}, head {b:.2f}<br>{metric} {k}<br>FLOPs {f:.1f} %")(
        mlp, head, np.where(known, np.char.add(np.round(knn, 2).astype(str), unit), "not computed yet"), flops_pct
    )
    fig.add_trace(_click_targets(axis, text))
    return _layout(fig, title, axis)


def difference_map(
    axis: Sequence[float], first: np.ndarray, second: np.ndarray, first_label: str, second_label: str
) -> go.Figure:
    """kNN top-1 difference (points) first - second over the plane; diverging colours centred on zero."""
    axis = list(axis)
    difference = first - second
    limit = float(np.nanmax(np.abs(difference))) if np.isfinite(difference).any() else 1.0
    fig = go.Figure(
        go.Heatmap(
            x=axis,
            y=axis,
            z=difference.T,
            colorscale="RdBu",
            zmid=0.0,
            zmin=-max(limit, 0.5),
            zmax=max(limit, 0.5),
            colorbar={"title": "points", "len": 0.8},
            hoverinfo="skip",
        )
    )
    mlp, head = np.meshgrid(axis, axis, indexing="ij")
    text = np.vectorize(lambda a, b, d: f"MLP {a:.2f}, head {b:.2f}<br>{first_label} - {second_label}: {d}")(
        mlp,
        head,
        np.where(np.isnan(difference), "not computed yet", np.char.add(np.round(difference, 2).astype(str), " pts")),
    )
    fig.add_trace(_click_targets(axis, text))
    return _layout(fig, f"kNN top-1: {first_label} minus {second_label} (blue: {first_label} wins)", axis)
