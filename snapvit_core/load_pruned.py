"""Load a SnapViT-pruned ViT with torch, timm and safetensors only: ``model = load_pruned(".")``.

Every export folder holds a copy of this file (``snapvit_core.export`` copies it verbatim), so it must
run without the snapvit_core library: it imports nothing from it and repeats the few lines of block
resizing it needs (the library's own version is ``snapvit_core.surgery.resize_to_widths``; the tests
load exports with both and compare). Run as a script it loads the folder it sits in and prints the
embedding shape.

Covers timm VisionTransformer models (standard, GLU and SwiGLU MLPs). Pruned Eva/DINOv3 exports need
an attention that follows the kept width: load those with snapvit_core.export.load_pruned.
"""

import json
import sys
from pathlib import Path

import timm
import torch
from safetensors.torch import load_file
from timm.models.vision_transformer import VisionTransformer
from torch import nn


def _linear(old, in_features, out_features):
    return nn.Linear(in_features, out_features, bias=old.bias is not None)


def load_pruned(directory):
    """The pruned model saved in ``directory`` (config.json + model.safetensors), in eval mode."""
    config = json.loads((Path(directory) / "config.json").read_text())
    if config["architecture"]:
        model = timm.create_model(config["architecture"], pretrained=False, **config["model_args"])
    else:
        model = VisionTransformer(**config["model_args"])
    pruning = config["pruning"]
    head_dim = pruning["head_dim"]
    for block, heads, neurons in zip(model.blocks, pruning["kept_heads"], pruning["kept_neurons"]):
        attn, mlp, width = block.attn, block.mlp, heads * head_dim
        attn.qkv = _linear(attn.qkv, attn.qkv.in_features, 3 * width)
        attn.proj = _linear(attn.proj, width, attn.proj.out_features)
        attn.num_heads = heads
        if hasattr(attn, "attn_dim"):
            attn.attn_dim = width
        if hasattr(mlp, "fc1_g"):  # SwiGLU: separate gate and value projections
            mlp.fc1_g = _linear(mlp.fc1_g, mlp.fc1_g.in_features, neurons)
            mlp.fc1_x = _linear(mlp.fc1_x, mlp.fc1_x.in_features, neurons)
        else:
            packed = pruning["mlp_kind"] == "glu-packed"  # fc1 rows are [value | gate] halves
            mlp.fc1 = _linear(mlp.fc1, mlp.fc1.in_features, 2 * neurons if packed else neurons)
        mlp.fc2 = _linear(mlp.fc2, neurons, mlp.fc2.out_features)
        if isinstance(getattr(mlp, "norm", None), nn.LayerNorm):
            mlp.norm = nn.LayerNorm(neurons, eps=mlp.norm.eps)
    model.load_state_dict(load_file(str(Path(directory) / "model.safetensors")), strict=True)
    return model.eval()


def main(argv):
    folder = Path(argv[1]) if len(argv) > 1 else Path(__file__).parent
    loaded = load_pruned(folder)
    size = json.loads((folder / "config.json").read_text())["pretrained_cfg"]["input_size"]
    with torch.no_grad():
        out = loaded.forward_head(loaded.forward_features(torch.zeros(1, *size)), pre_logits=True)
    sys.stdout.write(f"loaded; embedding shape {tuple(out.shape)}\n")


if __name__ == "__main__":
    main(sys.argv)
