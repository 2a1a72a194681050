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
    parser.add_argument("--data", default="embedded", help="calibration data for --correct (default: embedded)")
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
    )
    lines = [f"exported to {report.directory}: {', '.join(report.files)}", f"parameters {report.params:,}"]
    if report.onnx_max_abs_diff is not None:
        lines.append(f"ONNX matches PyTorch: max abs difference {report.onnx_max_abs_diff:.2e}")
    _common.emit(report.to_dict(), args.json, lines)
    return 0
