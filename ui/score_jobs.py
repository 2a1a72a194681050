"""The scoring and search panels of page 2: settings, background job, progress, cancel, live fitness curve.

While a job runs, the controls that would start a conflicting job are disabled; Cancel always works.
A cancelled search keeps its best-so-far result.
"""

from __future__ import annotations

import copy

import streamlit as st

from snapvit_core.data import load_images, preprocess
from snapvit_core.engine.backbones import Backbone
from snapvit_core.engine.precision import PRECISIONS, autocast_dtype
from snapvit_core.errors import CancelledError, SnapViTError
from snapvit_core.runtime.jobs import Job
from snapvit_core.scoring.compute import METHODS, SQUARED_GRADIENTS, ScoringConfig, compute_scores
from snapvit_core.search.evolution import SearchConfig, run_search
from ui import charts, session, state

JOB_NAME = "scoring"  # the session's scoring or search job (one at a time)


def _score_job(report, cancelled, backbone: Backbone, data: str, config: ScoringConfig, device: str):
    images, labels = None, None
    if config.needs_images:
        report(0.0, f"loading {config.samples} images from {data}")
        image_set = load_images(data, "train", limit=config.samples, seed=config.seed, lazy=True)
        images, labels = image_set.images, image_set.labels

    def progress(fraction: float, images_per_second: float, eta_seconds: float) -> None:
        report(fraction, f"{images_per_second:.1f} images/s, about {eta_seconds:.0f} s left")

    def cancel() -> bool:
        return cancelled()

    scores = compute_scores(
        backbone.model,
        images,
        backbone.data_config,
        config,
        labels=labels,
        device=device,
        progress=progress,
        cancel=cancel,
        model_id=backbone.model_id,
    )
    used = f"{len(images)} images" if images else "data-free"
    if config.squared_gradients != "accumulated":
        used += f", {config.squared_gradients} squared gradients"
    return {"scores": scores, "label": f"{config.method} ({used})"}


def _search_job(report, cancelled, backbone: Backbone, data: str, base, config: SearchConfig, device: str):
    report(0.0, f"loading {config.eval_images} evaluation images from {data}")
    image_set = load_images(data, "train", limit=config.eval_images, seed=config.seed)
    images = preprocess(image_set.images, backbone.data_config)
    best: list[float] = []

    def progress(done: int, total: int, best_fitness: float) -> None:
        best.append(best_fitness)
        report(done / total, f"evaluation {done} of {total}, best fitness {best_fitness:.5f}", best=list(best))

    def cancel() -> bool:
        return cancelled()

    try:
        result = run_search(
            copy.deepcopy(backbone.model),  # the search hooks its model; the cached one is shared
            base,
            images,
            config,
            device=device,
            progress=progress,
            cancel=cancel,
            model_id=backbone.model_id,
        )
    except CancelledError as error:
        partial = getattr(error, "partial_result", None)
        if partial is not None:
            error.partial_result = {"scores": partial.scores, "label": "xnes search (cancelled, best so far)"}
        raise
    return {"scores": result.scores, "label": f"xnes search ({config.evaluations} evaluations, {config.covariance})"}


def _running(job: Job | None) -> bool:
    return job is not None and job.running


PRECISION_HELP = (
    "auto: bf16 autocast on CUDA, fp32 on the CPU (reproducible, equal to the published code). "
    "bf16: also on a CPU with native bf16 (AVX512-BF16 / AMX), about 2x faster there; results differ at "
    "bf16 round-off. fp32: float32 everywhere."
)


def render_jobs(backbone: Backbone) -> None:
    """Scoring and search forms plus the progress panel of the session's current job."""
    job: Job | None = state.job(JOB_NAME)
    busy = _running(job)
    choice = session.selection()
    device = choice.resolved_device
    score_tab, search_tab = st.tabs(["Compute scores", "Evolutionary search (xNES)"])
    with score_tab, st.form("scoring_form"):
        method = st.selectbox("Method", METHODS, help="snapvit: label-free self-distillation gradients (the paper)")
        left, right = st.columns(2)
        samples = left.number_input("Images", min_value=1, max_value=100_000, value=256, step=32)
        seed = right.number_input("Seed", min_value=0, value=0, step=1)
        batch = left.number_input("Images per step", min_value=1, max_value=256, value=16)
        squared = right.selectbox(
            "Squared gradients",
            SQUARED_GRADIENTS,
            help="accumulated: square of the gradient summed over the pass (DESIGN, the published code). "
            "per-image: mean of each image's squared gradient (the paper's equation; snapvit and cross-entropy).",
        )
        score_precision = left.selectbox("Precision", PRECISIONS, help=PRECISION_HELP)
        st.caption(f"Data: `{choice.data}` · 2 global + 10 local crops per image (published defaults) · {device}")
        if st.form_submit_button("Compute scores", type="primary", disabled=busy):
            try:
                config = ScoringConfig(
                    method=method,
                    samples=int(samples),
                    seed=int(seed),
                    batch_size=int(batch),
                    squared_gradients=squared,
                    precision=score_precision,
                )
                autocast_dtype(config.precision, device)  # bf16 where it would be emulated: say so now
            except SnapViTError as error:
                session.show_error(error)
            else:
                job = Job(
                    "scoring",
                    _score_job,
                    {"backbone": backbone, "data": choice.data, "config": config, "device": device},
                ).start()
                state.set_job(JOB_NAME, job)
    with search_tab, st.form("search_form"):
        scores, label = session.scores()
        st.caption(f"Searches block/head multipliers for the current scores: **{label}**.")
        left, right = st.columns(2)
        evaluations = left.number_input("Fitness evaluations", min_value=8, max_value=2000, value=50)
        eval_images = right.number_input("Evaluation images", min_value=8, max_value=10_000, value=512)
        covariance = left.selectbox("Initial covariance", ["cka", "identity"])
        search_seed = right.number_input("Seed ", min_value=0, value=0, step=1)
        search_precision = left.selectbox("Precision ", PRECISIONS, help=PRECISION_HELP)
        if st.form_submit_button("Run search", type="primary", disabled=busy):
            config = SearchConfig(
                evaluations=int(evaluations),
                eval_images=int(eval_images),
                covariance=covariance,
                seed=int(search_seed),
                precision=search_precision,
            )
            try:
                autocast_dtype(config.precision, device)
            except SnapViTError as error:
                session.show_error(error)
            else:
                job = Job(
                    "search",
                    _search_job,
                    {"backbone": backbone, "data": choice.data, "base": scores, "config": config, "device": device},
                ).start()
                state.set_job(JOB_NAME, job)
    notice = state.result("job_notice")  # the last finished job stays reported on this page
    if notice is not None:
        getattr(st, notice[0])(notice[1])
    if busy:
        st.caption("A job is running: starting another is disabled until it finishes or is cancelled.")
    _progress_panel()


@st.fragment(run_every=1.0)
def _progress_panel() -> None:
    job: Job | None = state.job(JOB_NAME)
    if job is None:
        return
    snap = job.snapshot()
    if snap.state == "running":
        st.progress(snap.fraction, text=f"{snap.name}: {snap.message} ({snap.seconds:.0f} s)")
        if st.button("Cancel", key="cancel_job"):
            job.cancel()
    if snap.extra.get("best"):
        best = snap.extra["best"]
        st.plotly_chart(charts.fitness_curve(best, best), key="fitness_live")
    if snap.state == "running" or state.get().handled.get(JOB_NAME) is job:
        return
    state.mark_handled(JOB_NAME, job)
    if snap.result is not None:
        try:
            session.set_scores(snap.result["scores"], snap.result["label"])
        except SnapViTError as error:  # e.g. another backbone was chosen while the job ran
            state.set_results(job_notice=("error", f"{snap.name} finished, not applied: {error}"))
        else:
            message = f"{snap.name} finished in {snap.seconds:.1f} s: now using **{snap.result['label']}**."
            kind = "success" if snap.state == "done" else "warning"
            state.set_results(job_notice=(kind, message + (f" ({snap.error})" if snap.error else "")))
    elif snap.error:
        state.set_results(job_notice=("error", snap.error))
    st.rerun(scope="app")
