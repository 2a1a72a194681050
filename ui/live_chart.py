"""Charts that a slider move updates in place: one Plotly plot per key, kept in the page between runs.

``st.plotly_chart`` derives its element's identity from the figure's spec, so every changed figure is
a new element: the browser throws the old plot away and builds a new one (axes, colour bars, text
measurement). On a slider move the explorer changes three of its charts, and in ten viewers' browsers
that rebuilding was about half of all the CPU a move cost on the server's machine (chromium profile,
``benchmarks/bench_sessions.py``). This component keeps one plot per key (a Streamlit components-v2
element, whose identity is its key) and updates it with ``Plotly.react``; a figure that did not change
is not touched, and moving the current-point marker of the landscape restyles one trace.

plotly.js comes from the installed ``plotly`` package (the same file ``plotly.io`` writes into HTML
exports), served by Streamlit's component file route and cached by the browser: nothing is vendored
and nothing is fetched from outside the server.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

import plotly.graph_objects as go
import streamlit as st
import streamlit.components.v1 as components_v1

from snapvit_core.errors import SnapViTError

# Streamlit's light theme, as st.plotly_chart draws it (its own theming runs in its own chart element).
THEME = {
    "font": {"family": '"Source Sans", "Source Sans Pro", sans-serif', "color": "#31333F", "size": 14},
    "paper_bgcolor": "rgba(0,0,0,0)",
    "plot_bgcolor": "rgba(0,0,0,0)",
    "title": {"font": {"size": 16}},
    "xaxis": {"gridcolor": "#e6eaf1", "zerolinecolor": "#e6eaf1", "linecolor": "#d5dae5"},
    "yaxis": {"gridcolor": "#e6eaf1", "zerolinecolor": "#e6eaf1", "linecolor": "#d5dae5"},
    "hoverlabel": {"font": {"family": '"Source Sans", "Source Sans Pro", sans-serif'}},
}
PLOTLY_FILE = "plotly.min.js"

_JS = """
const loading = {};
function loadPlotly(url) {
  if (window.Plotly) return Promise.resolve(window.Plotly);
  if (!loading[url]) {
    loading[url] = new Promise((resolve, reject) => {
      const script = document.createElement("script");
      script.src = url;
      script.onload = () => resolve(window.Plotly);
      script.onerror = () => reject(new Error("plotly.js could not be loaded from " + url));
      document.head.appendChild(script);
    });
  }
  return loading[url];
}

export default function (component) {
  const { data, parentElement, setTriggerValue } = component;
  let plot = parentElement.querySelector("div.snapvit-live-plot");
  if (!plot) {
    plot = document.createElement("div");
    plot.className = "snapvit-live-plot";
    parentElement.appendChild(plot);
  }
  plot.__wanted = data;  // the latest run's figure wins if plotly.js is still loading
  loadPlotly(data.plotly_url).then((Plotly) => {
    const wanted = plot.__wanted;
    if (wanted !== data) return;
    if (plot.__figureId !== data.figure_id) {
      const figure = JSON.parse(data.figure);
      plot.__traceIndex = Object.fromEntries(figure.data.map((trace, index) => [trace.name, index]));
      for (const [name, xy] of Object.entries(data.markers || {})) {
        const trace = figure.data[plot.__traceIndex[name]];
        if (trace) { trace.x = [xy[0]]; trace.y = [xy[1]]; }
      }
      Plotly.react(plot, figure.data, figure.layout, {displayModeBar: false, responsive: true});
      plot.__figureId = data.figure_id;
      plot.__markers = JSON.stringify(data.markers || {});
    } else if (plot.__markers !== JSON.stringify(data.markers || {})) {
      // Same figure, a moved marker (the landscape's current point): restyle that trace only.
      for (const [name, xy] of Object.entries(data.markers || {})) {
        const index = plot.__traceIndex[name];
        if (index !== undefined) Plotly.restyle(plot, {x: [[xy[0]]], y: [[xy[1]]]}, [index]);
      }
      plot.__markers = JSON.stringify(data.markers || {});
    }
    if (data.clickable && !plot.__clickBound) {
      plot.on("plotly_click", (event) => {
        const point = event.points && event.points[0];
        if (point) setTriggerValue("click", {x: point.x, y: point.y});
      });
      plot.__clickBound = true;
    }
  }).catch((error) => {
    plot.textContent = String(error);
  });
}
"""

_CSS = "div.snapvit-live-plot { width: 100%; }"


def _plotly_url() -> str:
    """URL of the installed plotly package's plotly.min.js, served by Streamlit's component file route."""
    import plotly

    folder = Path(plotly.__file__).resolve().parent / "package_data"
    if not (folder / PLOTLY_FILE).is_file():
        raise SnapViTError(
            f"the installed plotly package has no {folder / PLOTLY_FILE}",
            "reinstall it: pip install --force-reinstall -r requirements.txt",
        )
    # Declaring a v1 component registers ``folder`` with Streamlit's file route (/component/<name>/...);
    # it is never rendered, only its files are served.
    declared = components_v1.declare_component("plotlyjs", path=str(folder))
    return f"./component/{declared.name}/{PLOTLY_FILE}"


_component = st.components.v2.component("snapvit.live_plot", js=_JS, css=_CSS, isolate_styles=False)


class ChartSpec(NamedTuple):
    """A figure as the browser receives it: JSON with the app's theme, its content id, its height (px)."""

    json: str
    id: str
    height: int


DEFAULT_HEIGHT = 450  # plotly's own default figure height


def chart_spec(figure: go.Figure) -> ChartSpec:
    """Serialise ``figure`` once (cache the result): the id tells each browser whether to redraw it."""
    themed = go.Figure(figure).update_layout(template=go.layout.Template(layout=THEME))
    spec = themed.to_json()
    digest = hashlib.blake2b(spec.encode(), digest_size=12).hexdigest()
    return ChartSpec(spec, digest, int(figure.layout.height or DEFAULT_HEIGHT))


def live_chart(
    spec: ChartSpec,
    key: str,
    markers: dict[str, tuple[float, float]] | None = None,
    on_click: Callable[[], None] | None = None,
) -> Any:
    """Draw ``spec`` under ``key``, updated in place on later runs (no redraw when its id is unchanged).

    ``markers`` moves single-point traces by name without redrawing the figure (the current point).
    With ``on_click``, a click on a point calls it; the clicked point is :func:`clicked_point`.
    """
    try:
        plotly_url = _plotly_url()
    except SnapViTError as error:
        st.error(str(error), icon=":material/error:")  # in the chart's place; the rest of the page works
        return None
    data = {
        "figure": spec.json,
        "figure_id": spec.id,
        "markers": {name: [float(x), float(y)] for name, (x, y) in (markers or {}).items()},
        "clickable": on_click is not None,
        "plotly_url": plotly_url,
    }
    callbacks = {"on_click_change": on_click} if on_click is not None else {}
    return _component(data=data, key=key, height=spec.height, **callbacks)


def clicked_point(key: str) -> tuple[float, float] | None:
    """(x, y) of the point last clicked in the live chart ``key``, if any."""
    state = st.session_state.get(key)
    click = state.get("click") if hasattr(state, "get") else getattr(state, "click", None)
    try:
        return float(click["x"]), float(click["y"])
    except (KeyError, TypeError, ValueError):
        return None
