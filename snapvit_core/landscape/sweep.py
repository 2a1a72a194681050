"""Method sweep: one table row per (scores source, MLP sparsity, head sparsity), and its Pareto front.

Costs come from the plan (``Explorer.cost``: parameters, FLOPs and the latency model's prediction),
so no configuration is timed on a possibly busy machine; only the kNN accuracy needs a forward pass.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import pandas as pd

from snapvit_core.explorer import Explorer
from snapvit_core.runtime.cancel import Cancel, Progress, check_cancel, report

LINEAR_COLUMN = "Linear-probe top-1 (%)"
SWEEP_COLUMNS = (
    "scores",
    "MLP sparsity",
    "head sparsity",
    "kNN top-1 (%)",
    LINEAR_COLUMN,
    "embedding cosine",
    "params",
    "params_m",
    "GFLOPs",
    "flops_pct",
    "latency_ms",
    "speed-up (x)",
    "latency_source",
)


def sweep(
    explorers: dict[str, Explorer],
    pairs: Iterable[tuple[float, float]],
    *,
    progress: Progress | None = None,
    cancel: Cancel | None = None,
    knn_images: int | None = None,
    batch: int = 1,
    linear: bool = False,
) -> pd.DataFrame:
    """Evaluate every (MLP, head) pair for every scores source.

    Args:
        explorers: scores-source label -> that source's explorer (same backbone and data).
        pairs: (MLP sparsity, head sparsity) configurations.
        progress: called with (done, total) configurations.
        cancel: checked between configurations and inside each kNN pass (raises CancelledError).
        knn_images: live kNN subset size per configuration (None: the explorer's whole set).
        batch: batch size of the predicted latency (the latency model is calibrated for 1 and 32).
        linear: also the linear-probe top-1 (same feature pass as kNN), for ranking by it.

    Returns:
        One row per configuration with SWEEP_COLUMNS; ``latency_ms`` and ``speed-up (x)`` are the
        latency model's predictions (``latency_source`` = "predicted"); accuracy columns are None
        without labelled data.
    """
    pairs = list(pairs)
    total = len(pairs) * len(explorers)
    rows, done = [], 0
    for label, explorer in explorers.items():
        explorer.ensure_latency_model(cancel=cancel, batches=tuple(sorted({1, 32, batch})))
        for mlp_sparsity, head_sparsity in pairs:
            check_cancel(cancel, "sweep")
            cost = explorer.cost(mlp_sparsity, head_sparsity, batch)
            accuracy, cosine, linear_accuracy = None, None, None
            if explorer.knn is not None:
                metrics = ("knn", "linear") if linear else ("knn",)
                result = explorer.evaluate(mlp_sparsity, head_sparsity, metrics, knn_images=knn_images, cancel=cancel)
                accuracy, cosine = 100.0 * result.knn_top1, result.embedding_cosine
                linear_accuracy = None if result.linear_top1 is None else 100.0 * result.linear_top1
            rows.append(
                {
                    "scores": label,
                    "MLP sparsity": mlp_sparsity,
                    "head sparsity": head_sparsity,
                    "kNN top-1 (%)": accuracy,
                    LINEAR_COLUMN: linear_accuracy,
                    "embedding cosine": cosine,
                    "params": cost.cost.params,
                    "params_m": cost.cost.params / 1e6,
                    "GFLOPs": cost.cost.flops / 1e9,
                    "flops_pct": cost.cost.flops_pct,
                    "latency_ms": cost.latency.ms,
                    "speed-up (x)": cost.latency.speedup,
                    "latency_source": cost.latency.source,
                }
            )
            done += 1
            report(progress, done, total)
    return pd.DataFrame(rows, columns=list(SWEEP_COLUMNS))


def landscape_table(sources: dict[str, tuple[Explorer, object]], batch: int = 1) -> pd.DataFrame:
    """The sweep table of every computed landscape point: scores label -> (explorer, its landscape).

    No forward pass: accuracy is read from the landscapes (exact, full test split), costs from the plan
    and the latency model (``latency_ms`` None until it is ready).
    """
    rows = []
    for label, (explorer, landscape) in sources.items():
        for point in landscape.points():
            cost = explorer.cost(point.mlp_sparsity, point.head_sparsity, batch)
            latency = cost.latency
            rows.append(
                {
                    "scores": label,
                    "MLP sparsity": point.mlp_sparsity,
                    "head sparsity": point.head_sparsity,
                    "kNN top-1 (%)": None if point.knn_top1 is None else 100.0 * point.knn_top1,
                    LINEAR_COLUMN: None if point.linear_top1 is None else 100.0 * point.linear_top1,
                    "embedding cosine": point.mean_cosine,
                    "params": cost.cost.params,
                    "params_m": cost.cost.params / 1e6,
                    "GFLOPs": cost.cost.flops / 1e9,
                    "flops_pct": cost.cost.flops_pct,
                    "latency_ms": None if latency is None else latency.ms,
                    "speed-up (x)": None if latency is None else latency.speedup,
                    "latency_source": None if latency is None else latency.source,
                }
            )
    return pd.DataFrame(rows, columns=list(SWEEP_COLUMNS))


def pareto_mask(cost: Iterable[float], accuracy: Iterable[float]) -> np.ndarray:
    """True for configurations no other beats on both axes (lower cost AND higher accuracy)."""
    cost, accuracy = np.asarray(list(cost), float), np.asarray(list(accuracy), float)
    mask = np.ones(len(cost), bool)
    for i in range(len(cost)):
        better = (cost <= cost[i]) & (accuracy >= accuracy[i]) & ((cost < cost[i]) | (accuracy > accuracy[i]))
        mask[i] = not better.any()
    return mask
