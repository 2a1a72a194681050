"""Page 4: sweep (MLP, head) pairs for several scores, plot trade-offs, find the best config for a budget."""

from __future__ import annotations

import time

import streamlit as st

from snapvit_core.app_state import best_under_budget, pareto_mask, sweep
from snapvit_core.errors import CancelledError
from snapvit_core.explorer import DATA_FREE_METHODS, Explorer, data_free_scores
from snapvit_core.presets import PUBLISHED_SPARSITY_PAIRS
from snapvit_core.scores_io import load_scores
from ui import charts, session
from ui.jobs import Job
from ui.labels import BUDGET_TARGETS

st.title("Compare & budget")
backbone = session.guarded_backbone()
if backbone is None:
    st.stop()
if not session.has_labelled_data():
    st.warning("The selected data has no labels, so accuracy cannot be compared. Choose labelled data on page 1.")
    st.stop()
scores, scores_label = session.scores()

CURRENT = f"current: {scores_label}"
saved = {f"file: {path.name}": path for path in session.shipped_scores_for(session.selection().model_id)}
sources = [CURRENT] + [f"{name} (data-free)" for name in DATA_FREE_METHODS] + list(saved)
with st.form("sweep_form"):
    chosen = st.multiselect("Scores to compare", sources, default=[CURRENT, "magnitude (data-free)"])
    grid = st.radio("Configurations", ["published path (7 pairs)", "grid"], horizontal=True)
    grid_steps = st.select_slider("Grid points per axis (grid only)", options=[3, 4, 5, 6], value=4)
    start = st.form_submit_button("Run sweep", type="primary")


def run_sweep(report, cancelled, labels, pairs, selection):
    explorers = {}
    splits = session.shared_knn_splits(
        selection.data, selection.model_id, selection.random_init, selection.resolved_device
    )
    for label in labels:
        if label == CURRENT:
            method_scores = scores
        elif label in saved:
            method_scores = load_scores(saved[label])
        else:
            method_scores = data_free_scores(label.split(" ")[0], backbone.model)
        explorer = Explorer(backbone, method_scores, selection.resolved_device)
        explorer.attach_knn(session.make_knn_evaluator(splits, selection.resolved_device))
        explorers[label] = explorer

    def on_step(done, total):
        if cancelled():
            raise CancelledError("sweep")
        report(done / total, f"{done} of {total} configurations measured")

    return sweep(explorers, pairs, on_step)


job = st.session_state.get("job_sweep")
if start:
    if not chosen:
        st.error("Choose at least one scores source.")
    elif job is not None and job.running:
        st.warning("A sweep is already running; cancel it first.")
    else:
        if grid.startswith("published"):
            pairs = list(PUBLISHED_SPARSITY_PAIRS)
        else:
            values = [round(0.8 * i / (grid_steps - 1), 2) for i in range(grid_steps)]
            pairs = [(m, h) for m in values for h in values]
        job = Job("sweep", run_sweep, {"labels": chosen, "pairs": pairs, "selection": session.selection()}).start()
        st.session_state["job_sweep"] = job


@st.fragment(run_every=1.0)
def sweep_progress() -> None:
    current = st.session_state.get("job_sweep")
    if current is None:
        return
    snap = current.snapshot()
    if snap.state == "running":
        st.progress(snap.fraction, text=f"Sweeping: {snap.message} ({snap.seconds:.0f} s)")
        if st.button("Cancel sweep"):
            current.cancel()
    elif "sweep_table" not in st.session_state or st.session_state.get("sweep_job_id") != id(current):
        if snap.state == "done":
            st.session_state["sweep_table"] = snap.result
        else:
            st.warning(snap.error)
        st.session_state["sweep_job_id"] = id(current)
        st.rerun(scope="app")


sweep_progress()
if job is not None and job.running:
    time.sleep(0.3)  # fast sweeps finish before the first poll

table = st.session_state.get("sweep_table")
if table is None or table.empty:
    st.info("Run a sweep to see accuracy against FLOPs and latency.")
    st.stop()

pareto_flops = pareto_mask(table["flops_pct"], table["kNN top-1 (%)"])
pareto_latency = pareto_mask(table["latency_ms"], table["kNN top-1 (%)"])
left, right = st.columns(2)
left.plotly_chart(charts.tradeoff_chart(table, "flops_pct", pareto_flops), key="vs_flops")
right.plotly_chart(charts.tradeoff_chart(table, "latency_ms", pareto_latency), key="vs_latency")
st.caption(
    "Latency: batch 1, each configuration timed interleaved with the unpruned model, so load on this machine "
    "cancels out of its speed-up; `latency_ms` applies that speed-up to the sweep's median unpruned latency "
    "(raw medians: `latency_measured_ms`)."
)
display = table.assign(pareto_flops=pareto_flops).round(4)
st.dataframe(display, hide_index=True)
st.download_button("Download table (CSV)", display.to_csv(index=False).encode(), "snapvit_sweep.csv", "text/csv")

st.subheader("Budget finder")
target = st.selectbox("Budget on", list(BUDGET_TARGETS))
column = BUDGET_TARGETS[target]
limit = st.number_input(
    f"Maximum {target}",
    min_value=0.0,
    value=float(table[column].median()),
    format="%.3f",
    help="the most accurate configuration that stays within this limit is chosen",
)
best = best_under_budget(table, column, limit)
if best is None:
    st.warning(f"No configuration in the sweep meets {target} <= {limit:.3f}. Raise the limit or sweep sparser pairs.")
else:
    st.success(
        f"Best within budget: **{best['scores']}** at MLP {best['MLP sparsity']:.2f}, "
        f"heads {best['head sparsity']:.2f} "
        f"- kNN top-1 {best['kNN top-1 (%)']:.2f} %, {best['flops_pct']:.1f} % FLOPs, {best['latency_ms']:.2f} ms, "
        f"{best['params_m']:.3f} M parameters."
    )
    if st.button("Open in the explorer", type="primary"):
        if best["scores"] in saved:
            session.set_scores(load_scores(saved[best["scores"]]), saved[best["scores"]].name)
        elif best["scores"] != CURRENT:
            method = str(best["scores"]).split(" ")[0]
            session.set_scores(data_free_scores(method, backbone.model), f"{method} (data-free)")
        st.session_state["pending_config"] = (float(best["MLP sparsity"]), float(best["head sparsity"]))
        st.switch_page("pages/3_explorer.py")
