"""The elastic engine (DESIGN section 5): reorder once by score, then cut to any sparsity instantly.

``plan_pruning`` turns scores + (MLP, head) sparsity into per-block keep counts (pure, no model).
``ElasticViT`` owns a private, reordered copy of a backbone. Because every block's units are sorted by
descending score, the units a plan keeps are always a prefix, so truncation is a slice and going denser
again just re-slices the reordered original. The caller's model is never mutated.

A pruned model is a value: ``prune_to`` and ``pruned`` hand out a standalone copy that owns compact
tensors, which nothing the engine does later can change. The engine's working model (sliced views of
the reordered original, re-sliced for every configuration) never leaves it: ``run`` truncates it under
the engine's lock, calls the caller's function on it and hands back only that function's result.
"""

from __future__ import annotations

import copy
import itertools
import logging
import math
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TypeVar

import torch
from torch import nn

from snapvit_core.engine.adapter import ArchitectureShape, ViTAdapter, choose_attention_kernel
from snapvit_core.engine.surgery import select_units
from snapvit_core.errors import SnapViTError
from snapvit_core.scoring.scores import ImportanceScores

log = logging.getLogger(__name__)
T = TypeVar("T")

MAX_ALIGN = 4096  # wider than any supported MLP
# ``align="auto"``: the MLP width alignment per device type (README "Width alignment", results/alignment.md).
# CPU 1: benchmarks/bench_alignment.py found no N measurably faster than 1 on the 2-core CPU it ran on
# (differences within the noise of a shared machine), so nothing is paid for it. CUDA 64: not measured
# here (no GPU); NVIDIA's GEMM guidance (bf16 tensor cores work on 16-byte multiples, best on 128-byte
# = 64-element ones) and the embedded backbone's kNN cost of N = 64 (at most two test images, 0.37 points,
# from N = 1 at any published pair); benchmarks/gpu_check.py measures it on a GPU, and this value should follow it.
ALIGN_AUTO: dict[str, int] = {"cpu": 1, "cuda": 64}


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


def check_align(value: object, device: str | torch.device | None = None) -> int:
    """Return the MLP width alignment ``value`` as an int >= 1; ``"auto"`` picks ALIGN_AUTO for ``device``."""
    if isinstance(value, str) and value.strip().lower() == "auto":
        kind = torch.device(device or "cpu").type
        return ALIGN_AUTO.get(kind, ALIGN_AUTO["cpu"])
    text = str(value).strip()
    if isinstance(value, bool) or not (isinstance(value, int) or (text.isdigit() and len(text) <= 6)):
        raise SnapViTError(
            f"align must be a positive integer or 'auto', got {str(value)[:40]!r}.",
            "Use 1 (no alignment, the published rule), 8, 16, 32, 64 or auto.",
        )
    number = int(text)
    if not 1 <= number <= MAX_ALIGN:
        raise SnapViTError(
            f"align must be in 1 .. {MAX_ALIGN}, got {number}.",
            "Use 1 (no alignment, the published rule), 8, 16, 32, 64 or auto.",
        )
    return number


def align_keep_counts(scores: torch.Tensor, keep: Sequence[int], align: int, min_keep_ratio: float = 0.0) -> list[int]:
    """Round per-block keep counts to multiples of ``align`` while keeping their total close to ``sum(keep)``.

    Each block's count is rounded down to a multiple of ``align`` (a block's allowed counts are the
    multiples of ``align`` up to its width, plus the whole width), but never below its floor: the
    protected minimum (``floor(U * min_keep_ratio)``) rounded up to a multiple, and at least ``align``
    units (the whole block when it has fewer), so no block is emptied. Then whole chunks go back,
    one at a time, to the block whose next chunk has the highest mean score, while that brings the
    total nearer the request (or, when the floors overshoot it, the lowest-scoring last chunks above
    a floor are taken away). The result is within ``align / 2`` units of the request unless the
    floors alone exceed it.

    Args:
        scores: (B, U) scores, one row per block (the same scores the unaligned counts came from).
        keep: B unaligned keep counts (``plan_keep_counts``'s rule).
        align: chunk size N >= 1; 1 returns ``keep`` unchanged.
        min_keep_ratio: the per-block protection of the unaligned rule.
    """
    align = check_align(align)
    keep = [int(k) for k in keep]
    if align == 1:
        return keep
    num_blocks, units = scores.shape
    # The engine keeps each block's units in descending-score order, so a chunk is a run of this sort.
    ordered = scores.detach().to(torch.float64).sort(dim=1, descending=True).values  # (B, U)

    def allowed_floor(count: int) -> int:
        return units if count >= units else (count // align) * align

    floor = min(units, max(align, math.ceil(int(units * min_keep_ratio) / align) * align))
    counts = [max(floor, allowed_floor(k)) for k in keep]
    target = sum(keep)

    def next_chunk(block: int) -> tuple[int, float]:
        start = counts[block]
        stop = min(units, start + align)
        return stop - start, float(ordered[block, start:stop].mean())

    def last_chunk(block: int) -> tuple[int, float]:
        stop = counts[block]
        start = max(floor, stop - align if stop % align == 0 else (stop // align) * align)
        return stop - start, float(ordered[block, start:stop].mean())

    while True:  # give chunks back, best next chunk first, while that moves the total nearer the target
        open_blocks = [b for b in range(num_blocks) if counts[b] < units]
        if not open_blocks:
            break
        best = max(open_blocks, key=lambda b: (next_chunk(b)[1], -b))
        size = next_chunk(best)[0]
        if abs(target - sum(counts) - size) >= abs(target - sum(counts)):
            break
        counts[best] += size
    while True:  # the floors overshot: take back the worst chunks above a floor while that helps
        shrinkable = [b for b in range(num_blocks) if counts[b] > floor]
        if not shrinkable:
            break
        worst = min(shrinkable, key=lambda b: (last_chunk(b)[1], b))
        size = last_chunk(worst)[0]
        if abs(target - sum(counts) + size) >= abs(target - sum(counts)):
            break
        counts[worst] -= size
    return counts


def plan_keep_counts(scores: torch.Tensor, sparsity: float, min_keep_ratio: float, align: int = 1) -> list[int]:
    """Per-block keep counts for one unit type under a global score threshold.

    Args:
        scores: (B, U) scores, one row per block.
        sparsity: fraction of all B*U units to remove, in [0, 1).
        min_keep_ratio: each block keeps at least floor(U * min_keep_ratio) of its best units.
        align: round each block's count to a multiple of this (:func:`align_keep_counts`); 1 (the
            default) is the published rule exactly.

    Returns:
        B keep counts. A block keeps its units scoring strictly above the n-th smallest
        (protection-adjusted) score, n = floor(B * U * sparsity); n = 0 keeps everything.
    """
    keep = _threshold_keep_counts(scores, sparsity, min_keep_ratio)
    return keep if align == 1 else align_keep_counts(scores, keep, align, min_keep_ratio)


def _threshold_keep_counts(scores: torch.Tensor, sparsity: float, min_keep_ratio: float) -> list[int]:
    """The published rule (DESIGN section 5, step 2)."""
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
    align: int = 1  # kept MLP neurons per block are multiples of this (or the whole block)

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
            "align": self.align,
        }


def plan_pruning(scores: ImportanceScores, mlp_sparsity: float, head_sparsity: float, align: int = 1) -> PruningPlan:
    """Keep counts for both unit types from the scores alone (no model needed).

    ``align`` rounds each block's kept MLP neurons to a multiple of it (:func:`align_keep_counts`);
    heads are never aligned. 1 (the default) is the published rule exactly.
    """
    mlp_sparsity = check_sparsity(mlp_sparsity, "MLP sparsity")
    head_sparsity = check_sparsity(head_sparsity, "head sparsity")
    align = check_align(align)
    return PruningPlan(
        mlp_sparsity=mlp_sparsity,
        head_sparsity=head_sparsity,
        kept_neurons=tuple(plan_keep_counts(scores.mlp, mlp_sparsity, scores.min_mlp_keep_ratio, align)),
        kept_heads=tuple(plan_keep_counts(scores.heads, head_sparsity, scores.min_head_keep_ratio)),
        total_neurons=scores.mlp.numel(),
        total_heads=scores.heads.numel(),
        align=align,
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


def standalone_copy(model: nn.Module) -> nn.Module:
    """A deep copy owning compact clones of every tensor (a sliced view would otherwise drag its full storage)."""
    memo: dict[int, torch.Tensor] = {}
    for parameter in model.parameters():
        memo[id(parameter)] = nn.Parameter(parameter.detach().clone(), requires_grad=parameter.requires_grad)
    for buffer in model.buffers():
        memo[id(buffer)] = buffer.clone()
    return copy.deepcopy(model, memo)


class ElasticViT:
    """A private, score-reordered copy of a ViT that can be truncated to any sparsity.

    Args:
        model: the unpruned backbone. It is deep-copied; the caller's model is never touched.
        scores: importance scores for that backbone (checked against its shape).
        model_name: used in error messages.
        align: every plan's kept MLP neurons per block are a multiple of this (see
            :func:`align_keep_counts`; 1, the default, is the published rule). ``plan_for`` and
            ``prune_to`` use it, so costs, latency predictions, correction and exports follow.

    Thread safety: ``run``, ``pruned`` and ``prune_to`` hold ``lock`` (re-entrant) while they touch
    the working model, so callers on several threads each get the configuration they asked for.
    """

    def __init__(
        self, model: nn.Module, scores: ImportanceScores, model_name: str = "the model", align: int = 1
    ) -> None:
        check_scores_fit(scores, ViTAdapter(model).shape(), model_name)
        self.scores = scores
        self.align = check_align(align)
        self.lock = threading.RLock()
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
        # The working model shares every tensor with `full`; _truncate swaps in sliced views. Private:
        # what it holds changes with every run, so it is never handed out.
        memo = {id(t): t for t in itertools.chain(self.full.parameters(), self.full.buffers())}
        self._working = copy.deepcopy(self.full, memo)
        self._working_adapter = ViTAdapter(self._working)

    @property
    def shape(self) -> ArchitectureShape:
        return self.full_adapter.shape()

    def plan_for(self, mlp_sparsity: float, head_sparsity: float, align: int | None = None) -> PruningPlan:
        """The plan of a configuration; ``align`` overrides the engine's alignment for this plan."""
        return plan_pruning(self.scores, mlp_sparsity, head_sparsity, self.align if align is None else align)

    def prune_to(self, mlp_sparsity: float, head_sparsity: float) -> nn.Module:
        """A standalone pruned model at the requested sparsity (its own compact tensors)."""
        return self.pruned(self.plan_for(mlp_sparsity, head_sparsity))

    def pruned(self, plan: PruningPlan) -> nn.Module:
        """A standalone model truncated to ``plan``'s keep counts, owning compact copies of its tensors."""
        return self.run(plan, standalone_copy)

    def run(self, plan: PruningPlan, compute: Callable[[nn.Module], T]) -> T:
        """``compute(model)`` on the working model truncated to ``plan``, under the engine's lock.

        The cheap way to measure a configuration: no weights are copied. ``compute`` must not keep the
        model (the next run re-slices it); it returns what it measured, and that is all that leaves.
        """
        with self.lock:
            self._truncate(plan)
            return compute(self._working)

    def _truncate(self, plan: PruningPlan) -> None:
        """Slice the working model to ``plan``'s keep counts (always from the full reordered copy)."""
        if (
            len(plan.kept_heads) != self.full_adapter.num_blocks
            or len(plan.kept_neurons) != self.full_adapter.num_blocks
        ):
            raise SnapViTError(f"The plan has {len(plan.kept_heads)} blocks, the model {self.full_adapter.num_blocks}.")
        with torch.no_grad():
            for source, target, heads, neurons in zip(
                self.full_adapter.blocks, self._working_adapter.blocks, plan.kept_heads, plan.kept_neurons
            ):
                select_units(source, target, neurons, heads)  # prefixes of the reordered units

    def kept_masks(self, plan: PruningPlan) -> tuple[torch.Tensor, torch.Tensor]:
        """Boolean keep masks in the *original* unit order: (B, M) neurons and (B, H) heads."""
        neuron_mask = torch.zeros_like(self.scores.mlp, dtype=torch.bool)
        head_mask = torch.zeros_like(self.scores.heads, dtype=torch.bool)
        for i, (heads, neurons) in enumerate(zip(plan.kept_heads, plan.kept_neurons)):
            neuron_mask[i, self.mlp_order[i, :neurons]] = True
            head_mask[i, self.head_order[i, :heads]] = True
        return neuron_mask, head_mask
