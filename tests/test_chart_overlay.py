"""Marks laid over fixed-geometry charts (ui.chart_overlay): they land where plotly draws the same data.

Plotly maps data to pixels linearly over the plot area (the figure minus its margins, the axis range
edge to edge); the browser test checks the landscape's star against plotly's own mapping in chromium.
"""

from __future__ import annotations

import re

import numpy as np
import plotly.graph_objects as go
import pytest
import torch

from snapvit_core.landscape import published_path
from snapvit_core.scores import ImportanceScores
from ui import charts
from ui.chart_overlay import OVERLAY_CLASS, PlotArea, overlay_html, star_mark, vertical_bar
from ui.landscape_charts import MARGIN, current_point_html, landscape_heatmap

AXIS = tuple(round(0.05 * i, 2) for i in range(20))


def _position(html: str, css_class: str) -> list[tuple[float, float, float]]:
    """(fraction of the plot width, fixed px of the left margin, top px) of each mark of ``css_class``."""
    found = []
    for style in re.findall(rf'class="{css_class}"[^>]*style="([^"]*)"', html):
        left = re.search(r"left:calc\(([\d.]+)px \+ ([\d.-]+) \* \(100% - ([\d.]+)px\)\)", style)
        top = re.search(r"top:([\d.-]+)px", style)
        found.append((float(left.group(2)), float(left.group(1)), float(top.group(1))))
    return found


def test_plot_area_maps_data_linearly_onto_the_plot_between_the_margins():
    figure = go.Figure(layout={"height": 400, "margin": {"l": 50, "r": 30, "t": 20, "b": 80, "autoexpand": False}})
    figure.update_layout(xaxis={"range": [0, 10]}, yaxis={"range": [-1, 1]})
    area = PlotArea.of(figure)
    assert area.top_px(1) == 20 and area.top_px(-1) == 400 - 80 and area.top_px(0) == pytest.approx(170)
    assert area.left_css(2.5) == "calc(50px + 0.250000 * (100% - 80px))"
    reversed_y = PlotArea(400, area.margin, (0, 10), (1, -1))  # block 0 on top
    assert reversed_y.top_px(-1) == 20 and reversed_y.top_px(1) == 320
    bar = vertical_bar(area, 5, 0.5, -0.5, "red", 3, "bar")
    ((fraction, margin, top),) = _position(bar, "bar")
    assert (fraction, margin, top) == (0.5, 50, 95) and "height:150.00px" in bar  # y 0.5 down to -0.5
    mark = overlay_html(area, [star_mark(area, 2.5, 0, "#f00", 18, "star")])
    assert mark.startswith(f'<div class="{OVERLAY_CLASS}"') and "pointer-events:none" in mark  # clicks pass through
    assert _position(mark, "star") == [(0.25, 50, 170)]


def test_a_figure_that_plotly_may_resize_or_rerange_is_refused():
    figure = go.Figure(layout={"height": 400, "margin": {"autoexpand": False}, "xaxis": {"range": [0, 1]}})
    with pytest.raises(ValueError, match="yaxis.range"):
        PlotArea.of(figure)  # autoranged y: the marks would not follow plotly's choice
    figure.update_layout(yaxis={"range": [0, 1]}, margin={"autoexpand": True})
    with pytest.raises(ValueError, match="margin"):
        PlotArea.of(figure)


def test_the_landscape_star_sits_on_the_configurations_cell():
    mlp, head = np.meshgrid(AXIS, AXIS, indexing="ij")
    flops, latency, knn = 100 - 60 * mlp - 30 * head, 2 - mlp - head / 2, 95 - 20 * mlp**2 - 10 * head
    figure = landscape_heatmap(AXIS, knn, flops, latency, published_path(0.05), None)
    assert "current" not in {trace.name for trace in figure.data}  # the star is not part of the figure
    assert tuple(figure.layout.xaxis.range) == tuple(figure.layout.yaxis.range) == (-0.025, 0.975)
    ((fraction, margin, top),) = _position(current_point_html(figure, (0.5, 0.3)), "landscape-current")
    assert fraction == pytest.approx(0.525 / 1.0) and margin == MARGIN["l"]
    inner = figure.layout.height - MARGIN["t"] - MARGIN["b"]
    assert top == pytest.approx(MARGIN["t"] + (0.975 - 0.3) * inner, abs=0.01)


def test_the_neuron_map_is_one_figure_for_every_configuration_with_its_boundaries_laid_over():
    generator = torch.Generator().manual_seed(0)
    scores = ImportanceScores(mlp=torch.rand(3, 16, generator=generator), heads=torch.rand(3, 4, generator=generator))
    figure = charts.mlp_score_heatmap(scores)
    assert len(figure.data) == 1  # no boundary trace: a move does not change the figure
    html = charts.keep_boundary_html(figure, [16, 10, 4])
    bars = _position(html, "keep-boundary")
    assert [round(fraction * 16 - 0.5, 6) for fraction, _, _ in bars] == [15.5, 9.5, 3.5]  # x = kept - 0.5
    area = PlotArea.of(figure)
    assert [top for _, _, top in bars] == pytest.approx([area.top_px(block - 0.5) for block in range(3)], abs=0.01)
    assert area.top_px(-0.5) == charts.FIXED_MARGIN["t"]  # block 0 at the top, as the heatmap draws it


def _structure_scores() -> ImportanceScores:
    generator = torch.Generator().manual_seed(1)
    return ImportanceScores(mlp=torch.rand(3, 16, generator=generator), heads=torch.rand(3, 4, generator=generator))


def test_the_head_map_crosses_out_the_pruned_heads_over_one_figure():
    figure = charts.head_map(_structure_scores())
    assert len(figure.data) == 1 and not figure.layout.title.text  # no crosses, no title: both laid over it
    kept = np.ones((3, 4), dtype=bool)
    kept[1, 2] = kept[2, 0] = False
    html = charts.pruned_heads_html(figure, kept)
    assert "Heads: 10 of 12 kept" in html
    crosses = re.findall(r'class="pruned-head" data-x="([\d.]+)" data-y="([\d.]+)"', html)
    assert sorted((float(x), float(y)) for x, y in crosses) == [(0.0, 2.0), (2.0, 1.0)]  # (head, block)
    area = PlotArea.of(figure)
    assert area.top_px(0) < area.top_px(2)  # block 0 on top, as the drawn-in version shows it


def test_the_kept_neuron_bars_are_laid_over_fixed_axes():
    figure = charts.mlp_kept_axes(3, 16)
    assert tuple(figure.layout.xaxis.range) == (-0.5, 2.5) and figure.layout.yaxis.range[1] >= 16
    html = charts.kept_bars_html(figure, [16, 10, 4], 16)
    assert "MLP neurons: 30 of 48 kept" in html
    assert re.findall(r'class="kept-bar" data-x="([\d.]+)" data-top="([\d.]+)" title="([^"]*)"', html) == [
        ("0.0000", "16.0000", "block 0: 16 kept"),
        ("1.0000", "10.0000", "block 1: 10 kept"),
        ("2.0000", "4.0000", "block 2: 4 kept"),
    ]
    assert [top for _, top in re.findall(r'class="pruned-bar" data-x="([\d.]+)" data-top="([\d.]+)"', html)] == [
        "16.0000"
    ] * 3  # each stacked up to the block's width
    area = PlotArea.of(figure)
    heights = [float(h) for h in re.findall(r'class="kept-bar"[^>]*height:([\d.]+)px', html)]
    assert heights == pytest.approx([area.top_px(0) - area.top_px(k) for k in (16, 10, 4)], abs=0.01)
