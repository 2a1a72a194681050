"""The explorer page's widgets: instant cost cards, the accuracy panel, the landscape, "Measure now".

Card values are short numbers with the unit in the label (no truncation at 800 px). A number that is
not for the configuration on the sliders is never shown without saying for which one it is. Accuracy
comes from the shared landscape (exact, on the full test split) when it has the configuration, else
from a quick estimate on a subset, labelled as one, replaced when the exact value arrives. The cards go
to the browser with a table of every grid configuration's cards (ui/instant_cards.py), so they follow
a slider move at once, before the server's run.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import streamlit as st

from snapvit_core.landscape.grid import grid_axis
from snapvit_core.landscape.store import LandscapePoint
from ui import config_state, instant_cards, session, state
from ui.chart_overlay import ChartMarks, MarkView
from ui.instant_cards import Card, CardView, SliderLink, table_json
from ui.labels import flops_unit, short_number, sparsity_text, speedup_text
from ui.shared import SharedExplorer

POLL_S = 0.2  # how often a pending accuracy panel looks for its value
UPDATING = "updating…"
CALIBRATING = "…"  # latency cards while the latency model is measured (the caption below says so)
EXACT = "full test set"  # the label of an exact landscape value


def cost_view(cost: Any, latency_status: tuple[str, float]) -> CardView:
    """Parameters, FLOPs, predicted latency and speed-up of one configuration's cost, formatted."""
    unpruned = cost.unpruned
    flops_value, flops_label = flops_unit(cost.cost.flops)
    is_unpruned = cost.cost.flops == unpruned.flops and cost.cost.params == unpruned.params
    flops_ratio = f"FLOPs ratio {unpruned.flops / cost.cost.flops:.2f} x"
    cards = [
        Card(
            "Params (M)",
            short_number(cost.cost.params / 1e6),
            None if is_unpruned else f"{cost.cost.params_pct - 100:+.1f} %",
            "inverse",
            f"embedding-path parameters (no classifier head); unpruned: {unpruned.params:,}",
        ),
        Card(
            f"FLOPs ({flops_label})",
            short_number(flops_value),
            None if is_unpruned else f"{cost.cost.flops_pct - 100:+.1f} %",
            "inverse",
            f"analytic FLOPs per image; unpruned: {unpruned.flops:,}",
        ),
    ]
    latency = cost.latency
    state, fraction = latency_status
    caption = None
    if latency is not None:
        cards += [
            Card(
                "Latency (ms, predicted)",
                short_number(latency.ms),
                f"{short_number(latency.low_ms)}–{short_number(latency.high_ms)} ms",
                "off",
                f"batch {latency.batch}, predicted by the latency model calibrated on this device; "
                "the range is the spread of the calibration repeats. 'Measure now' times it directly.",
            ),
            Card(
                "Speed-up (predicted)",
                speedup_text(latency.speedup),
                flops_ratio,
                "off",
                "predicted unpruned / pruned latency; exactly 1.00 x at (0, 0) by construction",
            ),
        ]
    else:
        why = {"calibrating": f"calibrating the latency model ({100 * fraction:.0f} %)", "failed": "unavailable"}
        cards += [
            Card(
                "Latency (ms, predicted)",
                CALIBRATING if state in ("waiting", "calibrating") else "n/a",
                help=f"Latency model: {why.get(state, 'waiting to calibrate')}. It is measured once per "
                "backbone, device, dtype and thread count and then cached on disk.",
            ),
            Card(
                "Speed-up (predicted)",
                speedup_text(1.0) if is_unpruned else (CALIBRATING if state != "failed" else "n/a"),
                flops_ratio,
                "off",
                "the unpruned model is 1.00 x by definition; other configurations wait for the latency model",
            ),
        ]
        if state in ("waiting", "calibrating"):
            caption = (
                f"Latency and speed-up: calibrating the latency model in the background ({100 * fraction:.0f} %); "
                "once per backbone and device, then cached on disk."
            )
    return CardView(tuple(cards), caption)


def cost_cards(shared: SharedExplorer, cost: Any, link: SliderLink) -> None:
    """The cost cards of the sliders' configuration; the browser redraws them from a table of every grid
    configuration's cost while the server's run is on its way (once the latency model has settled)."""
    status = shared.latency_status()
    table = None
    if status[0] in ("ready", "failed"):
        explorer = shared.explorer
        table = shared.memo(
            "cost_cards",
            (status[0], id(explorer.latency_model)),
            lambda: table_json(
                ((m, h), cost_view(explorer.cost(m, h), status)) for m in grid_axis() for h in grid_axis()
            ),
        )
    instant_cards.show("cost_cards", cost_view(cost, status), link, table)


def measure_now(explorer: Any, config: tuple[float, float]) -> None:
    """A direct timing of the configuration on the sliders (batch 1), labelled "measured"."""
    if st.button("Measure now", help="times the pruned and the unpruned model directly (a few seconds)"):
        try:
            with st.spinner("Timing the pruned and unpruned model …"):
                measured = explorer.measure_latency_now(config[0], config[1], batch=1)
            state.set_results(measured_latency=(config, measured))
        except Exception as error:  # noqa: BLE001 - shown in the page, never as a traceback
            session.show_error(error)
    stored = state.result("measured_latency")
    if stored is None:
        return
    measured_config, measured = stored
    text = f"measured {measured.ms:.2f} ms at batch {measured.batch} (speed-up {measured.speedup:.2f} x)"
    if measured_config == config:
        st.markdown(f"**Measured now:** {text}.")
    else:
        st.caption(
            f"Last direct measurement was for (MLP {measured_config[0]:.2f}, head {measured_config[1]:.2f}), "
            f"not the sliders' configuration: {text}."
        )


def _test_set_text(shared: SharedExplorer) -> str:
    knn = shared.explorer.knn
    images = shared.landscape.key.knn_images if shared.landscape is not None else None
    if images is None:
        return f"{EXACT} ({len(knn.test_labels):,} test images, exact)"
    return f"kNN set of {images:,} images (chosen for this backbone), exact"


def _describe_skip() -> str:
    if session.selection().random_init and session.has_labelled_data():
        return "kNN skipped: random weights make the accuracy meaningless (tick 'Run kNN anyway' to run it)."
    return "kNN needs labelled data: the selected data has none (choose labelled data on the first page)."


LINEAR_LABEL = "Linear probe top-1 (%)"
LINEAR_HELP = (
    "a linear classifier trained on the pruned model's frozen embeddings (DINOv1 linear evaluation: "
    "100 epochs, SGD); what a practitioner who fine-tunes a linear head gets. Delta vs unpruned"
)
NOT_FILLED = "not filled"


def _linear_card(shared: SharedExplorer, value: float | None, baseline: float | None, pending: str) -> Card:
    """The linear-probe card: the value (0..1) with its delta vs unpruned, or ``pending`` when there is none."""
    if value is None:
        filled = shared.filler is not None and shared.filler.with_linear
        return Card(LINEAR_LABEL, pending if filled else NOT_FILLED, help=LINEAR_HELP if filled else _LINEAR_LARGE)
    delta = None if baseline is None else f"{100 * (value - baseline):+.2f} pts"
    return Card(LINEAR_LABEL, f"{100 * value:.2f}", delta, help=LINEAR_HELP)


_LINEAR_LARGE = (
    "not computed while the landscape fills: the kNN data is large, so a probe per configuration costs too much; "
    "`python -m snapvit_core landscape --metrics knn,linear` or `evaluate --metrics linear` computes it"
)


def _exact_view(shared: SharedExplorer, point: LandscapePoint, where: str, compact: bool) -> CardView:
    baseline = shared.landscape.get(0.0, 0.0)
    knn = 100 * point.knn_top1
    delta = None if baseline is None else f"{knn - 100 * baseline.knn_top1:+.2f} pts"
    cards = (
        Card("kNN top-1 (%)", f"{knn:.2f}", delta, help="k=20 nearest-neighbour accuracy; delta vs unpruned"),
        _linear_card(shared, point.linear_top1, None if baseline is None else baseline.linear_top1, UPDATING),
        Card(
            "Mean cosine",
            f"{point.mean_cosine:.4f}",
            help="mean cosine similarity of the pruned to the unpruned test embeddings (1 = unchanged)",
        ),
    )
    caption = f"kNN for {where} on the {_test_set_text(shared)}" + ("" if compact else " · from the landscape")
    return CardView(cards, caption)


def _updating_view(shared: SharedExplorer, where: str) -> CardView:
    cards = (
        Card("kNN top-1 (%)", UPDATING, help="computing in the background for the sliders' configuration"),
        _linear_card(shared, None, None, UPDATING),
        Card("Mean cosine", UPDATING, help="embedding similarity to the unpruned model"),
    )
    return CardView(cards, f"kNN for {where}: {UPDATING}")


def _estimate_view(shared: SharedExplorer, estimate: Any, where: str) -> CardView:
    knn = 100 * estimate.knn_top1
    delta = None if estimate.baseline_top1 is None else f"{knn - 100 * estimate.baseline_top1:+.2f} pts"
    cards = (
        Card("kNN top-1 (%)", f"{knn:.2f}", delta, help="an ESTIMATE on a subset; the exact value follows"),
        _linear_card(shared, None, None, UPDATING),  # the probe comes with the exact point
        Card("Mean cosine", f"{estimate.mean_cosine:.4f}", help="estimate on the same subset"),
    )
    return CardView(
        cards, f"Estimate for {where} on {estimate.knn_set}; the exact {EXACT} value replaces it when computed."
    )


def _where(config: tuple[float, float]) -> str:
    return f"(MLP {sparsity_text(config[0])}, head {sparsity_text(config[1])})"


def knn_table(shared: SharedExplorer, compact: bool) -> dict[str, Any]:
    """Every exact landscape point's kNN cards (captions name their configuration through '{where}')."""
    landscape = shared.landscape
    return shared.memo(
        f"knn_cards_{compact}",
        (len(landscape), landscape.count("linear_top1"), _test_set_text(shared)),
        lambda: table_json(
            ((p.mlp_sparsity, p.head_sparsity), _exact_view(shared, p, "{where}", compact)) for p in landscape.points()
        ),
    )


def _complete(shared: SharedExplorer, point: LandscapePoint | None) -> LandscapePoint | None:
    """``point`` when it is final: with its linear value wherever the filler computes one."""
    if point is None or (point.linear_top1 is None and shared.filler is not None and shared.filler.with_linear):
        return None
    return point


def accuracy_panel(
    shared: SharedExplorer,
    config: tuple[float, float],
    run_knn: bool,
    link: SliderLink,
    compact: bool = False,
    key: str = "knn_cards",
) -> None:
    """kNN accuracy, the linear probe and mean cosine of ``config``: exact from the landscape, else an estimate,
    polled until final. The kNN cards show as soon as the point's kNN is in; the probe's card follows. The
    browser shows every exact point of the landscape the moment the sliders reach it."""
    if shared.landscape is None or not run_knn:
        st.info(_describe_skip(), icon=":material/info:")
        return
    landscape, filler = shared.landscape, shared.filler
    exact = _complete(shared, landscape.get(*config))
    if exact is None:
        filler.request(*config)
    where = _where(config)

    @st.fragment(run_every=None if exact is not None else POLL_S)
    def panel() -> None:
        point = landscape.get(*config)  # its kNN is exact; the probe's value may still follow
        if point is not None:
            view = _exact_view(shared, point, where, compact)
        elif filler.status().error:
            st.warning(filler.status().error, icon=":material/warning:")
            return
        else:
            estimate = filler.estimate(*config)
            view = _updating_view(shared, where) if estimate is None else _estimate_view(shared, estimate, where)
        instant_cards.show(key, view, link, knn_table(shared, compact), _updating_view(shared, "{where}"))
        if _complete(shared, point) is not None and exact is None:
            st.rerun()  # the final values arrived: redraw the page once (landscape chart too), stop polling

    panel()


def landscape_progress(shared: SharedExplorer) -> None:
    """One line: how much of the plane is exact, and the time left (a button for heavy backbones)."""
    if shared.landscape is None:
        return
    status = shared.filler.status()
    linear_on_request(shared)
    if status.done >= status.total:
        st.caption(f"Accuracy landscape: all {status.total} configurations computed on the {_test_set_text(shared)}.")
        return
    eta = status.eta_s
    left = "" if eta is None or not status.filling else f" · about {_duration(eta)} left"
    doing = "filling in the background" if status.filling and status.running else "paused"
    if not status.filling:
        doing = "not filled by default on this device (one exact point is slow here)"
    st.caption(
        f"Accuracy landscape: {status.done} of {status.total} configurations exact ({doing}){left}. "
        "Others show a quick estimate first."
    )
    if shared.heavy and not status.filling:
        total = session.knn_image_count()
        options = sorted({n for n in (500, 1000, 2000, 5000) if n < total} | {total})
        size = st.select_slider("kNN images for the landscape", options=options, value=options[0], key="fill_size")
        seconds = shared.landscape.size * size * _seconds_per_image(shared)
        if st.button(f"Fill the landscape on {size:,} images (about {_duration(seconds)})", key="fill_landscape"):
            shared.fill(None if size >= total else int(size))
            st.rerun()


def linear_on_request(shared: SharedExplorer) -> None:
    """Large kNN data: the fill computes no linear probe; offer it along the published path, with its cost."""
    filler = shared.filler
    if filler.with_linear:
        return
    missing = filler.linear_path_missing()
    if not missing:
        st.caption(
            "Linear probe: computed along the published path (the rest of the plane: `landscape --metrics knn,linear`)."
        )
        return
    knn = shared.explorer.knn
    images = len(knn.train_labels) + len(knn.test_labels)
    seconds = len(missing) * (
        images * _seconds_per_image(shared) + LINEAR_PROBE_S_PER_TRAIN_IMAGE * len(knn.train_labels)
    )
    st.caption(
        f"Linear probe: not computed while the landscape fills ({len(knn.train_labels):,} training images make a "
        "probe per configuration costly)."
    )
    if st.button(
        f"Compute it along the published path ({len(missing)} configurations, about {_duration(seconds)})",
        key="linear_path",
    ):
        filler.request_linear_path()
        st.rerun()


# A probe's cost grows with the train split: 100 epochs over it (0.07 s for the embedded data's 1,257 images
# at 96 dims on one CPU thread: benchmarks/bench_linear_probe.py, results/linear.md), rounded up for wider features.
LINEAR_PROBE_S_PER_TRAIN_IMAGE = 2e-4


def _seconds_per_image(shared: SharedExplorer) -> float:
    from ui.live import seconds_per_image_guess

    return seconds_per_image_guess(shared.explorer.cost(0.0, 0.0).unpruned.flops, str(shared.explorer.device))


def _duration(seconds: float) -> str:
    if seconds >= 5400:
        return f"{seconds / 3600:.1f} h"
    if seconds >= 90:
        return f"{seconds / 60:.0f} min"
    return f"{seconds:.0f} s"


def cost_grids(shared: SharedExplorer) -> tuple[tuple[float, ...], np.ndarray, np.ndarray | None]:
    """(axis, FLOPs % grid, predicted batch-1 latency grid or None) over the landscape's (MLP, head) grid."""
    return shared.cost_grids()


_OVERLAY_BOX = "overlay_box_"
# An overlaid chart's container is its marks' positioning box (the marks' own element container, the
# box's last child, positioned by Streamlit, is made static so it is not); the box's gap would push what
# follows below the marks' empty element down. Constant, so a move leaves the page's style sheets alone.
_OVERLAY_BOX_CSS = (
    f"<style>[class*='st-key-{_OVERLAY_BOX}'] {{position: relative; gap: 0}} "
    f"[class*='st-key-{_OVERLAY_BOX}'] > .stElementContainer:last-child {{position: static}}</style>"
)
Overlay = Callable[[tuple[float, float], Any], None]  # draws a chart's marks for (configuration, its cost)


def mark_view(config: tuple[float, float], cost: Any, hidden: int) -> MarkView:
    """What the marks over the charts show at ``config``, from its cost (the plan's kept neurons and heads)."""
    from ui.charts import heads_title, neurons_title

    kept_heads = np.asarray(cost.head_mask, dtype=bool)
    return MarkView(
        (float(config[0]), float(config[1])),
        tuple(int(k) for k in cost.kept_neurons),
        tuple(tuple(int(head) for head in np.flatnonzero(~block)) for block in kept_heads),
        neurons_title(cost.kept_neurons, hidden),
        heads_title(kept_heads),
    )


def marks_table(shared: SharedExplorer) -> dict[str, Any]:
    """Every grid configuration's marks, for the browser (built once per shared explorer)."""
    explorer = shared.explorer
    hidden = explorer.backbone.shape.mlp_hidden
    axis = grid_axis()
    return shared.memo(
        "chart_marks",
        axis,
        lambda: instant_cards.marks_table(mark_view((m, h), explorer.cost(m, h), hidden) for m in axis for h in axis),
    )


def _marks_overlay(shared: SharedExplorer, slot: Any, key: str, chart: ChartMarks) -> Overlay:
    """What lays ``chart``'s marks of a configuration into ``slot``, the chart's overlay; the browser moves
    them with the sliders from ``marks_table``."""
    hidden = shared.explorer.backbone.shape.mlp_hidden

    def overlay(config: tuple[float, float], cost: Any) -> None:
        with slot:
            view = mark_view(config, cost, hidden)
            instant_cards.show_marks(f"marks_{key}", chart, view, marks_table(shared), config_state.slider_link())

    return overlay


def overlaid_chart(figure: Any, key: str, **plotly_kwargs: Any) -> Any:
    """``figure`` with an empty slot laid over it, where ``_marks_overlay`` lays the chart's marks.

    The parts that follow the sliders live in the overlay, so on a move the figure stays the same and no
    viewer's browser redraws it (a redraw is the largest browser cost of a move, ``results/sessions.md``).
    """
    st.html(_OVERLAY_BOX_CSS)
    with st.container(key=_OVERLAY_BOX + key):
        st.plotly_chart(figure, key=key, **plotly_kwargs)
        return st.empty()


def _structure_chart(shared: SharedExplorer, kind: str, caption: str, marks: Callable[[Any], ChartMarks]) -> Overlay:
    """The structure chart ``kind`` (``SharedExplorer.STATIC_FIGURES``: the same figure for every
    configuration) and its caption; returns what lays its marks (``marks(figure)``) of a configuration over it."""
    figure = shared.figure(kind)
    slot = overlaid_chart(figure, kind)
    st.caption(caption)
    return _marks_overlay(shared, slot, kind, marks(figure))


def neuron_map(shared: SharedExplorer) -> Overlay:
    """The neuron-score map, with a configuration's keep boundaries laid over it."""
    from ui.charts import KEEP_BOUNDARY_KEY, keep_boundary_marks

    return _structure_chart(shared, "neuron_map", KEEP_BOUNDARY_KEY, keep_boundary_marks)


def head_map(shared: SharedExplorer) -> Overlay:
    """The head-score map, with a configuration's pruned heads (crossed out) and title laid over it."""
    from ui.charts import HEAD_MAP_KEY, head_marks

    return _structure_chart(shared, "head_scores", HEAD_MAP_KEY, head_marks)


def kept_neuron_chart(shared: SharedExplorer) -> Overlay:
    """Axes for kept vs pruned MLP neurons per block, with a configuration's bars and title laid over them."""
    from ui.charts import KEPT_BARS_KEY, kept_bar_marks

    hidden = shared.explorer.backbone.shape.mlp_hidden
    return _structure_chart(shared, "kept_axes", KEPT_BARS_KEY, lambda figure: kept_bar_marks(figure, hidden))


LANDSCAPE_POLL_S = 3.0  # while the landscape fills, how often the page looks for new points to draw


DIFFERENCE = "Linear − kNN"
HEATMAPS = ("kNN top-1", "Linear probe top-1", DIFFERENCE)


def _heatmap_values(landscape: Any, shown: str) -> tuple[np.ndarray, str, str]:
    """(the (MLP, head) grid in %, or points for the difference; its short name; the chart title)."""
    knn = 100 * landscape.matrix("knn_top1")
    if shown == HEATMAPS[0]:
        return knn, "kNN", "kNN top-1 over the (MLP, head) plane"
    linear = 100 * landscape.matrix("linear_top1")
    if shown == HEATMAPS[1]:
        return linear, "linear", "Linear-probe top-1 over the (MLP, head) plane"
    return linear - knn, "linear − kNN", "Linear probe − kNN (points; red: kNN understates)"


def landscape_chart(shared: SharedExplorer, on_click) -> Overlay:
    """The landscape heatmap; clicking a cell calls ``on_click`` (the sliders move there). Returns what
    draws a configuration's star over it.

    The figure changes when the landscape grows (looked for every ``LANDSCAPE_POLL_S`` while it fills),
    when the latency model arrives, and after each click (a fresh chart forgets the clicked cell's
    selection, so a second click on the same cell moves the sliders again).
    """
    from snapvit_core.landscape.grid import published_points
    from ui.landscape_charts import landscape_heatmap, landscape_marks

    landscape = shared.landscape
    axis, flops, latency = cost_grids(shared)
    shown = st.radio(
        "Heatmap",
        list(HEATMAPS),
        horizontal=True,
        key="landscape_metric",
        label_visibility="collapsed",
        help="Linear − kNN: where the two metrics disagree. Red cells: the linear probe loses more than kNN says "
        "(kNN understates the loss there); blue: it keeps more.",
    )
    clicks = state.result("landscape_clicks", 0)
    drawn = len(landscape)

    def build() -> Any:
        values, metric, title = _heatmap_values(landscape, shown)
        figure = landscape_heatmap(
            axis,
            values,
            flops,
            latency,
            published_points(landscape.key.grid),
            None,
            title=title,
            metric=metric,
            difference=shown == DIFFERENCE,
        )
        figure.update_layout(meta={"clicks": clicks})  # a new spec, so the browser draws a fresh chart
        return figure

    key = (id(landscape), drawn, landscape.count("linear_top1"), latency is not None, clicks, shown)
    figure = shared.memo("landscape_figure", key, build)

    def clicked() -> None:
        state.set_results(landscape_clicks=clicks + 1)
        on_click()

    slot = overlaid_chart(
        figure, "landscape_chart", on_select=clicked, selection_mode="points", config={"displayModeBar": False}
    )
    if drawn < landscape.size and shared.filler.status().filling:

        @st.fragment(run_every=LANDSCAPE_POLL_S)
        def watch() -> None:
            if len(landscape) != drawn:
                st.rerun()  # the whole page: the chart is drawn by page runs, not by the sliders' runs

        watch()
    return _marks_overlay(shared, slot, "landscape_chart", landscape_marks(figure))


def difference_chart(first: SharedExplorer, second: SharedExplorer, labels: tuple[str, str]) -> None:
    """Where each of two score sources wins (kNN top-1 difference over the plane)."""
    from ui.landscape_charts import difference_map

    matrix_a = 100 * first.landscape.matrix("knn_top1")
    matrix_b = 100 * second.landscape.matrix("knn_top1")
    known = int((~np.isnan(matrix_a - matrix_b)).sum())
    st.plotly_chart(difference_map(first.landscape.axis, matrix_a, matrix_b, *labels), key="difference_map")
    if known < first.landscape.size:
        st.caption(f"{known} of {first.landscape.size} configurations known for both so far.")


def selected_configuration(chart_key: str) -> tuple[float, float] | None:
    """The (MLP, head) grid configuration of the cell last clicked in a landscape chart, if any.

    Every trace of the chart shares its axes (x = MLP sparsity, y = head sparsity), so the clicked
    point's x and y name the cell whichever trace received the click; values off the grid are ignored.
    """
    from snapvit_core.landscape.grid import on_grid

    chart = st.session_state.get(chart_key)  # the chart widget's own state (its last selection)
    selection = getattr(chart, "selection", None) or (chart.get("selection") if isinstance(chart, dict) else None)
    points = getattr(selection, "points", None) or (selection.get("points") if isinstance(selection, dict) else None)
    for point in points or []:
        try:
            mlp, head = on_grid(float(point["x"])), on_grid(float(point["y"]))
        except (KeyError, TypeError, ValueError):
            continue
        if mlp is not None and head is not None:
            return mlp, head
    return None


def latency_watch(shared: SharedExplorer) -> None:
    """While the latency model is being calibrated, poll and redraw the page once it is ready (the cards
    above are drawn by the page run, which nothing else would repeat while the sliders rest)."""
    if shared.latency_status()[0] not in ("waiting", "calibrating"):
        return

    @st.fragment(run_every=0.5)
    def watch() -> None:
        if shared.latency_status()[0] not in ("waiting", "calibrating"):
            st.rerun()

    watch()
