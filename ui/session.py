"""What the pages share: the selected backbone and data, cached resources, the session's scores.

Shared across sessions (``st.cache_resource``): loaded backbones and preprocessed kNN data. They are
read-only: every session prunes its own ``Explorer``, which deep-copies the model (ElasticViT), so
two browser sessions at different sparsities never affect each other.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path

import streamlit as st

from snapvit_core.backbones import Backbone, load_backbone
from snapvit_core.data import KnnSplits, load_knn_splits, parse_data_spec
from snapvit_core.devices import resolve_device
from snapvit_core.errors import SnapViTError
from snapvit_core.evaluation import KnnEvaluator
from snapvit_core.explorer import Explorer, data_free_scores
from snapvit_core.scores import ImportanceScores
from ui.jobs import Job

ROOT = Path(__file__).resolve().parent.parent
SCORES_DIR = ROOT / "scores"
KNN_LIMIT_PER_SPLIT = 2000  # images per split for kNN in the app (the embedded set has 1257 / 540)


@dataclass(frozen=True)
class Selection:
    """The backbone and data the user chose on the first page."""

    model_id: str = "embedded"
    random_init: bool = False
    device: str = "auto"
    data: str = "embedded"

    @property
    def resolved_device(self) -> str:
        return resolve_device(self.device)


def selection() -> Selection:
    return st.session_state.get("selection", Selection())


def set_selection(choice: Selection) -> None:
    if choice != selection():
        for key in ("explorer", "explorer_key", "scores", "scores_label", "sweep_table"):
            st.session_state.pop(key, None)
        _forget_dependents()
    st.session_state["selection"] = choice


def _forget_dependents() -> None:
    """Everything computed for the previous backbone or scores: workers, live results, budget answers."""
    from ui import config_state

    for worker in st.session_state.get("live_workers", {}).values():
        worker.stop()
    st.session_state.pop("job_unpruned_knn", None)  # shared by sessions: left running for the others
    job = st.session_state.pop("job_budget", None)
    if job is not None:
        job.cancel()
    config_state.forget_results()
    st.session_state["scores_version"] = st.session_state.get("scores_version", 0) + 1


@st.cache_resource(max_entries=3, show_spinner=False)
def shared_backbone(model_id: str, random_init: bool, device: str) -> Backbone:
    """A loaded backbone, shared by all sessions and never mutated (pages prune private copies)."""
    return load_backbone(model_id, random_init, device)


@st.cache_resource(max_entries=3, show_spinner=False)
def shared_knn_splits(data: str, model_id: str, random_init: bool, device: str) -> KnnSplits:
    """Preprocessed kNN train/test images for a backbone's input size (shared, read-only)."""
    backbone = shared_backbone(model_id, random_init, device)
    return load_knn_splits(data, backbone.data_config, limit_per_split=KNN_LIMIT_PER_SPLIT)


def backbone() -> Backbone:
    choice = selection()
    return shared_backbone(choice.model_id, choice.random_init, choice.resolved_device)


def has_labelled_data() -> bool:
    return parse_data_spec(selection().data).kind != "procedural"


def knn_splits() -> KnnSplits | None:
    """The kNN data, or None for label-free data (procedural)."""
    if not has_labelled_data():
        return None
    choice = selection()
    return shared_knn_splits(choice.data, choice.model_id, choice.random_init, choice.resolved_device)


def shipped_scores_for(model_id: str) -> list[Path]:
    """Score files in ``scores/`` made for ``model_id`` (by file name prefix ``<model_id>.``)."""
    if not SCORES_DIR.is_dir():
        return []
    safe = model_id.replace("/", "_")
    return sorted(p for p in SCORES_DIR.glob(f"{safe}.*.safetensors"))


def default_scores() -> tuple[ImportanceScores, str]:
    """The best scores available without any work: a shipped searched file, else magnitude."""
    from snapvit_core.scores_io import load_scores

    choice = selection()
    if not choice.random_init:
        shipped = shipped_scores_for(choice.model_id)
        preferred = sorted(shipped, key=lambda p: ("xnes" not in p.name, "snapvit" not in p.name, p.name))
        for path in preferred:
            try:
                return load_scores(path), f"{path.name} (shipped)"
            except SnapViTError:
                continue
    return data_free_scores("magnitude", backbone().model), "magnitude (data-free)"


def scores() -> tuple[ImportanceScores, str]:
    if "scores" not in st.session_state:
        st.session_state["scores"], st.session_state["scores_label"] = default_scores()
    return st.session_state["scores"], st.session_state["scores_label"]


def set_scores(new_scores: ImportanceScores, label: str, allow_other_backbone: bool = False) -> None:
    """Make ``new_scores`` the session's scores (checked against the backbone first).

    Scores recorded for another backbone are refused unless ``allow_other_backbone``; then the
    warning is kept in ``scores_warning`` and the label says so.
    """
    from snapvit_core.scores import check_scores_backbone

    warning = check_scores_backbone(new_scores, selection().model_id, allow_other_backbone)
    Explorer(backbone(), new_scores)  # raises a clear SnapViTError if the shapes do not fit
    if warning:
        label = f"{label} - made for another backbone"
    st.session_state["scores"], st.session_state["scores_label"] = new_scores, label
    st.session_state["scores_warning"] = warning
    st.session_state.pop("explorer", None)
    _forget_dependents()


def scores_warning() -> str | None:
    """Why the session's scores may not fit its backbone (set when they were allowed anyway)."""
    return st.session_state.get("scores_warning")


def make_knn_evaluator(splits: KnnSplits, device: str) -> KnnEvaluator:
    return KnnEvaluator.from_splits(splits, device=device)


def explorer() -> Explorer:
    """The session's private elastic model (rebuilt when backbone, data or scores change)."""
    current_scores, label = scores()
    key = (selection(), label, st.session_state.get("scores_version", 0))
    if st.session_state.get("explorer_key") != key:
        choice = selection()
        session_explorer = Explorer(backbone(), current_scores, choice.resolved_device)
        splits = knn_splits()
        if splits is not None:
            session_explorer.attach_knn(make_knn_evaluator(splits, choice.resolved_device))
        st.session_state["explorer"], st.session_state["explorer_key"] = session_explorer, key
    return st.session_state["explorer"]


# The unpruned model's kNN pass, one per backbone/data selection, shared by all sessions: a page visit
# joins the running pass instead of starting another (closed browser tabs cannot cancel theirs).
UNPRUNED_JOBS: dict[Selection, Job] = {}
_UNPRUNED_LOCK = threading.Lock()


def _embed_unpruned(report, cancelled, choice: Selection):
    from ui.long_pass import job_progress

    model = shared_backbone(choice.model_id, choice.random_init, choice.resolved_device)
    reference = Explorer(model, data_free_scores("magnitude", model.model), choice.resolved_device)
    splits = shared_knn_splits(choice.data, choice.model_id, choice.random_init, choice.resolved_device)
    reference.attach_knn(make_knn_evaluator(splits, choice.resolved_device))
    return reference.evaluate(0.0, 0.0, ("knn",), progress=job_progress(report), cancel=cancelled)


def unpruned_knn_job(restart: bool = False) -> Job:
    """The shared kNN pass of the unpruned model for the current selection (started when missing).

    A cancelled or failed pass is restarted only when ``restart`` is set (the page's button).
    """
    choice = selection()
    with _UNPRUNED_LOCK:
        job = UNPRUNED_JOBS.get(choice)
        if job is None or (restart and not job.running and job.snapshot().state != "done"):
            if len(UNPRUNED_JOBS) >= 8:
                UNPRUNED_JOBS.pop(next(iter(UNPRUNED_JOBS)))
            job = UNPRUNED_JOBS[choice] = Job("unpruned-knn", _embed_unpruned, {"choice": choice}).start()
    st.session_state["job_unpruned_knn"] = job
    return job


def run_knn_on_random_weights() -> bool:
    """Random-weight models skip kNN unless the user asked for it (their accuracy means nothing)."""
    return not selection().random_init or bool(st.session_state.get("knn_on_random", False))


def knn_on_random_checkbox() -> bool:
    """The 'run kNN anyway' choice for random weights, kept in a non-widget key across pages."""

    def keep() -> None:
        st.session_state["knn_on_random"] = st.session_state["knn_on_random_widget"]

    return st.checkbox(
        "Run kNN anyway (random weights: the accuracy is meaningless, and on a big backbone slow)",
        value=bool(st.session_state.get("knn_on_random", False)),
        key="knn_on_random_widget",
        on_change=keep,
        help="Random-weight models skip kNN by default; FLOPs, parameters and latency are still exact.",
    )


def knn_image_count() -> int:
    """Images in the kNN data (train + test), 0 without labelled data."""
    splits = knn_splits()
    return 0 if splits is None else len(splits.train_labels) + len(splits.test_labels)


def comparison_explorer(method: str) -> Explorer:
    """A second explorer with a data-free method's scores, for the side-by-side view (one per method)."""
    key = (selection(), method, st.session_state.get("scores_version", 0))
    cache = st.session_state.setdefault("live_comparison", {})
    if key not in cache:
        choice = selection()
        other = Explorer(backbone(), data_free_scores(method, backbone().model), choice.resolved_device)
        splits = knn_splits()
        if splits is not None:
            other.attach_knn(make_knn_evaluator(splits, choice.resolved_device))
        cache.clear()
        cache[key] = other
    return cache[key]


def live_worker(for_explorer: Explorer, name: str = "main"):
    """The session's background worker for ``for_explorer`` (a new explorer gets a new worker)."""
    from ui.live import LiveWorker

    workers = st.session_state.setdefault("live_workers", {})
    worker = workers.get(name)
    if worker is None or worker.explorer is not for_explorer:
        if worker is not None:
            worker.stop()
        worker = workers[name] = LiveWorker(for_explorer)
    return worker


def show_error(error: BaseException) -> None:
    """A clear message in the page (never a traceback)."""
    if isinstance(error, SnapViTError):
        st.error(f"**{error.problem}**  \n{error.fix}", icon=":material/error:")
    else:
        st.error(f"Unexpected error: {type(error).__name__}: {error}", icon=":material/error:")


def guarded_backbone() -> Backbone | None:
    """The selected backbone, or None after showing why it could not be loaded."""
    try:
        with st.spinner(f"Loading {selection().model_id} ..."):
            return backbone()
    except SnapViTError as error:
        show_error(error)
        st.page_link("pages/1_backbone.py", label="Choose another backbone", icon=":material/arrow_back:")
        return None
