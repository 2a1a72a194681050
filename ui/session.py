"""What the pages share: the selected backbone and data, the session's explorer state, server-wide resources.

Per browser session there is one ``ExplorerSession`` (selection, scores and a handle on the shared
explorer), replaced as a whole when the backbone, data or scores change; pages get it from
``current()``. Per server process there is one ``SharedExplorer`` per (selection, scores): the
explorer (its elastic copy is pruned only under its lock), its accuracy landscape and the one
background filler, so N viewers cost one computation. Loaded backbones and preprocessed kNN data are
``st.cache_resource`` entries, read-only.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import streamlit as st

from snapvit_core.backbones import Backbone, load_backbone
from snapvit_core.data import KnnSplits, load_knn_splits, parse_data_spec
from snapvit_core.devices import resolve_device
from snapvit_core.errors import SnapViTError
from snapvit_core.evaluation import KnnEvaluator
from snapvit_core.explorer import DATA_FREE_METHODS, Explorer, data_free_scores
from snapvit_core.jobs import Job
from snapvit_core.landscape import Landscape, landscape_key, open_landscape, scores_digest
from snapvit_core.landscape_fill import LandscapeFiller
from snapvit_core.scores import ImportanceScores

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
        st.session_state.pop("explorer_session", None)
        _forget_dependents()
    st.session_state["selection"] = choice


def _forget_dependents() -> None:
    """Everything this session computed for the previous backbone or scores: budget answers, measurements."""
    from ui import config_state

    st.session_state.pop("job_unpruned_knn", None)  # shared by sessions: left running for the others
    job = st.session_state.pop("job_budget", None)
    if job is not None:
        job.cancel()
    config_state.forget_results()


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
    loaded = shared_backbone(choice.model_id, choice.random_init, choice.resolved_device)
    with _SHARED_LOCK:  # what this server offers to links from now on (ui.links.offered_selection)
        _LOADED_SELECTIONS[choice.model_id] = choice
        _LOADED_SELECTIONS.move_to_end(choice.model_id)
        while len(_LOADED_SELECTIONS) > MAX_LOADED_SELECTIONS:
            _LOADED_SELECTIONS.popitem(last=False)
    return loaded


MAX_LOADED_SELECTIONS = 32
_LOADED_SELECTIONS: OrderedDict[str, Selection] = OrderedDict()  # model id -> as loaded here (what links may open)


def loaded_selection(model_id: str) -> Selection | None:
    """How ``model_id`` was loaded on this server by some session, or None (``ui.links`` opens only these)."""
    with _SHARED_LOCK:
        return _LOADED_SELECTIONS.get(model_id)


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


def default_scores() -> tuple[ImportanceScores, str, str]:
    """The best scores available without any work: a shipped searched file, else magnitude.

    Returns (scores, label, scores id); the id names them in a shareable link (``scores_id``).
    """
    from snapvit_core.scores_io import load_scores

    choice = selection()
    if not choice.random_init:
        shipped = shipped_scores_for(choice.model_id)
        preferred = sorted(shipped, key=lambda p: ("xnes" not in p.name, "snapvit" not in p.name, p.name))
        for path in preferred:
            try:
                return load_scores(path), f"{path.name} (shipped)", f"file:{path.name}"
            except SnapViTError:
                continue
    return data_free(choice, "magnitude"), "magnitude (data-free)", "method:magnitude"


def scores_for_id(scores_id: str) -> tuple[ImportanceScores, str] | None:
    """Scores this server has under a link's id: a shipped file, a data-free method, or scores a session made."""
    from snapvit_core.scores_io import load_scores

    kind, _, name = scores_id.partition(":")
    if kind == "method" and name in DATA_FREE_METHODS:
        return data_free(selection(), name), f"{name} (data-free)"
    if kind == "file":
        path = SCORES_DIR / name
        available = set(shipped_scores_for(selection().model_id)) | set(SCORES_DIR.glob("*.safetensors"))
        if path.name == name and path in available:
            return load_scores(path), f"{path.name} (shipped)"
    if kind == "digest":
        with _SHARED_LOCK:
            return _KNOWN_SCORES.get(name)
    return None


@dataclass(frozen=True)
class ExplorerSession:
    """A browser session's whole explorer state for one (selection, scores); replaced as a whole when
    either changes. The explorer, landscape and filler are shared by every session with the same key."""

    selection: Selection
    scores: ImportanceScores
    scores_label: str
    scores_id: str  # how a link names the scores: file:NAME, method:NAME or digest:HEX
    scores_warning: str | None  # why they may not fit the backbone (allowed anyway), else None
    shared: SharedExplorer
    align: int = 1  # kept MLP widths rounded to multiples of this (1 = the published rule)

    @property
    def explorer(self) -> Explorer:
        return self.shared.explorer


def current() -> ExplorerSession:
    """THE accessor: the session's explorer state (built on first use; raises SnapViTError when it cannot be)."""
    state = st.session_state.get("explorer_session")
    choice = selection()
    if state is None or state.selection != choice:
        new_scores, label, scores_id = default_scores()
        state = _build(choice, new_scores, label, scores_id, None, default_align(choice))
        st.session_state["explorer_session"] = state
    return state


def default_align(choice: Selection) -> int:
    """The measured default MLP width alignment for the selected device (README 'Width alignment')."""
    from snapvit_core.elastic import check_align

    return check_align("auto", choice.resolved_device)


def set_align(align: int) -> None:
    """Round kept MLP widths to multiples of ``align`` from now on (a new session state, its own landscape)."""
    state = current()
    if align != state.align:
        st.session_state["explorer_session"] = _build(
            state.selection, state.scores, state.scores_label, state.scores_id, state.scores_warning, align
        )


def _build(
    choice: Selection,
    new_scores: ImportanceScores,
    label: str,
    scores_id: str,
    warning: str | None,
    align: int = 1,
) -> ExplorerSession:
    shared = shared_explorer(choice, new_scores, align)
    return ExplorerSession(choice, new_scores, label, scores_id, warning, shared, align)


def scores() -> tuple[ImportanceScores, str]:
    state = current()
    return state.scores, state.scores_label


def set_scores(
    new_scores: ImportanceScores, label: str, allow_other_backbone: bool = False, scores_id: str | None = None
) -> None:
    """Make ``new_scores`` the session's scores (checked against the backbone first).

    Scores recorded for another backbone are refused unless ``allow_other_backbone``; then the
    warning is kept and the label says so. ``scores_id`` names them in links (default: their digest).
    """
    from snapvit_core.scores import check_scores_backbone

    warning = check_scores_backbone(new_scores, selection().model_id, allow_other_backbone)
    Explorer(backbone(), new_scores)  # raises a clear SnapViTError if the shapes do not fit
    if warning:
        label = f"{label} - made for another backbone"
    digest = scores_digest(new_scores)
    if scores_id is None:
        scores_id = f"digest:{digest}"
        with _SHARED_LOCK:
            _KNOWN_SCORES[digest] = (new_scores, label)
            while len(_KNOWN_SCORES) > MAX_KNOWN_SCORES:
                _KNOWN_SCORES.pop(next(iter(_KNOWN_SCORES)))
    align = current().align if "explorer_session" in st.session_state else default_align(selection())
    st.session_state["explorer_session"] = _build(selection(), new_scores, label, scores_id, warning, align)
    _forget_dependents()


def scores_warning() -> str | None:
    """Why the session's scores may not fit its backbone (set when they were allowed anyway)."""
    state = st.session_state.get("explorer_session")
    return None if state is None else state.scores_warning


def make_knn_evaluator(splits: KnnSplits, device: str) -> KnnEvaluator:
    return KnnEvaluator.from_splits(splits, device=device)


def explorer() -> Explorer:
    """The explorer of the session's backbone, data and scores (shared with sessions of the same key)."""
    return current().explorer


def comparison(method: str) -> SharedExplorer:
    """The shared explorer of a data-free method's scores (same alignment), for side-by-side and difference maps."""
    choice = selection()
    return shared_explorer(choice, data_free(choice, method), current().align)


_DATA_FREE: dict[tuple[Selection, str], ImportanceScores] = {}  # a page rerun must not re-score (LAMP sorts weights)


def data_free(choice: Selection, method: str) -> ImportanceScores:
    """A data-free method's scores for the selected backbone, computed once per server process."""
    key = (choice, method)
    with _SHARED_LOCK:
        if key not in _DATA_FREE:
            if len(_DATA_FREE) >= 16:
                _DATA_FREE.pop(next(iter(_DATA_FREE)))
            model = shared_backbone(choice.model_id, choice.random_init, choice.resolved_device).model
            _DATA_FREE[key] = data_free_scores(method, model)
        return _DATA_FREE[key]


# ---- what every session shares: one explorer, landscape and filler per (selection, scores) -------------------
class SharedExplorer:
    """One explorer per (selection, scores) per server process, with its landscape and its one background
    worker (the landscape filler; without kNN data a job that only calibrates the latency model)."""

    def __init__(self, explorer: Explorer, landscape: Landscape | None, filler: LandscapeFiller | None, heavy: bool):
        self.explorer, self.landscape, self.filler = explorer, landscape, filler
        self.heavy = heavy  # one exact point is slow on this device (ui.live.fills_by_default): filled on request
        self._latency_job: Job | None = None
        self._memo: dict[str, tuple[Any, Any]] = {}  # name -> (key, value): see memo()
        self._memo_lock = threading.Lock()
        self._figures: OrderedDict[tuple, Any] = OrderedDict()  # (kind, config) -> structure chart, all viewers
        self._figures_lock = threading.Lock()

    FIGURES_KEPT = 120  # structure charts kept per shared explorer (tens of KB each on the embedded backbone)

    STATIC_FIGURES = ("head_scores", "kept_axes", "neuron_map")  # the same for every configuration

    def figure(self, kind: str, config: tuple[float, float] | None = None):
        """The structure chart ``kind`` of ``config``: 'head_map' | 'mlp_kept' (with the configuration's
        pruning drawn in), or one of ``STATIC_FIGURES`` (the explorer lays the configuration over them).

        Built once per server for every viewer: a page run otherwise spent about a third of its time
        building these Plotly figures (profiled). Callers must not mutate it.
        """
        from ui import charts

        key = (kind, None if kind in self.STATIC_FIGURES else config)
        with self._figures_lock:
            if key in self._figures:
                self._figures.move_to_end(key)
                return self._figures[key]
        explorer = self.explorer
        shape = explorer.backbone.shape
        if kind == "head_scores":
            figure = charts.head_map(explorer.scores)
        elif kind == "kept_axes":
            figure = charts.mlp_kept_axes(explorer.scores.mlp.shape[0], shape.mlp_hidden)
        elif kind == "neuron_map":
            figure = charts.mlp_score_heatmap(explorer.scores)
        elif kind == "head_map":
            figure = charts.head_map(explorer.scores, explorer.cost(*config).head_mask.numpy())
        elif kind == "mlp_kept":
            figure = charts.mlp_kept_chart(explorer.cost(*config).kept_neurons, shape.mlp_hidden)
        else:
            raise ValueError(f"unknown structure chart {kind!r}")
        with self._figures_lock:
            self._figures[key] = figure
            while len(self._figures) > self.FIGURES_KEPT:
                self._figures.popitem(last=False)
        return figure

    def latency_status(self) -> tuple[str, float]:
        """('waiting' | 'calibrating' | 'ready' | 'failed', fraction done); starts the calibration when needed."""
        if self.filler is not None:
            self.filler.start()
            return self.filler.latency_status()
        if self._latency_job is None:
            self._latency_job = Job("latency", self._calibrate).start()
        snapshot = self._latency_job.snapshot()
        state = {"running": "calibrating", "done": "ready"}.get(snapshot.state, "failed")
        return state, snapshot.fraction

    def _calibrate(self, report, cancelled) -> None:
        self.explorer.ensure_latency_model(progress=lambda done, total: report(done / max(total, 1)), cancel=cancelled)

    def cost_grids(self) -> tuple[tuple[float, ...], np.ndarray, np.ndarray | None]:
        """(axis, FLOPs % grid, predicted batch-1 latency grid or None) over the landscape's grid.

        Fixed per explorer and latency model, so computed once (a page rerun on every slider move must not).
        """
        from snapvit_core.budget import cost_grid

        model = self.explorer.latency_model
        ready = model is not None and 1 in model.batches

        def build() -> tuple[tuple[float, ...], np.ndarray, np.ndarray | None]:
            axis, step = self.landscape.axis, self.landscape.key.grid
            n = len(axis)
            flops = cost_grid(self.explorer, "flops_pct", step=step)["flops_pct"].to_numpy().reshape(n, n)
            latency = None
            if ready:
                latency = cost_grid(self.explorer, "latency_ms", 1, step)["latency_ms"].to_numpy().reshape(n, n)
            return axis, flops, latency

        return self.memo("cost_grids", (self.landscape.key, id(model) if ready else None), build)

    def memo(self, name: str, key: Any, build: Callable[[], Any]) -> Any:
        """``build()``, kept under ``name`` until ``key`` changes: what every viewer's page run would
        otherwise recompute (cost grids, the instant cards' tables). Callers must not mutate it."""
        with self._memo_lock:
            held = self._memo.get(name)
        if held is not None and held[0] == key:
            return held[1]
        value = build()
        with self._memo_lock:
            self._memo[name] = (key, value)
        return value

    def fill(self, knn_images: int | None) -> None:
        """Fill the whole plane on a kNN set of ``knn_images`` (train + test; None = all): the heavy-backbone button."""
        if self.filler is None or self.landscape is None:
            return
        key = self.landscape.key
        if key.knn_images != knn_images:
            self.filler.stop()
            self.landscape = open_landscape(replace(key, knn_images=knn_images))
            self.filler = LandscapeFiller(
                self.explorer, self.landscape, estimate_images=self.filler.estimate_images, calibrate_latency=True
            )
        self.filler.start_fill()

    def stop(self) -> None:
        if self.filler is not None:
            self.filler.stop()
        if self._latency_job is not None:
            self._latency_job.cancel()


_SHARED: OrderedDict[tuple, SharedExplorer] = OrderedDict()
_KNOWN_SCORES: OrderedDict[str, tuple[ImportanceScores, str]] = OrderedDict()  # digest -> scores a session made
_SHARED_LOCK = threading.RLock()
MAX_SHARED = 6  # explorers kept per server (each holds a private copy of its backbone)
MAX_KNOWN_SCORES = 32


def shared_explorer(choice: Selection, chosen_scores: ImportanceScores, align: int = 1) -> SharedExplorer:
    key = (choice, scores_digest(chosen_scores), align)
    with _SHARED_LOCK:
        found = _SHARED.get(key)
        if found is not None:
            _SHARED.move_to_end(key)
            return found
        made = _make_shared(choice, chosen_scores, align)
        _SHARED[key] = made
        while len(_SHARED) > MAX_SHARED:
            _, evicted = _SHARED.popitem(last=False)
            evicted.stop()
        return made


def _make_shared(choice: Selection, chosen_scores: ImportanceScores, align: int) -> SharedExplorer:
    from ui.live import fills_by_default, live_knn_images

    device = choice.resolved_device
    model = shared_backbone(choice.model_id, choice.random_init, device)
    made = Explorer(model, chosen_scores, device, align)
    splits = knn_splits()
    if splits is None:
        return SharedExplorer(made, None, None, False)
    made.attach_knn(make_knn_evaluator(splits, device))
    total = len(splits.train_labels) + len(splits.test_labels)
    flops = made.cost(0.0, 0.0).unpruned.flops
    heavy = not fills_by_default(flops, total, device)
    autofill = not heavy and not choice.random_init  # random weights: kNN only when asked, point by point
    estimate_images = live_knn_images(flops, total, device)
    landscape = open_landscape(landscape_key(made, choice.data))
    filler = LandscapeFiller(
        made,
        landscape,
        estimate_images=estimate_images,
        autofill=autofill,
        exact_requests=not heavy,
        calibrate_latency=True,
    )
    return SharedExplorer(made, landscape, filler, heavy)


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


def show_error(error: BaseException) -> None:
    """A clear message in the page (never a traceback)."""
    from ui.literal import escape

    # literal text: a message names files, uploads and link values, which must not become links or images
    if isinstance(error, SnapViTError):
        st.error(f"**{escape(error.problem)}**  \n{escape(error.fix)}", icon=":material/error:")
    else:
        st.error(f"Unexpected error: {type(error).__name__}: {escape(error, 300)}", icon=":material/error:")


def guarded_backbone() -> Backbone | None:
    """The selected backbone, or None after showing why it could not be loaded."""
    try:
        with st.spinner(f"Loading {selection().model_id} ..."):
            return backbone()
    except SnapViTError as error:
        show_error(error)
        st.page_link("app_pages/1_backbone.py", label="Choose another backbone", icon=":material/arrow_back:")
        return None
