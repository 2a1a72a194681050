"""Marks laid over a Plotly chart of fixed geometry: a slider move changes the marks, not the chart.

Redrawing a chart in every viewer's browser is the largest cost of a slider move when many viewers
share a server (``results/sessions.md``), and updating a figure in place costs as much as drawing it
again. So the parts that follow the sliders (the
landscape's star, pruned heads' crosses, kept/pruned bars, keep boundaries, count titles) are not in
the figure at all: they are HTML elements placed over the plot area, and the figure stays the same,
so no browser redraws it.

A mark can be placed from the figure alone when its size, margins and axis ranges are fixed (not
autoranged, no auto-expanding margin): plotly's plot area then spans the container's width minus the
left and right margins, and the figure's height minus the top and bottom ones.

This module holds that geometry and what the marks show, as data. The browser draws every mark
(``ui/instant_cards.js``): the server's configuration when its run arrives, and the sliders' new one
the moment a slider moves, from the table of every grid configuration's marks sent with them
(``ui.instant_cards.marks_table``), with no round trip. No streamlit import.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

MARK_KINDS = ("star", "heads", "bars", "boundaries")


@dataclass(frozen=True)
class PlotArea:
    """Where a fixed-geometry figure's data coordinates land in its container.

    ``x_range`` and ``y_range`` are the axes' ranges as plotly holds them: (left, right) and (bottom,
    top); a reversed axis has its larger value first.
    """

    height: float  # px, the figure's layout height
    margin: Mapping[str, float]  # px, keys l, r, t, b
    x_range: tuple[float, float]
    y_range: tuple[float, float]

    @classmethod
    def of(cls, figure) -> PlotArea:
        """The plot area of a plotly figure whose height, margins and both axis ranges are set."""
        layout = figure.layout
        missing = [
            name
            for name, value in (
                ("height", layout.height),
                ("xaxis.range", layout.xaxis.range),
                ("yaxis.range", layout.yaxis.range),
            )
            if value is None
        ]
        if missing or layout.margin.autoexpand is not False:
            raise ValueError(f"an overlay needs a figure of fixed geometry; not fixed: {missing or ['margin']}")
        margin = {side: float(getattr(layout.margin, side)) for side in "lrtb"}
        x_range = tuple(float(v) for v in layout.xaxis.range)
        y_range = tuple(float(v) for v in layout.yaxis.range)
        return cls(float(layout.height), margin, x_range, y_range)

    def to_json(self) -> dict[str, Any]:
        """What the browser places marks from (``placeX`` and ``placeY`` in ``ui/instant_cards.js``)."""
        return {
            "height": self.height,
            "margin": {side: float(self.margin[side]) for side in "lrtb"},
            "x_range": list(self.x_range),
            "y_range": list(self.y_range),
        }


@dataclass(frozen=True)
class ChartMarks:
    """The marks the browser lays over one chart, whatever the configuration.

    ``kind``: 'star' (the configuration on the landscape), 'heads' (a cross on each pruned head and the
    heads' count title), 'bars' (kept and pruned neurons per block as stacked bars, and the title) or
    'boundaries' (each block's keep boundary). ``style``: their colours, sizes and CSS classes, and for
    the bars the tooltip texts, with '{block}' and '{count}' in them.
    """

    kind: str
    area: PlotArea
    style: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.kind not in MARK_KINDS:
            raise ValueError(f"kind must be one of {MARK_KINDS}, got {self.kind!r}")

    def to_json(self) -> dict[str, Any]:
        return {"kind": self.kind, "area": self.area.to_json(), "style": dict(self.style)}


@dataclass(frozen=True)
class MarkView:
    """What the marks show at one configuration: the star's (MLP, head) position, each block's kept MLP
    neurons (bars, keep boundaries) and pruned heads (crosses), and the two count titles."""

    at: tuple[float, float]
    kept_neurons: tuple[int, ...]
    pruned_heads: tuple[tuple[int, ...], ...]  # per block, the pruned heads' indices (original order)
    neurons_title: str
    heads_title: str

    def to_json(self) -> dict[str, Any]:
        return {
            "at": list(self.at),
            "kept_neurons": list(self.kept_neurons),
            "pruned_heads": [list(block) for block in self.pruned_heads],
            "neurons_title": self.neurons_title,
            "heads_title": self.heads_title,
        }
