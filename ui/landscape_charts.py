"""Plotly figures of the accuracy landscape: the (MLP, head) heatmap and the difference of two score sources.

Both put MLP sparsity on x and head sparsity on y. Every grid cell carries an invisible, clickable
marker whose ``customdata`` is its (MLP, head) configuration, so a click on the heatmap selects it.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import plotly.graph_objects as go

from snapvit_core.sweep import pareto_mask

HEIGHT = 430


def _click_targets(axis: Sequence[float], text: np.ndarray) -> go.Scatter:
    mlp, head = np.meshgrid(axis, axis, indexing="ij")  # (MLP, head)
    return go.Scatter(
        x=mlp.ravel(),
        y=head.ravel(),
        mode="markers",
        marker={"size": 14, "color": "rgba(0,0,0,0)", "symbol": "square"},
        customdata=np.stack([mlp.ravel(), head.ravel()], axis=1),
        hovertext=text.ravel(),
        hovertemplate="%{hovertext}<extra></extra>",
        showlegend=False,
        name="configurations",
    )


def _layout(fig: go.Figure, title: str) -> go.Figure:
    fig.update_layout(
        title=title,
        height=HEIGHT,
        margin={"l": 10, "r": 10, "t": 40, "b": 10},
        xaxis_title="MLP sparsity (fraction of neurons removed)",
        yaxis_title="head sparsity",
        legend={"orientation": "h", "y": -0.22},
        clickmode="event+select",
        dragmode=False,
    )
    return fig


def landscape_heatmap(
    axis: Sequence[float],
    knn: np.ndarray,
    flops_pct: np.ndarray,
    latency_ms: np.ndarray | None,
    path: Sequence[tuple[float, float]],
    current: tuple[float, float],
    title: str = "kNN top-1 over the (MLP, head) plane",
) -> go.Figure:
    """kNN top-1 (%) heatmap with iso-FLOPs and iso-latency contours, the published path, the Pareto set
    (by FLOPs) and the current point. Arrays are (MLP, head) grids over ``axis``; NaN = not computed yet."""
    axis = list(axis)
    fig = go.Figure()
    fig.add_trace(
        go.Heatmap(
            x=axis,
            y=axis,
            z=knn.T,
            colorscale="Viridis",
            colorbar={"title": "kNN %", "len": 0.8},
            hoverinfo="skip",
            name="kNN top-1",
        )
    )
    fig.add_trace(
        go.Contour(
            x=axis,
            y=axis,
            z=flops_pct.T,
            showscale=False,
            contours={
                "coloring": "none",
                "showlabels": True,
                "labelfont": {"color": "white", "size": 10},
                "start": 10,
                "end": 100,
                "size": 10,
            },
            line={"color": "white", "width": 1, "dash": "dot"},
            hoverinfo="skip",
            name="iso-FLOPs (%)",
            showlegend=True,
        )
    )
    if latency_ms is not None:
        fig.add_trace(
            go.Contour(
                x=axis,
                y=axis,
                z=latency_ms.T,
                showscale=False,
                ncontours=8,
                contours={"coloring": "none", "showlabels": True, "labelfont": {"color": "orange", "size": 10}},
                line={"color": "orange", "width": 1},
                hoverinfo="skip",
                name="iso-latency (ms, predicted)",
                showlegend=True,
            )
        )
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
    if known.any():
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
    fig.add_trace(
        go.Scatter(
            x=[current[0]],
            y=[current[1]],
            mode="markers",
            name="current",
            marker={"symbol": "star", "size": 16, "color": "#f58518", "line": {"color": "black", "width": 1}},
            hoverinfo="skip",
        )
    )
    text = np.vectorize(lambda a, b, k, f: f"MLP {a:.2f}, head {b:.2f}<br>kNN {k}<br>FLOPs {f:.1f} %")(
        mlp, head, np.where(known, np.char.add(np.round(knn, 2).astype(str), " %"), "not computed yet"), flops_pct
    )
    fig.add_trace(_click_targets(axis, text))
    return _layout(fig, title)


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
    return _layout(fig, f"kNN top-1: {first_label} minus {second_label} (blue: {first_label} wins)")
