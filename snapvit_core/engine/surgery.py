"""Block surgery: the one place that changes the widths of a transformer block, for every family.

Three operations, all on the adapter's ``BlockLayers`` so no caller special-cases a family:

- :func:`select_units` makes a block the source block restricted to some MLP neurons and heads,
  given either as a count (the first n units: slices, so weights are views where the layout allows)
  or as indices in any order (gathers). The elastic engine uses it to reorder a block by score (indices)
  and to truncate it (counts); the search gathers each candidate's kept units with it.
- :func:`set_head_count` makes the attention forward use a number of heads (its weights must
  already have that width).
- :func:`resize_to_widths` replaces a block's prunable layers by fresh, uninitialised ones of the
  kept widths, so a saved pruned state dict loads strictly (the export's loader).

Layouts handled (see ``adapter.py``): qkv rows [q | k | v] of H heads x d rows each, proj columns
H x d; MLP hidden rows of fc1 (packed GLU: [value | gate] halves), of both SwiGLU projections, and
fc2's columns; Eva's separate q/k/v bias vectors; LayerNorms over the pruned width inside the MLP or
the attention. New tensors become ``requires_grad=False`` Parameters (buffers stay buffers).
"""

from __future__ import annotations

import torch
from torch import nn

from snapvit_core.engine.adapter import MLP_GLU_PACKED, MLP_SWIGLU, BlockLayers, ViTAdapter, make_width_following
from snapvit_core.errors import SnapViTError

Units = int | torch.Tensor  # the first n units of a block, or (k,) unit indices in any order


def set_linear(linear: nn.Linear, weight: torch.Tensor, bias: torch.Tensor | None) -> None:
    """Give ``linear`` a new (out, in) weight and bias (None leaves a bias-free layer bias-free)."""
    linear.weight = nn.Parameter(weight, requires_grad=False)
    if bias is not None:
        linear.bias = nn.Parameter(bias, requires_grad=False)
    linear.out_features, linear.in_features = weight.shape


def set_head_count(block: BlockLayers, heads: int) -> None:
    """Make ``block``'s attention forward use ``heads`` heads (its weights must already have that width).

    An attention whose output width would not follow (timm ``EvaAttention``) is switched to the
    adapter's width-following subclass first: resizing is what needs it, a mere view never does.
    """
    make_width_following(block.attention)
    block.attention.num_heads = heads
    if hasattr(block.attention, "attn_dim"):
        block.attention.attn_dim = heads * block.head_dim


def unit_index(units: Units, unit_width: int, total_units: int, chunks: int = 1) -> slice | torch.Tensor:
    """Positions along one dimension that hold ``units``, for ``chunks`` stacked [total x width] chunks.

    A dimension of size ``chunks * total_units * unit_width`` (qkv rows: 3 chunks of H heads x d rows;
    packed GLU fc1 rows: 2 chunks of M neurons x 1 row). A count gives a slice when it is one contiguous
    run (no copy), otherwise an index tensor.
    """
    if isinstance(units, int):
        if units == total_units:
            return slice(None)
        if chunks == 1:
            return slice(0, units * unit_width)
        within = torch.arange(units * unit_width)
    else:
        offsets = torch.arange(unit_width, device=units.device)
        within = (units[:, None] * unit_width + offsets).flatten()  # (k * width,)
        if chunks == 1:
            return within
    return torch.cat([within + c * total_units * unit_width for c in range(chunks)])


def _count(units: Units) -> int:
    return units if isinstance(units, int) else int(units.numel())


def _rows(tensor: torch.Tensor, index: slice | torch.Tensor) -> torch.Tensor:
    index = index if isinstance(index, slice) else index.to(tensor.device)
    return tensor.detach()[index]


def _columns(tensor: torch.Tensor, index: slice | torch.Tensor) -> torch.Tensor:
    # A column slice is made contiguous so the smaller matmul runs at full speed (a no-op for gathers).
    index = index if isinstance(index, slice) else index.to(tensor.device)
    return tensor.detach()[:, index].contiguous()


def _set_vector(module: nn.Module, name: str, vector: torch.Tensor) -> None:
    """Replace a parameter or buffer of ``module`` by ``vector`` (same kind)."""
    if name in module._buffers:
        module._buffers[name] = vector
    else:
        setattr(module, name, nn.Parameter(vector, requires_grad=False))


def _select_norm(target: nn.Module | None, source: nn.Module | None, index: slice | torch.Tensor, width: int) -> None:
    """Select ``index`` of a LayerNorm over the pruned width (inside-MLP / inside-attention norms).

    Such a norm sees a different mean and variance once units are removed, so pruned == masked
    only holds approximately for backbones that have one; standard ViTs do not.
    """
    if not isinstance(source, nn.LayerNorm) or source.weight is None or source.weight.numel() != width:
        return
    target.weight = nn.Parameter(_rows(source.weight, index), requires_grad=False)
    if source.bias is not None:
        target.bias = nn.Parameter(_rows(source.bias, index), requires_grad=False)
    target.normalized_shape = (int(target.weight.numel()),)


def select_mlp_units(source: BlockLayers, target: BlockLayers, neurons: Units) -> None:
    """Make ``target``'s MLP ``source``'s restricted to ``neurons`` (``target`` may be ``source``)."""
    hidden = source.mlp_hidden
    chunks = 2 if source.mlp_kind == MLP_GLU_PACKED else 1
    rows = unit_index(neurons, 1, hidden, chunks)
    columns = unit_index(neurons, 1, hidden)
    for src, dst in zip(source.mlp_inputs, target.mlp_inputs):
        set_linear(dst, _rows(src.weight, rows), _rows(src.bias, rows) if src.bias is not None else None)
    output = source.mlp_output
    set_linear(target.mlp_output, _columns(output.weight, columns), output.bias)
    _select_norm(getattr(target.mlp, "norm", None), getattr(source.mlp, "norm", None), columns, hidden)


def select_heads(source: BlockLayers, target: BlockLayers, heads: Units) -> None:
    """Make ``target``'s attention ``source``'s restricted to ``heads`` (``target`` may be ``source``)."""
    total, head_dim = source.num_heads, source.head_dim
    qkv_rows = unit_index(heads, head_dim, total, chunks=3)  # the [q | k | v] chunks
    within = unit_index(heads, head_dim, total)  # proj columns, per-head vectors, inside norm
    qkv = source.qkv
    set_linear(target.qkv, _rows(qkv.weight, qkv_rows), _rows(qkv.bias, qkv_rows) if qkv.bias is not None else None)
    set_linear(target.proj, _columns(source.proj.weight, within), source.proj.bias)
    for name in source.head_vectors:  # separate q/k/v bias vectors (Eva): H * d entries each
        _set_vector(target.attention, name, _rows(getattr(source.attention, name), within))
    _select_norm(
        getattr(target.attention, "norm", None), getattr(source.attention, "norm", None), within, total * head_dim
    )
    set_head_count(target, _count(heads))


def select_units(source: BlockLayers, target: BlockLayers, neurons: Units, heads: Units) -> None:
    """Make ``target`` the block ``source`` restricted to the given MLP neurons and heads.

    Args:
        source: the block read from (never written unless it is ``target``).
        target: the block written; a tensor-sharing copy of ``source``'s block, or ``source`` itself
            (reordering in place: every tensor is read before it is replaced).
        neurons, heads: a count (the first n units) or a (k,) index tensor (any order).
    """
    select_mlp_units(source, target, neurons)
    select_heads(source, target, heads)


def resize_to_widths(block: BlockLayers, heads: int, neurons: int) -> None:
    """Replace ``block``'s prunable layers by fresh, uninitialised ones of the kept widths (in place)."""

    def resized(old: nn.Linear, in_features: int, out_features: int) -> nn.Linear:
        return nn.Linear(in_features, out_features, bias=old.bias is not None)

    width = heads * block.head_dim
    attention = block.attention
    attention.qkv = resized(block.qkv, block.qkv.in_features, 3 * width)
    attention.proj = resized(block.proj, width, block.proj.out_features)
    for name in block.head_vectors:
        old = getattr(attention, name)
        _set_vector(attention, name, torch.zeros(width, dtype=old.dtype, device=old.device))
    norm = getattr(attention, "norm", None)
    full_width = block.num_heads * block.head_dim
    if isinstance(norm, nn.LayerNorm) and norm.weight is not None and norm.weight.numel() == full_width:
        attention.norm = nn.LayerNorm(width, eps=norm.eps)
    set_head_count(block, heads)
    mlp = block.mlp
    if block.mlp_kind == MLP_SWIGLU:
        for name in ("fc1_x", "fc1_g") if hasattr(mlp, "fc1_x") else ("up_proj", "gate_proj"):
            old = getattr(mlp, name)
            setattr(mlp, name, resized(old, old.in_features, neurons))
    else:
        factor = 2 if block.mlp_kind == MLP_GLU_PACKED else 1
        mlp.fc1 = resized(mlp.fc1, mlp.fc1.in_features, factor * neurons)
    output_name = "fc2" if hasattr(mlp, "fc2") else "down_proj"
    setattr(mlp, output_name, resized(block.mlp_output, neurons, block.mlp_output.out_features))
    if isinstance(getattr(mlp, "norm", None), nn.LayerNorm):
        mlp.norm = nn.LayerNorm(neurons, eps=mlp.norm.eps)


def resize_model(model: nn.Module, kept_heads: list[int], kept_neurons: list[int]) -> nn.Module:
    """Resize every block of an unpruned ``model`` in place to the kept widths (weights uninitialised)."""
    adapter = ViTAdapter(model)
    if len(kept_heads) != adapter.num_blocks or len(kept_neurons) != adapter.num_blocks:
        raise SnapViTError(
            f"The pruning plan has {len(kept_heads)} blocks, the architecture {adapter.num_blocks}.",
            "Use the config.json that was exported with these weights.",
        )
    for block, heads, neurons in zip(adapter.blocks, kept_heads, kept_neurons):
        resize_to_widths(block, int(heads), int(neurons))
    return model


def widths(model: nn.Module) -> tuple[list[int], list[int]]:
    """Current heads and MLP neurons per block of a (possibly resized) model."""
    adapter = ViTAdapter(model)
    return [b.num_heads for b in adapter.blocks], [b.mlp_hidden for b in adapter.blocks]
