"""``export``: write the pruned model (safetensors + JSON config, optional ONNX) at one sparsity."""

from __future__ import annotations

import argparse

from snapvit_core.cli import _common


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
    parser.add_argument("--linear", action="store_true", help="measure linear-probe top-1 on --data for the model card")
    _common.add_linear_arguments(parser)
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
    from snapvit_core.engine.elastic import check_sparsity
    from snapvit_core.export.configuration import ExportRequest, export_configuration

    mlp_sparsity = check_sparsity(args.mlp_sparsity, "MLP sparsity")
    head_sparsity = check_sparsity(args.head_sparsity, "head sparsity")
    explorer = _common.build_explorer(args, _common.resolve_device(args.device))
    explorer.linear_probe = _common.linear_probe_from_args(args)
    if args.knn or args.linear:
        from snapvit_core.data import load_knn_splits
        from snapvit_core.evaluation.features import KnnEvaluator

        splits = load_knn_splits(args.data, explorer.backbone.data_config, stream=True)
        explorer.attach_knn(KnnEvaluator.from_splits(splits, device=explorer.device))
    request = ExportRequest(
        mlp_sparsity,
        head_sparsity,
        out=args.out,
        source_model=args.model,
        correction=_common.correction_from_args(args, explorer.backbone.data_config),
        onnx=args.onnx,
        data=args.data if args.knn or args.linear else None,
        knn=args.knn,
        linear=args.linear,
        latency=not args.no_latency,
        latency_table=args.latency_table,
        overwrite=args.overwrite,
        force=args.force,
    )
    report = export_configuration(explorer, request)
    lines = [f"exported to {report.directory}: {', '.join(report.files)}", f"parameters {report.params:,}"]
    lines.append(f"kept heads {report.kept_heads}, kept neurons {report.kept_neurons} (checked against the plan)")
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
