"""What every session of this server shares: backbones, kNN data, explorers with their landscapes.

One ``SharedExplorer`` per (selection, scores, alignment) per server process: the explorer the pages
read (costs, "Measure now", budget searches, exports), its accuracy landscape, and the one background
filler, which prunes a private explorer of its own. N viewers cost one computation.

Everything here is guarded by one lock (``_LOCK``), held only to read or write the registries, never
while computing; what viewers would otherwise each recompute is kept in one memo per shared explorer
(``SharedExplorer.memo``). Loaded backbones and preprocessed kNN data are ``st.cache_resource`` entries,
read-only.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable
from dataclasses import replace
from typing import Any

import numpy as np
import streamlit as st

from snapvit_core.data import KnnSplits, load_knn_splits
from snapvit_core.engine.backbones import Backbone, load_backbone
from snapvit_core.evaluation.features import KnnEvaluator
from snapvit_core.explorer import EvaluationResult, Explorer, data_free_scores
from snapvit_core.landscape.fill import LandscapeFiller
from snapvit_core.landscape.store import Landscape, landscape_key, open_landscape, scores_digest
from snapvit_core.runtime.jobs import Job
from snapvit_core.scoring.scores import ImportanceScores
from ui.state import Selection

KNN_LIMIT_PER_SPLIT = 2000  # images per split for kNN in the app (the embedded set has 1257 / 540)
MAX_SHARED = 6  # explorers kept per server (each holds private copies of its backbone)
MAX_KNOWN_SCORES = 32  # scores sessions made, by digest, that links may name
MAX_LOADED_SELECTIONS = 32  # backbones loaded here, by model id, that links may open
MAX_DATA_FREE = 16  # data-free scores kept (a page rerun must not re-score: LAMP sorts every weight)
MAX_UNPRUNED_JOBS = 8
MEMO_KEPT = 160  # memo entries per shared explorer (structure charts are tens of KB each)

_LOCK = threading.RLock()
_SHARED: OrderedDict[tuple, SharedExplorer] = OrderedDict()
_KNOWN_SCORES: OrderedDict[str, tuple[ImportanceScores, str]] = OrderedDict()  # digest -> (scores, label)
_LOADED_SELECTIONS: OrderedDict[str, Selection] = OrderedDict()  # model id -> as loaded here
_DATA_FREE: OrderedDict[tuple[Selection, str], ImportanceScores] = OrderedDict()
_UNPRUNED_JOBS: OrderedDict[Selection, Job] = OrderedDict()


def _keep(registry: OrderedDict, key: Hashable, value: Any, most: int) -> Any:
    """Put ``value`` under ``key`` as the newest entry, dropping the oldest beyond ``most``; the dropped."""
    registry[key] = value
    registry.move_to_end(key)
    dropped = []
    while len(registry) > most:
        dropped.append(registry.popitem(last=False)[1])
    return dropped


@st.cache_resource(max_entries=3, show_spinner=False)
def backbone(model_id: str, random_init: bool, device: str) -> Backbone:
    """A loaded backbone, shared by all sessions and never mutated (explorers prune private copies)."""
    return load_backbone(model_id, random_init, device)


@st.cache_resource(max_entries=3, show_spinner=False)
def knn_splits(data: str, model_id: str, random_init: bool, device: str) -> KnnSplits:
    """Preprocessed kNN train/test images for a backbone's input size (shared, read-only)."""
    loaded = backbone(model_id, random_init, device)
    return load_knn_splits(data, loaded.data_config, limit_per_split=KNN_LIMIT_PER_SPLIT)


def selection_backbone(choice: Selection) -> Backbone:
    """The selection's backbone; from now on links may open it (``loaded_selection``)."""
    loaded = backbone(choice.model_id, choice.random_init, choice.resolved_device)
    with _LOCK:
        _keep(_LOADED_SELECTIONS, choice.model_id, choice, MAX_LOADED_SELECTIONS)
    return loaded


def selection_knn_splits(choice: Selection) -> KnnSplits:
    return knn_splits(choice.data, choice.model_id, choice.random_init, choice.resolved_device)


def loaded_selection(model_id: str) -> Selection | None:
    """How ``model_id`` was loaded on this server by some session, or None (``ui.links`` opens only these)."""
    with _LOCK:
        return _LOADED_SELECTIONS.get(model_id)


def remember_scores(scores: ImportanceScores, label: str) -> str:
    """Keep scores a session made so that a link can name them; returns their digest."""
    digest = scores_digest(scores)
    with _LOCK:
        _keep(_KNOWN_SCORES, digest, (scores, label), MAX_KNOWN_SCORES)
    return digest


def known_scores(digest: str) -> tuple[ImportanceScores, str] | None:
    with _LOCK:
        return _KNOWN_SCORES.get(digest)


def data_free(choice: Selection, method: str) -> ImportanceScores:
    """A data-free method's scores for the selected backbone, computed once per server process."""
    key = (choice, method)
    with _LOCK:
        held = _DATA_FREE.get(key)
    if held is None:
        held = data_free_scores(method, backbone(choice.model_id, choice.random_init, choice.resolved_device).model)
        with _LOCK:
            held = _DATA_FREE.setdefault(key, held)
            _keep(_DATA_FREE, key, held, MAX_DATA_FREE)
    return held


def knn_evaluator(splits: KnnSplits, device: str) -> KnnEvaluator:
    return KnnEvaluator.from_splits(splits, device=device)


class SharedExplorer:
    """One explorer per (selection, scores, alignment) per server process, with its landscape and its one
    background worker (the landscape filler, on a private explorer; without kNN data a job that only
    calibrates the latency model)."""

    def __init__(self, explorer: Explorer, landscape: Landscape | None, filler: LandscapeFiller | None, heavy: bool):
        self.explorer, self.landscape, self.filler = explorer, landscape, filler
        self.heavy = heavy  # one exact point is slow on this device (ui.live.fills_by_default): filled on request
        self._latency_job: Job | None = None
        self._memo: OrderedDict[tuple, Any] = OrderedDict()  # (name, key) -> value: see memo()

    STATIC_FIGURES = ("head_scores", "kept_axes", "neuron_map")  # the same for every configuration

    def memo(self, name: str, key: Hashable, build: Callable[[], Any]) -> Any:
        """``build()``, kept under (``name``, ``key``) for every viewer: what each page run would otherwise
        recompute (cost grids, the cards' tables, structure charts). Callers must not mutate it."""
        with _LOCK:
            if (name, key) in self._memo:
                self._memo.move_to_end((name, key))
                return self._memo[(name, key)]
        value = build()
        with _LOCK:
            _keep(self._memo, (name, key), value, MEMO_KEPT)
        return value

    def figure(self, kind: str, config: tuple[float, float] | None = None):
        """The structure chart ``kind`` of ``config``: 'head_map' | 'mlp_kept' (with the configuration's
        pruning drawn in), or one of ``STATIC_FIGURES`` (the explorer lays the configuration over them)."""
        from ui import charts

        explorer = self.explorer
        shape = explorer.backbone.shape
        builders = {
            "head_scores": lambda: charts.head_map(explorer.scores),
            "kept_axes": lambda: charts.mlp_kept_axes(explorer.scores.mlp.shape[0], shape.mlp_hidden),
            "neuron_map": lambda: charts.mlp_score_heatmap(explorer.scores),
            "head_map": lambda: charts.head_map(explorer.scores, explorer.cost(*config).head_mask.numpy()),
            "mlp_kept": lambda: charts.mlp_kept_chart(explorer.cost(*config).kept_neurons, shape.mlp_hidden),
        }
        if kind not in builders:
            raise ValueError(f"unknown structure chart {kind!r}")
        return self.memo("figure:" + kind, None if kind in self.STATIC_FIGURES else config, builders[kind])

    def latency_status(self) -> tuple[str, float]:
        """('waiting' | 'calibrating' | 'ready' | 'failed', fraction done); starts the calibration when needed."""
        if self.filler is not None:
            self.filler.start()
            status = self.filler.latency_status()
            if status[0] == "ready" and self.explorer.latency_model is None:
                self.explorer.use_latency_model(self.filler.explorer.latency_model)
            return status
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
        from snapvit_core.landscape.budget import cost_grid

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

    def fill(self, knn_images: int | None) -> None:
        """Fill the whole plane on a kNN set of ``knn_images`` (train + test; None = all): the heavy-backbone button.

        A new kNN set size is another landscape: it and its filler replace the old ones under the lock."""
        if self.filler is None or self.landscape is None:
            return
        with _LOCK:
            filler, key = self.filler, self.landscape.key
            if key.knn_images != knn_images:
                filler.stop()
                landscape = open_landscape(replace(key, knn_images=knn_images))
                filler = LandscapeFiller(
                    filler.explorer, landscape, estimate_images=filler.estimate_images, calibrate_latency=True
                )
                self.landscape, self.filler = landscape, filler
        filler.start_fill()

    def stop(self) -> None:
        if self.filler is not None:
            self.filler.stop()
        if self._latency_job is not None:
            self._latency_job.cancel()


def shared_explorer(choice: Selection, chosen_scores: ImportanceScores, align: int = 1) -> SharedExplorer:
    """The server's explorer of (``choice``, ``chosen_scores``, ``align``), made on first use."""
    key = (choice, scores_digest(chosen_scores), align)
    with _LOCK:
        found = _SHARED.get(key)
        if found is not None:
            _SHARED.move_to_end(key)
            return found
        made = _make_shared(choice, chosen_scores, align)
        for evicted in _keep(_SHARED, key, made, MAX_SHARED):
            evicted.stop()
        return made


def _make_shared(choice: Selection, chosen_scores: ImportanceScores, align: int) -> SharedExplorer:
    from snapvit_core.data import parse_data_spec
    from ui.live import fills_by_default, live_knn_images

    device = choice.resolved_device
    model = backbone(choice.model_id, choice.random_init, device)
    made = Explorer(model, chosen_scores, device, align)
    if parse_data_spec(choice.data).kind == "procedural":  # label-free data: no kNN, no landscape
        return SharedExplorer(made, None, None, False)
    splits = selection_knn_splits(choice)
    made.attach_knn(knn_evaluator(splits, device))
    total = len(splits.train_labels) + len(splits.test_labels)
    flops = made.cost(0.0, 0.0).unpruned.flops
    heavy = not fills_by_default(flops, total, device)
    autofill = not heavy and not choice.random_init  # random weights: kNN only when asked, point by point
    filling = Explorer(model, chosen_scores, device, align)  # the filler's own: pages never wait on its pruning
    filling.attach_knn(knn_evaluator(splits, device))
    landscape = open_landscape(landscape_key(made, choice.data))
    filler = LandscapeFiller(
        filling,
        landscape,
        estimate_images=live_knn_images(flops, total, device),
        autofill=autofill,
        exact_requests=not heavy,
        calibrate_latency=True,
    )
    return SharedExplorer(made, landscape, filler, heavy)


# The unpruned model's kNN pass, one per backbone/data selection, shared by all sessions: a page visit
# joins the running pass instead of starting another (closed browser tabs cannot cancel theirs).
def _embed_unpruned(report, cancelled, choice: Selection) -> EvaluationResult:
    from ui.long_pass import job_progress

    model = backbone(choice.model_id, choice.random_init, choice.resolved_device)
    reference = Explorer(model, data_free_scores("magnitude", model.model), choice.resolved_device)
    reference.attach_knn(knn_evaluator(selection_knn_splits(choice), choice.resolved_device))
    return reference.evaluate(0.0, 0.0, ("knn",), progress=job_progress(report), cancel=cancelled)


def unpruned_knn_job(choice: Selection, restart: bool = False) -> Job:
    """The shared kNN pass of the unpruned model for ``choice`` (started when missing).

    A cancelled or failed pass is restarted only when ``restart`` is set (the page's button).
    """
    with _LOCK:
        job = _UNPRUNED_JOBS.get(choice)
        if job is None or (restart and not job.running and job.snapshot().state != "done"):
            job = Job("unpruned-knn", _embed_unpruned, {"choice": choice}).start()
            _keep(_UNPRUNED_JOBS, choice, job, MAX_UNPRUNED_JOBS)
        return job
