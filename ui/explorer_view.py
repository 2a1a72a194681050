"""The explorer page's widgets: instant cost cards, the background accuracy panel, "Measure now".

Card values are short numbers with the unit in the label (no truncation at 800 px). A number that is
not for the configuration on the sliders is never shown without saying for which one it is.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import streamlit as st

from ui import charts, session
from ui.labels import CARD_WIDTH, card_row, flops_unit, short_number, sparsity_text, speedup_text
from ui.live import (
    LiveRequest,
    LiveResult,
    LiveWorker,
    describe_set,
    knn_metrics,
    live_knn_images,
)

POLL_S = 0.2  # how often a pending accuracy panel looks for its result
UPDATING = "updating…"
CALIBRATING = "…"  # latency cards while the latency model is measured (the caption below says so)


def _card(row: Any, *args: Any, **kwargs: Any) -> None:
    """One metric card of fixed width in a wrapping row."""
    row.metric(*args, width=CARD_WIDTH, **kwargs)


def live_request(explorer: Any, mlp_sparsity: float, head_sparsity: float) -> LiveRequest:
    """What the worker should evaluate for this slider position (kNN only where it means something).

    The live kNN set is sized from a FLOPs-rate guess (fixed per backbone, so its numbers stay comparable).
    """
    has_knn = explorer.knn is not None
    metrics = knn_metrics(has_knn, session.run_knn_on_random_weights())
    knn_images = None
    if "knn" in metrics:
        unpruned_flops = explorer.cost(0.0, 0.0).unpruned.flops
        knn_images = live_knn_images(unpruned_flops, session.knn_image_count(), str(explorer.device))
    return LiveRequest(float(mlp_sparsity), float(head_sparsity), metrics, knn_images)


def cost_cards(cost: Any, worker: LiveWorker, config: tuple[float, float]) -> None:
    """Parameters, FLOPs, predicted latency and speed-up: from the plan, instant."""
    unpruned = cost.unpruned
    flops_value, flops_label = flops_unit(cost.cost.flops)
    is_unpruned = cost.cost.flops == unpruned.flops and cost.cost.params == unpruned.params
    row = card_row()  # short values, units in the labels, wrapping row: nothing is cut at 800 px
    _card(
        row,
        "Params (M)",
        short_number(cost.cost.params / 1e6),
        delta=None if is_unpruned else f"{cost.cost.params_pct - 100:+.1f} %",
        delta_color="inverse",
        help=f"embedding-path parameters: {cost.cost.params:,} of {unpruned.params:,} ({cost.cost.params_pct:.1f} %)",
    )
    _card(
        row,
        f"FLOPs ({flops_label})",
        short_number(flops_value),
        delta=None if is_unpruned else f"{cost.cost.flops_pct - 100:+.1f} %",
        delta_color="inverse",
        help=f"analytic FLOPs per image: {cost.cost.flops:,} of {unpruned.flops:,} ({cost.cost.flops_pct:.1f} %)",
    )
    latency = cost.latency
    state, fraction = worker.latency_status()
    if latency is not None:
        _card(
            row,
            "Latency (ms, predicted)",
            short_number(latency.ms),
            delta=f"{short_number(latency.low_ms)}–{short_number(latency.high_ms)} ms",
            delta_color="off",
            help=f"batch {latency.batch}, predicted by the latency model calibrated on this device; "
            "the range is the spread of the calibration repeats. 'Measure now' times it directly.",
        )
        _card(
            row,
            "Speed-up (predicted)",
            speedup_text(latency.speedup),
            delta=f"FLOPs ratio {unpruned.flops / cost.cost.flops:.2f} x",
            delta_color="off",
            help="predicted unpruned / pruned latency; exactly 1.00 x at (0, 0) by construction",
        )
    else:
        why = {"calibrating": f"calibrating the latency model ({100 * fraction:.0f} %)", "failed": "unavailable"}
        _card(
            row,
            "Latency (ms, predicted)",
            CALIBRATING if state in ("waiting", "calibrating") else "n/a",
            help=f"Latency model: {why.get(state, 'waiting to calibrate')}. It is measured once per "
            "backbone, device, dtype and thread count and then cached on disk.",
        )
        _card(
            row,
            "Speed-up (predicted)",
            speedup_text(1.0) if is_unpruned else (CALIBRATING if state != "failed" else "n/a"),
            delta=f"FLOPs ratio {unpruned.flops / cost.cost.flops:.2f} x",
            delta_color="off",
            help="the unpruned model is 1.00 x by definition; other configurations wait for the latency model",
        )
    if latency is None and state in ("waiting", "calibrating"):
        st.caption(
            f"Latency and speed-up: calibrating the latency model in the background ({100 * fraction:.0f} %); "
            "once per backbone and device, then cached on disk."
        )


def measure_now(explorer: Any, config: tuple[float, float]) -> None:
    """A direct timing of the configuration on the sliders (batch 1), labelled "measured"."""
    if st.button("Measure now", help="times the pruned and the unpruned model directly (a few seconds)"):
        try:
            with st.spinner("Timing the pruned and unpruned model …"):
                measured = explorer.measure_latency_now(config[0], config[1], batch=1)
            st.session_state["measured_latency"] = (config, measured)
        except Exception as error:  # noqa: BLE001 - shown in the page, never as a traceback
            session.show_error(error)
    stored = st.session_state.get("measured_latency")
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


def _knn_set_text(outcome: LiveResult) -> str:
    label = getattr(outcome.result, "knn_set", None)
    return label or describe_set(outcome.request.knn_images, session.knn_image_count())


def _describe_skip(request: LiveRequest) -> str:
    if session.selection().random_init and session.has_labelled_data():
        return "kNN skipped: random weights make the accuracy meaningless (tick 'Run kNN anyway' to run it)."
    return "kNN needs labelled data: the selected data has none (choose labelled data on the first page)."


def _accuracy_cards(worker: LiveWorker, request: LiveRequest, compact: bool) -> bool:
    """Draw the kNN and similarity cards; True when they show the result for ``request``."""
    if "knn" not in request.metrics:
        st.info(_describe_skip(request), icon=":material/info:")
        return True
    outcome = worker.result_for(request)
    baseline = worker.result_for(
        LiveRequest(0.0, 0.0, request.metrics, request.knn_images)
    )  # the unpruned reference, same kNN set
    row = card_row()
    if outcome is None:
        _card(row, "kNN top-1 (%)", UPDATING, help="computing in the background for the sliders' configuration")
        _card(row, "Mean cosine", UPDATING, help="embedding similarity to the unpruned model")
        latest = worker.latest()
        if latest is not None and latest.result is not None and latest.result.knn_top1 is not None:
            st.caption(
                f"{UPDATING.capitalize()} The last finished result was for (MLP {latest.request.mlp_sparsity:.2f}, "
                f"head {latest.request.head_sparsity:.2f}), not the sliders' configuration: kNN top-1 "
                f"{100 * latest.result.knn_top1:.2f} %."
            )
        return False
    if outcome.error:
        st.warning(outcome.error, icon=":material/warning:")
        return True
    result = outcome.result
    knn = 100 * result.knn_top1
    delta = None
    if baseline is not None and baseline.result is not None and baseline.result.knn_top1 is not None:
        delta = f"{knn - 100 * baseline.result.knn_top1:+.2f} pts"
    _card(row, "kNN top-1 (%)", f"{knn:.2f}", delta=delta, help="k=20 nearest-neighbour accuracy; delta vs unpruned")
    cosine = result.embedding_cosine
    _card(
        row,
        "Mean cosine",
        "n/a" if cosine is None else f"{cosine:.4f}",
        help="mean cosine similarity of the pruned to the unpruned test embeddings (1 = unchanged)",
    )
    where = f"(MLP {sparsity_text(request.mlp_sparsity)}, head {sparsity_text(request.head_sparsity)})"
    if not compact:
        st.caption(
            f"kNN for {where} on {_knn_set_text(outcome)} · computed in {outcome.seconds:.2f} s in the background"
        )
    else:
        st.caption(f"kNN for {where} on {_knn_set_text(outcome)}")
    return True


def accuracy_panel(
    worker: LiveWorker,
    request: LiveRequest,
    histogram_column: Any | None,
    key: str,
    container: Any | None = None,
    compact: bool = False,
) -> None:
    """kNN accuracy and the similarity histogram, polled from the worker while they are pending.

    The fragment polls every ``POLL_S`` only while the result is missing; when it arrives it reruns
    the page once, which redraws the histogram and stops the polling.
    """
    pending = worker.pending(request) and "knn" in request.metrics

    @st.fragment(run_every=POLL_S if pending else None)
    def panel() -> None:
        done = _accuracy_cards(worker, request, compact)
        if pending and done:
            st.rerun()

    with container if container is not None else st.container():
        panel()
    if histogram_column is None:
        return
    outcome = worker.result_for(request)
    similarity = None if outcome is None or outcome.result is None else _per_image(outcome.result)
    with histogram_column:
        if similarity is not None:
            st.plotly_chart(charts.similarity_histogram(np.asarray(similarity)), key=f"similarity_{key}")
        elif "knn" in request.metrics:
            st.caption(f"Embedding-similarity histogram: {UPDATING}")


def _per_image(result: Any) -> list[float] | None:
    return getattr(result, "per_image_similarity", None)
