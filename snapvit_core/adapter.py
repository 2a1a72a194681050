"""Backbone adapter: where a ViT keeps its prunable layers, and how to read its embedding.

Everything model-family specific lives here, so the pruning engine, the scoring methods and the
metrics talk to one small interface (`BlockLayers`, `ViTAdapter`) instead of special-casing
architectures. Supported now: timm ``VisionTransformer`` (standard ``Mlp`` with fc1/fc2, packed
``GluMlp`` and split ``SwiGLU`` MLPs, qkv bias on or off, fused attention on or off).

Loading a backbone by id (``embedded``, a timm name, a local directory) lives in ``backbones.py``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from .errors import SnapViTError

MLP_STANDARD = "standard"  # fc1 -> act -> fc2
MLP_GLU_PACKED = "glu-packed"  # fc1 emits [value | gate] halves (timm GluMlp / SwiGLUPacked)
MLP_SWIGLU = "swiglu"  # separate fc1_x (value) and fc1_g (gate) (timm SwiGLU)


@dataclass
class BlockLayers:
    """The prunable layers of one transformer block.

    ``mlp_inputs`` are the Linear layers whose output rows are the hidden neurons (fc1, or both the
    value and gate projections of a SwiGLU); ``mlp_output`` is fc2, whose input columns they feed.
    For a packed GLU, ``mlp_inputs`` is the single fc1 and its rows are [value rows | gate rows].
    """

    attention: nn.Module  # has num_heads, head_dim and (timm >= 1.0.20) attn_dim
    qkv: nn.Linear  # rows laid out [q | k | v], each H heads of head_dim rows
    proj: nn.Linear  # input columns: H heads of head_dim columns
    mlp: nn.Module
    mlp_inputs: list[nn.Linear]
    mlp_output: nn.Linear
    mlp_kind: str  # one of MLP_STANDARD, MLP_GLU_PACKED, MLP_SWIGLU

    @property
    def num_heads(self) -> int:
        return int(self.attention.num_heads)

    @property
    def head_dim(self) -> int:
        return int(self.attention.head_dim)

    @property
    def mlp_hidden(self) -> int:
        return int(self.mlp_output.in_features)

    @property
    def fc1(self) -> nn.Linear:
        """The layer whose rows are scored for MLP neurons (the value projection for SwiGLU)."""
        return self.mlp_inputs[0]


@dataclass(frozen=True)
class ArchitectureShape:
    """Current widths of a ViT, per block (they differ once the model is pruned)."""

    num_blocks: int
    embed_dim: int
    head_dim: int
    heads_per_block: tuple[int, ...]
    mlp_hidden_per_block: tuple[int, ...]
    mlp_kind: str
    num_tokens: int  # tokens per image incl. CLS / distillation / register tokens
    patch_size: int
    image_size: int

    @property
    def num_heads(self) -> int:
        """Heads per block of the unpruned layout (the maximum over blocks)."""
        return max(self.heads_per_block)

    @property
    def mlp_hidden(self) -> int:
        return max(self.mlp_hidden_per_block)

    def describe(self) -> str:
        return (
            f"{self.num_blocks} blocks x {self.num_heads} heads (head width {self.head_dim}), "
            f"embed {self.embed_dim}, MLP hidden {self.mlp_hidden}"
        )


def _mlp_layers(mlp: nn.Module) -> tuple[list[nn.Linear], nn.Linear, str]:
    if hasattr(mlp, "fc1_g") and hasattr(mlp, "fc1_x"):
        return [mlp.fc1_x, mlp.fc1_g], mlp.fc2, MLP_SWIGLU
    if hasattr(mlp, "fc1") and hasattr(mlp, "fc2"):
        if getattr(mlp, "chunk_dim", None) is not None:
            return [mlp.fc1], mlp.fc2, MLP_GLU_PACKED
        return [mlp.fc1], mlp.fc2, MLP_STANDARD
    raise SnapViTError(
        f"Unsupported MLP layer {type(mlp).__name__}: expected fc1/fc2 (Mlp, GluMlp) or fc1_x/fc1_g/fc2 (SwiGLU).",
        "Use a timm VisionTransformer backbone.",
    )


class ViTAdapter:
    """A view of a ViT's prunable structure. Holds no state besides the model reference."""

    def __init__(self, model: nn.Module) -> None:
        blocks = getattr(model, "blocks", None)
        if blocks is None or len(blocks) == 0 or not hasattr(blocks[0], "attn"):
            raise SnapViTError(
                f"{type(model).__name__} is not a Vision Transformer with transformer blocks "
                "(expected `model.blocks[i].attn` and `.mlp`).",
                "Choose a ViT backbone: `embedded`, a preset, or a timm ViT name such as vit_small_patch16_224.dino.",
            )
        self.model = model
        self.blocks: list[BlockLayers] = []
        for index, block in enumerate(blocks):
            attn = block.attn
            if not all(hasattr(attn, name) for name in ("qkv", "proj", "num_heads", "head_dim")):
                raise SnapViTError(
                    f"Block {index} has an attention layer ({type(attn).__name__}) without a fused "
                    "qkv projection; this backbone family is not supported yet.",
                    "Use a timm VisionTransformer backbone.",
                )
            if getattr(attn, "gate", None) is not None:
                raise SnapViTError("Gated attention (timm `gated=True`) is not supported yet.")
            inputs, output, kind = _mlp_layers(block.mlp)
            self.blocks.append(BlockLayers(attn, attn.qkv, attn.proj, block.mlp, inputs, output, kind))

    @property
    def num_blocks(self) -> int:
        return len(self.blocks)

    @property
    def embed_dim(self) -> int:
        return int(self.blocks[0].qkv.in_features)

    def shape(self) -> ArchitectureShape:
        patch_embed = self.model.patch_embed
        patch = patch_embed.patch_size
        image = patch_embed.img_size
        prefix = int(getattr(self.model, "num_prefix_tokens", 1))
        return ArchitectureShape(
            num_blocks=self.num_blocks,
            embed_dim=self.embed_dim,
            head_dim=self.blocks[0].head_dim,
            heads_per_block=tuple(b.num_heads for b in self.blocks),
            mlp_hidden_per_block=tuple(b.mlp_hidden for b in self.blocks),
            mlp_kind=self.blocks[0].mlp_kind,
            num_tokens=int(patch_embed.num_patches) + prefix,
            patch_size=int(patch[0] if isinstance(patch, (tuple, list)) else patch),
            image_size=int(image[0] if isinstance(image, (tuple, list)) else image),
        )

    def embed(self, images: torch.Tensor) -> torch.Tensor:
        """The backbone embedding with classification heads disabled: (N, 3, S, S) -> (N, D)."""
        features = self.model.forward_features(images)
        return self.model.forward_head(features, pre_logits=True)

    def value_rows(self, block: BlockLayers) -> slice:
        """Rows of ``qkv.weight`` that hold the values (the last third)."""
        attn_dim = block.num_heads * block.head_dim
        return slice(2 * attn_dim, 3 * attn_dim)
