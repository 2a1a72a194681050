"""Cost of a pruning plan without building or running the pruned model.

Parameters and analytic FLOPs of a ViT are affine in the per-block kept head and neuron counts, so
one pass over the unpruned model gives a ``CostTable`` (fixed part + cost per head and per neuron,
per block) from which any plan's cost is a dot product. The FLOPs follow ``metrics.analytic_flops``
term by term and the parameters ``metrics.count_parameters``; both are tested to be equal to those
of the truncated model for every supported family.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from torch import nn

from snapvit_core.engine.adapter import MLP_GLU_PACKED, MLP_STANDARD, ArchitectureShape, BlockLayers, ViTAdapter
from snapvit_core.errors import SnapViTError


@dataclass(frozen=True)
class PlanCost:
    """Parameters and FLOPs of one pruned configuration."""

    params: int  # embedding-path parameters of the pruned model
    flops: int  # analytic FLOPs per image (same formula as metrics.analytic_flops)
    params_pct: float  # % of the unpruned
    flops_pct: float  # % of the unpruned

    @property
    def params_m(self) -> float:
        return self.params / 1e6

    @property
    def gflops(self) -> float:
        return self.flops / 1e9


@dataclass(frozen=True)
class CostTable:
    """Affine cost model of one architecture: cost = fixed + sum_b (heads_b * per_head_b + neurons_b * per_neuron_b)."""

    fixed_params: int
    params_per_head: tuple[int, ...]  # per block
    params_per_neuron: tuple[int, ...]  # per block
    fixed_flops: int
    flops_per_head: tuple[int, ...]  # per block, per image
    flops_per_neuron: tuple[int, ...]  # per block, per image
    num_heads: int  # unpruned heads per block
    mlp_hidden: int  # unpruned neurons per block

    @property
    def num_blocks(self) -> int:
        return len(self.params_per_head)

    def params(self, kept_heads: Sequence[int], kept_neurons: Sequence[int]) -> int:
        return self.fixed_params + _dot(kept_heads, self.params_per_head) + _dot(kept_neurons, self.params_per_neuron)

    def flops(self, kept_heads: Sequence[int], kept_neurons: Sequence[int]) -> int:
        return self.fixed_flops + _dot(kept_heads, self.flops_per_head) + _dot(kept_neurons, self.flops_per_neuron)

    @property
    def unpruned(self) -> tuple[list[int], list[int]]:
        return [self.num_heads] * self.num_blocks, [self.mlp_hidden] * self.num_blocks


def _dot(counts: Sequence[int], weights: Sequence[int]) -> int:
    return int(sum(int(c) * int(w) for c, w in zip(counts, weights)))


def _block_flops(shape: ArchitectureShape, head_dim: int, mlp_kind: str) -> tuple[int, int]:
    """FLOPs per kept head and per kept neuron of one block (metrics.analytic_flops, per unit)."""
    tokens, width = shape.num_tokens, shape.embed_dim
    per_head = head_dim * (2 * tokens * width * 3 + 4 * tokens * tokens + 2 * tokens * width)
    per_neuron = (4 if mlp_kind == MLP_STANDARD else 6) * tokens * width
    return per_head, per_neuron


def _fixed_flops_from_shape(shape: ArchitectureShape) -> int:
    patches = (shape.image_size // shape.patch_size) ** 2
    return 2 * patches * (3 * shape.patch_size**2) * shape.embed_dim


def _is_parameter(module: nn.Module, name: str) -> bool:
    return isinstance(getattr(module, name, None), nn.Parameter)


def _block_params(block: BlockLayers) -> tuple[int, int]:
    """Parameters per head and per neuron of one block: what elastic truncation removes per unit."""
    d = block.head_dim
    per_head = 3 * d * block.qkv.in_features + (3 * d if block.qkv.bias is not None else 0)
    per_head += d * block.proj.out_features  # proj columns (its bias is fixed)
    per_head += sum(d for name in block.head_vectors if _is_parameter(block.attention, name))
    norm = getattr(block.attention, "norm", None)
    if isinstance(norm, nn.LayerNorm) and norm.weight is not None and norm.weight.numel() == block.num_heads * d:
        per_head += d * (1 + (norm.bias is not None))
    rows = 2 if block.mlp_kind == MLP_GLU_PACKED else 1
    per_neuron = sum(rows * (linear.in_features + (linear.bias is not None)) for linear in block.mlp_inputs)
    per_neuron += block.mlp_output.out_features  # fc2 columns (its bias is fixed)
    norm = getattr(block.mlp, "norm", None)
    if isinstance(norm, nn.LayerNorm) and norm.weight is not None and norm.weight.numel() == block.mlp_hidden:
        per_neuron += 1 + (norm.bias is not None)
    return per_head, per_neuron


def cost_table(model: nn.Module) -> CostTable:
    """The affine cost table of an unpruned model (one pass over its layers, no forward)."""
    from snapvit_core.evaluation.metrics import analytic_flops, count_parameters

    adapter = ViTAdapter(model)
    shape = adapter.shape()
    if len(set(shape.heads_per_block)) != 1 or len(set(shape.mlp_hidden_per_block)) != 1:
        raise SnapViTError(
            "A cost table needs the unpruned model (every block at full width).", "Pass the unpruned backbone."
        )
    params, flops = [], []
    for block in adapter.blocks:
        params.append(_block_params(block))
        flops.append(_block_flops(shape, block.head_dim, block.mlp_kind))
    heads, neurons = shape.num_heads, shape.mlp_hidden
    variable_params = sum(heads * h + neurons * n for h, n in params)
    variable_flops = sum(heads * h + neurons * n for h, n in flops)
    return CostTable(
        fixed_params=count_parameters(model) - variable_params,
        params_per_head=tuple(h for h, _ in params),
        params_per_neuron=tuple(n for _, n in params),
        fixed_flops=analytic_flops(model) - variable_flops,  # patch embedding + any attention pool
        flops_per_head=tuple(h for h, _ in flops),
        flops_per_neuron=tuple(n for _, n in flops),
        num_heads=heads,
        mlp_hidden=neurons,
    )


def shape_cost_table(shape: ArchitectureShape, qkv_bias: bool = True, mlp_bias: bool = True) -> CostTable:
    """A cost table from the shape alone, for a standard timm ViT layout (no model needed).

    FLOPs are exact for every family without an attention pool; parameters assume pre-norm blocks
    (two LayerNorms), a CLS token, learned position embeddings and no extra norms.
    """
    d, width, heads, neurons = shape.head_dim, shape.embed_dim, shape.num_heads, shape.mlp_hidden
    per_head = 3 * d * width + (3 * d if qkv_bias else 0) + d * width
    rows = 2 if shape.mlp_kind != MLP_STANDARD else 1
    per_neuron = rows * (width + mlp_bias) + width
    block_fixed = width * 4 + width + (width if mlp_bias else 0)  # two LayerNorms, proj bias, fc2 bias
    patch = 3 * shape.patch_size**2 * width + width
    fixed_params = patch + width + shape.num_tokens * width + 2 * width + shape.num_blocks * block_fixed
    per_head_flops, per_neuron_flops = _block_flops(shape, d, shape.mlp_kind)
    blocks = shape.num_blocks
    return CostTable(
        fixed_params=fixed_params,
        params_per_head=(per_head,) * blocks,
        params_per_neuron=(per_neuron,) * blocks,
        fixed_flops=_fixed_flops_from_shape(shape),
        flops_per_head=(per_head_flops,) * blocks,
        flops_per_neuron=(per_neuron_flops,) * blocks,
        num_heads=heads,
        mlp_hidden=neurons,
    )


def plan_cost(
    shape: ArchitectureShape | CostTable | nn.Module,
    kept_heads: Sequence[int],
    kept_neurons: Sequence[int],
) -> PlanCost:
    """Parameters and FLOPs of the plan keeping ``kept_heads`` / ``kept_neurons`` per block.

    Args:
        shape: a ``CostTable`` (exact, fast: build it once with ``cost_table(model)``), the unpruned
            model itself (exact), or an ``ArchitectureShape`` (standard timm layout, see
            ``shape_cost_table``).
        kept_heads, kept_neurons: per-block keep counts (``PruningPlan.kept_heads`` / ``kept_neurons``).
    """
    if isinstance(shape, CostTable):
        table = shape
    elif isinstance(shape, nn.Module):
        table = cost_table(shape)
    else:
        table = shape_cost_table(shape)
    if len(kept_heads) != table.num_blocks or len(kept_neurons) != table.num_blocks:
        raise SnapViTError(
            f"The plan has {len(kept_heads)} head counts and {len(kept_neurons)} neuron counts, "
            f"the model {table.num_blocks} blocks.",
            "Make the plan from scores of this backbone.",
        )
    full_heads, full_neurons = table.unpruned
    params, flops = table.params(kept_heads, kept_neurons), table.flops(kept_heads, kept_neurons)
    full_params, full_flops = table.params(full_heads, full_neurons), table.flops(full_heads, full_neurons)
    return PlanCost(
        params=params,
        flops=flops,
        params_pct=100.0 * params / full_params,
        flops_pct=100.0 * flops / full_flops,
    )
