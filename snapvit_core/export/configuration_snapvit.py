"""transformers configuration of a SnapViT export (``AutoConfig`` with ``trust_remote_code=True``).

Every export carries a verbatim copy of this file. The export's config.json holds, besides the
transformers keys, the pruned architecture (``pruning``: kept heads and MLP neurons per block) and
how to build the unpruned one (``timm_architecture`` / ``model_args`` / ``family``); they become
attributes of this config and ``modeling_snapvit.SnapViTModel`` reads them.
"""

from transformers import PretrainedConfig


class SnapViTConfig(PretrainedConfig):
    """A pruned ViT exported by SnapViT Explorer."""

    model_type = "snapvit"
