"""Load a SnapViT-pruned ViT with torch, timm, safetensors (and transformers for its families) only.

    from load_pruned import load_pruned, embed
    model = load_pruned(".")            # the pruned backbone, eval mode
    features = embed(model, images)     # (N, 3, S, S) -> (N, D): the embedding the export was measured with

Every export folder holds a copy of this file (``snapvit_core.export`` copies it verbatim), so it must
run without the snapvit_core library: it imports nothing from it and repeats the few lines of block
resizing it needs (the library's own versions are ``snapvit_core.surgery.resize_to_widths``,
``adapter.WidthFollowingEvaAttention`` and ``hf_vit.FusedQKVAttention``; the tests load exports of every
family with both and compare). The export's ``modeling_snapvit.py`` (transformers ``AutoModel`` with
``trust_remote_code=True``) builds the model with :func:`build_pruned` from here too. Run as a script
it loads the folder it sits in and prints the embedding shape.

Families: timm VisionTransformer (standard, GLU and SwiGLU MLPs, DeiT distilled, SigLIP2), timm Eva
(DINOv3: heads removed need an attention whose output width follows its head count), and transformers
ViT / DINOv2 (q/k/v fused into one ``qkv`` as the library does).
"""

import json
import sys
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import load_file
from torch import nn


def _linear(old, in_features, out_features):
    return nn.Linear(in_features, out_features, bias=old.bias is not None)


class _FusedQKV(nn.Module):
    """A transformers ViT/DINOv2 attention with q/k/v fused into ``qkv`` (rows [q | k | v]); width follows num_heads."""

    def __init__(self, source, num_heads, head_dim):
        super().__init__()
        self.num_heads, self.head_dim, self.scale = num_heads, head_dim, float(source.scaling)
        self.qkv = nn.Linear(source.q_proj.in_features, 3 * num_heads * head_dim, bias=source.q_proj.bias is not None)
        self.proj = source.o_proj

    def forward(self, hidden_states, attention_mask=None, **kwargs):
        batch, tokens, _ = hidden_states.shape
        qkv = self.qkv(hidden_states).reshape(batch, tokens, 3, self.num_heads, self.head_dim)
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)  # each (B, H, N, d)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=attention_mask, scale=self.scale)
        return self.proj(out.transpose(1, 2).reshape(batch, tokens, self.num_heads * self.head_dim)), None


class HFBackbone(nn.Module):
    """A transformers ViT / DINOv2 encoder (state dict keys ``hf.*``); the embedding is the final-norm CLS token."""

    def __init__(self, model, image_size):
        super().__init__()
        self.hf, self.image_size = model, int(image_size)

    @property
    def layers(self):
        encoder = getattr(self.hf, "encoder", None)
        return encoder.layer if encoder is not None else self.hf.layers

    def forward_features(self, images):
        kwargs = {}
        if self.hf.config.model_type == "vit":  # ViT only interpolates its position embeddings when asked
            size = self.hf.config.image_size
            kwargs["interpolate_pos_encoding"] = images.shape[-1] != (size[0] if isinstance(size, list) else size)
        return self.hf(pixel_values=images, **kwargs).last_hidden_state

    def forward_head(self, features, pre_logits=True):
        return features[:, 0]


def _hf_model(config):
    import transformers

    spec = config["model_args"]
    settings = {k: v for k, v in spec["config"].items() if k != "model_type"}  # for_model takes it apart
    hf_config = transformers.AutoConfig.for_model(spec["model_type"], **settings)
    model_class = getattr(transformers, spec["model_class"])
    kwargs = {"add_pooling_layer": False} if spec["model_type"] == "vit" else {}
    model = HFBackbone(model_class(hf_config, **kwargs), spec["image_size"])
    head_dim = config["pruning"]["head_dim"]
    for layer in model.layers:
        heads = layer.attention.q_proj.out_features // head_dim
        layer.attention = _FusedQKV(layer.attention, heads, head_dim)
    return model


def _timm_model(config):
    import timm
    from timm.models.vision_transformer import VisionTransformer

    architecture = config.get("timm_architecture", config.get("architecture"))  # format 1 exports: "architecture"
    if architecture:
        return timm.create_model(architecture, pretrained=False, **config["model_args"])
    return VisionTransformer(**config["model_args"])


def _eva_width_following(attn):
    """timm's EvaAttention reshapes its output to the input width; this forward reshapes to heads x head_dim."""
    from timm.models.eva import EvaAttention, apply_rot_embed_cat

    class WidthFollowingEvaAttention(EvaAttention):
        def forward(self, x, rope=None, attn_mask=None, is_causal=False):
            batch, tokens, _ = x.shape
            width = self.num_heads * self.head_dim
            bias = None if self.q_bias is None else torch.cat((self.q_bias, self.k_bias, self.v_bias))
            if bias is not None and self.qkv_bias_separate:
                qkv = self.qkv(x) + bias
            else:
                qkv = F.linear(x, self.qkv.weight, bias)
            q, k, v = qkv.reshape(batch, tokens, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4).unbind(0)
            q, k = self.q_norm(q), self.k_norm(k)
            if rope is not None:
                npt, half = self.num_prefix_tokens, getattr(self, "rotate_half", False)
                q = torch.cat([q[:, :, :npt], apply_rot_embed_cat(q[:, :, npt:], rope, half=half)], dim=2).type_as(v)
                k = torch.cat([k[:, :, :npt], apply_rot_embed_cat(k[:, :, npt:], rope, half=half)], dim=2).type_as(v)
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask, is_causal=is_causal)
            return self.proj_drop(self.proj(self.norm(out.transpose(1, 2).reshape(batch, tokens, width))))

    if type(attn) is EvaAttention:
        attn.__class__ = WidthFollowingEvaAttention


def _resize_block(attn, mlp, heads, neurons, head_dim, mlp_kind):
    """Give one block's prunable layers the kept widths (uninitialised: the state dict fills them)."""
    width = heads * head_dim
    full_width = attn.num_heads * head_dim
    if type(attn).__name__ == "EvaAttention":
        _eva_width_following(attn)
    attn.qkv = _linear(attn.qkv, attn.qkv.in_features, 3 * width)
    attn.proj = _linear(attn.proj, width, attn.proj.out_features)
    for name in ("q_bias", "k_bias", "v_bias"):  # Eva's separate per-head bias vectors
        old = getattr(attn, name, None)
        if isinstance(old, torch.Tensor):
            vector = torch.zeros(width, dtype=old.dtype)
            if name in attn._buffers:
                attn._buffers[name] = vector
            else:
                setattr(attn, name, nn.Parameter(vector))
    norm = getattr(attn, "norm", None)
    if isinstance(norm, nn.LayerNorm) and norm.weight is not None and norm.weight.numel() == full_width:
        attn.norm = nn.LayerNorm(width, eps=norm.eps)
    attn.num_heads = heads
    if hasattr(attn, "attn_dim"):
        attn.attn_dim = width
    if hasattr(mlp, "fc1_g"):  # timm SwiGLU: separate gate and value projections
        mlp.fc1_g = _linear(mlp.fc1_g, mlp.fc1_g.in_features, neurons)
        mlp.fc1_x = _linear(mlp.fc1_x, mlp.fc1_x.in_features, neurons)
    elif hasattr(mlp, "gate_proj"):  # transformers SwiGLU
        mlp.gate_proj = _linear(mlp.gate_proj, mlp.gate_proj.in_features, neurons)
        mlp.up_proj = _linear(mlp.up_proj, mlp.up_proj.in_features, neurons)
    else:
        packed = mlp_kind == "glu-packed"  # fc1 rows are [value | gate] halves
        mlp.fc1 = _linear(mlp.fc1, mlp.fc1.in_features, 2 * neurons if packed else neurons)
    output = "fc2" if hasattr(mlp, "fc2") else "down_proj"
    setattr(mlp, output, _linear(getattr(mlp, output), neurons, getattr(mlp, output).out_features))
    if isinstance(getattr(mlp, "norm", None), nn.LayerNorm):
        mlp.norm = nn.LayerNorm(neurons, eps=mlp.norm.eps)


def build_pruned(config):
    """The pruned architecture described by an export's config.json (a dict), weights uninitialised."""
    hf = config.get("family") == "hf"
    model = _hf_model(config) if hf else _timm_model(config)
    pruning = config["pruning"]
    if hf:
        blocks = [(layer.attention, layer.mlp) for layer in model.layers]
    else:
        blocks = [(block.attn, block.mlp) for block in model.blocks]
    if len(blocks) != len(pruning["kept_heads"]):
        raise ValueError(f"config.json prunes {len(pruning['kept_heads'])} blocks, the architecture has {len(blocks)}")
    for (attn, mlp), heads, neurons in zip(blocks, pruning["kept_heads"], pruning["kept_neurons"]):
        _resize_block(attn, mlp, int(heads), int(neurons), int(pruning["head_dim"]), pruning["mlp_kind"])
    return model


def load_pruned(directory):
    """The pruned model saved in ``directory`` (config.json + model.safetensors), in eval mode."""
    config = json.loads((Path(directory) / "config.json").read_text())
    model = build_pruned(config)
    model.load_state_dict(load_file(str(Path(directory) / "model.safetensors")), strict=True)
    return model.eval()


def embed(model, images):
    """The embedding the export was evaluated with: (N, 3, S, S) -> (N, D)."""
    return pool(model, model.forward_features(images))


def pool(model, features):
    """(N, T, D) final tokens -> (N, D) embedding: the final-norm CLS token for DeiT distilled, DINOv3 (Eva
    with a class token and no fc_norm) and the transformers families; timm's pre-logits output (pooled
    token, attention pool, fc_norm) otherwise."""
    name = type(model).__name__
    cls_token = name in ("VisionTransformerDistilled", "HFBackbone") or (
        name == "Eva" and getattr(model, "cls_token", None) is not None and isinstance(model.fc_norm, nn.Identity)
    )
    return features[:, 0] if cls_token else model.forward_head(features, pre_logits=True)


def main(argv):
    folder = Path(argv[1]) if len(argv) > 1 else Path(__file__).parent
    loaded = load_pruned(folder)
    size = json.loads((folder / "config.json").read_text())["pretrained_cfg"]["input_size"]
    with torch.no_grad():
        out = embed(loaded, torch.zeros(1, *size))
    sys.stdout.write(f"loaded; embedding shape {tuple(out.shape)}\n")


if __name__ == "__main__":
    main(sys.argv)
