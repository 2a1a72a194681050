"""transformers model of a SnapViT export: ``AutoModel.from_pretrained(EXPORT, trust_remote_code=True)``.

Every export carries a verbatim copy of this file next to ``configuration_snapvit.py`` and
``load_pruned.py`` (which builds the pruned timm / transformers backbone; torch, timm, safetensors and
transformers only). The backbone sits under ``model`` (``base_model_prefix``), so the export's
``model.safetensors`` (keys of the bare backbone) loads into it unchanged. A local export folder is
checked by ``load_pruned.check_export`` before transformers builds anything (config.json against the
weights' header: one ``ExportError`` line naming the file and the problem).
"""

import os

import torch
from transformers import PreTrainedModel
from transformers.modeling_outputs import BaseModelOutputWithPooling

from .configuration_snapvit import SnapViTConfig
from .load_pruned import build_pruned, check_config, check_export, pool


class SnapViTModel(PreTrainedModel):
    """The pruned backbone; ``pooler_output`` is the embedding SnapViT measured (kNN, similarity)."""

    config_class = SnapViTConfig
    base_model_prefix = "model"
    main_input_name = "pixel_values"

    def __init__(self, config: SnapViTConfig) -> None:
        super().__init__(config)
        settings = check_config(config.to_dict())  # bounded widths and depth before anything is allocated
        # Built for real on the CPU even when transformers initialises on the meta device: some backbones
        # compute non-persistent buffers at construction (timm Eva's RoPE tables) that no weight file holds.
        with torch.device("cpu"):
            self.model = build_pruned(settings)
        # transformers may re-allocate buffers that are not in the weight file (non-persistent ones, e.g.
        # timm Eva's RoPE periods) without their values: keep them to restore after loading.
        self._computed_buffers = {
            f"{prefix}.{name}" if prefix else name: buffer.detach().clone()
            for prefix, module in self.model.named_modules()
            for name, buffer in module._buffers.items()
            if buffer is not None and name in module._non_persistent_buffers_set
        }
        self.post_init()

    @classmethod
    def from_pretrained(cls, *args: object, **kwargs: object):
        source = args[0] if args else kwargs.get("pretrained_model_name_or_path")
        if isinstance(source, (str, os.PathLike)) and os.path.isdir(source):
            check_export(source)  # config.json against model.safetensors' header, before anything is built
        loaded = super().from_pretrained(*args, **kwargs)
        model = loaded[0] if isinstance(loaded, tuple) else loaded
        with torch.no_grad():
            for name, value in model._computed_buffers.items():
                model.model.get_buffer(name).copy_(value)
        return loaded

    def _init_weights(self, module: torch.nn.Module) -> None:
        """Nothing to initialise: every weight comes from model.safetensors."""

    def forward(self, pixel_values: torch.Tensor, **kwargs: object) -> BaseModelOutputWithPooling:
        features = self.model.forward_features(pixel_values)  # (N, T, D) final-norm tokens
        return BaseModelOutputWithPooling(last_hidden_state=features, pooler_output=pool(self.model, features))
