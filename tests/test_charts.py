"""The explorer's Plotly figures (pure plotly, no Streamlit): what they show and that they stay cheap to draw.

The explorer redraws these in every viewer's browser on every slider move, so the settings that keep a
draw cheap (fixed margins, no plotly-placed contour labels, click targets that draw nothing) are part of
what is tested, next to what the charts show.
"""

from __future__ import annotations

import itertools
import json

import numpy as np
import plotly.io as pio
import pytest
import torch

from snapvit_core.landscape.grid import published_points
from snapvit_core.scoring.scores import ImportanceScores
from ui import charts
from ui.landscape_charts import contour_label_points, difference_map, landscape_heatmap, nice_levels

AXIS = tuple(round(0.05 * i, 2) for i in range(20))


def _grids():
    mlp, head = np.meshgrid(AXIS, AXIS, indexing="ij")
    flops = 100.0 - 60.0 * mlp - 30.0 * head  # % of the unpruned model, falls along both axes
    latency = 2.0 - 1.2 * mlp - 0.5 * head
    knn = 95.0 - 20.0 * mlp**2 - 10.0 * head
    return flops, latency, knn


def test_contour_labels_sit_on_their_contour_line():
    mlp, head = np.meshgrid(AXIS, AXIS, indexing="ij")
    grid = 3.0 * mlp + head  # linear: the interpolated crossing points are exactly on the line
    levels = [0.5, 1.0, 2.0]
    labels = contour_label_points(AXIS, grid, levels)
    assert [level for _, _, level in labels] == levels
    for x, y, level in labels:
        assert 3.0 * x + y == pytest.approx(level, abs=1e-9)
        assert AXIS[0] <= x <= AXIS[-1] and AXIS[0] <= y <= AXIS[-1]
    assert contour_label_points(AXIS, grid, [99.0]) == []  # a level the grid never reaches gets no label
    first, later = contour_label_points(AXIS, grid, [1.0], 0.1), contour_label_points(AXIS, grid, [1.0], 0.9)
    assert first[0][0] < later[0][0]  # two contour families labelled at different fractions stay apart


def test_contour_labels_of_close_near_parallel_lines_do_not_print_over_each_other():
    mlp, head = np.meshgrid(AXIS, AXIS, indexing="ij")
    grid = 20.0 * mlp + 0.5 * head  # near-vertical lines 0.05 apart (iso-latency on a slow CPU looked so)
    taken: list[tuple[float, float]] = []
    labels = contour_label_points(AXIS, grid, np.arange(1.0, 19.0), 0.2, taken)
    others = contour_label_points(AXIS, grid + 0.3, np.arange(1.0, 19.0), 0.5, taken)  # a second family
    assert len(labels) >= 10 and len(others) >= 3  # labels move along their lines rather than vanish
    placed = labels + others
    for (xa, ya, _), (xb, yb, _) in itertools.combinations(placed, 2):
        assert abs(xa - xb) >= 0.12 or abs(ya - yb) >= 0.04, (xa, ya, xb, yb)  # ~6 characters at 10 px apart
    for x, y, level in labels:
        assert 20.0 * x + 0.5 * y == pytest.approx(level, abs=1e-9)  # still on its own line
    assert taken == [(x, y) for x, y, _ in placed]


def test_nice_levels_are_round_steps_inside_the_range():
    levels = nice_levels(np.array([[0.83, 1.0], [1.7, 2.31]]))
    step = np.diff(levels)
    assert np.allclose(step, step[0]) and round(step[0], 9) in (0.1, 0.2, 0.5)
    assert levels.min() > 0.83 and levels.max() < 2.31 and 4 <= len(levels) <= 15
    assert nice_levels(np.full((2, 2), 1.0)).size == 0 and nice_levels(np.full((2, 2), np.nan)).size == 0


def test_landscape_figure_shows_contours_labels_path_and_current_point_and_draws_cheaply():
    flops, latency, knn = _grids()
    figure = landscape_heatmap(AXIS, knn, flops, latency, published_points(0.05), (0.35, 0.2))
    spec = json.loads(pio.to_json(figure, validate=False))
    traces = {trace.get("name"): trace for trace in spec["data"]}
    for name in ("iso-FLOPs (%)", "iso-latency (ms, predicted)"):
        assert traces[name]["type"] == "contour" and traces[name]["contours"]["showlabels"] is False
        labels = traces[f"{name} labels"]
        assert labels["mode"] == "text" and len(labels["text"]) >= 3
    assert traces["iso-FLOPs (%) labels"]["text"] == [f"{level}%" for level in range(20, 100, 10)]  # 14.5-100 %
    assert traces["current"]["x"] == [0.35] and traces["current"]["y"] == [0.2]
    assert [tuple(p) for p in zip(traces["published path"]["x"], traces["published path"]["y"])] == published_points(
        0.05
    )
    targets = traces["configurations"]
    assert targets["mode"] == "text" and set(targets["text"]) == {""} and len(targets["text"]) == 400
    layout = spec["layout"]
    assert layout["margin"]["autoexpand"] is False and layout["showlegend"] is False


def test_landscape_marks_the_pareto_set_and_leaves_uncomputed_cells_blank():
    flops, latency, knn = _grids()
    knn[5:, :] = np.nan
    figure = landscape_heatmap(AXIS, knn, flops, None, published_points(0.05), (0.0, 0.0))
    names = [trace.name for trace in figure.data]
    assert "iso-latency (ms, predicted)" not in names  # no latency model yet: no latency contours
    pareto = next(trace for trace in figure.data if trace.name == "Pareto-optimal (FLOPs)")
    assert max(pareto.x) <= AXIS[4]  # only computed cells can be Pareto-optimal
    hover = next(trace for trace in figure.data if trace.name == "configurations").hovertext
    assert sum("not computed yet" in text for text in hover) == 15 * 20


def test_difference_map_is_centred_on_zero():
    first = np.zeros((20, 20))
    second = np.zeros((20, 20))
    first[3, 4], second[6, 7] = 2.0, 5.0
    heatmap = difference_map(AXIS, first, second, "a", "b").data[0]
    assert heatmap.zmid == 0.0 and heatmap.zmin == -5.0 and heatmap.zmax == 5.0


def _scores(blocks: int = 3, heads: int = 4, hidden: int = 16) -> ImportanceScores:
    generator = torch.Generator().manual_seed(0)
    return ImportanceScores(
        mlp=torch.rand(blocks, hidden, generator=generator), heads=torch.rand(blocks, heads, generator=generator)
    )


def test_structure_charts_show_the_kept_structure_with_fixed_margins():
    scores = _scores()
    kept_heads = np.ones((3, 4), dtype=bool)
    kept_heads[1, 2] = False
    head = charts.head_map(scores, kept_heads)
    assert head.layout.title.text == "Heads: 11 of 12 kept"
    assert list(head.data[1].x) == [2] and list(head.data[1].y) == [1]  # the crossed-out head
    kept = charts.mlp_kept_chart([16, 10, 4], 16)
    assert list(kept.data[0].y) == [16, 10, 4] and list(kept.data[1].y) == [0, 6, 12]
    heat = charts.mlp_score_heatmap(scores, np.array([16, 10, 4]))
    assert list(heat.data[1].x) == [15.5, 9.5, 3.5]  # the keep boundary of each block
    for figure in (head, kept, heat):
        assert figure.layout.margin.autoexpand is False


def test_neuron_heatmap_sends_numbers_as_typed_arrays():
    """Blocks x neurons x 3 hover values as JSON numbers and words was 120 kB per draw on the embedded model."""
    scores = _scores(blocks=12, hidden=384)
    heat = charts.mlp_score_heatmap(scores, np.full(12, 200))
    spec = json.loads(pio.to_json(heat, validate=False))["data"][0]
    assert "bdata" in spec["customdata"] and "bdata" in spec["z"]
    values = heat.data[0].customdata
    assert values.shape == (12, 384, 3)
    assert values[0, 0, 0] == pytest.approx(float(scores.mlp[0].max()))  # the best neuron's score first
    assert values[0, 199, 1] == 200 and values[0, 0, 2] == 200  # rank, and the block's kept count
    assert "the block keeps the top" in heat.data[0].hovertemplate
