"""Backbone presets and the published sparsity pairs. Adding a backbone is one line.

The published SnapViT backbones by their exact timm names; any other timm ViT name, a local
checkpoint directory and ``embedded`` (``EMBEDDED_MODEL_ID``) work as model ids too. Two lists of
(MLP, head) sparsity pairs live here, named for what they are used for: ``PUBLISHED_SPARSITY_PAIRS``
(the evaluation path of the paper's tables and the app's coupled slider) and ``SEARCH_FITNESS_PAIRS``
(the pairs the published multiplier search averages its fitness over).
"""

from __future__ import annotations

EMBEDDED_MODEL_ID = "embedded"  # the model id of the ViT shipped in snapvit_core/assets/ (the offline default)
# Ids served from the assets. Each must be a model worth pruning: its unpruned kNN top-1 is at least 90 %
# (tests/test_embedded.py). A DINO-trained "embedded-ssl" collapsed to chance (10.9 %) and was removed
# (results/backbones.md).
EMBEDDED_MODEL_IDS: tuple[str, ...] = (EMBEDDED_MODEL_ID,)
REMOVED_MODEL_IDS: dict[str, str] = {  # id -> why it is no longer served (said when a script still names it)
    "embedded-ssl": "its label-free DINO training collapsed: unpruned kNN top-1 10.9 %, chance level",
}

BACKBONE_PRESETS: dict[str, str] = {
    "Embedded digits ViT (offline default)": EMBEDDED_MODEL_ID,
    "DINO ViT-S/16": "vit_small_patch16_224.dino",
    "DINO ViT-B/16": "vit_base_patch16_224.dino",
    "DeiT ViT-B/16": "deit_base_patch16_224.fb_in1k",
    "DeiT ViT-B/16 distilled": "deit_base_distilled_patch16_224.fb_in1k",
    "DeiT-III ViT-S/16": "deit3_small_patch16_224.fb_in22k_ft_in1k",
    "DeiT-III ViT-B/16": "deit3_base_patch16_224.fb_in22k_ft_in1k",
    "DeiT-III ViT-L/16": "deit3_large_patch16_224.fb_in22k_ft_in1k",
    "AugReg ViT-S/16": "vit_small_patch16_224.augreg_in21k_ft_in1k",
    "AugReg ViT-B/16": "vit_base_patch16_224.augreg_in21k_ft_in1k",
    "AugReg ViT-L/16": "vit_large_patch16_224.augreg_in21k_ft_in1k",
    "SigLIP2 ViT-B/16": "vit_base_patch16_siglip_224.v2_webli",
    "DINOv3 ViT-B/16": "vit_base_patch16_dinov3.lvd1689m",
}

# The published (MLP, head) sparsity path used for the paper's tables and the app's coupled slider.
PUBLISHED_SPARSITY_PAIRS: tuple[tuple[float, float], ...] = (
    (0.0, 0.0),
    (0.15, 0.0),
    (0.25, 0.1),
    (0.35, 0.2),
    (0.45, 0.3),
    (0.55, 0.4),
    (0.65, 0.5),
)

# The (MLP, head) sparsity pairs the published xNES multiplier search averages its fitness over.
SEARCH_FITNESS_PAIRS: tuple[tuple[float, float], ...] = ((0.15, 0.0), (0.35, 0.2), (0.55, 0.4), (0.65, 0.5))
