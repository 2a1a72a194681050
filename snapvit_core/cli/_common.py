"""Arguments and output helpers shared by the commands."""

from __future__ import annotations

import argparse
import json
import sys

from ..backbones import describe_model_ids


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
