"""``landscape``: evaluate every configuration of the (MLP, head) grid and write them as CSV (resumable)."""

from __future__ import annotations

import argparse
import csv
import io
import math
import sys

from tqdm import tqdm

from snapvit_core.cli import _common
from snapvit_core.evaluation.knn import DEFAULT_K


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "landscape", help="kNN, cosine, params, FLOPs and predicted latency at every grid configuration (CSV)"
    )
    _common.add_model_arguments(parser)
    _common.add_scores_arguments(parser)
    parser.add_argument("--data", default="embedded", help="kNN data: embedded, folder:PATH or hf:NAME")
    parser.add_argument("--grid", default="0.05", help="grid step on both sparsity axes (default: 0.05, the sliders')")
    parser.add_argument("--out", required=True, help="the CSV file to write (atomically; rerunning continues)")
    parser.add_argument(
        "--overwrite", action="store_true", help="replace an --out file that is not a landscape CSV of these points"
    )
    _common.add_knn_arguments(
        parser, k_help=f"kNN neighbours (default: {DEFAULT_K})", limit_help="use at most N images per split"
    )
    _common.add_latency_arguments(
        parser,
        modes=("model", "none"),
        batch_help="batch of the latency_batch_ms column",
        latency_help="latency columns from the device's latency model (calibrated once, cached) or left empty",
        table_help="predict the latency columns for another device from a table made by `calibrate` "
        "(labelled in --json)",
    )
    _common.add_align_argument(parser)
    parser.add_argument(
        "--cache",
        default=None,
        help="landscape cache folder (default: the cache root's landscapes/, $SNAPVIT_CACHE_DIR)",
    )
    parser.add_argument("--quiet", action="store_true", help="no progress bar on stderr")
    parser.add_argument(
        "--metrics", default="knn", help="knn (default) or knn,linear: add the linear-probe top-1 column"
    )
    _common.add_linear_arguments(parser)
    _common.add_correction_arguments(parser)
    _common.add_json_argument(parser)
    parser.set_defaults(run=run)


def _landscape_metrics(text: str) -> tuple[str, ...]:
    """--metrics: knn always (the landscape's axis of record), linear on request."""
    from snapvit_core.errors import SnapViTError

    names = tuple(dict.fromkeys(n.strip() for n in text.split(",") if n.strip()))
    unknown = [n for n in names if n not in ("knn", "linear")]
    if unknown or "knn" not in names:
        raise SnapViTError(
            f"landscape --metrics must be knn or knn,linear, got {text[:40]!r}.",
            "Use --metrics knn,linear to add the linear-probe column.",
        )
    return names


def _grid_step(text: str) -> float:
    from snapvit_core.errors import SnapViTError

    try:
        value = float(text)
    except ValueError:
        raise SnapViTError(f"--grid must be a number, got {text!r}.", "Use e.g. --grid 0.05.") from None
    if not math.isfinite(value) or not 0.0 < value <= 0.5:
        raise SnapViTError(f"--grid must be in (0, 0.5], got {text}.", "Use e.g. --grid 0.05.")
    from snapvit_core.landscape.grid import grid_axis

    grid_axis(value)  # refuses a step that gives more configurations than a landscape may hold
    return value


# The columns a landscape's key decides (latency depends on the device, further metrics on request): a CSV
# whose rows agree with the new ones on these holds the same points and may be rewritten without --overwrite.
_KEY_COLUMNS = (
    "mlp_sparsity", "head_sparsity", "knn_top1", "mean_cosine", "params", "flops",
    "realised_mlp_sparsity", "realised_head_sparsity",
)  # fmt: skip


def _key_rows(data: bytes) -> set[tuple[str, ...]] | None:
    """The key columns of each row of a landscape CSV, or None when ``data`` is not one."""
    rows = csv.DictReader(io.StringIO(data.decode("utf-8")))
    if rows.fieldnames is None or tuple(rows.fieldnames[:2]) != _KEY_COLUMNS[:2]:
        return None
    if not set(_KEY_COLUMNS) <= set(rows.fieldnames):
        return None
    return {tuple(row[name] or "" for name in _KEY_COLUMNS) for row in rows}


def _write_csv(out, text: str, overwrite: bool) -> None:
    """Write the CSV over ``out`` only when that is absent, a CSV of the same points, or --overwrite allows it."""
    from snapvit_core.errors import SnapViTError
    from snapvit_core.files.atomic import write_text_atomic
    from snapvit_core.files.guards import guard_destination

    rows = _key_rows(text.encode("utf-8"))
    guard_destination(out, "a landscape CSV of these points", overwrite, lambda data: _key_rows(data) == rows)
    try:
        write_text_atomic(out, text)
    except OSError as error:  # a full disk, a folder made read-only meanwhile: the old file is left as it was
        raise SnapViTError(
            f"Could not write {out}: {error.strerror or error}.",
            "Free some space or choose another --out; the points are cached, so a rerun only writes the CSV.",
        ) from None


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from snapvit_core.files.atomic import check_writable
    from snapvit_core.files.guards import guard_destination
    from snapvit_core.landscape.store import CSV_COLUMNS, LandscapePoint, landscape_key, open_landscape

    step = _grid_step(args.grid)
    out = Path(args.out)
    # before any work: never over a device or FIFO, nor over a file that is not a landscape CSV (--overwrite)
    guard_destination(out, "a landscape CSV", args.overwrite, lambda data: _key_rows(data) is not None)
    check_writable(out, "the landscape CSV")
    table = None
    if args.latency_table:  # read and check before the model loads
        from snapvit_core.latency.table import load_table

        table = load_table(args.latency_table)
    metrics = _landscape_metrics(args.metrics)
    metrics_extra = tuple(m for m in metrics if m != "knn")
    device = _common.resolve_device(args.device)
    explorer = _common.build_explorer(args, device)
    explorer.linear_probe = _common.linear_probe_from_args(args)
    if table is not None:  # refused now (another architecture, a missing batch), not after the fill
        from snapvit_core.errors import SnapViTError
        from snapvit_core.latency.table import use_table

        use_table(explorer, table)
        if args.latency_batch not in table.batches:
            raise SnapViTError(
                f"The latency table has no batch {args.latency_batch}.",
                f"Use --latency-batch with one of {list(table.batches)}, or calibrate with --batch.",
            )
    _common.attach_knn_from_args(explorer, args)
    correction = _common.correction_from_args(args, explorer.backbone.data_config)
    key = landscape_key(explorer, args.data, correction=correction, grid=step)
    landscape = open_landscape(key, cache_dir=args.cache)
    for warning in landscape.warnings:
        _common.warn(warning)
    resumed = len(landscape)
    computed = 0
    with_linear = "linear" in metrics
    todo = landscape.missing("linear_top1" if with_linear else None)
    with tqdm(total=len(todo), desc="landscape", unit="point", disable=args.quiet, file=sys.stderr) as bar:
        for configuration in todo:
            result = explorer.evaluate(
                configuration[0], configuration[1], ("knn", "flops", "params", *metrics_extra), correction=correction
            )
            landscape.add(LandscapePoint.from_result(result))
            computed += 1
            if computed % 10 == 0:
                landscape.save()  # resumable: a rerun continues from here
            bar.update(1)
    landscape.save()
    batches = tuple(sorted({1, args.latency_batch}))
    latency_model = explorer.latency_model if table is not None else None
    if table is None and args.latency == "model":
        latency_model = explorer.ensure_latency_model(batches=batches)
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    for point in landscape.points():
        latency, latency_batch = "", ""
        if latency_model is not None:
            plan = explorer.plan_for(point.mlp_sparsity, point.head_sparsity)
            latency = repr(latency_model.predict_plan(plan, 1).ms)
            latency_batch = repr(latency_model.predict_plan(plan, args.latency_batch).ms)
        writer.writerow(
            [
                repr(point.mlp_sparsity),
                repr(point.head_sparsity),
                "" if point.knn_top1 is None else repr(point.knn_top1),
                "" if point.mean_cosine is None else repr(point.mean_cosine),
                point.params,
                point.flops,
                latency,
                latency_batch,
                repr(point.realised_mlp_sparsity),
                repr(point.realised_head_sparsity),
                "" if point.linear_top1 is None else repr(point.linear_top1),
            ]
        )
    _write_csv(out, buffer.getvalue(), args.overwrite)
    payload = {
        "out": str(out),
        "points": len(landscape),
        "computed": computed,
        "resumed": resumed,
        "cache": str(landscape.path),
        "key": key.digest,
        "latency_batch": args.latency_batch,
        "latency_device": None if latency_model is None else latency_model.key.device,
        "latency_table": None if table is None else {"path": str(args.latency_table), "made_on": table.label},
        "align": key.align,
        "metrics": list(metrics),
        "linear_points": landscape.count("linear_top1"),
        "linear_probe": explorer.linear_probe.describe() if with_linear else None,
    }
    _common.emit(
        payload, args.json, [f"wrote {len(landscape)} configurations to {out} ({computed} computed, {resumed} resumed)"]
    )
    return 0
