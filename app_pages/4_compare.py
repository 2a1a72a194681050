"""Page 4: sweep (MLP, head) pairs for several scores and plot trade-offs; find the best configuration for
a budget over the whole (MLP, head) plane. Latency and speed-up come from the latency model."""

from __future__ import annotations

import streamlit as st

from snapvit_core.errors import SnapViTError
from snapvit_core.explorer import DATA_FREE_METHODS
from snapvit_core.landscape.budget import LandscapeGap, best_in_landscape, find_best_under_budget
from snapvit_core.landscape.sweep import LINEAR_COLUMN, landscape_table, pareto_mask, sweep
from snapvit_core.presets import PUBLISHED_SPARSITY_PAIRS
from snapvit_core.runtime.jobs import Job
from snapvit_core.scoring.scores_io import load_scores
from ui import charts, config_state, page, session, shared, state
from ui.labels import BUDGET_TARGETS
from ui.live import live_knn_images
from ui.long_pass import job_progress, render

st.title("Compare & budget")
view = page.explorer_view_or_stop()
explorer, scores, scores_label = view.explorer, view.scores, view.scores_label
labelled = session.has_labelled_data() and session.run_knn_on_random_weights()
knn_images = None
if labelled:
    knn_images = live_knn_images(
        explorer.cost(0.0, 0.0).unpruned.flops, session.knn_image_count(), str(explorer.device)
    )

# ---- Budget finder ----------------------------------------------------------------------------------
st.subheader("Budget finder")
st.caption(
    "Searches the whole (MLP, head) sparsity plane on a 0.025 grid: costs come from the plan and the latency "
    "model (no forward pass); accuracy is evaluated only along the budget's boundary. The answer is never over "
    "the budget."
)
unpruned = explorer.cost(0.0, 0.0)
RANK_BY = {"kNN top-1": "knn", "Linear-probe top-1": "linear"}
rank_label = st.radio(
    "Rank configurations by",
    list(RANK_BY),
    horizontal=True,
    key="rank_by",
    disabled=not labelled,
    help="kNN top-1 (k=20 neighbours in the embedding) or linear-probe top-1 (a linear classifier trained on the "
    "frozen embeddings, DINOv1's protocol): the budget finder and the sweep rank by it.",
)
rank_by = RANK_BY[rank_label]
target = st.selectbox("Budget on", list(BUDGET_TARGETS))
column = BUDGET_TARGETS[target]
defaults = {
    "flops_pct": 50.0,
    "params_m": round(0.6 * unpruned.cost.params / 1e6, 3),
    "latency_ms": round(0.7 * unpruned.latency.ms, 3) if unpruned.latency is not None else 1.0,
}
with st.form("budget_form"):
    limit = st.number_input(
        f"Maximum {target}",
        min_value=0.0,
        value=defaults[column],
        format="%.3f",
        key=f"budget_limit_{column}",
        help="the most accurate configuration that stays within this limit is chosen",
    )
    find = st.form_submit_button("Find the best configuration", type="primary")


def run_budget(report, cancelled, explorer, column, limit, metric):
    answer = find_best_under_budget(
        explorer,
        column,
        limit,
        knn_images=knn_images,
        progress=job_progress(report, "candidates evaluated"),
        cancel=cancelled,
        metric=metric,
    )
    return column, limit, answer


def keep_budget(snapshot) -> None:
    if snapshot.state == "done":
        state.set_results(budget_answer=snapshot.result)
    else:
        state.set_results(budget_error=snapshot.error)


def from_landscape(column: str, limit: float):
    """The answer read from the shared landscape when it covers the budget's boundary (instant), else None."""
    if view.shared.landscape is None or not labelled:
        return None
    try:
        return column, limit, best_in_landscape(explorer, view.shared.landscape, column, limit, metric=rank_by)
    except LandscapeGap:
        return None


if find:
    running = state.job("budget")
    instant = from_landscape(column, float(limit))
    if instant is not None:
        state.set_results(budget_error=None, budget_answer=instant)
    elif running is not None and running.running:
        st.warning("A budget search is already running; cancel it first.")
    else:
        state.set_results(budget_error=None)
        state.set_job(
            "budget",
            Job(
                "budget", run_budget, {"explorer": explorer, "column": column, "limit": float(limit), "metric": rank_by}
            ).start(),
        )
render("budget", "Budget search", keep_budget)
if state.result("budget_error"):
    st.warning(state.result("budget_error"))
found = state.result("budget_answer")
if found is not None:
    found_column, found_limit, answer = found
    label = next(name for name, value in BUDGET_TARGETS.items() if value == found_column)
    if answer is None:
        st.warning(f"Nothing fits {label} <= {found_limit:.3f}, even at the sparsest configuration. Raise the limit.")
    else:
        cost = explorer.cost(answer.mlp_sparsity, answer.head_sparsity)
        accuracy = {
            "knn": f"kNN top-1 {answer.accuracy:.2f} %",
            "linear": f"linear-probe top-1 {answer.accuracy:.2f} %",
            "similarity": f"embedding cosine {answer.accuracy:.4f}",
        }.get(answer.accuracy_kind, "no accuracy (no data)")
        latency = "" if cost.latency is None else f", {cost.latency.ms:.2f} ms predicted"
        how = (
            "read from the accuracy landscape (exact values on the full test split, 0.05 grid)"
            if answer.source == "landscape"
            else "evaluated along the budget's boundary"
        )
        st.success(
            f"Best within {label} <= {found_limit:.3f}: **MLP {answer.mlp_sparsity:.3f}, heads "
            f"{answer.head_sparsity:.3f}** - {accuracy}, {cost.cost.flops_pct:.1f} % FLOPs{latency}, "
            f"{cost.cost.params / 1e6:.3f} M parameters (budgeted value {answer.cost:.3f}); {how}."
        )
        open_it, export_it = st.columns(2)
        if open_it.button("Open in the explorer", type="primary"):
            config_state.set_config(answer.mlp_sparsity, answer.head_sparsity)
            st.switch_page("app_pages/3_explorer.py")
        if export_it.button("Export it"):
            config_state.set_config(answer.mlp_sparsity, answer.head_sparsity)
            st.switch_page("app_pages/5_export.py")
        st.plotly_chart(charts.budget_chart(answer, label), key="budget_chart")
        with st.expander(f"The {len(answer.candidates)} evaluated candidates"):
            st.dataframe(answer.candidates.round(4), hide_index=True)

# ---- Sweep ------------------------------------------------------------------------------------------
st.subheader("Sweep")
if not labelled:
    st.info("Sweeps compare kNN accuracy: they need labelled data (and real weights).")
    st.stop()
CURRENT = f"current: {scores_label}"
saved = {f"file: {path.name}": path for path in session.shipped_scores_for(session.selection().model_id)}
sources = [CURRENT] + [f"{name} (data-free)" for name in DATA_FREE_METHODS] + list(saved)
with st.form("sweep_form"):
    chosen = st.multiselect("Scores to compare", sources, default=[CURRENT, "magnitude (data-free)"])
    grid = st.radio(
        "Configurations", ["published path (7 pairs)", "whole plane (the accuracy landscape)"], horizontal=True
    )
    start = st.form_submit_button("Run sweep", type="primary")


def run_sweep(report, cancelled, labels, pairs, selection, linear):
    explorers = {}
    for label in labels:
        if label == CURRENT:
            explorers[label] = explorer
            continue
        if label in saved:
            method_scores = load_scores(saved[label])
        else:
            method_scores = shared.data_free(selection, label.split(" ")[0])
        explorers[label] = shared.shared_explorer(selection, method_scores, view.align).explorer
    return sweep(
        explorers,
        pairs,
        progress=job_progress(report, "configurations"),
        cancel=cancelled,
        knn_images=knn_images,
        linear=linear,
    )


def keep_sweep(snapshot) -> None:
    if snapshot.state == "done":
        state.set_results(sweep_table=snapshot.result)
    else:
        state.set_results(sweep_error=snapshot.error)


if start:
    job = state.job("sweep")
    if not chosen:
        st.error("Choose at least one scores source.")
    elif job is not None and job.running:
        st.warning("A sweep is already running; cancel it first.")
    elif grid.startswith("published"):
        state.set_results(sweep_error=None, sweep_landscapes=None)
        state.set_job(
            "sweep",
            Job(
                "sweep",
                run_sweep,
                {
                    "labels": chosen,
                    "pairs": list(PUBLISHED_SPARSITY_PAIRS),
                    "selection": session.selection(),
                    "linear": rank_by == "linear",
                },
            ).start(),
        )
    else:
        state.set_results(sweep_landscapes=tuple(chosen))


def landscape_sources(labels: list[str]) -> dict:
    """label -> (explorer, landscape) of the shared landscapes of the chosen scores (their fillers started)."""
    sources = {}
    for label in labels:
        if label == CURRENT:
            chosen_scores = scores
        elif label in saved:
            chosen_scores = load_scores(saved[label])
        else:
            chosen_scores = shared.data_free(session.selection(), label.split(" ")[0])
        source = shared.shared_explorer(session.selection(), chosen_scores, view.align)
        if source.landscape is not None:
            source.filler.start()
            sources[label] = (source.explorer, source.landscape)
    return sources


render("sweep", "Sweeping", keep_sweep)
if state.result("sweep_landscapes"):
    try:
        sources = landscape_sources(list(state.result("sweep_landscapes")))
    except SnapViTError as error:
        session.show_error(error)
        st.stop()
    done = sum(len(landscape) for _, landscape in sources.values())
    total = sum(landscape.size for _, landscape in sources.values())
    state.set_results(sweep_table=landscape_table(sources))

    @st.fragment(run_every=2.0 if done < total else None)
    def landscape_fill_line() -> None:
        now = sum(len(landscape) for _, landscape in sources.values())
        st.caption(f"Whole plane from the accuracy landscapes: {now} of {total} configurations computed.")
        if now > done:
            st.rerun()

    landscape_fill_line()
if state.result("sweep_error"):
    st.warning(state.result("sweep_error"))

table = state.result("sweep_table")
if table is None or table.empty:
    st.info("Run a sweep to see accuracy against FLOPs and predicted latency.")
    st.stop()
accuracy_column = LINEAR_COLUMN if rank_by == "linear" else "kNN top-1 (%)"
if table[accuracy_column].isna().all():
    st.info(
        f"This sweep has no {rank_label.lower()} values: run it again to rank by {rank_label.lower()}, or rank by "
        "kNN top-1."
        if rank_by == "linear"
        else "This sweep has no kNN values."
    )
    st.stop()
ranked = table.dropna(subset=[accuracy_column])
pareto_flops = pareto_mask(ranked["flops_pct"], ranked[accuracy_column])
left, right = st.columns(2)
left.plotly_chart(charts.tradeoff_chart(ranked, "flops_pct", pareto_flops, accuracy=accuracy_column), key="vs_flops")
if ranked["latency_ms"].notna().all():
    pareto_latency = pareto_mask(ranked["latency_ms"], ranked[accuracy_column])
    right.plotly_chart(
        charts.tradeoff_chart(ranked, "latency_ms", pareto_latency, accuracy=accuracy_column), key="vs_latency"
    )
else:
    right.caption("Accuracy against latency: waiting for the latency model (it is calibrated on the explorer page).")
knn_set = "the whole kNN set" if knn_images is None else f"a {knn_images:,}-image kNN subset"
if st.session_state.get("sweep_landscapes"):
    knn_set = "the full test split (read from the accuracy landscapes, exact)"
st.caption(
    f"Latency and speed-up: batch 1, **predicted** by the latency model of this device (`latency_source`), so "
    f"machine load does not change them. Accuracy on {knn_set}."
)
display = ranked.assign(pareto_flops=pareto_flops).round(4)
st.dataframe(display, hide_index=True)
st.download_button("Download table (CSV)", display.to_csv(index=False).encode(), "snapvit_sweep.csv", "text/csv")
