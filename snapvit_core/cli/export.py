"""``export``: write the pruned model (safetensors + JSON config, optional ONNX) at one sparsity."""

from __future__ import annotations

import argparse

from . import _common


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("export", help="export the pruned model as safetensors + config.json (+ ONNX)")
    _common.add_model_arguments(parser)
    _common.add_scores_arguments(parser)
    _common.add_sparsity_arguments(parser)
    _common.add_align_argument(parser)
    parser.add_argument("--out", required=True, help="export folder (must not exist or be empty)")
    parser.add_argument("--onnx", action="store_true", help="also write model.onnx, checked against PyTorch")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing non-empty export folder")
    parser.add_argument(
        "--force", action="store_true", help="with --overwrite: replace a non-empty folder that is not an export"
    )
    parser.add_argument(
        "--data", default="embedded", help="calibration data for --correct and kNN data for --knn (default: embedded)"
    )
    parser.add_argument("--knn", action="store_true", help="measure kNN top-1 on --data for the model card")
    parser.add_argument(
        "--latency-table",
        default=None,
        help="predict the export's latency from this calibrated table (default: this machine's latency model)",
    )
    parser.add_argument(
        "--no-latency", action="store_true", help="skip measuring and predicting the latency for the model card"
    )
    _common.add_correction_arguments(parser)
    _common.add_json_argument(parser)
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from ..elastic import check_sparsity
    from ..export import architecture_spec, export_pruned

    mlp_sparsity = check_sparsity(args.mlp_sparsity, "MLP sparsity")
    head_sparsity = check_sparsity(args.head_sparsity, "head sparsity")
    explorer = _common.build_explorer(args, _common.resolve_device(args.device))
    model = explorer.elastic.prune_to(mlp_sparsity, head_sparsity)
    correction = _common.correction_from_args(args, explorer.backbone.data_config)
    if correction is not None:
        from ..correction import correct_elastic

        config, calibration = correction
        model, correction_report = correct_elastic(explorer.elastic, mlp_sparsity, head_sparsity, calibration, config)
    architecture, model_args = architecture_spec(explorer.backbone)
    pruning = {
        "source_model": args.model,
        "mlp_sparsity": mlp_sparsity,
        "head_sparsity": head_sparsity,
        "align": explorer.elastic.align,
        "scores_method": explorer.scores.metadata.get("method", "unknown"),
        "corrected": correction is not None,
    }
    if correction is not None:
        pruning["correction"] = correction_report.to_dict()
    metrics = card_metrics(args, explorer, model, mlp_sparsity, head_sparsity, correction)
    report = export_pruned(
        model,
        args.out,
        architecture=architecture,
        model_args=model_args,
        data_config=explorer.backbone.data_config,
        pruning=pruning,
        scores=explorer.scores,
        onnx=args.onnx,
        overwrite=args.overwrite,
        force=args.force,
        metrics=metrics,
    )
    lines = [f"exported to {report.directory}: {', '.join(report.files)}", f"parameters {report.params:,}"]
    if report.onnx_max_abs_diff is not None:
        lines.append(f"ONNX matches PyTorch: max abs difference {report.onnx_max_abs_diff:.2e}")
    latency = report.latency
    if latency:
        predicted = (
            f"; predicted {latency['predicted_ms']:.2f} ms ({latency['predicted_on']})"
            if latency.get("predicted_ms") is not None
            else ""
        )
        lines.append(
            f"latency    {latency['measured_ms']:.2f} ms measured here at batch 1 ({latency['device']}, "
            f"{latency['dtype']}, {latency['threads']} threads; unpruned {latency['unpruned_ms']:.2f} ms){predicted}"
        )
    _common.emit(report.to_dict(), args.json, lines)
    return 0


def card_metrics(args, explorer, model, mlp_sparsity: float, head_sparsity: float, correction) -> dict:
    """What the model card reports besides the export's own parameters and FLOPs: unpruned totals, kNN
    (with --knn), and the latency measured here beside the prediction (a --latency-table's device, or
    this machine's latency model)."""
    import copy

    from ..metrics import measure_latency
    from ..plan_metrics import plan_cost

    table = explorer.cost_table
    full_heads, full_neurons = table.unpruned
    unpruned = plan_cost(table, full_heads, full_neurons)
    metrics = {
        "params_unpruned": unpruned.params,
        "flops_unpruned": unpruned.flops,
        "mlp_total": sum(full_neurons),
        "heads_total": sum(full_heads),
    }
    if args.knn:
        from ..data import load_knn_splits
        from ..evaluation import KnnEvaluator

        splits = load_knn_splits(args.data, explorer.backbone.data_config, stream=True)
        explorer.attach_knn(KnnEvaluator.from_splits(splits, device=explorer.device))
        result = explorer.evaluate(mlp_sparsity, head_sparsity, ("knn",), correction=correction)
        metrics["knn"] = {
            "top1": 100 * result.knn_top1,
            "unpruned_top1": 100 * explorer.evaluate(0.0, 0.0, ("knn",)).knn_top1,
            "data": args.data,
            "k": explorer.knn.k,
            "vote": explorer.knn.vote,
        }
    if not args.no_latency:
        size, device = explorer.backbone.image_size, explorer.device
        measured = measure_latency(copy.deepcopy(model), size, 1, device, min_run_time=0.2)
        reference = measure_latency(copy.deepcopy(explorer.backbone.model), size, 1, device, min_run_time=0.2)
        plan = explorer.elastic.plan_for(mlp_sparsity, head_sparsity)
        if args.latency_table:
            from ..latency_table import load_table

            source = load_table(args.latency_table)
            source.check_fits(explorer.elastic.shape, explorer.backbone.model_id)
            predicted, predicted_on = source.predict_plan(plan, 1).ms, f"latency table: {source.label}"
        else:
            latency_model = explorer.ensure_latency_model(batches=(1, 32))
            key = latency_model.key
            predicted = latency_model.predict_plan(plan, 1).ms
            predicted_on = f"this machine: {key.device}, {key.dtype}, {key.threads} threads"
        metrics["latency"] = {
            "batch": 1,
            "measured_ms": measured.median_ms,
            "unpruned_ms": reference.median_ms,
            "device": measured.device,
            "dtype": measured.dtype,
            "threads": measured.threads,
            "predicted_ms": predicted,
            "predicted_on": predicted_on,
        }
    return metrics
