"""``evaluate``: prune a backbone to a sparsity and measure kNN top-1, FLOPs, parameters, latency."""

from __future__ import annotations

import argparse

from snapvit_core.cli import _common
from snapvit_core.evaluation.knn import DEFAULT_K
from snapvit_core.explorer import check_metrics


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("evaluate", help="prune to a sparsity and measure kNN top-1, FLOPs, params, latency")
    _common.add_model_arguments(parser)
    parser.add_argument(
        "--data", default="embedded", help="kNN data: embedded, folder:PATH or hf:NAME (default: embedded)"
    )
    _common.add_scores_arguments(parser)
    _common.add_sparsity_arguments(parser)
    _common.add_align_argument(parser)
    parser.add_argument(
        "--metrics", default="knn,flops,params", help="comma-separated: knn,linear,flops,params,latency"
    )
    _common.add_knn_arguments(
        parser,
        k_help=f"kNN neighbours (default: {DEFAULT_K}, as published)",
        limit_help="use at most N images per split (seeded subset)",
    )
    _common.add_latency_arguments(
        parser,
        modes=("measured", "model"),
        batch_help="batch size of the throughput measurement",
        latency_help="latency metric: time the pruned model (measured, default) or predict it with the cached "
        "latency model (model; calibrated on first use, adds the latency_source key)",
        table_help="predict latency from a table written by `calibrate` (on the device and runtime it was made on) "
        "instead of measuring here; implies the latency metric",
    )
    _common.add_linear_arguments(parser)
    _common.add_correction_arguments(parser)
    _common.add_json_argument(parser)
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from snapvit_core.engine.elastic import check_sparsity

    metrics = check_metrics(args.metrics.split(","))
    if args.latency == "model" and "latency" not in metrics:  # asking for the model's latency asks for latency
        metrics = (*metrics, "latency")
    table = None
    if args.latency_table:  # read and check before the model loads; the latency comes from it, not from here
        from snapvit_core.latency.table import load_table

        table = load_table(args.latency_table)
        metrics = tuple(m for m in metrics if m != "latency") or ("params",)
    mlp_sparsity = check_sparsity(args.mlp_sparsity, "MLP sparsity")
    head_sparsity = check_sparsity(args.head_sparsity, "head sparsity")
    device = _common.resolve_device(args.device)
    explorer = _common.build_explorer(args, device)
    if table is not None:
        table.check_fits(explorer.elastic.shape, explorer.backbone.model_id)
        table.predict(
            explorer.elastic.shape.heads_per_block, explorer.elastic.shape.mlp_hidden_per_block, args.latency_batch
        )  # fmt: skip  (refuses an uncalibrated batch before any work)
    explorer.linear_probe = _common.linear_probe_from_args(args)
    labelled = "knn" in metrics or "linear" in metrics
    if labelled:
        _common.attach_knn_from_args(explorer, args)
    correction = _common.correction_from_args(args, explorer.backbone.data_config)
    result = explorer.evaluate(
        mlp_sparsity, head_sparsity, metrics, args.latency_batch, correction, latency=args.latency
    )
    payload = {
        "model": explorer.backbone.model_id,
        "scores": args.scores or (args.method or "magnitude"),
        "data": args.data if labelled else None,
        "knn_vote": (explorer.knn.vote if explorer.knn else None),
        "knn_k": args.k if "knn" in metrics else None,
        **result.to_dict(),
    }
    extra = payload.pop("extra", {})
    payload.pop("per_image_similarity", None)  # one value per test image: for the app, not the CLI
    if table is not None:
        report = table.latency_report(explorer.plan_for(result.mlp_sparsity, result.head_sparsity), args.latency_batch)
        report["table"] = str(args.latency_table)
        payload.update(latency_ms=report["median_ms"], latency=report, latency_source="predicted")
    elif args.latency != "model":
        payload.pop("latency_source", None)
    if "linear" in metrics:
        payload["linear_probe"] = explorer.linear_probe.describe()
    payload["align"] = explorer.elastic.align
    payload["corrected"] = correction is not None
    if "correction" in extra:
        payload["correction"] = extra["correction"]
    lines = [
        f"model      {payload['model']}   scores: {payload['scores']}",
        f"sparsity   MLP {result.mlp_sparsity:.3f} (realised {result.realised_mlp_sparsity:.3f}), "
        f"heads {result.head_sparsity:.3f} (realised {result.realised_head_sparsity:.3f})",
        f"kept heads   {result.kept_heads}",
        f"kept neurons {result.kept_neurons} (MLP widths aligned to {explorer.elastic.align})",
    ]
    if result.knn_top1 is not None:
        lines.append(
            f"kNN top-1  {100 * result.knn_top1:.2f}%  (k={args.k}, {explorer.knn.vote} vote, data {args.data})"
        )
    if result.linear_top1 is not None:
        probe = explorer.linear_probe
        lines.append(
            f"linear top-1 {100 * result.linear_top1:.2f}%  (linear probe: {probe.epochs} epochs, "
            f"lr {probe.base_lr:g}, batch {probe.batch_size}, seed {probe.seed}; data {args.data})"
        )
    if "correction" in extra:
        report = extra["correction"]
        lines.append(
            f"corrected  {len(report['layers'])} layers on {report['samples']} images in {report['seconds']:.1f} s"
        )
    if result.params is not None:
        lines.append(f"parameters {result.params:,}")
    if result.flops is not None:
        lines.append(f"FLOPs      {result.flops / 1e9:.4f} GFLOPs per image")
    if table is not None:
        report = payload["latency"]
        lines.append(
            f"latency    {report['median_ms']:.2f} ms predicted at batch 1 (speed-up {report['speedup']:.2f}x); "
            f"{report['throughput_per_s']:.0f} img/s at batch {report['batch_size']} "
            f"on {table.label} (latency table {args.latency_table}, made {table.created})"
        )
    elif result.latency is not None and result.latency_source == "predicted":
        report = result.latency
        lines.append(
            f"latency    {report['median_ms']:.2f} ms predicted (spread {report['low_ms']:.2f}-"
            f"{report['high_ms']:.2f}, speed-up {report['speedup']:.2f}x) at batch 1; "
            f"{report['throughput_per_s']:.0f} img/s at batch {report['batch_size']} "
            f"(latency model; {report['device']}, {report['dtype']}, {report['threads']} threads)"
        )
    elif result.latency is not None:
        report = result.latency
        lines.append(
            f"latency    {report['median_ms']:.2f} ms median (IQR {report['iqr_ms']:.2f}) at batch 1; "
            f"{report['throughput_per_s']:.0f} img/s at batch {report['batch_size']} "
            f"({report['device']}, {report['dtype']}, {report['threads']} threads)"
        )
    _common.emit(payload, args.json, lines)
    return 0
