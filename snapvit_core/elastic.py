"""The elastic engine (DESIGN section 5): reorder once by score, then cut to any sparsity instantly.

``plan_pruning`` turns scores + (MLP, head) sparsity into per-block keep counts (pure, no model).
``ElasticViT`` owns a private, reordered copy of a backbone; ``prune_to`` truncates a working view
of it by slicing weights. Because every block's units are sorted by descending score, the units a
plan keeps are always a prefix, so truncation is a slice and going denser again just re-slices the
reordered original. The caller's model is never mutated.
"""

from __future__ import annotations

import copy
import itertools
import logging
import math
from dataclasses import dataclass

import torch
from torch import nn

from .adapter import ArchitectureShape, ViTAdapter, choose_attention_kernel
from .errors import SnapViTError
from .scores import ImportanceScores
from .surgery import select_units

log = logging.getLogger(__name__)


def check_sparsity(value: object, name: str = "sparsity") -> float:
    """Return ``value`` as a float in [0, 1), or raise a SnapViTError saying what is allowed."""
    try:
        number = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise SnapViTError(
            f"{name} must be a number in [0, 1), got {value!r}.",
            "Sparsity is the fraction removed: 0 keeps everything, 0.5 removes half.",
        ) from None
    if not math.isfinite(number) or not 0.0 <= number < 1.0:
        raise SnapViTError(
            f"{name} must be in [0, 1), got {value!r}.",
            "Sparsity is the fraction removed: 0 keeps everything, 0.5 removes half; 1 would remove all.",
        )
    return number


def plan_keep_counts(scores: torch.Tensor, sparsity: float, min_keep_ratio: float) -> list[int]:
    """Per-block keep counts for one unit type under a global score threshold.

    Args:
        scores: (B, U) scores, one row per block.
        sparsity: fraction of all B*U units to remove, in [0, 1).
        min_keep_ratio: each block keeps at least floor(U * min_keep_ratio) of its best units.

    Returns:
        B keep counts. A block keeps its units scoring strictly above the n-th smallest
        (protection-adjusted) score, n = floor(B * U * sparsity); n = 0 keeps everything.
    """
    sparsity = check_sparsity(sparsity)
    num_blocks, units = scores.shape
    total = num_blocks * units
    num_pruned = int(total * sparsity)
    if num_pruned == 0:
        return [units] * num_blocks
    protected = int(units * min_keep_ratio)
    adjusted = scores.detach().to(torch.float64).clone()
    if protected > 0:
        top = adjusted.topk(protected, dim=1).indices  # (B, protected)
        adjusted.scatter_(1, top, math.inf)
    # Never let the threshold reach the protected (+inf) units.
    num_pruned = min(num_pruned, total - num_blocks * protected)
    if num_pruned <= 0:
        return [units] * num_blocks
    threshold = adjusted.flatten().kthvalue(num_pruned).values
    return [int(c) for c in (adjusted > threshold).sum(dim=1)]


@dataclass(frozen=True)
class PruningPlan:
    """What a (MLP, head) sparsity request keeps in each block."""

    mlp_sparsity: float  # requested fraction of all MLP neurons removed
    head_sparsity: float  # requested fraction of all heads removed
    kept_neurons: tuple[int, ...]  # per block
    kept_heads: tuple[int, ...]  # per block

    total_neurons: int = 0  # B * M of the unpruned model
    total_heads: int = 0  # B * H of the unpruned model

    @property
    def realised_mlp_sparsity(self) -> float:
        """Fraction actually removed (ties at the threshold and minimum keeps make it differ)."""
        return 1.0 - sum(self.kept_neurons) / (self.total_neurons or 1)

    @property
    def realised_head_sparsity(self) -> float:
        return 1.0 - sum(self.kept_heads) / (self.total_heads or 1)

    def to_dict(self) -> dict:
        return {
            "mlp_sparsity": self.mlp_sparsity,
            "head_sparsity": self.head_sparsity,
            "kept_neurons": list(self.kept_neurons),
            "kept_heads": list(self.kept_heads),
            "realised_mlp_sparsity": self.realised_mlp_sparsity,
            "realised_head_sparsity": self.realised_head_sparsity,
        }


def plan_pruning(scores: ImportanceScores, mlp_sparsity: float, head_sparsity: float) -> PruningPlan:
    """Keep counts for both unit types from the scores alone (no model needed)."""
    mlp_sparsity = check_sparsity(mlp_sparsity, "MLP sparsity")
    head_sparsity = check_sparsity(head_sparsity, "head sparsity")
    return PruningPlan(
        mlp_sparsity=mlp_sparsity,
        head_sparsity=head_sparsity,
        kept_neurons=tuple(plan_keep_counts(scores.mlp, mlp_sparsity, scores.min_mlp_keep_ratio)),
        kept_heads=tuple(plan_keep_counts(scores.heads, head_sparsity, scores.min_head_keep_ratio)),
        total_neurons=scores.mlp.numel(),
        total_heads=scores.heads.numel(),
    )


def check_scores_fit(scores: ImportanceScores, shape: ArchitectureShape, model_name: str = "the model") -> None:
    """Refuse scores computed for another architecture, naming both shapes."""
    if len(set(shape.heads_per_block)) != 1 or len(set(shape.mlp_hidden_per_block)) != 1:
        raise SnapViTError(
            f"{model_name} is already pruned (heads per block {list(shape.heads_per_block)}).",
            "Load the unpruned backbone; scores are defined on the full architecture.",
        )
    expected_mlp = (shape.num_blocks, shape.mlp_hidden)
    expected_heads = (shape.num_blocks, shape.num_heads)
    if tuple(scores.mlp.shape) != expected_mlp or tuple(scores.heads.shape) != expected_heads:
        source = scores.metadata.get("backbone") or scores.metadata.get("published_model_type")
        raise SnapViTError(
            f"These scores do not fit {model_name}: scores are MLP {list(scores.mlp.shape)} / heads "
            f"{list(scores.heads.shape)}"
            + (f" (made for '{source}')" if source else "")
            + f", the model needs MLP {list(expected_mlp)} / heads {list(expected_heads)}.",
            "Load scores computed for this backbone, or compute them with `python -m snapvit_core score`.",
        )


class ElasticViT:
    """A private, score-reordered copy of a ViT that can be truncated to any sparsity.

    Args:
        model: the unpruned backbone. It is deep-copied; the caller's model is never touched.
        scores: importance scores for that backbone (checked against its shape).
        model_name: used in error messages.
    """

    def __init__(self, model: nn.Module, scores: ImportanceScores, model_name: str = "the model") -> None:
        check_scores_fit(scores, ViTAdapter(model).shape(), model_name)
        self.scores = scores
        self.full = copy.deepcopy(model).eval()  # reordered original; read-only after __init__
        for parameter in self.full.parameters():
            parameter.requires_grad_(False)
        choose_attention_kernel(self.full)  # a private copy: the caller's model stays as it is
        self.full_adapter = ViTAdapter(self.full)
        # Descending-score order per block; stable so equal scores keep their original order.
        self.mlp_order = torch.argsort(scores.mlp, dim=1, descending=True, stable=True)  # (B, M)
        self.head_order = torch.argsort(scores.heads, dim=1, descending=True, stable=True)  # (B, H)
        with torch.no_grad():
            for block, mlp_perm, head_perm in zip(self.full_adapter.blocks, self.mlp_order, self.head_order):
                select_units(block, block, mlp_perm, head_perm)  # in place: a permutation of all units
        # The working model shares every tensor with `full`; prune_to swaps in sliced views.
        memo = {id(t): t for t in itertools.chain(self.full.parameters(), self.full.buffers())}
        self.model = copy.deepcopy(self.full, memo)
        self.adapter = ViTAdapter(self.model)
        self.plan = plan_pruning(scores, 0.0, 0.0)

    @property
    def shape(self) -> ArchitectureShape:
        return self.full_adapter.shape()

    def plan_for(self, mlp_sparsity: float, head_sparsity: float) -> PruningPlan:
        return plan_pruning(self.scores, mlp_sparsity, head_sparsity)

    def prune_to(self, mlp_sparsity: float, head_sparsity: float) -> nn.Module:
        """Truncate the working model to the requested sparsity and return it."""
        return self.apply_plan(self.plan_for(mlp_sparsity, head_sparsity))

    def apply_plan(self, plan: PruningPlan) -> nn.Module:
        """Truncate the working model to ``plan``'s keep counts (always from the full reordered copy)."""
        if len(plan.kept_heads) != self.full_adapter.num_blocks:
            raise SnapViTError(f"The plan has {len(plan.kept_heads)} blocks, the model {self.full_adapter.num_blocks}.")
        with torch.no_grad():
            for source, target, heads, neurons in zip(
                self.full_adapter.blocks, self.adapter.blocks, plan.kept_heads, plan.kept_neurons
            ):
                select_units(source, target, neurons, heads)  # prefixes of the reordered units
        self.plan = plan
        return self.model

    def kept_masks(self, plan: PruningPlan | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Boolean keep masks in the *original* unit order: (B, M) neurons and (B, H) heads."""
        plan = plan or self.plan
        neuron_mask = torch.zeros_like(self.scores.mlp, dtype=torch.bool)
        head_mask = torch.zeros_like(self.scores.heads, dtype=torch.bool)
        for i, (heads, neurons) in enumerate(zip(plan.kept_heads, plan.kept_neurons)):
            neuron_mask[i, self.mlp_order[i, :neurons]] = True
            head_mask[i, self.head_order[i, :heads]] = True
        return neuron_mask, head_mask
