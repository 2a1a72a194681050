"""What a page asks of its session: the chosen backbone and data, the scores, the explorer to show.

The session's state is one frozen value (``ui.state``); the server-wide explorers it points at live in
``ui.shared``. ``current()`` joins the two: the session's choices and the shared explorer they select.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import streamlit as st

from snapvit_core.data import KnnSplits, parse_data_spec
from snapvit_core.engine.backbones import Backbone
from snapvit_core.errors import SnapViTError
from snapvit_core.explorer import DATA_FREE_METHODS, Explorer
from snapvit_core.runtime.jobs import Job
from snapvit_core.scoring.scores import ImportanceScores
from ui import shared, state
from ui.shared import SharedExplorer
from ui.state import ScoresChoice, Selection

ROOT = Path(__file__).resolve().parent.parent
SCORES_DIR = ROOT / "scores"


def selection() -> Selection:
    return state.get().selection


def set_selection(choice: Selection) -> None:
    """A new backbone or data: the scores and alignment go back to the new selection's defaults."""
    if choice != selection():
        state.update(selection=choice, scores=None, align=None)


def backbone() -> Backbone:
    return shared.selection_backbone(selection())


def has_labelled_data() -> bool:
    return parse_data_spec(selection().data).kind != "procedural"


def knn_splits() -> KnnSplits | None:
    """The kNN data, or None for label-free data (procedural)."""
    return shared.selection_knn_splits(selection()) if has_labelled_data() else None


def shipped_scores_for(model_id: str) -> list[Path]:
    """Score files in ``scores/`` made for ``model_id`` (by file name prefix ``<model_id>.``)."""
    if not SCORES_DIR.is_dir():
        return []
    safe = model_id.replace("/", "_")
    return sorted(p for p in SCORES_DIR.glob(f"{safe}.*.safetensors"))


def default_scores(choice: Selection) -> ScoresChoice:
    """The best scores available without any work: a shipped searched file, else magnitude."""
    from snapvit_core.scoring.scores_io import load_scores

    if not choice.random_init:
        shipped = shipped_scores_for(choice.model_id)
        preferred = sorted(shipped, key=lambda p: ("xnes" not in p.name, "snapvit" not in p.name, p.name))
        for path in preferred:
            try:
                return ScoresChoice(load_scores(path), f"{path.name} (shipped)", f"file:{path.name}")
            except SnapViTError:
                continue
    return ScoresChoice(shared.data_free(choice, "magnitude"), "magnitude (data-free)", "method:magnitude")


def scores_for_id(scores_id: str) -> tuple[ImportanceScores, str] | None:
    """Scores this server has under a link's id: a shipped file, a data-free method, or scores a session made."""
    from snapvit_core.scoring.scores_io import load_scores

    kind, _, name = scores_id.partition(":")
    if kind == "method" and name in DATA_FREE_METHODS:
        return shared.data_free(selection(), name), f"{name} (data-free)"
    if kind == "file":
        path = SCORES_DIR / name
        available = set(shipped_scores_for(selection().model_id)) | set(SCORES_DIR.glob("*.safetensors"))
        if path.name == name and path in available:
            return load_scores(path), f"{path.name} (shipped)"
    if kind == "digest":
        return shared.known_scores(name)
    return None


@dataclass(frozen=True)
class ExplorerSession:
    """A view for pages: the session's choices and the shared explorer they select (nothing stored)."""

    selection: Selection
    choice: ScoresChoice
    align: int
    shared: SharedExplorer

    @property
    def scores(self) -> ImportanceScores:
        return self.choice.scores

    @property
    def scores_label(self) -> str:
        return self.choice.label

    @property
    def scores_id(self) -> str:
        return self.choice.scores_id

    @property
    def scores_warning(self) -> str | None:
        return self.choice.warning

    @property
    def explorer(self) -> Explorer:
        return self.shared.explorer


def current() -> ExplorerSession:
    """The session's explorer view (defaults chosen on first use; raises SnapViTError when it cannot be built)."""
    now = state.get()
    if now.scores is None or now.align is None:
        now = state.update(
            scores=now.scores or default_scores(now.selection),
            align=default_align(now.selection) if now.align is None else now.align,
        )
    return ExplorerSession(
        now.selection, now.scores, now.align, shared.shared_explorer(now.selection, now.scores.scores, now.align)
    )


def default_align(choice: Selection) -> int:
    """The measured default MLP width alignment for the selected device (README 'Width alignment')."""
    from snapvit_core.engine.elastic import check_align

    return check_align("auto", choice.resolved_device)


def set_align(align: int) -> None:
    """Round kept MLP widths to multiples of ``align`` from now on (another subject: its own landscape)."""
    current()
    state.update(align=align)


def scores() -> tuple[ImportanceScores, str]:
    view = current()
    return view.scores, view.scores_label


def set_scores(
    new_scores: ImportanceScores, label: str, allow_other_backbone: bool = False, scores_id: str | None = None
) -> None:
    """Make ``new_scores`` the session's scores (checked against the backbone first).

    Scores recorded for another backbone are refused unless ``allow_other_backbone``; then the
    warning is kept and the label says so. ``scores_id`` names them in links (default: their digest).
    """
    from snapvit_core.engine.elastic import check_scores_fit
    from snapvit_core.scoring.scores import check_scores_backbone

    warning = check_scores_backbone(new_scores, selection().model_id, allow_other_backbone)
    loaded = backbone()
    check_scores_fit(new_scores, loaded.shape, loaded.model_id)  # a clear SnapViTError if the shapes differ
    if warning:
        label = f"{label} - made for another backbone"
    if scores_id is None:
        scores_id = f"digest:{shared.remember_scores(new_scores, label)}"
    state.update(scores=ScoresChoice(new_scores, label, scores_id, warning))


def scores_warning() -> str | None:
    """Why the session's scores may not fit its backbone (set when they were allowed anyway)."""
    chosen = state.get().scores
    return None if chosen is None else chosen.warning


def explorer() -> Explorer:
    """The explorer of the session's backbone, data and scores (shared with sessions of the same key)."""
    return current().explorer


def comparison(method: str) -> SharedExplorer:
    """The shared explorer of a data-free method's scores (same alignment), for side-by-side and difference maps."""
    choice = selection()
    return shared.shared_explorer(choice, shared.data_free(choice, method), current().align)


def unpruned_knn_job(restart: bool = False) -> Job:
    """The server's kNN pass of the unpruned model for this selection; the session keeps a handle on it."""
    job = shared.unpruned_knn_job(selection(), restart)
    if state.job("unpruned_knn") is not job:
        state.set_job("unpruned_knn", job)
    return job


def run_knn_on_random_weights() -> bool:
    """Random-weight models skip kNN unless the user asked for it (their accuracy means nothing)."""
    return not selection().random_init or state.get().knn_on_random


def knn_on_random_checkbox() -> bool:
    """The 'run kNN anyway' choice for random weights; the widget is a view of the session state."""

    def keep() -> None:
        state.update(knn_on_random=bool(st.session_state["knn_on_random_widget"]))

    return st.checkbox(
        "Run kNN anyway (random weights: the accuracy is meaningless, and on a big backbone slow)",
        value=state.get().knn_on_random,
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
