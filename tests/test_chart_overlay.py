"""Marks laid over fixed-geometry charts (ui.chart_overlay): they land where plotly draws the same data.

The server sends each chart's geometry and what its marks show as data; the browser draws the marks
(``overlayHtml`` in ui/instant_cards.js). Plotly maps data to pixels linearly over the plot area (the
figure minus its margins, the axis range edge to edge); the chromium test here draws each figure with
plotly.js and the marks with the explorer's own script, and checks every mark against plotly's mapping.
"""

from __future__ import annotations

import base64
import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import plotly
import plotly.graph_objects as go
import pytest
import torch

from devtools.browser_harness import CHROMIUM, launch_chromium, misplacement_js
from snapvit_core.landscape.grid import published_points
from snapvit_core.scoring.scores import ImportanceScores
from ui import charts
from ui.chart_overlay import ChartMarks, MarkView, PlotArea
from ui.landscape_charts import MARGIN, landscape_heatmap, landscape_marks

AXIS = tuple(round(0.05 * i, 2) for i in range(20))
SCRIPT = Path(__file__).resolve().parents[1] / "ui" / "instant_cards.js"


def test_plot_area_is_the_figures_fixed_geometry_as_data():
    figure = go.Figure(layout={"height": 400, "margin": {"l": 50, "r": 30, "t": 20, "b": 80, "autoexpand": False}})
    figure.update_layout(xaxis={"range": [0, 10]}, yaxis={"range": [1, -1]})  # reversed y: larger value first
    area = PlotArea.of(figure)
    assert area.to_json() == {
        "height": 400.0,
        "margin": {"l": 50.0, "r": 30.0, "t": 20.0, "b": 80.0},
        "x_range": [0.0, 10.0],
        "y_range": [1.0, -1.0],
    }
    json.dumps(ChartMarks("star", area, {"size": 18}).to_json())  # what the component sends
    with pytest.raises(ValueError, match="kind"):
        ChartMarks("circle", area)


def test_a_figure_that_plotly_may_resize_or_rerange_is_refused():
    figure = go.Figure(layout={"height": 400, "margin": {"autoexpand": False}, "xaxis": {"range": [0, 1]}})
    with pytest.raises(ValueError, match="yaxis.range"):
        PlotArea.of(figure)  # autoranged y: the marks would not follow plotly's choice
    figure.update_layout(yaxis={"range": [0, 1]}, margin={"autoexpand": True})
    with pytest.raises(ValueError, match="margin"):
        PlotArea.of(figure)


def _landscape() -> go.Figure:
    mlp, head = np.meshgrid(AXIS, AXIS, indexing="ij")
    flops, latency, knn = 100 - 60 * mlp - 30 * head, 2 - mlp - head / 2, 95 - 20 * mlp**2 - 10 * head
    return landscape_heatmap(AXIS, knn, flops, latency, published_points(0.05), None)


def _structure_scores() -> ImportanceScores:
    generator = torch.Generator().manual_seed(1)
    return ImportanceScores(mlp=torch.rand(3, 16, generator=generator), heads=torch.rand(3, 4, generator=generator))


def test_the_charts_stay_the_same_for_every_configuration_their_marks_are_data():
    landscape = _landscape()
    assert "current" not in {trace.name for trace in landscape.data}  # the star is not part of the figure
    assert tuple(landscape.layout.xaxis.range) == tuple(landscape.layout.yaxis.range) == (-0.025, 0.975)
    assert landscape_marks(landscape).area.margin["l"] == MARGIN["l"]
    scores = _structure_scores()
    neuron_map = charts.mlp_score_heatmap(scores)
    assert len(neuron_map.data) == 1  # no boundary trace: a move does not change the figure
    area = charts.keep_boundary_marks(neuron_map).area
    assert area.y_range == (2.5, -0.5) and area.margin["t"] == charts.FIXED_MARGIN["t"]  # block 0 on top
    head_map = charts.head_map(scores)
    assert len(head_map.data) == 1 and not head_map.layout.title.text  # no crosses, no title: both laid over it
    axes = charts.mlp_kept_axes(3, 16)
    assert tuple(axes.layout.xaxis.range) == (-0.5, 2.5) and axes.layout.yaxis.range[1] >= 16
    assert charts.kept_bar_marks(axes, 16).style["hidden"] == 16


def test_a_configurations_marks_come_from_its_plan():
    from ui.explorer_view import mark_view

    kept = np.ones((3, 4), dtype=bool)
    kept[1, 2] = kept[2, 0] = False
    cost = SimpleNamespace(kept_neurons=[16, 10, 4], head_mask=torch.from_numpy(kept))
    view = mark_view((0.5, 0.3), cost, 16)
    assert view == MarkView(
        (0.5, 0.3), (16, 10, 4), ((), (2,), (0,)), "MLP neurons: 30 of 48 kept", "Heads: 10 of 12 kept"
    )
    assert view.neurons_title == charts.mlp_kept_chart([16, 10, 4], 16).layout.title.text  # as the side-by-side charts
    assert view.heads_title == charts.head_map(_structure_scores(), kept).layout.title.text


MISPLACEMENT_JS = misplacement_js("[data-overlay-box]")  # (class, dx, dy) px per mark


@pytest.mark.browser
@pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="Debian's chromium is not installed (make test installs it)")
def test_the_browser_draws_every_mark_where_plotly_draws_its_data():
    """Each chart drawn by plotly.js in chromium, its marks by ui/instant_cards.js from the data the server
    sends: every mark within 1.5 px of plotly's own mapping, at two container widths."""
    from playwright.sync_api import sync_playwright

    scores = _structure_scores()
    kept = np.ones((3, 4), dtype=bool)
    kept[1, 2] = kept[2, 0] = False
    marks = MarkView((0.5, 0.3), (16, 10, 4), ((), (2,), (0,)), "MLP neurons: 30 of 48 kept", "Heads: 10 of 12 kept")
    figures = {
        "landscape": (_landscape(), landscape_marks),
        "heads": (charts.head_map(scores), charts.head_marks),
        "bars": (charts.mlp_kept_axes(3, 16), lambda figure: charts.kept_bar_marks(figure, 16)),
        "boundaries": (charts.mlp_score_heatmap(scores), charts.keep_boundary_marks),
    }
    module = "data:text/javascript;base64," + base64.b64encode(SCRIPT.read_bytes()).decode()
    plotly_js = Path(plotly.__file__).parent / "package_data" / "plotly.min.js"
    with sync_playwright() as playwright:
        browser = launch_chromium(playwright)
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        page.add_script_tag(path=str(plotly_js))
        for width in (900, 560):
            found = []
            for name, (figure, chart_marks) in figures.items():
                found += page.evaluate(
                    """async ([module, figure, chart, marks, width, misplacement]) => {
                        const { overlayHtml } = await import(module);
                        document.body.innerHTML = "";
                        const box = document.createElement("div");
                        box.dataset.overlayBox = "";
                        box.style.cssText = `position: relative; width: ${width}px`;
                        document.body.appendChild(box);
                        const plot = document.createElement("div");
                        box.appendChild(plot);
                        await Plotly.newPlot(plot, figure.data, figure.layout);
                        box.insertAdjacentHTML("beforeend", overlayHtml(chart, marks));
                        return eval(misplacement)(document.body);
                    }""",
                    [module, json.loads(figure.to_json()), chart_marks(figure).to_json(), marks.to_json(), width,
                     MISPLACEMENT_JS],
                )  # fmt: skip
                if name == "heads":
                    assert page.locator(".chart-title").inner_text() == "Heads: 10 of 12 kept"
                    crosses = page.locator(".pruned-head").evaluate_all(
                        "(m) => m.map((e) => [e.dataset.x, e.dataset.y])"
                    )
                    assert crosses == [["2.0000", "1.0000"], ["0.0000", "2.0000"]]  # (head, block) of each pruned head
                if name == "bars":
                    assert page.locator(".kept-bar").evaluate_all("(m) => m.map((e) => e.title)") == [
                        f"block {block}: {count} kept" for block, count in enumerate((16, 10, 4))
                    ]
                    assert page.locator(".pruned-bar").evaluate_all("(m) => m.map((e) => e.title)") == [
                        f"block {block}: {count} pruned" for block, count in enumerate((0, 6, 12))
                    ]
            names = [name for name, _, _ in found]
            assert names.count("landscape-current") == 1 and names.count("pruned-head") == 2, found
            assert names.count("kept-bar") == names.count("pruned-bar") == names.count("keep-boundary") == 3, found
            assert all(abs(dx) <= 1.5 and abs(dy) <= 1.5 for _, dx, dy in found), found
        browser.close()
