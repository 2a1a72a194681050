"""transformers model of a SnapViT export: ``AutoModel.from_pretrained(EXPORT, trust_remote_code=True)``.

Every export carries a verbatim copy of this file next to ``configuration_snapvit.py`` and
``load_pruned.py`` (which builds the pruned timm / transformers backbone; torch, timm, safetensors and
transformers only). The backbone sits under ``model`` (``base_model_prefix``), so the export's
``model.safetensors`` (keys of the bare backbone) loads into it unchanged.
"""

import torch
from transformers import PreTrainedModel
from transformers.modeling_outputs import BaseModelOutputWithPooling

from .configuration_snapvit import SnapViTConfig
from .load_pruned import build_pruned, pool


class SnapViTModel(PreTrainedModel):
    """The pruned backbone; ``pooler_output`` is the embedding SnapViT measured (kNN, similarity)."""

    config_class = SnapViTConfig
    base_model_prefix = "model"
    main_input_name = "pixel_values"

    def __init__(self, config: SnapViTConfig) -> None:
        super().__init__(config)
        self.model = build_pruned(config.to_dict())
        self.post_init()

    def _init_weights(self, module: torch.nn.Module) -> None:
        """Nothing to initialise: every weight comes from model.safetensors."""

    def forward(self, pixel_values: torch.Tensor, **kwargs: object) -> BaseModelOutputWithPooling:
        features = self.model.forward_features(pixel_values)  # (N, T, D) final-norm tokens
        return BaseModelOutputWithPooling(last_hidden_state=features, pooler_output=pool(self.model, features))
