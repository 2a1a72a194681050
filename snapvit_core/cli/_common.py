"""Arguments and output helpers shared by the commands (model, scores, sparsity, correction, --out, JSON)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from ..backbones import describe_model_ids, load_backbone
from ..data_free import DATA_FREE_METHODS, data_free_scores
from ..devices import resolve_device
from ..errors import SnapViTError
from ..explorer import Explorer


def add_model_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", default="embedded", help=f"model id: {describe_model_ids()} (default: embedded)")
    parser.add_argument(
        "--random-init", action="store_true", help="build the architecture without loading weights (timing, tests)"
    )
    parser.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N or auto (default: cpu)")


def add_sparsity_arguments(parser: argparse.ArgumentParser) -> None:
    # Parsed as text and checked by the library, so a bad value gets the library's clear message.
    parser.add_argument("--mlp-sparsity", required=True, help="fraction of MLP neurons removed, in [0, 1)")
    parser.add_argument("--head-sparsity", required=True, help="fraction of attention heads removed, in [0, 1)")


def add_json_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of a table")


def add_correction_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("weight correction (SparseGPT-style, DESIGN section 6)")
    group.add_argument("--correct", action="store_true", help="correct fc2 and attn.proj of the pruned model")
    group.add_argument("--correction-samples", type=int, default=1000, help="calibration images (default: 1000)")
    group.add_argument("--correction-data", default=None, help="calibration data source (default: --data)")
    group.add_argument("--damping", default="mean", help="mean (default), max or percentile")
    group.add_argument("--damping-fraction", type=float, default=0.01, help="damping fraction (default: 0.01)")


def correction_from_args(args: argparse.Namespace, data_config: dict) -> tuple | None:
    """(CorrectionConfig, calibration images) when --correct is given, else None."""
    if not args.correct:
        return None
    from ..correction import CorrectionConfig
    from ..data import load_images, preprocess

    config = CorrectionConfig(
        samples=args.correction_samples, damping=args.damping, damping_fraction=args.damping_fraction
    )
    source = args.correction_data or getattr(args, "data", None) or "embedded"
    images = load_images(source, "train", limit=config.samples, seed=0)
    return config, preprocess(images.images, data_config)


def add_scores_arguments(parser: argparse.ArgumentParser) -> None:
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--scores", help="importance scores file (.safetensors, or a published SnapViT .pt)")
    source.add_argument(
        "--method",
        choices=sorted(DATA_FREE_METHODS),
        help="data-free scores to use when no --scores is given (default: magnitude)",
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of the random method (default: 0)")


def build_explorer(args: argparse.Namespace, device: str) -> Explorer:
    from ..distributed import broadcast_module
    from ..scores_io import load_scores

    backbone = load_backbone(args.model, args.random_init, device)
    broadcast_module(backbone.model)  # torchrun: every rank evaluates the same weights
    scores = (
        load_scores(args.scores)
        if args.scores
        else data_free_scores(args.method or "magnitude", backbone.model, args.seed)
    )
    return Explorer(backbone, scores, device)


def scores_out_path(value: str) -> Path:
    """``--out`` of a command that writes a scores file, checked before the (long) pass, not after it."""
    from ..scores_io import SUFFIX

    out = Path(value)
    if out.suffix.lower() != SUFFIX:
        raise SnapViTError(
            f"--out {out}: a scores file name must end in {SUFFIX}.", f"Use e.g. {out.with_suffix(SUFFIX)}."
        )
    return out


def emit(payload: dict, as_json: bool, lines: list[str]) -> None:
    """Print ``payload`` as JSON, or ``lines`` for people."""
    if as_json:
        json.dump(payload, sys.stdout, indent=2)
        sys.stdout.write("\n")
    else:
        sys.stdout.write("\n".join(lines) + "\n")


__all__ = [
    "add_correction_arguments",
    "add_json_argument",
    "add_model_arguments",
    "add_scores_arguments",
    "add_sparsity_arguments",
    "build_explorer",
    "correction_from_args",
    "emit",
    "resolve_device",
    "scores_out_path",
]
