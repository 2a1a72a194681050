"""Hugging Face transformers vision backbones (ViT, DINOv2) behind the adapter's interface.

``HFVisionBackbone`` wraps a transformers ``ViTModel`` / ``Dinov2Model`` / ``Dinov2WithRegistersModel``
and gives it the small timm-like surface the adapter reads: ``forward_features`` (final-norm tokens),
``forward_head(pre_logits=True)`` (the CLS token: the pooler is never used), ``block_modules()`` (each
layer's attention and MLP) and the input geometry. Each layer's separate q/k/v projections are fused
once, exactly, into one ``qkv`` Linear (rows [q | k | v]) inside ``FusedQKVAttention``, so the pruning
engine, the scores and the metrics see the same layout as a timm ViT and need no special case.

Loading (``hf:REPO_OR_PATH``) lives in ``backbones.py``; this module only needs a built model.
"""

from __future__ import annotations

import contextlib
import io
import json
import pickle
from collections.abc import Iterator
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from snapvit_core.errors import SnapViTError

# transformers model_type -> model class name (the bare encoder, no classification head).
HF_MODEL_CLASSES: dict[str, str] = {
    "vit": "ViTModel",
    "dinov2": "Dinov2Model",
    "dinov2_with_registers": "Dinov2WithRegistersModel",
}
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def supported_model_types() -> str:
    return ", ".join(sorted(HF_MODEL_CLASSES))


class FusedQKVAttention(nn.Module):
    """Drop-in for a transformers ViT/DINOv2 attention module, with q/k/v fused into one ``qkv``.

    Its width follows ``num_heads`` (the pruning engine lowers it), so no other attribute needs
    updating when heads are removed. Returns ``(output, None)`` like the module it replaces.
    """

    def __init__(self, source: nn.Module) -> None:
        super().__init__()
        q, k, v, o = source.q_proj, source.k_proj, source.v_proj, source.o_proj
        self.head_dim = int(source.head_dim)
        self.num_heads = q.out_features // self.head_dim
        self.scale = float(source.scaling)
        self.qkv = nn.Linear(q.in_features, 3 * q.out_features, bias=q.bias is not None)
        self.proj = o
        with torch.no_grad():
            self.qkv.weight.copy_(torch.cat([q.weight, k.weight, v.weight]))
            if q.bias is not None:
                self.qkv.bias.copy_(torch.cat([q.bias, k.bias, v.bias]))
        self.qkv.to(device=q.weight.device, dtype=q.weight.dtype)

    @property
    def num_attention_heads(self) -> int:
        """The transformers name of ``num_heads``."""
        return self.num_heads

    def forward(
        self, hidden_states: torch.Tensor, attention_mask: torch.Tensor | None = None, **kwargs: object
    ) -> tuple[torch.Tensor, None]:
        batch, tokens, _ = hidden_states.shape
        qkv = self.qkv(hidden_states).reshape(batch, tokens, 3, self.num_heads, self.head_dim)
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)  # each (B, H, N, d)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=attention_mask, scale=self.scale)
        out = out.transpose(1, 2).reshape(batch, tokens, self.num_heads * self.head_dim)  # (B, N, H * d)
        return self.proj(out), None


class HFVisionBackbone(nn.Module):
    """A transformers vision encoder seen as a ViT backbone; the embedding is the final-norm CLS token.

    Args:
        model: a ``ViTModel`` (without pooler), ``Dinov2Model`` or ``Dinov2WithRegistersModel``.
        image_size: the input size images are fed at (the image processor's crop size).
    """

    def __init__(self, model: nn.Module, image_size: int | None = None) -> None:
        super().__init__()
        config = model.config
        if config.model_type not in HF_MODEL_CLASSES:
            raise SnapViTError(
                f"Unsupported transformers model type '{config.model_type}'.",
                f"Supported model types: {supported_model_types()}.",
            )
        self.hf = model
        self.model_type = str(config.model_type)
        self.config_image_size = _as_int(config.image_size)
        self.image_size = int(image_size or self.config_image_size)
        self.patch_size = _as_int(config.patch_size)
        self.num_prefix_tokens = 1 + int(getattr(config, "num_register_tokens", 0) or 0)
        for layer in self.layers:
            if not isinstance(layer.attention, FusedQKVAttention):
                if not all(hasattr(layer.attention, name) for name in ("q_proj", "k_proj", "v_proj", "o_proj")):
                    raise SnapViTError(
                        f"This transformers version lays out {type(layer.attention).__name__} without "
                        "q_proj/k_proj/v_proj/o_proj.",
                        "Use transformers >= 5 (the version this project pins).",
                    )
                layer.attention = FusedQKVAttention(layer.attention)

    @property
    def layers(self) -> nn.ModuleList:
        """The transformer layers (``ViTModel.layers``; ``Dinov2Model.encoder.layer``)."""
        encoder = getattr(self.hf, "encoder", None)
        return encoder.layer if encoder is not None else self.hf.layers

    @property
    def num_patches(self) -> int:
        return (self.image_size // self.patch_size) ** 2

    def block_modules(self) -> list[tuple[nn.Module, nn.Module]]:
        """(attention, MLP) of every transformer layer, in order."""
        return [(layer.attention, layer.mlp) for layer in self.layers]

    def forward_features(self, images: torch.Tensor) -> torch.Tensor:
        """(N, 3, S, S) -> (N, T, D) tokens after the final layernorm."""
        kwargs = {}
        if self.model_type == "vit":  # ViT only interpolates its position embeddings when asked
            kwargs["interpolate_pos_encoding"] = images.shape[-1] != self.config_image_size
        return self.hf(pixel_values=images, **kwargs).last_hidden_state

    def forward_head(self, features: torch.Tensor, pre_logits: bool = True) -> torch.Tensor:
        """The CLS token; there is no classification head."""
        return features[:, 0]

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(images))


def _as_int(value: object) -> int:
    return int(value[0] if isinstance(value, (tuple, list)) else value)  # type: ignore[index, arg-type]


def read_model_type(directory: Path) -> str:
    """The ``model_type`` of a saved transformers model directory (clear errors otherwise)."""
    config_path = directory / "config.json"
    if not config_path.is_file():
        raise SnapViTError(
            f"Directory '{directory}' has no config.json.",
            "A transformers model directory is written by `model.save_pretrained(DIR)` (config.json + weights).",
        )
    from snapvit_core.files.guards import read_bounded

    raw = read_bounded(config_path, 1 << 20, "the model config", "Fix or re-create the file.")  # a few KB
    try:
        config = json.loads(raw.decode("utf-8"))
    except (ValueError, RecursionError) as error:
        raise SnapViTError(f"{config_path} is not valid JSON ({error}).", "Fix or re-create the file.") from error
    model_type = config.get("model_type") if isinstance(config, dict) else None
    if not isinstance(model_type, str) or model_type not in HF_MODEL_CLASSES:  # a list is not hashable
        shown = repr(model_type)[:80]
        raise SnapViTError(
            f"Unsupported transformers model type {shown} in {config_path}.",
            f"Supported model types: {supported_model_types()} (ViTModel, Dinov2Model, Dinov2WithRegistersModel).",
        )
    for key, limit in _CONFIG_LIMITS.items():  # a typo or a hostile config must not allocate 100 GB
        value = config.get(key)
        if value is not None and (type(value) is not int or not 1 <= value <= limit):
            raise SnapViTError(
                f"{config_path}: '{key}' is {repr(value)[:60]}, expected an integer in [1, {limit}].",
                "Fix config.json or save the model again with save_pretrained.",
            )
    return str(model_type)


# Upper bounds on a transformers ViT config's sizes (ViT-22B: 48 layers, hidden 6144, MLP 24576).
_CONFIG_LIMITS = {
    "num_hidden_layers": 256,
    "hidden_size": 16384,
    "intermediate_size": 65536,
    "num_attention_heads": 256,
    "image_size": 4096,
    "patch_size": 1024,
}
# Weights a bare encoder may leave unused: the classification head and pooler of a *ForImageClassification save.
_IGNORABLE_PREFIXES = ("classifier.", "pooler.", "head.", "vit.pooler.", "dinov2.pooler.")


def _check_loading_info(info: dict, directory: Path) -> None:
    """Refuse weights whose keys do not match the model: transformers would silently init those randomly."""
    missing = list(info.get("missing_keys") or [])
    mismatched = [str(entry[0] if isinstance(entry, tuple) else entry) for entry in info.get("mismatched_keys") or []]
    unexpected = [k for k in info.get("unexpected_keys") or [] if not str(k).startswith(_IGNORABLE_PREFIXES)]
    problems = [
        f"{len(keys)} {what} (e.g. {', '.join(map(str, sorted(keys)[:3]))})"
        for what, keys in (("missing", missing), ("mismatched", mismatched), ("unexpected", unexpected))
        if keys
    ]
    if problems:
        raise SnapViTError(
            f"The weights in '{directory}' do not match its config.json: {'; '.join(problems)} key(s); "
            "the model would be partly random.",
            "Save the model again with save_pretrained, or pass --random-init to use the architecture without weights.",
        )


def build_hf_backbone(directory: Path, random_init: bool) -> tuple[HFVisionBackbone, dict]:
    """Build the wrapped model from a saved directory and its timm-style data config.

    Args:
        directory: holds config.json (and the weights unless ``random_init``), e.g. a snapshot of
            the Hugging Face cache or the output of ``save_pretrained``.
        random_init: build the architecture from config.json without reading weights.
    """
    import transformers

    from snapvit_core.files.guards import check_regular

    model_type = read_model_type(directory)
    model_class = getattr(transformers, HF_MODEL_CLASSES[model_type])
    kwargs = {"add_pooling_layer": False} if model_type == "vit" else {}
    if not random_init:  # transformers opens them itself: never a FIFO (it would block) or a device
        for weights in sorted([*directory.glob("*.safetensors"), *directory.glob("*.bin")]):
            check_regular(weights, 1 << 40, "the model weights", "Save the model again with save_pretrained.")
    try:
        with _quiet_transformers():  # its load report, progress bars and prints never reach the user
            if random_init:
                config = transformers.AutoConfig.from_pretrained(str(directory), local_files_only=True)
                model = model_class(config, **kwargs)
            else:
                model, info = model_class.from_pretrained(
                    str(directory),
                    local_files_only=True,
                    dtype=torch.float32,
                    output_loading_info=True,
                    ignore_mismatched_sizes=True,  # reported in `info`, then refused by _check_loading_info
                    **kwargs,
                )
    except Exception as error:  # missing/corrupt weights, config errors
        raise _load_error(error, directory) from error
    if not random_init:
        _check_loading_info(info, directory)
    model = model.float().eval()
    data_config = hf_data_config(directory, _as_int(model.config.image_size))
    return HFVisionBackbone(model, int(data_config["input_size"][1])), data_config


@contextlib.contextmanager
def _quiet_transformers() -> Iterator[None]:
    """transformers' logging at error level, no progress bars, stdout and stderr prints captured."""
    from transformers.utils import logging as hf_logging

    verbosity, bars = hf_logging.get_verbosity(), hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            yield
    finally:
        hf_logging.set_verbosity(verbosity)
        if bars:
            hf_logging.enable_progress_bar()


def _load_error(error: Exception, directory: Path) -> SnapViTError:
    """One line for a failed transformers load; never torch's advice to unpickle an untrusted file unsafely."""
    text = str(error)
    if isinstance(error, pickle.UnpicklingError) or "weights_only" in text or "Weights only load failed" in text:
        return SnapViTError(
            f"The weights file in '{directory}' (a pickled pytorch_model.bin) asks to build objects or run code "
            "that a weights file never needs; it was refused, not loaded.",
            "Use a model saved as model.safetensors (save_pretrained's default) from a source you trust.",
        )
    first = " ".join(text[:300].split("\n", 1)[0].split())[:200]
    return SnapViTError(
        f"Could not load the transformers model in '{directory}': {type(error).__name__}: {first}",
        "The directory must hold config.json and the weights written by save_pretrained; "
        "or pass --random-init to use the architecture without weights.",
    )


def hf_data_config(directory: Path, default_size: int) -> dict:
    """timm-style data config from preprocessor_config.json, else the model's image size and ImageNet stats."""
    processor: dict = {}
    path = directory / "preprocessor_config.json"
    if path.is_file():
        from snapvit_core.files.guards import read_bounded

        try:
            processor = json.loads(read_bounded(path, 1 << 20, "the preprocessor config").decode("utf-8"))
        except (SnapViTError, ValueError, RecursionError):
            processor = {}
        if not isinstance(processor, dict):
            processor = {}
    size = _processor_size(processor.get("crop_size") if processor.get("do_center_crop") else None)
    size = size or _processor_size(processor.get("size")) or default_size
    resize = _processor_size(processor.get("size")) if processor.get("do_center_crop") else None
    return {
        "input_size": (3, size, size),
        "mean": tuple(processor.get("image_mean") or IMAGENET_MEAN),
        "std": tuple(processor.get("image_std") or IMAGENET_STD),
        "interpolation": "bicubic" if processor.get("resample", 3) == 3 else "bilinear",
        "crop_pct": min(1.0, size / resize) if resize else 1.0,
        "crop_mode": "center",
    }


def _processor_size(value: object) -> int | None:
    """A square size from an image processor's size/crop_size entry (int or dict)."""
    if isinstance(value, int):
        return value
    if isinstance(value, dict):
        for key in ("height", "shortest_edge", "width"):
            if isinstance(value.get(key), int):
                return int(value[key])
    return None
