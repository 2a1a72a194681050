"""Loading backbones by id: timm names, directories, clear errors offline and for non-ViTs."""

from __future__ import annotations

import json
import time

import pytest
import torch

from snapvit_core.engine.adapter import ViTAdapter
from snapvit_core.engine.backbones import load_backbone
from snapvit_core.errors import SnapViTError


def test_random_init_timm_vit_has_its_real_shape():
    backbone = load_backbone("vit_small_patch16_224.dino", random_init=True)
    shape = backbone.shape
    assert (shape.num_blocks, shape.num_heads, shape.head_dim, shape.embed_dim, shape.mlp_hidden) == (
        12,
        6,
        64,
        384,
        1536,
    )
    assert backbone.image_size == 224 and backbone.data_config["mean"] is not None
    assert not any(p.requires_grad for p in backbone.model.parameters())


def test_unknown_model_lists_presets():
    with pytest.raises(SnapViTError, match="Unknown model id 'not_a_model'.*vit_base_patch16_224.dino"):
        load_backbone("not_a_model")


def test_non_vit_is_refused():
    with pytest.raises(SnapViTError, match="not a Vision Transformer"):
        load_backbone("convnext_atto", random_init=True)


def test_missing_weights_offline_is_fast_and_explains_predownload(monkeypatch, tmp_path):
    from huggingface_hub import constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path))
    start = time.monotonic()
    with pytest.raises(SnapViTError) as info:
        load_backbone("vit_small_patch16_224.dino")
    assert time.monotonic() - start < 30  # no minute of retries (generous: shared CI machine)
    message = str(info.value)
    assert "vit_small_patch16_224.dino" in message and "not in the local Hugging Face cache" in message
    assert "pretrained=True" in message and "--random-init" in message


def _save_checkpoint_dir(path, model, architecture, model_args):
    from safetensors.torch import save_file

    path.mkdir()
    (path / "config.json").write_text(
        json.dumps({"architecture": architecture, "num_classes": 0, "model_args": model_args})
    )
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path / "model.safetensors"))


def test_local_checkpoint_directory_round_trips(tmp_path):
    import timm

    args = {"img_size": 32, "depth": 2}
    original = timm.create_model("vit_tiny_patch16_224", pretrained=False, num_classes=0, **args).eval()
    _save_checkpoint_dir(tmp_path / "ckpt", original, "vit_tiny_patch16_224", args)
    loaded = load_backbone(str(tmp_path / "ckpt"))
    images = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(ViTAdapter(loaded.model).embed(images), ViTAdapter(original).embed(images))


def test_bad_checkpoint_directories(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(SnapViTError, match="no config.json"):
        load_backbone(str(tmp_path / "empty"))
    with pytest.raises(SnapViTError, match="does not exist"):
        load_backbone(str(tmp_path / "missing"))
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "config.json").write_text("{not json")
    with pytest.raises(SnapViTError, match="not valid JSON"):
        load_backbone(str(bad))
    corrupt = tmp_path / "corrupt"
    corrupt.mkdir()
    (corrupt / "config.json").write_text(
        json.dumps({"architecture": "vit_tiny_patch16_224", "model_args": {"img_size": 32}})
    )
    (corrupt / "model.safetensors").write_bytes(b"\x00\x01garbage")
    with pytest.raises(SnapViTError, match="Could not load"):
        load_backbone(str(corrupt))


def test_model_folder_with_its_own_image_size_feeds_that_size_to_every_command(tmp_path, capsys):
    """Issue 23 item 6: search and evaluate --metrics knn fed 224 px (timm's default) to a 32 px model."""
    import timm
    from PIL import Image

    from snapvit_core.cli import main
    from snapvit_core.engine.backbones import backbone_data_config

    args = {"img_size": 32, "depth": 2}
    original = timm.create_model("vit_tiny_patch16_224", pretrained=False, num_classes=0, **args).eval()
    assert backbone_data_config(original)["input_size"] == (3, 32, 32)
    _save_checkpoint_dir(tmp_path / "ckpt", original, "vit_tiny_patch16_224", args)
    assert load_backbone(str(tmp_path / "ckpt")).data_config["input_size"] == (3, 32, 32)
    for name in ("a", "b"):
        folder = tmp_path / "data" / name
        folder.mkdir(parents=True)
        for i in range(4):
            Image.new("RGB", (40, 40), (60 * i, 100 if name == "a" else 0, 0)).save(folder / f"{i}.png")
    model, scores = ["--model", str(tmp_path / "ckpt")], str(tmp_path / "s.safetensors")
    commands = [
        ["score", *model, "--data", f"folder:{tmp_path / 'data'}", "--samples", "2", "--out", scores],
        ["evaluate", *model, "--scores", scores, "--data", f"folder:{tmp_path / 'data'}", "--metrics", "knn",
         "--k", "2", "--mlp-sparsity", "0.2", "--head-sparsity", "0"],
        ["search", *model, "--scores", scores, "--data", f"folder:{tmp_path / 'data'}", "--evaluations", "5",
         "--population-size", "4", "--covariance", "identity", "--eval-images", "4", "--quiet",
         "--out", str(tmp_path / "searched.safetensors")],
    ]  # fmt: skip
    for argv in commands:
        code = main(argv)
        err = capsys.readouterr().err
        assert code == 0, f"{argv[0]}: {err}"
