"""Load a SnapViT-pruned ViT with torch, timm, safetensors (and transformers for its families) only.

    from load_pruned import load_pruned, embed
    model = load_pruned(".")            # the pruned backbone, eval mode
    features = embed(model, images)     # (N, 3, S, S) -> (N, D): the embedding the export was measured with

Every export folder holds a copy of this file (``snapvit_core.export.writer`` copies it verbatim), so it must
run without the snapvit_core library: it imports nothing from it and repeats the few lines of block
resizing it needs (the library's own versions are ``snapvit_core.engine.surgery.resize_to_widths``,
``adapter.WidthFollowingEvaAttention`` and ``hf_vit.FusedQKVAttention``; the tests load exports of every
family with both and compare). The export's ``modeling_snapvit.py`` (transformers ``AutoModel`` with
``trust_remote_code=True``) builds the model with :func:`build_pruned` from here too. Run as a script
it loads the folder it sits in and prints the embedding shape.

Families: timm VisionTransformer (standard, GLU and SwiGLU MLPs, DeiT distilled, SigLIP2), timm Eva
(DINOv3: heads removed need an attention whose output width follows its head count), and transformers
ViT / DINOv2 (q/k/v fused into one ``qkv`` as the library does).

A folder is checked before anything real is built (:func:`check_export`): config.json is read only as a
regular file of at most ``MAX_CONFIG_BYTES`` and its values are bounded; the weights' safetensors header
(names and shapes, no tensor data) is the one source of truth for depth and widths: the architecture
config.json describes is built on the meta device (no memory), its size bounded by the weights', and its
tensor shapes must equal the header's. Anything wrong is one ``ExportError`` line naming the file and the
problem.
"""

import json
import math
import os
import stat
import sys
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import load_file
from torch import nn

MAX_CONFIG_BYTES = 1 << 20  # an export's config.json is a few KB
MAX_WEIGHTS_BYTES = 1 << 40  # model.safetensors is mapped, not read whole; it only has to be a regular file
MAX_BLOCKS = 256  # transformer blocks (ViT-22B has 48)
MAX_WIDTH = 1 << 16  # kept heads, kept MLP neurons or head size of one block
MAX_NUMBER = 1 << 20  # any number in model_args (widths, sizes, classes)
MAX_GROWTH = 64  # the unpruned architecture may hold at most this many times the values of the weights
HF_MODEL_CLASSES = {"vit": "ViTModel", "dinov2": "Dinov2Model", "dinov2_with_registers": "Dinov2WithRegistersModel"}


class ExportError(ValueError):
    """A file of an export folder is missing, unreadable or does not match the others (one line: file, problem)."""


def _fail(path, problem):
    return ExportError(f"{path}: {problem}")


def _regular(path, limit, read=True):
    """The bytes of ``path`` (or b"" when not ``read``): only a regular file of at most ``limit`` bytes, never a
    FIFO (it would block) or a device (/dev/zero never ends); snapvit_core.files.guards does this in the library."""
    try:
        if not stat.S_ISREG(os.stat(path).st_mode):
            raise _fail(path, "not a regular file (a FIFO, device or folder)")
        descriptor = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    except FileNotFoundError:
        raise _fail(path, "missing") from None
    except OSError as error:
        raise _fail(path, f"cannot be read ({error.strerror or error})") from None
    with os.fdopen(descriptor, "rb") as handle:
        info = os.fstat(handle.fileno())
        if not stat.S_ISREG(info.st_mode):
            raise _fail(path, "not a regular file (a FIFO, device or folder)")
        if info.st_size > limit:
            raise _fail(path, f"{info.st_size:,} bytes, larger than the limit of {limit:,} bytes")
        data = handle.read(limit + 1) if read else b""
    if len(data) > limit:
        raise _fail(path, f"larger than the limit of {limit:,} bytes")
    return data


def _whole(value, low, high):
    return not isinstance(value, bool) and isinstance(value, int) and low <= value <= high


def check_config(config, path="config.json"):
    """Refuse a config.json (a parsed dict) that the loaders could not build, or not within bounds, before anything
    is built: the 'pruning' widths, the family and the numbers in 'model_args'."""
    if not isinstance(config, dict):
        raise _fail(path, "not a JSON object")
    pruning = config.get("pruning")
    if not isinstance(pruning, dict):
        raise _fail(path, "no 'pruning' object (the kept heads and MLP neurons per block)")
    for name in ("kept_heads", "kept_neurons"):
        widths = pruning.get(name)
        if not isinstance(widths, list) or not 1 <= len(widths) <= MAX_BLOCKS:
            raise _fail(path, f"pruning.{name} must be a list of 1..{MAX_BLOCKS} widths, one per block")
        for width in widths:
            if not _whole(width, 0, MAX_WIDTH):
                raise _fail(
                    path, f"pruning.{name} holds {str(width)[:20]}; a width is a whole number in 0..{MAX_WIDTH}"
                )
    if len(pruning["kept_heads"]) != len(pruning["kept_neurons"]):
        raise _fail(
            path,
            f"pruning.kept_heads has {len(pruning['kept_heads'])} blocks, "
            f"pruning.kept_neurons {len(pruning['kept_neurons'])}",
        )
    if not _whole(pruning.get("head_dim"), 1, MAX_WIDTH):
        raise _fail(path, f"pruning.head_dim must be a whole number in 1..{MAX_WIDTH}")
    if not isinstance(pruning.get("mlp_kind"), str):
        raise _fail(path, "pruning.mlp_kind must be a string")
    spec = config.get("model_args")
    if not isinstance(spec, dict):
        raise _fail(path, "no 'model_args' object (how to build the unpruned architecture)")
    stack = [("model_args", spec)]
    while stack:  # every number bounded, however deep (widths, sizes and classes size the build)
        name, value = stack.pop()
        if isinstance(value, dict):
            stack.extend((f"{name}.{key}", item) for key, item in value.items())
        elif isinstance(value, list):
            stack.extend((f"{name}[{i}]", item) for i, item in enumerate(value))
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            if not (math.isfinite(value) and abs(value) <= MAX_NUMBER):
                raise _fail(path, f"{name[:80]} is {str(value)[:20]}, outside -{MAX_NUMBER}..{MAX_NUMBER}")
    blocks = len(pruning["kept_heads"])
    if config.get("family") == "hf":
        settings = spec.get("config")
        if spec.get("model_class") not in HF_MODEL_CLASSES.values() or not isinstance(settings, dict):
            raise _fail(path, f"model_args must name one of {sorted(HF_MODEL_CLASSES.values())} and its config")
        if HF_MODEL_CLASSES.get(spec.get("model_type")) != spec["model_class"]:
            raise _fail(path, "model_args.model_type does not match model_args.model_class")
        if not _whole(spec.get("image_size"), 1, MAX_NUMBER):
            raise _fail(path, "model_args.image_size must be a positive whole number")
        depth, depth_name = settings.get("num_hidden_layers"), "model_args.config.num_hidden_layers"
    else:
        depth, depth_name = spec.get("depth", blocks), "model_args.depth"
    if depth != blocks:
        raise _fail(path, f"{depth_name} is {str(depth)[:20]} but pruning lists {blocks} blocks")
    return config


def read_config(directory):
    """The checked config.json of an export folder (a regular file of at most MAX_CONFIG_BYTES, JSON, bounded)."""
    path = Path(directory) / "config.json"
    try:
        config = json.loads(_regular(path, MAX_CONFIG_BYTES).decode("utf-8"))
    except ExportError:
        raise
    except (UnicodeDecodeError, ValueError, RecursionError) as error:
        raise _fail(path, f"not valid JSON ({str(error).splitlines()[0][:120]})") from None
    return check_config(config, path)


def weight_shapes(path):
    """{tensor name: shape} of a safetensors file, from its header alone (no tensor data is read)."""
    from safetensors import safe_open

    _regular(path, MAX_WEIGHTS_BYTES, read=False)
    try:
        with safe_open(str(path), framework="pt") as handle:
            return {key: tuple(handle.get_slice(key).get_shape()) for key in handle.keys()}
    except Exception as error:  # noqa: BLE001 - safetensors reports a damaged file in several types
        detail = str(error).splitlines()[0][:120] if str(error) else type(error).__name__
        raise _fail(path, f"not a safetensors weight file ({detail})") from None


def check_weights(config, shapes, config_path="config.json", weights_path="model.safetensors"):
    """Refuse a checked config (see check_config) whose architecture is not the weights' (``shapes``, from
    :func:`weight_shapes`), before anything real is allocated: built on the meta device, the unpruned architecture
    may hold at most MAX_GROWTH x the weights' values, and the pruned one must have exactly the weights' shapes."""
    stored = sum(math.prod(shape) for shape in shapes.values())
    try:
        with torch.device("meta"):
            model = _unpruned(config)
            values = sum(t.numel() for t in (*model.parameters(), *model.buffers()))
            if values > MAX_GROWTH * stored + (1 << 24):
                raise _fail(
                    config_path,
                    f"its unpruned architecture holds {values:,} values, more than {MAX_GROWTH} x the {stored:,} "
                    f"of {Path(weights_path).name}",
                )
            _prune(model, config)
    except ExportError:
        raise
    except Exception as error:  # noqa: BLE001 - what timm or transformers refuse to build
        detail = str(error).splitlines()[0][:160] if str(error) else ""
        raise _fail(config_path, f"its model_args cannot be built ({type(error).__name__}: {detail})") from None
    expected = {name: tuple(tensor.shape) for name, tensor in model.state_dict().items()}
    wrong = [name for name in expected if name in shapes and shapes[name] != expected[name]]
    if wrong:
        name = wrong[0]
        more = f" (and {len(wrong) - 1} more)" if len(wrong) > 1 else ""
        raise _fail(
            weights_path,
            f"{name} has shape {list(shapes[name])}, config.json describes {list(expected[name])}{more}",
        )
    missing, unexpected = sorted(set(expected) - set(shapes)), sorted(set(shapes) - set(expected))
    if missing or unexpected:
        example = (missing or unexpected)[0]
        raise _fail(
            weights_path,
            f"{len(missing)} tensors config.json describes are missing and {len(unexpected)} are not in its "
            f"architecture (e.g. {example[:80]})",
        )


def check_export(directory):
    """The config of an export folder after every check (config.json, then the weights' header against it)."""
    folder = Path(directory)
    config = read_config(folder)
    weights = folder / "model.safetensors"
    check_weights(config, weight_shapes(weights), folder / "config.json", weights)
    return config


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
    if spec["model_class"] not in HF_MODEL_CLASSES.values():  # never any other class transformers has
        raise ValueError(f"model_args.model_class {str(spec['model_class'])[:40]!r} is not a supported encoder")
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


def _unpruned(config):
    return _hf_model(config) if config.get("family") == "hf" else _timm_model(config)


def build_pruned(config):
    """The pruned architecture described by an export's config.json (a dict), weights uninitialised."""
    return _prune(_unpruned(config), config)


def _prune(model, config):
    """Resize ``model``'s blocks in place to the kept widths of ``config``; returns it."""
    hf = config.get("family") == "hf"
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
    """The pruned model saved in ``directory`` (config.json + model.safetensors), in eval mode.

    Raises:
        ExportError: a missing, unreadable or oversized file, or a config.json that does not describe the
            weights (checked before the model is built).
    """
    config = check_export(directory)
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
    try:
        loaded = load_pruned(folder)
        size = (read_config(folder).get("pretrained_cfg") or {}).get("input_size")
        if not (isinstance(size, list) and len(size) == 3 and all(_whole(n, 1, 4096) for n in size)):
            raise _fail(folder / "config.json", "pretrained_cfg.input_size must be 3 whole numbers in 1..4096")
    except ExportError as error:
        sys.stderr.write(f"error: {error}\n")
        return 2
    with torch.no_grad():
        out = embed(loaded, torch.zeros(1, *size))
    sys.stdout.write(f"loaded; embedding shape {tuple(out.shape)}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
