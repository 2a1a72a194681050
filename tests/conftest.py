"""Shared test fixtures: small random-init ViTs of the real timm architectures, built locally.

The library is imported as installed (``pip install -e .``, what ``make test`` does), so no path edits.
"""

from __future__ import annotations

import os
import resource
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

ROOT = Path(__file__).resolve().parents[1]
# Hermetic caches (latency models, computed landscapes) per test session; subprocesses inherit it.
os.environ.setdefault("SNAPVIT_CACHE_DIR", tempfile.mkdtemp(prefix="snapvit-test-cache-"))

SHARED_REFERENCE = ROOT.parent / "shared" / "reference"


def make_vit(
    mlp: str = "standard",
    qkv_bias: bool = True,
    fused_attn: bool = True,
    depth: int = 3,
    embed_dim: int = 48,
    num_heads: int = 6,
    img_size: int = 32,
    patch_size: int = 8,
    seed: int = 0,
    **kwargs,
) -> torch.nn.Module:
    """A tiny random-init timm VisionTransformer; ``mlp`` in {standard, glu-packed, swiglu}."""
    from timm.layers import GluMlp, Mlp, SwiGLU
    from timm.models.vision_transformer import VisionTransformer

    mlp_layer = {"standard": Mlp, "glu-packed": GluMlp, "swiglu": SwiGLU}[mlp]
    torch.manual_seed(seed)
    model = VisionTransformer(
        img_size=img_size,
        patch_size=patch_size,
        embed_dim=embed_dim,
        depth=depth,
        num_heads=num_heads,
        mlp_ratio=4.0,
        qkv_bias=qkv_bias,
        mlp_layer=mlp_layer,
        num_classes=10,
        **kwargs,
    )
    for block in model.blocks:
        block.attn.fused_attn = fused_attn
    return model.eval()


@pytest.fixture
def tiny_vit() -> torch.nn.Module:
    return make_vit()


FAST_CALIBRATION = ["--budget-s", "0.01", "--min-rounds", "2"]  # calibration in well under a second


@pytest.fixture(scope="session")
def latency_table_path(tmp_path_factory) -> Path:
    """A latency table of the embedded backbone at batches 1 and 4, calibrated once per test session."""
    from snapvit_core.cli import main

    path = tmp_path_factory.mktemp("table") / "embedded.json"
    assert main(["calibrate", "--model", "embedded", "--batch", "4", "--out", str(path), *FAST_CALIBRATION]) == 0
    return path


class LargestTensor(TorchDispatchMode):
    """``with LargestTensor() as recorded:`` records the bytes of the largest tensor any operation creates
    (``recorded.largest``): for tests that a computation works in chunks and never materialises a whole matrix."""

    def __init__(self) -> None:
        super().__init__()
        self.largest = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for tensor in out if isinstance(out, (tuple, list)) else (out,):
            if isinstance(tensor, torch.Tensor):
                self.largest = max(self.largest, tensor.numel() * tensor.element_size())
        return out


def export_from(backbone, model: torch.nn.Module, directory: Path, *, plan, pruning: dict | None = None, **options):
    """export_pruned of ``model``, pruned from ``backbone`` by ``plan``, with the backbone's architecture and data
    config (``options``: export_pruned's other keywords, e.g. scores, onnx)."""
    from snapvit_core.export.writer import architecture_spec, export_pruned

    architecture, args = architecture_spec(backbone)
    return export_pruned(
        model,
        directory,
        architecture=architecture,
        model_args=args,
        data_config=backbone.data_config,
        pruning=pruning or {},
        plan=plan,
        **options,
    )


def small_landscape_argv(limit: int) -> list[str]:
    """``landscape`` of the embedded backbone's magnitude scores on the 0.5 grid (4 points), kNN on ``limit`` images."""
    return ["landscape", "--model", "embedded", "--method", "magnitude", "--grid", "0.5", "--limit", str(limit)]


def option_combinations(options: tuple[str, ...]) -> list[tuple[str, ...]]:
    """Every subset of ``options`` (for tests that must hold with every combination of flags)."""
    import itertools

    return [combo for n in range(len(options) + 1) for combo in itertools.combinations(options, n)]


def with_every_combination(options: tuple[str, ...]):
    """Parametrizes a test's ``chosen`` with every subset of ``options`` (ids like ``knn+onnx``, ``plain``)."""
    return pytest.mark.parametrize("chosen", option_combinations(options), ids=lambda combo: "+".join(combo) or "plain")


def run_limited(argv: list[str], memory_bytes: int, timeout: float = 240) -> subprocess.CompletedProcess:
    """Run ``python ARGV...`` from the repository root with its address space capped (RLIMIT_AS) at
    ``memory_bytes``, so a test of a memory bomb fails (MemoryError, killed) instead of exhausting the machine."""

    def cap() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (memory_bytes, memory_bytes))

    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    return subprocess.run(
        [sys.executable, *argv], cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout, preexec_fn=cap
    )
