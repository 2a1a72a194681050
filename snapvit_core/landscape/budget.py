"""Budget search: the most accurate (MLP, head) configuration whose cost stays within a limit.

The whole plane is searched on a fine grid (``step``), not only the published path. Costs need no
forward pass: a plan's keep counts depend on the MLP sparsity for the neurons and on the head
sparsity for the heads alone, and parameters, FLOPs and the latency model's prediction are each a
fixed part plus a head part plus a neuron part, so the grid's cost table is an outer sum of two
short vectors. Configurations over the limit are dropped (an answer is never over budget). Among
those that fit, only the boundary is worth an accuracy evaluation: removing more of either unit
type can only cost accuracy, so the candidates are the fitting configurations with no fitting
configuration less sparse on both axes. Accuracy (kNN top-1 where labels exist, or with
``metric="linear"`` the linear-probe top-1; else the label-free mean embedding cosine to the unpruned
model) is evaluated on at most
``max_evaluations`` of them: evenly along the boundary first, then next to the best so far.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import torch

from snapvit_core.errors import SnapViTError
from snapvit_core.explorer import Explorer
from snapvit_core.landscape.grid import fine_axis
from snapvit_core.runtime.cancel import Cancel, Progress, check_cancel, report

BUDGET_COLUMNS = ("flops_pct", "latency_ms", "params_m")
ACCURACY_METRICS = {"knn": "knn_top1", "linear": "linear_top1"}  # what an answer can be ranked by -> field


@dataclass(frozen=True)
class BudgetAnswer:
    """The best configuration within the budget."""

    mlp_sparsity: float
    head_sparsity: float
    cost: float  # the budgeted quantity at the answer, <= limit always
    accuracy: float | None  # kNN or linear-probe top-1 %, or mean embedding cosine; None without any data
    accuracy_kind: str  # "knn" | "linear" | "similarity" | "none"
    candidates: pd.DataFrame  # every evaluated candidate (boundary configurations with their accuracy)
    boundary: pd.DataFrame = field(default_factory=pd.DataFrame)  # every boundary configuration and its cost
    column: str = "flops_pct"
    limit: float = math.inf
    source: str = "evaluated"  # "landscape": read from the precomputed landscape; "evaluated": forward passes


def cost_grid(explorer: Explorer, column: str, batch: int = 1, step: float = 0.025) -> pd.DataFrame:
    """The budgeted quantity at every grid configuration: columns MLP sparsity, head sparsity, ``column``.

    No forward pass: an outer sum of the neuron part (per MLP sparsity) and the head part (per head
    sparsity). ``latency_ms`` needs the explorer's latency model (``ensure_latency_model``).
    """
    if column not in BUDGET_COLUMNS:
        raise SnapViTError(f"Unknown budget column '{column}'.", f"Choose one of {', '.join(BUDGET_COLUMNS)}.")
    axis = fine_axis(step)
    heads_by_s = [explorer.plan_for(0.0, float(s)).kept_heads for s in axis]
    neurons_by_s = [explorer.plan_for(float(s), 0.0).kept_neurons for s in axis]
    full_heads, full_neurons = explorer.cost_table.unpruned
    if column == "latency_ms":
        model = explorer.latency_model
        if model is None or batch not in model.batches:
            raise SnapViTError("A latency budget needs the latency model.", "Call explorer.ensure_latency_model().")
        table = model.tables[batch]
        neuron_part = np.array([sum(table.block_ms(0, m, 0) for m in kept) for kept in neurons_by_s])
        head_part = np.array([sum(table.block_ms(h, 0, 0) for h in kept) for kept in heads_by_s])
        zero_blocks = sum(table.block_ms(0, 0, 0) for _ in full_heads)  # in both parts: subtracted once
        grid = table.fixed_ms[0] + neuron_part[:, None] + head_part[None, :] - zero_blocks
        grid = np.maximum(grid, 1e-6)  # as LatencyModel.predict
    else:
        costs = explorer.cost_table
        per = costs.flops if column == "flops_pct" else costs.params
        neuron_part = np.array([per([0] * len(kept), kept) for kept in neurons_by_s], float)
        head_part = np.array([per(kept, [0] * len(kept)) for kept in heads_by_s], float)
        grid = neuron_part[:, None] + head_part[None, :] - per([0] * len(full_heads), [0] * len(full_heads))
        grid = 100.0 * grid / per(full_heads, full_neurons) if column == "flops_pct" else grid / 1e6
    mlp_values, head_values = np.meshgrid(axis, axis, indexing="ij")
    return pd.DataFrame(
        {"MLP sparsity": mlp_values.ravel(), "head sparsity": head_values.ravel(), column: grid.ravel()}
    )


def budget_boundary(grid: pd.DataFrame, column: str, limit: float) -> pd.DataFrame:
    """Fitting configurations with no other fitting one at most as sparse on both axes (sorted by MLP sparsity)."""
    fitting = grid[grid[column] <= limit]
    if fitting.empty:
        return fitting
    least_heads = fitting.groupby("MLP sparsity")["head sparsity"].min().sort_index()  # per MLP sparsity
    rows, best_so_far = [], math.inf
    for mlp_sparsity, head_sparsity in least_heads.items():
        if head_sparsity < best_so_far:  # not dominated by a less MLP-sparse fitting configuration
            rows.append((mlp_sparsity, head_sparsity))
            best_so_far = head_sparsity
    keys = pd.MultiIndex.from_tuples(rows, names=["MLP sparsity", "head sparsity"])
    indexed = fitting.set_index(["MLP sparsity", "head sparsity"])
    return indexed.loc[keys].reset_index()


def _exact_cost(explorer: Explorer, column: str, mlp_sparsity: float, head_sparsity: float, batch: int) -> float:
    cost = explorer.cost(float(mlp_sparsity), float(head_sparsity), batch)
    if column == "latency_ms":
        return cost.latency.ms
    return cost.cost.flops_pct if column == "flops_pct" else cost.cost.params / 1e6


def _evaluation_order(count: int, budget: int) -> list[int]:
    """Boundary indices to evaluate first: evenly spread, endpoints included."""
    if count <= budget:
        return list(range(count))
    first = max(2, (2 * budget) // 3)
    return sorted({round(i * (count - 1) / (first - 1)) for i in range(first)})


def find_best_under_budget(
    explorer: Explorer,
    column: str,
    limit: float,
    *,
    batch: int = 1,
    step: float = 0.025,
    max_evaluations: int = 16,
    knn_images: int | None = None,
    images: torch.Tensor | None = None,
    progress: Progress | None = None,
    cancel: Cancel | None = None,
    metric: str = "knn",
) -> BudgetAnswer | None:
    """The most accurate configuration whose ``column`` is at most ``limit``; None when nothing fits.

    Args:
        column: "flops_pct" (% of the unpruned FLOPs), "latency_ms" (predicted, at ``batch``) or
            "params_m" (millions of parameters).
        limit: the budget; the answer's cost is <= limit.
        step: grid step on both sparsity axes.
        max_evaluations: accuracy evaluations (forward passes) at most.
        knn_images: live kNN subset size (None: the explorer's whole set).
        images: label-free images for the embedding similarity when the explorer has no kNN data.
        progress: (done, total) accuracy evaluations; cancel: raises CancelledError.
        metric: with labelled data, rank by "knn" (k-NN top-1) or "linear" (linear-probe top-1).
    """
    limit = _check_limit(limit)
    field_name = _check_metric(metric)
    if max_evaluations < 1:
        raise SnapViTError(f"max_evaluations must be at least 1, got {max_evaluations}.", "Use e.g. 16.")
    if column == "latency_ms":
        explorer.ensure_latency_model(cancel=cancel, batches=tuple(sorted({1, 32, batch})))
    boundary = budget_boundary(cost_grid(explorer, column, batch, step), column, limit)
    # The exact cost as Explorer.cost reports it (the grid's outer sums may differ in the last bit).
    exact = [
        _exact_cost(explorer, column, m, h, batch) for m, h in zip(boundary["MLP sparsity"], boundary["head sparsity"])
    ]
    boundary = boundary.assign(**{column: exact})
    boundary = boundary[boundary[column] <= limit].reset_index(drop=True)
    if boundary.empty:
        return None
    kind = metric if explorer.knn is not None else "similarity" if images is not None else "none"
    accuracy = np.full(len(boundary), np.nan)
    configurations = list(zip(boundary["MLP sparsity"], boundary["head sparsity"]))

    def evaluate(index: int) -> None:
        check_cancel(cancel, "budget search")
        mlp_sparsity, head_sparsity = (float(v) for v in configurations[index])
        if kind in ACCURACY_METRICS:
            result = explorer.evaluate(mlp_sparsity, head_sparsity, (kind,), knn_images=knn_images, cancel=cancel)
            accuracy[index] = 100.0 * getattr(result, field_name)
        else:
            similarity = explorer.image_similarity(mlp_sparsity, head_sparsity, images, cancel=cancel)
            accuracy[index] = float(np.mean(similarity))

    if kind == "none":  # no data: the least pruned boundary configuration (the one closest to the limit)
        best = int(boundary[column].to_numpy().argmax())
    else:
        budget = min(max_evaluations, len(boundary))
        order = _evaluation_order(len(boundary), budget)
        for done, index in enumerate(order, 1):
            evaluate(index)
            report(progress, done, budget)
        done = len(order)
        while done < budget:  # refine next to the best so far
            best = int(np.nanargmax(accuracy))
            unseen = [i for i in (best - 1, best + 1) if 0 <= i < len(boundary) and np.isnan(accuracy[i])]
            if not unseen:  # the neighbours are known: bisect towards the better evaluated side
                evaluated = np.flatnonzero(~np.isnan(accuracy))
                gaps = [(a, b) for a, b in zip(evaluated[:-1], evaluated[1:]) if b - a > 1 and best in (a, b)]
                if not gaps:
                    break
                a, b = max(gaps, key=lambda gap: accuracy[gap[0]] + accuracy[gap[1]])
                unseen = [(a + b) // 2]
            evaluate(unseen[0])
            done += 1
            report(progress, done, budget)
        scored = pd.DataFrame({"accuracy": accuracy, "cost": boundary[column]}).dropna()
        best = int(scored.sort_values(["accuracy", "cost"], ascending=[False, True]).index[0])
    boundary = boundary.assign(accuracy=accuracy)
    row = boundary.iloc[best]
    return BudgetAnswer(
        mlp_sparsity=float(row["MLP sparsity"]),
        head_sparsity=float(row["head sparsity"]),
        cost=float(row[column]),
        accuracy=None if kind == "none" else float(row["accuracy"]),
        accuracy_kind=kind,
        candidates=boundary.dropna(subset=["accuracy"]).reset_index(drop=True),
        boundary=boundary,
        column=column,
        limit=limit,
    )


def best_in_landscape(
    explorer: Explorer, landscape, column: str, limit: float, *, batch: int = 1, metric: str = "knn"
) -> BudgetAnswer | None:
    """The budget answer read from a landscape, instantly, when it has every boundary configuration.

    Searches the landscape's grid (its step, e.g. 0.05) with exact costs from ``Explorer.cost``, so the
    answer is never over budget. Returns None when nothing fits; raises ``LandscapeGap`` when a boundary
    configuration is not computed yet (the caller then evaluates the boundary as ``find_best_under_budget``).
    """
    limit = _check_limit(limit)
    field_name = _check_metric(metric)
    if column == "latency_ms":
        model = explorer.latency_model
        if model is None or batch not in model.batches:
            raise LandscapeGap("the latency model is not ready")
    grid = cost_grid(explorer, column, batch, landscape.key.grid)
    boundary = budget_boundary(grid, column, limit)
    points = [landscape.get(m, h) for m, h in zip(boundary["MLP sparsity"], boundary["head sparsity"])]
    if any(p is None or getattr(p, field_name) is None for p in points):
        missing = sum(p is None or getattr(p, field_name) is None for p in points)
        raise LandscapeGap(f"{missing} of {len(points)} boundary configurations are not computed yet")
    # Every fitting configuration the landscape has competes (accuracy need not fall monotonically with
    # sparsity), with its exact cost as Explorer.cost reports it, so the answer is never over budget.
    fitting = grid[grid[column] <= limit + 1e-9]
    rows = []
    for m, h in zip(fitting["MLP sparsity"], fitting["head sparsity"]):
        point = landscape.get(m, h)
        if point is None or getattr(point, field_name) is None:
            continue
        cost = _exact_cost(explorer, column, m, h, batch)
        if cost <= limit:
            rows.append(
                {"MLP sparsity": m, "head sparsity": h, column: cost, "accuracy": 100.0 * getattr(point, field_name)}
            )
    if not rows:
        return None
    candidates = pd.DataFrame(rows)
    best = int(candidates.sort_values(["accuracy", column], ascending=[False, True]).index[0])
    row = candidates.iloc[best]
    return BudgetAnswer(
        mlp_sparsity=float(row["MLP sparsity"]),
        head_sparsity=float(row["head sparsity"]),
        cost=float(row[column]),
        accuracy=float(row["accuracy"]),
        accuracy_kind=metric,
        candidates=candidates,
        boundary=boundary,
        column=column,
        limit=limit,
        source="landscape",
    )


class LandscapeGap(Exception):
    """The landscape does not (yet) cover a budget's boundary."""


def _check_metric(metric: object) -> str:
    """The point field of an accuracy metric name ("knn" or "linear")."""
    if metric not in ACCURACY_METRICS:
        raise SnapViTError(f"Unknown accuracy metric {metric!r}.", f"Rank by one of {', '.join(ACCURACY_METRICS)}.")
    return ACCURACY_METRICS[metric]


def _check_limit(limit: object) -> float:
    try:
        limit = float(limit)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise SnapViTError(f"The budget limit must be a number, got {limit!r}.", "Enter e.g. 50.") from None
    if not math.isfinite(limit):
        raise SnapViTError(f"The budget limit must be finite, got {limit}.", "Enter e.g. 50.")
    return limit
