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

from .adapter import MLP_GLU_PACKED, ArchitectureShape, BlockLayers, ViTAdapter
from .errors import SnapViTError
from .scores import ImportanceScores

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


def _parameter(tensor: torch.Tensor) -> nn.Parameter:
    return nn.Parameter(tensor, requires_grad=False)


def _head_rows(num_heads_total: int, head_dim: int, keep: int, chunks: int) -> torch.Tensor:
    """Row indices of the first ``keep`` heads in each of ``chunks`` stacked [H * d] chunks."""
    width = num_heads_total * head_dim
    first = torch.arange(keep * head_dim)
    return torch.cat([first + c * width for c in range(chunks)])


def _set_linear(linear: nn.Linear, weight: torch.Tensor, bias: torch.Tensor | None) -> None:
    linear.weight = _parameter(weight)
    if bias is not None:
        linear.bias = _parameter(bias)
    linear.out_features, linear.in_features = weight.shape


def _set_vector(module: nn.Module, name: str, vector: torch.Tensor) -> None:
    """Replace a parameter or buffer of ``module`` by ``vector`` (same kind)."""
    if name in module._buffers:
        module._buffers[name] = vector
    else:
        setattr(module, name, _parameter(vector))


def _slice_norm(norm: nn.Module, source: nn.Module, keep: int) -> None:
    """Slice a LayerNorm over the pruned width (inside-MLP / inside-attention norms).

    Such a norm sees a different mean and variance once units are removed, so pruned == masked
    only holds approximately for backbones that have one; standard ViTs do not.
    """
    if isinstance(source, nn.LayerNorm) and source.weight is not None:
        norm.weight = _parameter(source.weight.detach()[:keep])
        if source.bias is not None:
            norm.bias = _parameter(source.bias.detach()[:keep])
        norm.normalized_shape = (keep,)


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
        self.full_adapter = ViTAdapter(self.full)
        # Descending-score order per block; stable so equal scores keep their original order.
        self.mlp_order = torch.argsort(scores.mlp, dim=1, descending=True, stable=True)  # (B, M)
        self.head_order = torch.argsort(scores.heads, dim=1, descending=True, stable=True)  # (B, H)
        with torch.no_grad():
            for block, mlp_perm, head_perm in zip(self.full_adapter.blocks, self.mlp_order, self.head_order):
                _reorder_mlp(block, mlp_perm)
                _reorder_heads(block, head_perm)
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
                _truncate_heads(source, target, heads)
                _truncate_mlp(source, target, neurons)
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


def _reorder_mlp(block: BlockLayers, perm: torch.Tensor) -> None:
    hidden = block.mlp_hidden
    for linear in block.mlp_inputs:
        rows = torch.cat([perm, perm + hidden]) if block.mlp_kind == MLP_GLU_PACKED else perm
        linear.weight.data = linear.weight.data[rows].contiguous()
        if linear.bias is not None:
            linear.bias.data = linear.bias.data[rows].contiguous()
    block.mlp_output.weight.data = block.mlp_output.weight.data[:, perm].contiguous()
    norm = getattr(block.mlp, "norm", None)
    if isinstance(norm, nn.LayerNorm) and norm.weight is not None and norm.weight.numel() == hidden:
        norm.weight.data = norm.weight.data[perm].contiguous()
        if norm.bias is not None:
            norm.bias.data = norm.bias.data[perm].contiguous()


def _reorder_heads(block: BlockLayers, perm: torch.Tensor) -> None:
    heads, head_dim = block.num_heads, block.head_dim
    # Row r of a [q | k | v] chunk belongs to head r // head_dim.
    within = (perm[:, None] * head_dim + torch.arange(head_dim)).flatten()  # (H * d,)
    rows = torch.cat([within + c * heads * head_dim for c in range(3)])
    block.qkv.weight.data = block.qkv.weight.data[rows].contiguous()
    if block.qkv.bias is not None:
        block.qkv.bias.data = block.qkv.bias.data[rows].contiguous()
    block.proj.weight.data = block.proj.weight.data[:, within].contiguous()
    for name in block.head_vectors:  # separate q/k/v bias vectors (Eva): H * d entries each
        vector = getattr(block.attention, name)
        vector.data = vector.data[within].contiguous()
    norm = getattr(block.attention, "norm", None)
    if isinstance(norm, nn.LayerNorm) and norm.weight is not None and norm.weight.numel() == heads * head_dim:
        norm.weight.data = norm.weight.data[within].contiguous()
        if norm.bias is not None:
            norm.bias.data = norm.bias.data[within].contiguous()


def _truncate_heads(source: BlockLayers, target: BlockLayers, keep: int) -> None:
    total, head_dim = source.num_heads, source.head_dim
    if keep == total:
        _set_linear(target.qkv, source.qkv.weight, source.qkv.bias)
        _set_linear(target.proj, source.proj.weight, source.proj.bias)
    else:
        rows = _head_rows(total, head_dim, keep, chunks=3)
        bias = source.qkv.bias.detach()[rows] if source.qkv.bias is not None else None
        _set_linear(target.qkv, source.qkv.weight.detach()[rows], bias)
        # Column slice of proj; made contiguous so the smaller matmul runs at full speed.
        _set_linear(target.proj, source.proj.weight.detach()[:, : keep * head_dim].contiguous(), source.proj.bias)
    for name in source.head_vectors:
        vector = getattr(source.attention, name).detach()[: keep * head_dim]
        _set_vector(target.attention, name, vector)
    target.set_num_heads(keep)
    _slice_norm(getattr(target.attention, "norm", None), getattr(source.attention, "norm", None), keep * head_dim)


def _truncate_mlp(source: BlockLayers, target: BlockLayers, keep: int) -> None:
    hidden = source.mlp_hidden
    for src, dst in zip(source.mlp_inputs, target.mlp_inputs):
        if keep == hidden:
            _set_linear(dst, src.weight, src.bias)
            continue
        if source.mlp_kind == MLP_GLU_PACKED:
            rows = torch.cat([torch.arange(keep), torch.arange(keep) + hidden])
            weight = src.weight.detach()[rows]
            bias = src.bias.detach()[rows] if src.bias is not None else None
        else:
            weight = src.weight.detach()[:keep]  # a view: no copy
            bias = src.bias.detach()[:keep] if src.bias is not None else None
        _set_linear(dst, weight, bias)
    out = source.mlp_output
    weight = out.weight if keep == hidden else out.weight.detach()[:, :keep].contiguous()
    _set_linear(target.mlp_output, weight, out.bias)
    _slice_norm(getattr(target.mlp, "norm", None), getattr(source.mlp, "norm", None), keep)
