"""``score``: compute importance scores of a backbone from images and save them as a scores file."""

from __future__ import annotations

import argparse
import sys
import time

from tqdm import tqdm

from snapvit_core.cli import _common
from snapvit_core.data import DATA_SPEC_HELP
from snapvit_core.scoring.compute import METHODS, SQUARED_GRADIENTS

_PROGRESS_EVERY_S = 2.0  # at most one progress line per this many seconds when stderr is not a terminal


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("score", help="compute importance scores (label-free SnapViT or a baseline)")
    _common.add_model_arguments(parser)
    parser.add_argument("--data", default="embedded", help=f"images: {DATA_SPEC_HELP} (default: embedded)")
    # Checked by the library (not argparse choices) so an unknown method gets the library's message.
    parser.add_argument("--method", default="snapvit", help=f"one of {', '.join(METHODS)} (default: snapvit)")
    parser.add_argument(
        "--samples", type=_common.positive_int, default=1000, help="images used (default: 1000, as published)"
    )
    parser.add_argument(
        "--seed", type=_common.seed_value, default=0, help="seed of the image subset and the crops (default: 0)"
    )
    parser.add_argument("--batch-size", type=_common.positive_int, default=16, help="images per step (default: 16)")
    parser.add_argument(
        "--squared-gradients",
        default="accumulated",
        help=f"one of {', '.join(SQUARED_GRADIENTS)} (default: accumulated, as DESIGN and the published code; "
        "per-image: mean of each image's squared gradient, the paper's equation; snapvit and cross-entropy only)",
    )
    _common.add_precision_argument(parser)
    parser.add_argument("--out", required=True, help="scores file to write (.safetensors), replaced atomically")
    _common.add_json_argument(parser)
    parser.set_defaults(run=run)


def _progress_bar(verbose: bool):
    """A progress callback for stderr: tqdm's bar on a terminal; with -v into a log, a plain line at most every
    ``_PROGRESS_EVERY_S`` (a log keeps lines, not a bar redrawn in place); else None."""
    if sys.stderr.isatty():
        bar = tqdm(total=100, desc="scoring", file=sys.stderr, bar_format="{desc} {percentage:5.1f}%|{bar}| {unit}")

        def draw(fraction: float, rate: float, eta: float) -> None:
            bar.n, bar.unit = min(100.0, 100.0 * fraction), f"{rate:.1f} img/s  ETA {eta:.0f} s"
            if fraction >= 1.0:
                bar.close()
            else:
                bar.update(0)  # redrawn at most every mininterval

        return draw
    if not verbose:
        return None
    last = [0.0]

    def log(fraction: float, rate: float, eta: float) -> None:
        now = time.monotonic()
        if fraction < 1.0 and now - last[0] < _PROGRESS_EVERY_S:
            return
        last[0] = now
        sys.stderr.write(f"scoring {100 * fraction:5.1f}%  {rate:.1f} img/s  ETA {eta:.0f} s\n")

    return log


def run(args: argparse.Namespace) -> int:
    from snapvit_core.data import load_images, parse_data_spec
    from snapvit_core.engine.backbones import load_backbone
    from snapvit_core.engine.precision import autocast_dtype
    from snapvit_core.runtime.distributed import broadcast_module, is_main
    from snapvit_core.scoring.compute import ScoringConfig, compute_scores
    from snapvit_core.scoring.scores_io import save_scores

    config = ScoringConfig(
        method=args.method,
        samples=args.samples,
        seed=args.seed,
        batch_size=args.batch_size,
        squared_gradients=args.squared_gradients,
        precision=args.precision,
    )
    out = _common.scores_out_path(args.out)
    if config.needs_images:
        parse_data_spec(args.data)  # a typo fails before the model loads
    device = _common.resolve_device(args.device)
    if config.needs_images:
        autocast_dtype(config.precision, device)  # bf16 where emulated: refused before loading
    backbone = load_backbone(args.model, args.random_init, device)
    broadcast_module(backbone.model)  # torchrun: every rank scores the same weights
    image_set = None
    if config.needs_images:  # decoded one at a time while scoring: memory does not grow with --samples
        image_set = load_images(args.data, "train", limit=config.samples, seed=config.seed, lazy=True)
    scores = compute_scores(
        backbone.model,
        image_set,
        backbone.data_config,
        config,
        device=device,
        progress=_progress_bar(getattr(args, "verbose", False)),
        model_id=backbone.model_id,
    ).with_metadata(random_init=backbone.random_init)
    path = save_scores(scores, out) if is_main() else out  # torchrun: rank 0 writes
    payload = {
        "method": config.method,
        "squared_gradients": config.squared_gradients,
        "precision": config.precision,
        "samples": scores.metadata["samples"],
        "seconds": scores.metadata["seconds"],
        "out": str(path),
        "model": backbone.model_id,
        "data": args.data if image_set is not None else None,
        "skipped": dict(image_set.skipped) if image_set is not None else {},
    }
    lines = [
        f"method   {config.method}"
        + (" (data-free)" if image_set is None else "")
        + (f" ({config.squared_gradients} squared gradients)" if config.squared_gradients != "accumulated" else ""),
        f"model    {backbone.model_id}" + (" (random init)" if backbone.random_init else ""),
        f"samples  {image_set.describe()}" if image_set is not None else "samples  0 (no images needed)",
        f"seconds  {payload['seconds']:.1f}",
        f"scores   {scores.shape_summary} -> {path}",
    ]
    _common.emit(payload, args.json, lines)
    return 0
