"""HTML marks laid over a Plotly chart of fixed geometry: a slider move changes the marks, not the chart.

With ten viewers of one explorer on one machine, redrawing charts in every browser was the largest
cost of a slider move (``benchmarks/bench_sessions.py``: with no chart redrawn the median key press ->
kNN met its target, with the charts redrawn it did not). Updating a figure in place costs as much as
drawing it again (``results/sessions.md``), so the parts that follow the sliders (the landscape's
star, pruned heads' crosses, kept/pruned bars, keep boundaries, count titles) are not in the figure
at all: they are HTML elements placed over the plot area, and the figure stays the same, so no
browser redraws it.

A mark can be placed from the figure alone when its size, margins and axis ranges are fixed (not
autoranged, no auto-expanding margin): plotly's plot area then spans the container's width minus the
left and right margins, and the figure's height minus the top and bottom ones. No streamlit import.
"""

from __future__ import annotations

import html
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

OVERLAY_CLASS = "chart-overlay"


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
        return cls(float(layout.height), margin, tuple(layout.xaxis.range), tuple(layout.yaxis.range))

    def left_css(self, x: float) -> str:
        """CSS ``left`` of data x: the plot area scales with the container's width (fixed margins)."""
        low, high = self.x_range
        fraction = (float(x) - low) / (high - low)
        return f"calc({self.margin['l']:g}px + {fraction:.6f} * (100% - {self.margin['l'] + self.margin['r']:g}px))"

    def top_px(self, y: float) -> float:
        """Pixels from the figure's top to data y (the figure's height is fixed)."""
        bottom, top = self.y_range
        inner = self.height - self.margin["t"] - self.margin["b"]
        return self.margin["t"] + (top - float(y)) / (top - bottom) * inner


def overlay_html(area: PlotArea, marks: Sequence[str]) -> str:
    """One element holding ``marks`` (absolutely positioned HTML, see ``star_mark``, ``vertical_bar``)
    over a chart whose top-left corner is the container's (the caller makes it ``position: relative``).
    It takes no pointer events, so hover and clicks reach the chart below."""
    return (
        f'<div class="{OVERLAY_CLASS}" style="position:absolute;left:0;top:0;width:100%;'
        f'height:{area.height:g}px;pointer-events:none;z-index:2;line-height:0">{"".join(marks)}</div>'
    )


_STAR_POINTS = "12,1 15,9 23,9 17,14 19,23 12,18 5,23 7,14 1,9 9,9"


def _centred_svg(area: PlotArea, x: float, y: float, size: int, css_class: str, view: int, shape: str) -> str:
    """An SVG ``shape`` (drawn in a ``view`` x ``view`` box) ``size`` px across, centred on data (x, y)."""
    return (
        f'<div class="{css_class}" data-x="{float(x):.4f}" data-y="{float(y):.4f}" style="position:absolute;'
        f"left:{area.left_css(x)};top:{area.top_px(y):.2f}px;width:{size}px;height:{size}px;"
        f'transform:translate(-50%,-50%)"><svg width="{size}" height="{size}" viewBox="0 0 {view} {view}">'
        f"{shape}</svg></div>"
    )


def star_mark(area: PlotArea, x: float, y: float, colour: str, size: int, css_class: str) -> str:
    """A star centred on data (x, y), ``size`` px across, with a black outline."""
    shape = f'<polygon points="{_STAR_POINTS}" fill="{colour}" stroke="black" stroke-width="1.2"/>'
    return _centred_svg(area, x, y, size, css_class, 24, shape)


def vertical_bar(area: PlotArea, x: float, y_from: float, y_to: float, colour: str, width: int, css_class: str) -> str:
    """A vertical line ``width`` px wide centred on data x, from data y ``y_from`` to ``y_to``."""
    top, bottom = sorted((area.top_px(y_from), area.top_px(y_to)))
    return (
        f'<div class="{css_class}" data-x="{float(x):.4f}" style="position:absolute;left:{area.left_css(x)};'
        f"top:{top:.2f}px;width:{width}px;height:{bottom - top:.2f}px;background:{colour};"
        f'transform:translateX(-50%)"></div>'
    )


def box_mark(
    area: PlotArea, x: tuple[float, float], y: tuple[float, float], colour: str, css_class: str, tooltip: str = ""
) -> str:
    """A filled rectangle over data x[0]..x[1], y[0]..y[1] (a bar). With a ``tooltip`` it takes pointer
    events and shows it on hover (the browser's own tooltip: nothing to redraw)."""
    low, high = area.x_range
    width = (float(x[1]) - float(x[0])) / (high - low)
    upper = min(y, key=area.top_px)  # the data y of its top edge
    top, bottom = sorted((area.top_px(y[0]), area.top_px(y[1])))
    hover = f' title="{html.escape(tooltip)}"' if tooltip else ""
    events = "pointer-events:auto;" if tooltip else ""
    centre = (float(x[0]) + float(x[1])) / 2
    return (
        f'<div class="{css_class}" data-x="{centre:.4f}" data-top="{float(upper):.4f}"{hover} style="position:absolute;'
        f"{events}left:{area.left_css(x[0])};top:{top:.2f}px;"
        f"width:calc({width:.6f} * (100% - {area.margin['l'] + area.margin['r']:g}px));height:{bottom - top:.2f}px;"
        f'background:{colour}"></div>'
    )


def cross_mark(area: PlotArea, x: float, y: float, colour: str, size: int, css_class: str) -> str:
    """An X centred on data (x, y), ``size`` px across (as plotly's "x" marker)."""
    shape = f'<path d="M2 2L12 12M12 2L2 12" stroke="{colour}" stroke-width="3" stroke-linecap="round"/>'
    return _centred_svg(area, x, y, size, css_class, 14, shape)


def title_mark(area: PlotArea, text: str, css_class: str) -> str:
    """A chart's title line that changes with the configuration (e.g. "26 of 36 kept"), at the figure's
    top left where plotly puts a title."""
    return (
        f'<div class="{css_class}" style="position:absolute;left:4px;top:12px;'
        f'line-height:1.3;font-size:16px;font-weight:600;white-space:nowrap">{html.escape(text)}</div>'
    )
