"""Data-free importance scores: weight magnitude, LAMP and random (sanity baselines, DESIGN section 3).

Each returns the standard (B, M) neuron / (B, H) head scores. Heads are scored on their *value* rows
of qkv, MLP neurons on their fc1 rows (for SwiGLU: the value projection fc1_x / the value half).
This module owns the registry of these methods by name (``DATA_FREE_METHODS``, ``data_free_scores``),
which the explorer, the scoring entry point and the command line share.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from snapvit_core.engine.adapter import BlockLayers, ViTAdapter
from snapvit_core.errors import SnapViTError
from snapvit_core.scoring.scores import ImportanceScores


def _neuron_rows(block: BlockLayers) -> torch.Tensor:
    """(M, D) fc1 rows, one per hidden neuron (the value half for packed GLUs)."""
    return block.fc1.weight.detach()[: block.mlp_hidden].float()


def _head_value_rows(adapter: ViTAdapter, block: BlockLayers) -> torch.Tensor:
    """(H, d * D) value-row weights of each head, flattened per head."""
    values = block.qkv.weight.detach()[adapter.value_rows(block)].float()  # (H * d, D)
    return values.reshape(block.num_heads, -1)


def magnitude_scores(model: nn.Module) -> ImportanceScores:
    """L2 norm of each neuron's fc1 row and of each head's value rows."""
    adapter = ViTAdapter(model)
    mlp = torch.stack([_neuron_rows(b).norm(dim=1) for b in adapter.blocks])
    heads = torch.stack([_head_value_rows(adapter, b).norm(dim=1) for b in adapter.blocks])
    return ImportanceScores(mlp, heads, metadata={"method": "magnitude"})


def random_scores(model: nn.Module, seed: int = 0) -> ImportanceScores:
    """Uniform random scores from an explicit seeded generator."""
    shape = ViTAdapter(model).shape()
    generator = torch.Generator().manual_seed(seed)
    mlp = torch.rand(shape.num_blocks, shape.mlp_hidden, generator=generator)
    heads = torch.rand(shape.num_blocks, shape.num_heads, generator=generator)
    return ImportanceScores(mlp, heads, metadata={"method": "random", "config": {"seed": seed}})


def lamp_weight_scores(weight: torch.Tensor) -> torch.Tensor:
    """LAMP score of every weight in one layer, same shape as ``weight``.

    score(w) = sqrt(w^2 / sum of w'^2 over all weights w' with |w'| >= |w|) — the published
    baseline took the square root of the LAMP ratio.
    """
    squared = weight.detach().float().flatten().pow(2)
    order = torch.argsort(squared)  # ascending magnitude
    sorted_sq = squared[order]
    # Suffix sums: sum of squares of all weights not smaller than this one.
    suffix = sorted_sq.flip(0).cumsum(0).flip(0)
    ratio = torch.empty_like(squared)
    ratio[order] = sorted_sq / suffix.clamp_min(torch.finfo(torch.float32).tiny)
    return ratio.sqrt().reshape(weight.shape)


def lamp_scores(model: nn.Module) -> ImportanceScores:
    """LAMP computed on fc1 and on the value rows, averaged per unit."""
    adapter = ViTAdapter(model)
    mlp, heads = [], []
    for block in adapter.blocks:
        mlp.append(lamp_weight_scores(_neuron_rows(block)).mean(dim=1))
        heads.append(lamp_weight_scores(_head_value_rows(adapter, block)).mean(dim=1))
    return ImportanceScores(torch.stack(mlp), torch.stack(heads), metadata={"method": "lamp"})


# Methods that need neither data nor gradients: name -> scores(model, seed), in the order menus list them.
DATA_FREE_METHODS: dict[str, Callable[[nn.Module, int], ImportanceScores]] = {
    "magnitude": lambda model, seed: magnitude_scores(model),
    "random": lambda model, seed: random_scores(model, seed),
    "lamp": lambda model, seed: lamp_scores(model),
}


def data_free_scores(method: str, model: nn.Module, seed: int = 0) -> ImportanceScores:
    """Scores of a data-free method by name (``seed`` is used by ``random`` only)."""
    if method not in DATA_FREE_METHODS:
        raise SnapViTError(
            f"Unknown data-free method '{method}'.",
            f"Choose one of {', '.join(DATA_FREE_METHODS)}, or pass a scores file with --scores.",
        )
    return DATA_FREE_METHODS[method](model, seed)
