"""Export one configuration of an explorer: the one path the command line and the app's Export page share.

:func:`export_configuration` gets the pruned model as a value (``Explorer.pruned_model``: a standalone
copy, weight-corrected when asked), builds the model card's measurements with :func:`card_metrics`,
and writes the folder with ``export.export_pruned``, which checks what it wrote against the plan and
against the engine's own truncation at that configuration before anything is put in place.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from snapvit_core.engine.correction import CorrectionConfig
from snapvit_core.engine.elastic import PruningPlan, check_sparsity
from snapvit_core.errors import SnapViTError
from snapvit_core.evaluation.plan_metrics import plan_cost
from snapvit_core.explorer import Explorer
from snapvit_core.export.writer import ExportReport, _embed_on, architecture_spec, export_pruned
from snapvit_core.runtime.cancel import Cancel, Progress


@dataclass(frozen=True)
class ExportRequest:
    """What a user asked to export (the CLI's options; the Export page's form).

    ``correction`` is ``(CorrectionConfig, calibration_images)`` or None; ``data`` names the labelled data
    attached to the explorer (its kNN evaluator's splits), on which ``knn`` and ``linear`` measure the
    kNN and linear-probe top-1 for the card;
    ``latency_table`` a calibrated table whose
    prediction goes on the card (None: this machine's latency model); ``latency`` False skips both the
    measurement and the prediction.
    """

    mlp_sparsity: float
    head_sparsity: float
    out: str | Path
    source_model: str
    correction: tuple[CorrectionConfig, torch.Tensor] | None = None
    onnx: bool = False
    data: str | None = None
    knn: bool = False
    linear: bool = False  # the explorer's probe settings (Explorer.linear_probe)
    latency: bool = True
    latency_table: str | Path | None = None
    overwrite: bool = False
    force: bool = False

    def __post_init__(self) -> None:
        object.__setattr__(self, "mlp_sparsity", check_sparsity(self.mlp_sparsity, "MLP sparsity"))
        object.__setattr__(self, "head_sparsity", check_sparsity(self.head_sparsity, "head sparsity"))


def card_metrics(explorer: Explorer, model: nn.Module, plan: PruningPlan, request: ExportRequest) -> dict:
    """What the model card reports besides the export's own parameters and FLOPs: unpruned totals (so
    the realised sparsities), kNN and linear-probe top-1 of the exported model, and its latency measured
    here beside the prediction (a latency table's device, or this machine's latency model)."""
    table = explorer.cost_table
    full_heads, full_neurons = table.unpruned
    unpruned = plan_cost(table, full_heads, full_neurons)
    metrics: dict = {
        "params_unpruned": unpruned.params,
        "flops_unpruned": unpruned.flops,
        "mlp_total": sum(full_neurons),
        "heads_total": sum(full_heads),
    }
    for metric in ("knn", "linear"):
        if getattr(request, metric):
            metrics[metric] = _accuracy_metrics(explorer, model, request, metric)
    if request.latency:
        metrics["latency"] = _latency_metrics(explorer, model, plan, request)
    return metrics


def _accuracy_metrics(explorer: Explorer, model: nn.Module, request: ExportRequest, metric: str) -> dict:
    """kNN ("knn") or linear-probe ("linear") top-1 (%) of the exported model itself (corrected or not) and
    of the unpruned one, on the explorer's labelled data."""
    if explorer.knn is None or not request.data:
        raise SnapViTError(f"The model card's {metric} accuracy needs labelled data.", "Choose a data source (--data).")
    field = f"{metric}_top1"
    corrected = request.correction is not None
    result = explorer.evaluate(
        request.mlp_sparsity, request.head_sparsity, (metric,), model=model if corrected else None
    )
    measured = {
        "top1": 100 * getattr(result, field),
        "unpruned_top1": 100 * getattr(explorer.evaluate(0.0, 0.0, (metric,)), field),
        "data": request.data,
    }
    if metric == "knn":
        measured.update(k=explorer.knn.k, vote=explorer.knn.vote)
    else:
        measured["probe"] = explorer.linear_probe.describe()
    return measured


def _latency_metrics(explorer: Explorer, model: nn.Module, plan: PruningPlan, request: ExportRequest) -> dict:
    from snapvit_core.evaluation.metrics import measure_latency

    size, device = explorer.backbone.image_size, explorer.device
    measured = measure_latency(copy.deepcopy(model), size, 1, device, min_run_time=0.2)  # timing casts its model
    reference = measure_latency(explorer.pruned_model(0.0, 0.0)[0], size, 1, device, min_run_time=0.2)
    if request.latency_table:
        from snapvit_core.latency.table import load_table

        source = load_table(request.latency_table)
        source.check_fits(explorer.elastic.shape, explorer.backbone.model_id)
        predicted, predicted_on = source.predict_plan(plan, 1).ms, f"latency table: {source.label}"
    else:
        latency_model = explorer.ensure_latency_model(batches=(1, 32))
        key = latency_model.key
        predicted = latency_model.predict_plan(plan, 1).ms
        predicted_on = f"this machine: {key.device}, {key.dtype}, {key.threads} threads"
    return {
        "batch": 1,
        "measured_ms": measured.median_ms,
        "unpruned_ms": reference.median_ms,
        "device": measured.device,
        "dtype": measured.dtype,
        "threads": measured.threads,
        "predicted_ms": predicted,
        "predicted_on": predicted_on,
    }


def export_configuration(
    explorer: Explorer,
    request: ExportRequest,
    *,
    progress: Progress | None = None,
    cancel: Cancel | None = None,
) -> ExportReport:
    """Export ``request``'s configuration of ``explorer``; the written folder is checked before it is in place.

    The model comes out of the explorer once, as a standalone copy, so a landscape, a latency
    measurement or a budget search on the same explorer meanwhile cannot change what is written. The
    check's reference embedding is the engine's own truncation at the plan (for a corrected export:
    the corrected model, as the correction made it).
    """
    plan = explorer.plan_for(request.mlp_sparsity, request.head_sparsity)
    model, correction_report = explorer.pruned_model(
        request.mlp_sparsity, request.head_sparsity, request.correction, progress=progress, cancel=cancel
    )
    if correction_report is None:
        reference = lambda images: explorer.elastic.run(plan, lambda engine: _embed_on(engine, images))  # noqa: E731
    else:
        reference = None  # export_pruned embeds the corrected model itself, before its CPU float32 copy
    architecture, model_args = architecture_spec(explorer.backbone)
    pruning = {
        "source_model": request.source_model,
        "mlp_sparsity": request.mlp_sparsity,
        "head_sparsity": request.head_sparsity,
        "realised_mlp_sparsity": plan.realised_mlp_sparsity,
        "realised_head_sparsity": plan.realised_head_sparsity,
        "align": plan.align,
        "scores_method": explorer.scores.metadata.get("method", "unknown"),
        "corrected": correction_report is not None,
    }
    if correction_report is not None:
        pruning["correction"] = correction_report
    return export_pruned(
        model,
        request.out,
        architecture=architecture,
        model_args=model_args,
        data_config=explorer.backbone.data_config,
        pruning=pruning,
        plan=plan,
        reference=reference,
        scores=explorer.scores,
        onnx=request.onnx,
        overwrite=request.overwrite,
        force=request.force,
        metrics=card_metrics(explorer, model, plan, request),
    )
