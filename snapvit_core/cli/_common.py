"""Arguments and output helpers shared by the commands."""

from __future__ import annotations

import argparse
import json
import sys

from ..backbones import describe_model_ids

MAX_BATCH = 4096  # images per forward pass: 4096 x 3 x 224 x 224 float32 is 2.5 GB
MAX_SEED = 2**32 - 1  # numpy's SeedSequence and torch.manual_seed both take [0, 2**32) everywhere


def seed_value(text: str) -> int:
    """argparse type of --seed: an integer in [0, 2**32)."""
    value = _int(text, "a seed")
    if not 0 <= value <= MAX_SEED:
        raise argparse.ArgumentTypeError(f"seed {text} is outside 0 .. {MAX_SEED}")
    return value


def positive_int(text: str) -> int:
    """argparse type of counts such as --k, --latency-batch, --samples: an integer >= 1."""
    value = _int(text, "a positive integer")
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text} is not a positive integer (use 1 or more)")
    return value


def batch_size(text: str) -> int:
    """argparse type of batch sizes (--latency-batch): 1 .. MAX_BATCH, so a typo cannot ask for 600 GB of images."""
    value = positive_int(text)
    if value > MAX_BATCH:
        raise argparse.ArgumentTypeError(f"{text} is larger than the largest batch, {MAX_BATCH}")
    return value


def _int(text: str, what: str) -> int:
    digits = text.strip()
    if len(digits) > 40 or not digits.lstrip("+-").isdigit():
        raise argparse.ArgumentTypeError(f"{text[:40]!r} is not {what}")
    return int(digits)


def capped_k(k: int, bank_size: int) -> int:
    """The k kNN really uses (at most the bank size); warns when it is smaller than asked."""
    if k > bank_size:
        sys.stderr.write(f"warning: --k {k} is larger than the kNN bank ({bank_size} images); using k={bank_size}.\n")
    return min(k, bank_size)


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


def resolve_device(name: str) -> str:
    import torch

    from ..errors import SnapViTError

    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise SnapViTError(f"Device '{name}' was requested but no CUDA GPU is available.", "Use --device cpu.")
    if name != "cpu" and not name.startswith("cuda"):
        raise SnapViTError(f"Unknown device '{name}'.", "Use cpu, cuda, cuda:N or auto.")
    return name


def emit(payload: dict, as_json: bool, lines: list[str]) -> None:
    """Print ``payload`` as JSON, or ``lines`` for people."""
    if as_json:
        json.dump(payload, sys.stdout, indent=2)
        sys.stdout.write("\n")
    else:
        sys.stdout.write("\n".join(lines) + "\n")
