"""Backbone adapter: where a ViT keeps its prunable layers, and how to read its embedding.

Everything model-family specific lives here, so the pruning engine, the scoring methods and the
metrics talk to one small interface (`BlockLayers`, `ViTAdapter`) instead of special-casing
architectures. Supported families (see README "Backbone families"):

- timm ``VisionTransformer`` (DINO, DeiT, DeiT-III, AugReg, SigLIP2 ...): standard ``Mlp`` with
  fc1/fc2, packed ``GluMlp`` and split ``SwiGLU`` MLPs, qkv bias on or off, fused attention on or off.
  A SigLIP2 attention-pool head (``attn_pool``) is part of the embedding and is never pruned.
- timm ``VisionTransformerDistilled`` (DeiT distilled): the embedding is the CLS token (the
  distillation token and both heads are left out).
- timm ``Eva`` (DINOv3: RoPE, register tokens, layer scale, SwiGLU in some sizes): a model that gets
  resized has its attention switched (``make_width_following``, called by ``surgery``) to a subclass
  whose output width follows its head count, and the separate q/k/v bias
  vectors are pruned with their heads; the embedding is the final-norm CLS token.
- transformers ViT / DINOv2 via ``hf_vit.HFVisionBackbone`` (q/k/v fused once into ``qkv``).

Loading a backbone by id (``embedded``, a timm name, a local directory) lives in ``backbones.py``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from timm.layers.attention import Attention
from timm.models.deit import VisionTransformerDistilled
from timm.models.eva import Eva, EvaAttention, apply_rot_embed_cat
from timm.models.vision_transformer import Block, VisionTransformer
from torch import nn
from torch.nn import functional as F

from snapvit_core.errors import SnapViTError

MLP_STANDARD = "standard"  # fc1 -> act -> fc2
MLP_GLU_PACKED = "glu-packed"  # fc1 emits [value | gate] halves (timm GluMlp / SwiGLUPacked)
MLP_SWIGLU = "swiglu"  # separate fc1_x (value) and fc1_g (gate) (timm SwiGLU)
# Longest token sequence for which private CPU copies use the explicit attention path (see choose_attention_kernel).
EXPLICIT_ATTENTION_MAX_TOKENS = 64


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
    head_vectors: tuple[str, ...] = field(default=())  # attention attributes of H * d entries (Eva q/k/v bias)
    module: nn.Module | None = None  # the whole block (timm Block / transformers layer): correction hooks it

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


@dataclass(frozen=True)
class BlockCall:
    """How a model calls its transformer blocks, minus the token stream (see ``ViTAdapter.first_block_call``).

    ``args`` / ``kwargs`` are what the model itself passes besides the tokens (timm Eva's ``rope``, a
    transformers layer's ``attention_mask`` ...), so replaying the call reproduces a block's real
    forward; ``keyword`` names the token argument when the model passes it by keyword.
    """

    args: tuple
    kwargs: dict
    keyword: str | None = None

    def replay(self, block: nn.Module, x: torch.Tensor) -> torch.Tensor:
        """The block's output tokens (b, T, D) for input tokens ``x`` (b, T, D)."""
        out = block(**{self.keyword: x}, **self.kwargs) if self.keyword else block(x, *self.args, **self.kwargs)
        return out[0] if isinstance(out, (tuple, list)) else out


class _StopForward(Exception):
    """Raised by the recording hook: nothing after the first block's input is needed."""


def _mlp_layers(mlp: nn.Module) -> tuple[list[nn.Linear], nn.Linear, str]:
    if hasattr(mlp, "fc1_g") and hasattr(mlp, "fc1_x"):
        return [mlp.fc1_x, mlp.fc1_g], mlp.fc2, MLP_SWIGLU
    if all(hasattr(mlp, name) for name in ("gate_proj", "up_proj", "down_proj")):  # transformers SwiGLU
        return [mlp.up_proj, mlp.gate_proj], mlp.down_proj, MLP_SWIGLU
    if hasattr(mlp, "fc1") and hasattr(mlp, "fc2"):
        if getattr(mlp, "chunk_dim", None) is not None:
            return [mlp.fc1], mlp.fc2, MLP_GLU_PACKED
        return [mlp.fc1], mlp.fc2, MLP_STANDARD
    raise SnapViTError(
        f"Unsupported MLP layer {type(mlp).__name__}: expected fc1/fc2 (Mlp, GluMlp) or fc1_x/fc1_g/fc2 (SwiGLU).",
        "Use a timm VisionTransformer backbone.",
    )


class WidthFollowingEvaAttention(EvaAttention):
    """timm's EvaAttention whose output width follows ``num_heads`` (timm reshapes to the input width).

    The forward is timm's, with the final reshape to num_heads * head_dim. RoPE is applied to every
    head identically, so reordering or removing heads keeps it correct.
    """

    def forward(
        self,
        x: torch.Tensor,
        rope: torch.Tensor | None = None,
        attn_mask: torch.Tensor | None = None,
        is_causal: bool = False,
    ) -> torch.Tensor:
        batch, tokens, _ = x.shape
        width = self.num_heads * self.head_dim
        gate = self.gate(x).sigmoid() if self.gate is not None else None
        if self.qkv is not None:
            bias = None if self.q_bias is None else torch.cat((self.q_bias, self.k_bias, self.v_bias))
            if bias is not None and self.qkv_bias_separate:
                qkv = self.qkv(x) + bias
            else:
                qkv = F.linear(x, self.qkv.weight, bias)
            qkv = qkv.reshape(batch, tokens, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
            q, k, v = qkv.unbind(0)  # each (B, H, N, d)
        else:
            q, k, v = (
                proj(x).reshape(batch, tokens, self.num_heads, self.head_dim).transpose(1, 2)
                for proj in (self.q_proj, self.k_proj, self.v_proj)
            )
        q, k = self.q_norm(q), self.k_norm(k)
        if rope is not None:
            npt, half = self.num_prefix_tokens, getattr(self, "rotate_half", False)
            q = torch.cat([q[:, :, :npt], apply_rot_embed_cat(q[:, :, npt:], rope, half=half)], dim=2).type_as(v)
            k = torch.cat([k[:, :, :npt], apply_rot_embed_cat(k[:, :, npt:], rope, half=half)], dim=2).type_as(v)
        dropout = self.attn_drop.p if self.training else 0.0
        x = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask, dropout_p=dropout, is_causal=is_causal)
        x = self.norm(x.transpose(1, 2).reshape(batch, tokens, width))  # (B, N, H * d)
        if gate is not None:
            x = x * gate
        return self.proj_drop(self.proj(x))


def make_width_following(attention: nn.Module) -> None:
    """Let an attention layer's output width follow its head count, so heads can be removed.

    timm's ``EvaAttention`` reshapes its output to the input width; it is switched (in place, same
    weights and maths) to :class:`WidthFollowingEvaAttention`. Every other supported attention
    already follows ``num_heads`` / ``attn_dim``. Called by ``surgery`` on the models it resizes,
    never by the read-only :class:`ViTAdapter`.
    """
    if type(attention) is EvaAttention:
        attention.__class__ = WidthFollowingEvaAttention


def _head_vectors(attn: nn.Module) -> tuple[str, ...]:
    """Per-head vector attributes of one attention layer (H * d entries each), family specifics applied."""
    if isinstance(attn, EvaAttention):
        if attn.qkv is None:
            raise SnapViTError(
                "Eva attention with separate q/k/v projections (qkv_fused=False) is not supported.",
                "Use the timm DINOv3 / EVA models with a fused qkv (the published configurations).",
            )
        return ("q_bias", "k_bias", "v_bias") if attn.q_bias is not None else ()
    return ()


def _block_modules(model: nn.Module) -> list[tuple[nn.Module, nn.Module, nn.Module]] | None:
    """(block, attention, MLP) per transformer block, or None when ``model`` has no transformer blocks."""
    if callable(getattr(model, "block_modules", None)):  # hf_vit.HFVisionBackbone
        return [(layer, attn, mlp) for layer, (attn, mlp) in zip(model.layers, model.block_modules())]
    blocks = getattr(model, "blocks", None)
    if blocks is None or len(blocks) == 0 or not hasattr(blocks[0], "attn"):
        return None
    return [(block, block.attn, block.mlp) for block in blocks]


def _uses_cls_embedding(model: nn.Module) -> bool:
    """Families whose published embedding is the final-norm CLS token rather than timm's pooled output.

    DeiT distilled: timm averages the CLS and distillation tokens; we use the CLS token alone.
    DINOv3 (timm Eva with a class token and no fc_norm): timm defaults to average pooling; the
    published DINOv3 evaluation uses the CLS token after the final norm.
    """
    if isinstance(model, VisionTransformerDistilled):
        return True
    return (
        isinstance(model, Eva)
        and getattr(model, "cls_token", None) is not None
        and isinstance(getattr(model, "fc_norm", None), nn.Identity)
    )


class ViTAdapter:
    """A read-only view of a ViT's prunable structure. Holds no state besides the model reference.

    Building it never changes the model; resizing blocks is ``surgery``'s job.
    """

    def __init__(self, model: nn.Module) -> None:
        modules = _block_modules(model)
        if modules is None:
            raise SnapViTError(
                f"{type(model).__name__} is not a Vision Transformer with transformer blocks "
                "(expected `model.blocks[i].attn` and `.mlp`).",
                "Choose a ViT backbone: `embedded`, a preset, a timm ViT name such as vit_small_patch16_224.dino "
                "(families: VisionTransformer, DeiT distilled, SigLIP2, DINOv3/Eva), or hf:REPO for a "
                "transformers ViT/DINOv2.",
            )
        self.model = model
        self.blocks: list[BlockLayers] = []
        for index, (module, attn, mlp) in enumerate(modules):
            if not all(getattr(attn, name, None) is not None for name in ("qkv", "proj", "num_heads", "head_dim")):
                raise SnapViTError(
                    f"Block {index} has an attention layer ({type(attn).__name__}) without a fused "
                    "qkv projection; this backbone family is not supported yet.",
                    "Use a timm VisionTransformer backbone.",
                )
            if getattr(attn, "gate", None) is not None:
                raise SnapViTError("Gated attention (timm `gated=True`) is not supported yet.")
            vectors = _head_vectors(attn)
            inputs, output, kind = _mlp_layers(mlp)
            self.blocks.append(BlockLayers(attn, attn.qkv, attn.proj, mlp, inputs, output, kind, vectors, module))

    @property
    def num_blocks(self) -> int:
        return len(self.blocks)

    @property
    def embed_dim(self) -> int:
        return int(self.blocks[0].qkv.in_features)

    @property
    def attention_pool(self) -> nn.Module | None:
        """A latent attention-pool head (SigLIP2 ``attn_pool``): part of the embedding, never pruned."""
        pool = getattr(self.model, "attn_pool", None)
        return pool if isinstance(pool, nn.Module) else None

    def _geometry(self) -> tuple[int, int, int]:
        """(patch size, image size, number of patches)."""
        patch_embed = getattr(self.model, "patch_embed", None)
        if patch_embed is None:  # hf_vit.HFVisionBackbone
            return int(self.model.patch_size), int(self.model.image_size), int(self.model.num_patches)
        patch, image = patch_embed.patch_size, patch_embed.img_size
        return (
            int(patch[0] if isinstance(patch, (tuple, list)) else patch),
            int(image[0] if isinstance(image, (tuple, list)) else image),
            int(patch_embed.num_patches),
        )

    def shape(self) -> ArchitectureShape:
        patch, image, patches = self._geometry()
        prefix = int(getattr(self.model, "num_prefix_tokens", 1))
        return ArchitectureShape(
            num_blocks=self.num_blocks,
            embed_dim=self.embed_dim,
            head_dim=self.blocks[0].head_dim,
            heads_per_block=tuple(b.num_heads for b in self.blocks),
            mlp_hidden_per_block=tuple(b.mlp_hidden for b in self.blocks),
            mlp_kind=self.blocks[0].mlp_kind,
            num_tokens=patches + prefix,
            patch_size=patch,
            image_size=image,
        )

    def embed(self, images: torch.Tensor) -> torch.Tensor:
        """The backbone embedding with classification heads disabled: (N, 3, S, S) -> (N, D).

        timm's pre-logits output (pooled token, SigLIP2 attention pool, fc_norm), except for the
        families whose published embedding is the final-norm CLS token (DeiT distilled, DINOv3).
        """
        features = self.model.forward_features(images)
        if _uses_cls_embedding(self.model):
            return features[:, 0]
        return self.model.forward_head(features, pre_logits=True)

    def first_block_call(self, images: torch.Tensor) -> tuple[torch.Tensor, BlockCall]:
        """(tokens entering the first block (b, T, D), how the model calls its blocks) for ``images``.

        Recorded with a forward pre-hook (with kwargs) on the first block during the embedding forward,
        which stops there, so no family needs its own copy of how it builds the token stream. Every
        supported family passes all blocks the same extra arguments (timm ViT: none; Eva: the same
        ``rope``; transformers: the same mask and kwargs), so the call replays any block.
        """
        recorded: list[tuple[torch.Tensor, BlockCall]] = []

        def record(module: nn.Module, args: tuple, kwargs: dict) -> None:
            if args:
                recorded.append((args[0], BlockCall(tuple(args[1:]), dict(kwargs))))
            else:  # tokens passed by keyword (e.g. hidden_states=...)
                keyword, *_ = kwargs
                rest = {k: v for k, v in kwargs.items() if k != keyword}
                recorded.append((kwargs[keyword], BlockCall((), rest, keyword)))
            raise _StopForward

        handle = self.blocks[0].module.register_forward_pre_hook(record, with_kwargs=True)
        try:
            self.embed(images)
        except _StopForward:
            pass
        finally:
            handle.remove()
        if not recorded:
            raise SnapViTError(
                f"{type(self.model).__name__} never ran its first transformer block in its forward.",
                "Use a backbone whose forward runs its transformer blocks.",
            )
        return recorded[0]

    def value_rows(self, block: BlockLayers) -> slice:
        """Rows of ``qkv.weight`` that hold the values (the last third)."""
        attn_dim = block.num_heads * block.head_dim
        return slice(2 * attn_dim, 3 * attn_dim)


def choose_attention_kernel(model: nn.Module) -> None:
    """Switch a private model copy to the attention kernel that is faster where it runs (same maths).

    timm attention layers call torch's fused ``scaled_dot_product_attention`` unless ``fused_attn`` is
    off. On the CPU with short token sequences the explicit softmax(q k^T) v path is faster; with long
    ones and large batches it can be slower, as it holds an N x N matrix per head and image (the
    figures are in results/code_choices.md). So on CUDA, and for sequences over
    EXPLICIT_ATTENTION_MAX_TOKENS, the model is left as it is. Called on private copies only (the scoring
    student, the search's working copy, ElasticViT's copies), never on a caller's model.
    """
    parameter = next(model.parameters(), None)
    if parameter is None or parameter.device.type != "cpu":
        return
    if ViTAdapter(model).shape().num_tokens > EXPLICIT_ATTENTION_MAX_TOKENS:
        return
    for module in model.modules():
        if hasattr(module, "fused_attn"):
            module.fused_attn = False


class ClsOutputBlock(Block):
    """timm's ``Block`` that computes only the CLS token's output; the other tokens pass through unchanged.

    Used as the last block of private copies whose embedding is the CLS token alone (see
    :func:`prepare_private_copy`): nothing after it reads the other tokens' outputs, so the queries,
    attention rows, projection and MLP of N - 1 tokens are skipped (keys and values still come from
    every token). Same embedding and, in scoring, the same gradients (the skipped rows contribute
    nothing to the loss). With an attention mask it falls back to timm's forward.
    """

    def forward(self, x: torch.Tensor, attn_mask: torch.Tensor | None = None, is_causal: bool = False) -> torch.Tensor:
        if attn_mask is not None or is_causal:
            return super().forward(x, attn_mask=attn_mask, is_causal=is_causal)
        attn = self.attn
        batch, tokens, _ = x.shape
        heads, head_dim = attn.num_heads, attn.head_dim
        width = heads * head_dim
        y = self.norm1(x)
        weight, bias = attn.qkv.weight, attn.qkv.bias  # rows [q | k | v]; slices keep gradients flowing
        q = F.linear(y[:, :1], weight[:width], None if bias is None else bias[:width])
        kv = F.linear(y, weight[width:], None if bias is None else bias[width:])
        q = q.reshape(batch, 1, heads, head_dim).transpose(1, 2)  # (B, H, 1, d)
        k, v = kv.reshape(batch, tokens, 2, heads, head_dim).permute(2, 0, 3, 1, 4).unbind(0)  # (B, H, N, d)
        q, k = attn.q_norm(q), attn.k_norm(k)
        if attn.fused_attn:
            out = F.scaled_dot_product_attention(q, k, v)
        else:
            out = ((q * attn.scale) @ k.transpose(-2, -1)).softmax(dim=-1) @ v
        out = attn.proj_drop(attn.proj(attn.norm(out.transpose(1, 2).reshape(batch, 1, width))))
        cls = x[:, :1] + self.drop_path1(self.ls1(out))
        cls = cls + self.drop_path2(self.ls2(self.mlp(self.norm2(cls))))
        return torch.cat([cls, x[:, 1:]], dim=1)


def _only_cls_token_is_read(model: nn.Module) -> bool:
    """Whether the embedding and the logits read only the final CLS row (timm token pooling). Not DeiT
    distilled: its logits average the CLS and distillation heads."""
    if isinstance(model, VisionTransformerDistilled):
        return False
    return (
        isinstance(model, VisionTransformer)
        and getattr(model, "global_pool", None) == "token"
        and getattr(model, "attn_pool", None) is None
        and getattr(model, "cls_token", None) is not None
    )


def prepare_private_copy(model: nn.Module) -> None:
    """Make a private copy that only computes embeddings (or logits) faster where it runs, same results
    to round-off: the attention kernel of :func:`choose_attention_kernel`, and, when the embedding and the
    logits are the CLS token's (timm token pooling) and the last block is timm's plain ``Block``, a last
    block that computes only the CLS output (:class:`ClsOutputBlock`: the embedded backbone's 6 blocks,
    ~14 % of a forward; ViT-S/16, ~7 %).

    For the scoring student and the search's working copy only: weight correction reads every token's
    activations in every block, so ``ElasticViT`` (which is corrected and exported) is not changed.
    """
    choose_attention_kernel(model)
    blocks = getattr(model, "blocks", None)
    if not blocks or not _only_cls_token_is_read(model):
        return
    last = blocks[-1]
    if type(last) is Block and type(last.attn) is Attention and getattr(last.attn, "gate", None) is None:
        last.__class__ = ClsOutputBlock


class EmbeddingModule(nn.Module):
    """A backbone's embedding forward (classification heads disabled) as a module of its own: what ONNX
    exports and the ONNX runtime's latency calibration run for a whole model."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return ViTAdapter(self.model).embed(images)
