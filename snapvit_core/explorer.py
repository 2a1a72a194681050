"""The explorer: one backbone + one set of scores, evaluated at any (MLP, head) sparsity.

This is the façade the command line and the Streamlit pages share: it owns the elastic engine (never
the shared original), the kNN evaluator and its feature cache.

Measurements run on the engine's working model under its lock (``ElasticViT.run``), so Streamlit's fast
reruns (a new script thread of the same session while the previous one is still inside a forward pass)
each measure the configuration they asked for. A model leaves the explorer only as a standalone copy,
through :meth:`Explorer.pruned_model`: exports, ONNX, latency timing and correction all take that path.
"""

from __future__ import annotations

import copy
import logging
import statistics
import threading
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field

import numpy as np
import torch
from torch import nn

from snapvit_core.engine.backbones import Backbone
from snapvit_core.engine.elastic import ElasticViT, PruningPlan
from snapvit_core.engine.surgery import widths
from snapvit_core.errors import SnapViTError
from snapvit_core.evaluation.features import KnnEvaluator, embedding_similarity, extract_features
from snapvit_core.evaluation.knn import stratified_subset
from snapvit_core.evaluation.linear_probe import LinearProbe
from snapvit_core.evaluation.metrics import (
    analytic_flops,
    count_parameters,
    measure_latency,
    median_speedup,
    paired_rounds,
)
from snapvit_core.evaluation.plan_metrics import CostTable, PlanCost, cost_table, plan_cost
from snapvit_core.latency.calibration import load_or_calibrate_latency_model
from snapvit_core.latency.model import LatencyModel, LatencyPrediction, latency_model_key, latency_report
from snapvit_core.runtime.cancel import Cancel, Progress, check_cancel
from snapvit_core.scoring.data_free import DATA_FREE_METHODS, data_free_scores  # noqa: F401 - re-exported: pages and CLI import them here
from snapvit_core.scoring.scores import ImportanceScores

log = logging.getLogger(__name__)

METRICS = ("knn", "linear", "flops", "params", "latency")  # "linear": linear-probe top-1 (linear_probe.py)


def check_metrics(names: Iterable[str]) -> tuple[str, ...]:
    """Validate a metric list such as ('knn', 'flops')."""
    names = tuple(n.strip() for n in names if n.strip())
    unknown = [n for n in names if n not in METRICS]
    if unknown or not names:
        raise SnapViTError(
            f"Unknown metric(s) {unknown or names}.", f"Choose from {', '.join(METRICS)} (comma-separated)."
        )
    return names


@dataclass
class EvaluationResult:
    """Metrics of one pruned configuration. Missing metrics are None."""

    mlp_sparsity: float  # requested fraction of MLP neurons removed
    head_sparsity: float  # requested fraction of heads removed
    kept_heads: list[int]  # per block
    kept_neurons: list[int]  # per block
    realised_mlp_sparsity: float  # fraction actually removed
    realised_head_sparsity: float
    knn_top1: float | None = None  # 0..1, k-NN top-1 on the test split
    linear_top1: float | None = None  # 0..1, linear-probe top-1 on the test split (same features as kNN)
    params: int | None = None  # parameters of the embedding path
    flops: int | None = None  # analytic FLOPs per image
    latency_ms: float | None = None  # batch-1 median latency
    latency: dict | None = None  # full latency report (IQR, throughput, device, dtype, threads)
    embedding_cosine: float | None = None  # mean cosine similarity to the unpruned test embeddings
    per_image_similarity: list[float] | None = None  # cosine per test image (all 1.0 when unpruned)
    knn_set: str | None = None  # which images the kNN used, e.g. "subset: 600 of 1,797 images"
    latency_source: str | None = None  # "measured" or "predicted" (latency model)
    extra: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class CostResult:
    """What a configuration costs, from the plan alone (no forward pass): instant for a slider move."""

    plan: PruningPlan  # kept_heads / kept_neurons per block and the realised sparsities
    cost: PlanCost  # parameters and FLOPs of the pruned model
    unpruned: PlanCost  # the same for the unpruned model
    latency: LatencyPrediction | None  # LatencyPrediction at the asked batch; None until the latency model is ready
    neuron_mask: torch.Tensor  # (B, M) bool, kept neurons in the ORIGINAL unit order
    head_mask: torch.Tensor  # (B, H) bool, kept heads in the ORIGINAL unit order

    @property
    def kept_heads(self) -> list[int]:
        return list(self.plan.kept_heads)

    @property
    def kept_neurons(self) -> list[int]:
        return list(self.plan.kept_neurons)


class Explorer:
    """A backbone made elastic by ``scores``; evaluate any (MLP, head) sparsity.

    Args:
        backbone: the loaded backbone; its model is copied, never mutated.
        scores: importance scores for it (shape-checked).
        device: where evaluation runs.
        align: kept MLP neurons per block are multiples of this (``ElasticViT``'s ``align``; 1 = published rule).
    """

    def __init__(
        self, backbone: Backbone, scores: ImportanceScores, device: str | torch.device = "cpu", align: int = 1
    ) -> None:
        self.backbone = backbone
        self.scores = scores
        self.device = torch.device(device)
        self.elastic = ElasticViT(backbone.model, scores, backbone.model_id, align)
        self.knn: KnnEvaluator | None = None
        self.linear_probe = LinearProbe()  # DINOv1 linear evaluation settings (a frozen value; replace it whole)
        self._knn_subsets: dict[int, KnnEvaluator] = {}  # knn_images -> subset evaluator
        self._reference_embeddings: tuple[torch.Tensor, torch.Tensor] | None = None  # image_similarity cache
        # The engine's lock (re-entrant): evaluate() holds it across its steps, each of which takes it too.
        self.lock = self.elastic.lock
        self.cost_table: CostTable = cost_table(self.elastic.full)  # plan costs without a forward
        self.latency_model: LatencyModel | None = None  # set by ensure_latency_model()
        self._latency_lock = threading.Lock()  # one calibration at a time

    def ensure_latency_model(
        self, progress: Progress | None = None, cancel: Cancel | None = None, **options: object
    ) -> LatencyModel:
        """Load the cached latency model of this backbone/device, or calibrate it (seconds; cancellable).

        ``options`` go to ``load_or_calibrate_latency_model`` (batches, cache_dir, budget_s ...); a
        recalibration keeps the batch sizes the current model already has. Calibration times private
        copies of the pieces, so it does not take the explorer's lock; concurrent callers (a page's
        worker, a sweep, a budget search) wait for one calibration instead of timing against each other.
        """
        requested = set(options.pop("batches", (1, 32)))  # type: ignore[arg-type]
        while not self._latency_lock.acquire(timeout=0.1):
            check_cancel(cancel, "latency calibration")
        try:
            current = self.latency_model
            if current is None or not requested <= set(current.batches):
                batches = tuple(sorted(requested | set(current.batches if current else ())))
                self.latency_model = load_or_calibrate_latency_model(
                    self.backbone, self.device, batches, progress=progress, cancel=cancel, **options
                )
            return self.latency_model
        finally:
            self._latency_lock.release()

    def use_latency_model(self, model: LatencyModel) -> None:
        """Adopt a latency model another explorer of the same backbone and device calibrated (the landscape
        filler's private explorer): the pieces are timed once, not once per explorer.

        Raises ValueError when ``model`` was calibrated for another backbone, device, dtype or image size.
        """
        mine = latency_model_key(self.backbone, self.device, threads=model.key.threads)
        if model.key != mine:
            raise ValueError(f"latency model of {model.key} does not fit this explorer ({mine})")
        with self._latency_lock:
            if self.latency_model is None or set(self.latency_model.batches) <= set(model.batches):
                self.latency_model = model

    def plan_for(self, mlp_sparsity: float, head_sparsity: float) -> PruningPlan:
        """The keep counts of a configuration (pure: the working model is not touched)."""
        return self.elastic.plan_for(mlp_sparsity, head_sparsity)

    def cost(self, mlp_sparsity: float, head_sparsity: float, batch: int = 1) -> CostResult:
        """Parameters, FLOPs, predicted latency and keep masks of a configuration, without a forward pass.

        Takes no lock and never touches the working model, so a page can call it on every slider
        move while an ``evaluate`` runs in the background. ``latency`` is None until the latency
        model is ready (``ensure_latency_model``) or when it was not calibrated at ``batch``.
        """
        plan = self.plan_for(mlp_sparsity, head_sparsity)
        full_heads, full_neurons = self.cost_table.unpruned
        neuron_mask, head_mask = self.elastic.kept_masks(plan)
        model = self.latency_model
        return CostResult(
            plan=plan,
            cost=plan_cost(self.cost_table, plan.kept_heads, plan.kept_neurons),
            unpruned=plan_cost(self.cost_table, full_heads, full_neurons),
            latency=None
            if model is None or batch not in model.batches
            else model.predict(plan.kept_heads, plan.kept_neurons, batch),
            neuron_mask=neuron_mask,
            head_mask=head_mask,
        )

    def attach_knn(self, evaluator: KnnEvaluator) -> None:
        """Use ``evaluator``'s labelled splits for kNN accuracy and embedding similarity."""
        with self.lock:
            self.knn = evaluator
            self._knn_subsets.clear()

    @staticmethod
    def feature_key(plan: PruningPlan) -> tuple:
        """The feature-cache key of the plain truncation to ``plan`` (a corrected model has none)."""
        return ("plan", plan.kept_heads, plan.kept_neurons)

    def knn_evaluator(self, knn_images: int | None = None) -> tuple[KnnEvaluator, str]:
        """The evaluator for a live kNN set of about ``knn_images`` images (train + test), and its label.

        The subset is stratified by class and deterministic (seed 0), so the same size always means
        the same images and its features are cached like the full set's.
        """
        if self.knn is None:
            raise SnapViTError("kNN accuracy needs labelled data.", "Attach a kNN evaluator (choose --data).")
        full = self.knn
        total = len(full.train) + len(full.test)
        if knn_images is None or knn_images >= total:
            return full, f"all {total:,} images"
        if knn_images < 2:
            raise SnapViTError(f"knn_images must be at least 2, got {knn_images}.", "Use None for the whole set.")
        with self.lock:
            if knn_images not in self._knn_subsets:
                train_count = max(1, round(knn_images * len(full.train) / total))
                test_count = max(1, knn_images - train_count)
                train = stratified_subset(full.train_labels, train_count)
                test = stratified_subset(full.test_labels, test_count)
                self._knn_subsets[knn_images] = full.subset(train, test)
            subset = self._knn_subsets[knn_images]
        return subset, f"subset: {len(subset.train) + len(subset.test):,} of {total:,} images"

    def evaluate(
        self,
        mlp_sparsity: float,
        head_sparsity: float,
        metrics: Iterable[str] = ("knn", "flops", "params"),
        latency_batch: int = 32,
        correction: tuple | None = None,
        *,
        knn_images: int | None = None,
        cancel: Cancel | None = None,
        progress: Progress | None = None,
        latency: str = "measured",
        model: nn.Module | None = None,
    ) -> EvaluationResult:
        """THE one locked call: prune to the requested sparsity and measure the requested metrics.

        Args:
            knn_images: live kNN set size (train + test, stratified subset); None = the whole split.
            cancel: checked between steps and embedding batches; returning True (or raising
                CancelledError) raises CancelledError. The explorer stays usable afterwards.
            progress: (done, total) images embedded.
            latency: "measured" (torch.utils.benchmark, today's behaviour) or "model" (the latency
                model's prediction, calibrated or loaded on first use; ``latency_source`` says which).
            correction: optional ``(CorrectionConfig, calibration_images)``; the weight-corrected copy
                (``correction.correct_elastic``) is measured instead of the plain truncation. Its
                report goes to ``result.extra["correction"]``.
            model: a standalone model of this configuration from :meth:`pruned_model` (a corrected one,
                say) to measure instead of the engine's truncation; its widths must be the plan's.
        """
        metrics = check_metrics(metrics)
        if latency not in ("measured", "model"):
            raise SnapViTError(f"Unknown latency source '{latency}'.", "Use 'measured' or 'model'.")
        check_cancel(cancel, "evaluation")
        raising_cancel = None if cancel is None else (lambda: check_cancel(cancel, "evaluation"))
        plan = self.plan_for(mlp_sparsity, head_sparsity)
        result = EvaluationResult(
            mlp_sparsity=plan.mlp_sparsity,
            head_sparsity=plan.head_sparsity,
            kept_heads=list(plan.kept_heads),
            kept_neurons=list(plan.kept_neurons),
            realised_mlp_sparsity=plan.realised_mlp_sparsity,
            realised_head_sparsity=plan.realised_head_sparsity,
        )
        if model is not None and correction is not None:
            raise SnapViTError("Give a corrected model or a correction to compute, not both.")
        if model is not None and widths(model) != (list(plan.kept_heads), list(plan.kept_neurons)):
            raise SnapViTError(
                f"The model to evaluate has other widths than the plan at ({mlp_sparsity}, {head_sparsity}).",
                "Pass the model that Explorer.pruned_model returned for this configuration.",
            )
        with self.lock:
            corrected = model
            if correction is not None:
                corrected, result.extra["correction"] = self.pruned_model(mlp_sparsity, head_sparsity, correction)

            def measure(compute):  # on the given (corrected) copy, or the engine's truncation (no copy)
                return compute(corrected) if corrected is not None else self.elastic.run(plan, compute)

            key = None if corrected is not None else self.feature_key(plan)  # a corrected model is not cached
            if "params" in metrics:
                result.params = measure(count_parameters)
            if "flops" in metrics:
                result.flops = measure(analytic_flops)
            if "knn" in metrics or "linear" in metrics:  # one feature pass serves both accuracy metrics
                evaluator, result.knn_set = self.knn_evaluator(knn_images)
                features = measure(
                    lambda model: evaluator.features(model, key, progress=progress, cancel=raising_cancel)
                )
                if "knn" in metrics:
                    result.knn_top1 = evaluator.top1_of(features)
                    reference = self.unpruned_features(evaluator, progress=progress, cancel=raising_cancel)
                    similarity = embedding_similarity(reference, features[1])
                    result.embedding_cosine = float(similarity.mean())
                    result.per_image_similarity = [float(v) for v in similarity]  # kept even when all are 1.0
                if "linear" in metrics:
                    check_cancel(cancel, "evaluation")
                    result.linear_top1 = self.linear_probe.top1(
                        features[0], evaluator.train_labels, features[1], evaluator.test_labels, cancel=cancel
                    )
            if "latency" in metrics:
                check_cancel(cancel, "evaluation")
                if latency == "model":
                    self._predict_latency(result, plan, latency_batch)
                else:
                    timed = (
                        copy.deepcopy(corrected) if corrected is not None else self.elastic.pruned(plan)
                    )  # timing casts it
                    report_ = measure_latency(timed, self.backbone.image_size, latency_batch, self.device)
                    result.latency_ms = report_.median_ms
                    result.latency = report_.to_dict()
                    result.latency_source = "measured"
            return result

    def _predict_latency(self, result: EvaluationResult, plan: PruningPlan, batch: int) -> None:
        latency_model = self.ensure_latency_model(batches=tuple(sorted({1, batch})))
        key = latency_model.key
        labels = {"device": key.device, "dtype": key.dtype, "threads": key.threads, "source": "predicted"}
        result.latency = latency_report(latency_model, plan, batch, **labels)
        result.latency_ms = result.latency["median_ms"]
        result.latency_source = "predicted"

    def measure_latency_now(self, mlp_sparsity: float, head_sparsity: float, batch: int = 1) -> LatencyPrediction:
        """Time the configuration directly (interleaved with the unpruned model): a check of the model.

        ``ms`` is the median round, ``low_ms``/``high_ms`` the fastest round and the 75th percentile;
        the speed-up is the median of back-to-back unpruned/pruned ratios.
        """
        model = self.elastic.prune_to(mlp_sparsity, head_sparsity)  # a copy: timing needs no lock
        rounds = paired_rounds(
            [model, self.backbone.model], self.backbone.image_size, str(self.device), batch=batch, budget_s=0.5
        )
        pruned = [t * 1e3 for t in rounds[0]]
        return LatencyPrediction(
            batch=batch,
            ms=statistics.median(pruned),
            low_ms=min(pruned),
            high_ms=float(np.quantile(pruned, 0.75)),
            speedup=median_speedup(rounds[0], rounds[1]),
            source="measured",
        )

    def pruned_model(
        self,
        mlp_sparsity: float,
        head_sparsity: float,
        correction: tuple | None = None,
        *,
        progress: Progress | None = None,
        cancel: Cancel | None = None,
    ) -> tuple[nn.Module, dict | None]:
        """THE way to get a pruned model out: a standalone copy (own compact tensors) and the correction
        report, if any. Nothing the explorer does later (another configuration, a landscape, a latency
        measurement on another thread) changes the model it returns.

        Args:
            correction: optional ``(CorrectionConfig, calibration_images)``: the copy is weight-corrected.
        """
        if correction is None:
            return self.elastic.prune_to(mlp_sparsity, head_sparsity), None
        from snapvit_core.engine.correction import correct_elastic

        config, calibration = correction
        model, report_ = correct_elastic(
            self.elastic, mlp_sparsity, head_sparsity, calibration.to(self.device), config, progress, cancel
        )
        return model, report_.to_dict()

    def image_similarity(
        self, mlp_sparsity: float, head_sparsity: float, images: torch.Tensor, *, cancel: Cancel | None = None
    ) -> list[float]:
        """Label-free: per-image cosine of the pruned vs unpruned embeddings of ``images`` (N, 3, S, S)."""
        raising_cancel = None if cancel is None else (lambda: check_cancel(cancel, "similarity"))

        def embed(model: nn.Module) -> torch.Tensor:
            return extract_features(model, images, device=self.device, cancel=raising_cancel)

        with self.lock:
            cached = self._reference_embeddings
            if cached is None or cached[0] is not images:  # the same tensor object: its embeddings are known
                self._reference_embeddings = cached = (images, self.elastic.run(self.plan_for(0.0, 0.0), embed))
            pruned = self.elastic.run(self.plan_for(mlp_sparsity, head_sparsity), embed)
        return [float(v) for v in embedding_similarity(cached[1], pruned)]

    def unpruned_features(
        self,
        evaluator: KnnEvaluator | None = None,
        *,
        progress: Progress | None = None,
        cancel: Cancel | None = None,
    ) -> torch.Tensor:
        """Test-split embeddings of the unpruned model (cached) on ``evaluator``'s set (default: the full one)."""
        evaluator = evaluator or self.knn
        if evaluator is None:
            raise SnapViTError("Embedding similarity needs data.", "Attach a kNN evaluator (choose --data).")
        full = self.plan_for(0.0, 0.0)
        key = self.feature_key(full)
        return self.elastic.run(full, lambda model: evaluator.features(model, key, progress=progress, cancel=cancel)[1])
