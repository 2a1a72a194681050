"""``calibrate``: time a backbone's latency pieces on this device and write a portable latency table."""

from __future__ import annotations

import argparse
from pathlib import Path

from snapvit_core.cli._common import add_json_argument, batch_size, emit, positive_int, resolve_device
from snapvit_core.errors import SnapViTError
from snapvit_core.files.atomic import check_writable
from snapvit_core.latency.calibration import MAX_BUDGET_S, MAX_ROUNDS

DTYPES = {"fp32": "float32", "bf16": "bfloat16"}
TABLE_BATCHES = (1, 32)  # always calibrated: what the budget finder and the app's cost view ask for


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "calibrate",
        help="time the latency pieces of a model on this device (no data, random weights) and write a latency "
        "table for `evaluate --latency-table`",
    )
    parser.add_argument("--model", default="embedded", help="model id (architecture only: weights are random)")
    parser.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N or auto (default: cpu)")
    parser.add_argument("--dtype", choices=sorted(DTYPES), default="fp32", help="weights and inputs (default: fp32)")
    parser.add_argument(
        "--batch", type=batch_size, default=32, help="batch size calibrated besides batches 1 and 32 (default: 32)"
    )
    parser.add_argument("--runtime", choices=("torch", "onnxruntime"), default="torch", help="(default: torch)")
    parser.add_argument("--budget-s", type=float, default=1.5, help="timing seconds per batch size (default: 1.5)")
    parser.add_argument(
        "--min-rounds", type=_rounds, default=3, help=f"interleaved rounds at least (default: 3, at most {MAX_ROUNDS})"
    )
    parser.add_argument(
        "--max-rounds",
        type=_rounds,
        default=21,
        help=f"interleaved rounds at most, while they fit in the budget (default: 21, at most {MAX_ROUNDS})",
    )
    parser.add_argument("--out", required=True, help="the table to write (.json)")
    parser.add_argument("--overwrite", action="store_true", help="replace an --out file that is not a latency table")
    add_json_argument(parser)
    parser.set_defaults(run=run)


def _rounds(text: str) -> int:
    """argparse type of --min-rounds / --max-rounds: 1 .. MAX_ROUNDS (they size the timing loops)."""
    value = positive_int(text)
    if value > MAX_ROUNDS:
        raise argparse.ArgumentTypeError(f"{text} is more than the most rounds, {MAX_ROUNDS}")
    return value


def run(args: argparse.Namespace) -> int:
    import torch

    from snapvit_core.engine.backbones import load_backbone
    from snapvit_core.files.guards import guard_destination
    from snapvit_core.latency.calibration import calibrate_backbone
    from snapvit_core.latency.table import is_latency_table, make_table, save_table

    out = Path(args.out)
    if out.suffix.lower() != ".json":
        raise SnapViTError(f"--out {out}: a latency table is a .json file.", f"Use e.g. {out.with_suffix('.json')}.")
    guard_destination(out, "a latency table", args.overwrite, is_latency_table)  # never a device or others' file
    check_writable(out, "--out")  # fail now, not after minutes of timing
    if args.runtime == "onnxruntime" and args.dtype != "fp32":
        raise SnapViTError("onnxruntime tables are fp32.", "Use --dtype fp32 with --runtime onnxruntime.")
    if not 0 < args.budget_s <= MAX_BUDGET_S:
        raise SnapViTError(f"--budget-s {args.budget_s} is outside (0, {MAX_BUDGET_S:.0f}].", "Use e.g. 1.5.")
    device = resolve_device(args.device)
    backbone = load_backbone(args.model, random_init=True, device=device)  # timing does not depend on weights
    backbone.model.to(getattr(torch, DTYPES[args.dtype]))
    batches = tuple(sorted({*TABLE_BATCHES, args.batch}))
    model = calibrate_backbone(
        backbone,
        device,
        batches,
        budget_s=args.budget_s,
        min_rounds=args.min_rounds,
        max_rounds=max(args.min_rounds, args.max_rounds),
        runtime=args.runtime,
    )
    made = make_table(model, backbone.model_id, backbone.shape, device, args.runtime)
    guard_destination(out, "a latency table", args.overwrite, is_latency_table)  # again: made meanwhile?
    table = save_table(made, out)
    full = {batch: model.tables[batch].full_ms[0] for batch in batches}
    payload = {
        "out": str(table),
        "model": backbone.model_id,
        "device": made.device,
        "runtime": args.runtime,
        "dtype": DTYPES[args.dtype],
        "batches": list(batches),
        "threads": model.key.threads,
        "unpruned_ms": {str(b): ms for b, ms in full.items()},
        "seconds": model.seconds,
    }
    lines = [
        f"wrote {table}: {backbone.model_id} on {payload['device']} ({args.runtime}, {payload['dtype']}, "
        f"{payload['threads']} threads) in {model.seconds:.1f} s",
        *(f"unpruned forward at batch {b}: {ms:.2f} ms" for b, ms in full.items()),
    ]
    emit(payload, args.json, lines)
    return 0
