"""transformers ViT / DINOv2 behind the adapter (hf_vit.py): exact q/k/v fusion, loading, data config."""

from __future__ import annotations

import json

import pytest
import torch
from test_families import _hf, _images

from snapvit_core.engine.adapter import ViTAdapter
from snapvit_core.engine.backbones import load_backbone
from snapvit_core.engine.hf_vit import hf_data_config, read_model_type
from snapvit_core.errors import SnapViTError

torch.set_num_threads(1)


@pytest.mark.parametrize("kind", ["vit", "dinov2"])
def test_hf_fused_attention_matches_transformers(kind):
    """The fused-qkv attention computes what the transformers layers computed."""
    import copy

    wrapped = _hf(kind)
    original = copy.deepcopy(wrapped.hf)
    from snapvit_core.engine.hf_vit import FusedQKVAttention

    assert all(isinstance(layer.attention, FusedQKVAttention) for layer in wrapped.layers)
    import transformers

    config = original.config
    fresh = type(original)(config, **({"add_pooling_layer": False} if kind == "vit" else {})).eval()
    state = {k: v for k, v in original.state_dict().items()}
    prefix = "layers" if kind == "vit" else "encoder.layer"
    for i in range(config.num_hidden_layers):  # unfuse qkv back into q/k/v
        attention = f"{prefix}.{i}.attention"
        q, k, v = state.pop(f"{attention}.qkv.weight").chunk(3)
        qb, kb, vb = state.pop(f"{attention}.qkv.bias").chunk(3)
        for name, w, b in (("q_proj", q, qb), ("k_proj", k, kb), ("v_proj", v, vb)):
            state[f"{attention}.{name}.weight"], state[f"{attention}.{name}.bias"] = w, b
        state[f"{attention}.o_proj.weight"] = state.pop(f"{attention}.proj.weight")
        state[f"{attention}.o_proj.bias"] = state.pop(f"{attention}.proj.bias")
    fresh.load_state_dict(state, strict=True)
    assert isinstance(fresh, transformers.PreTrainedModel)
    images = _images(wrapped)
    with torch.no_grad():
        expected = fresh(pixel_values=images).last_hidden_state[:, 0]
        torch.testing.assert_close(ViTAdapter(wrapped).embed(images), expected, atol=1e-5, rtol=1e-5)


def test_hf_models_load_from_a_saved_directory(tmp_path):
    import transformers

    torch.manual_seed(0)
    config = transformers.Dinov2Config(
        hidden_size=64, num_hidden_layers=2, num_attention_heads=4, image_size=56, patch_size=14
    )
    original = transformers.Dinov2Model(config).eval()
    original.save_pretrained(tmp_path / "dinov2")
    processor = {"do_center_crop": True, "crop_size": {"height": 56, "width": 56}, "size": {"shortest_edge": 64}}
    processor.update(image_mean=[0.5, 0.5, 0.5], image_std=[0.25, 0.25, 0.25], resample=3)
    (tmp_path / "dinov2" / "preprocessor_config.json").write_text(json.dumps(processor))
    images = torch.randn(2, 3, 56, 56)
    with torch.no_grad():
        expected = original(pixel_values=images).last_hidden_state[:, 0]
    for model_id in (f"hf:{tmp_path / 'dinov2'}", str(tmp_path / "dinov2")):
        backbone = load_backbone(model_id)
        assert backbone.data_config["input_size"] == (3, 56, 56) and backbone.image_size == 56
        assert backbone.data_config["mean"] == (0.5, 0.5, 0.5) and backbone.data_config["crop_pct"] == 56 / 64
        with torch.no_grad():
            torch.testing.assert_close(ViTAdapter(backbone.model).embed(images), expected, atol=1e-5, rtol=1e-5)
        shape = backbone.shape
        assert (shape.num_blocks, shape.num_heads, shape.head_dim, shape.mlp_hidden) == (2, 4, 16, 256)
    random = load_backbone(f"hf:{tmp_path / 'dinov2'}", random_init=True)
    assert random.random_init and random.shape.num_tokens == 16 + 1


@pytest.mark.parametrize("config_class", ["ResNetConfig", "SwinConfig"])
def test_unsupported_transformers_type_names_the_supported_ones(tmp_path, config_class):
    import transformers

    getattr(transformers, config_class)().save_pretrained(tmp_path)
    for model_id in (f"hf:{tmp_path}", str(tmp_path)):
        with pytest.raises(SnapViTError, match=r"Unsupported transformers model type.*dinov2.*vit"):
            load_backbone(model_id, random_init=True)


def test_transformers_directory_without_config(tmp_path):
    with pytest.raises(SnapViTError, match="no config.json"):
        load_backbone(f"hf:{tmp_path}")
    with pytest.raises(SnapViTError, match="does not exist"):
        load_backbone(f"hf:{tmp_path / 'missing'}")


def test_transformers_repo_offline_without_cache_explains_predownload(monkeypatch, tmp_path):
    from huggingface_hub import constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path))
    with pytest.raises(SnapViTError) as info:
        load_backbone("hf:facebook/dinov2-base")
    message = str(info.value)
    assert "not in the local Hugging Face cache" in message
    assert "huggingface-cli download facebook/dinov2-base" in message
    assert "snapshot_download('facebook/dinov2-base')" in message


def test_data_config_without_a_processor_file_uses_the_model_size(tmp_path):
    config = hf_data_config(tmp_path, 56)
    assert config["input_size"] == (3, 56, 56) and config["crop_pct"] == 1.0
    assert config["mean"] == (0.485, 0.456, 0.406) and config["interpolation"] == "bicubic"


def test_model_type_is_read_from_config_json(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "dinov2"}))
    assert read_model_type(tmp_path) == "dinov2"


def _tiny_vit_directory(path):
    import transformers

    config = transformers.ViTConfig(
        hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64, image_size=32, patch_size=8
    )
    transformers.ViTModel(config, add_pooling_layer=False).save_pretrained(path)
    return path


def test_mismatched_weights_are_one_line_without_transformers_report(tmp_path, capfd):
    """Issue 23 item 8: transformers printed a 31-line load report (and progress bars) before the error."""
    from snapvit_core.cli import main

    directory = _tiny_vit_directory(tmp_path / "vit")
    config = json.loads((directory / "config.json").read_text())
    (directory / "config.json").write_text(json.dumps({**config, "intermediate_size": 128}))
    capfd.readouterr()
    assert main(["info", "--model", f"hf:{directory}"]) == 2
    out, err = capfd.readouterr()
    assert out == "" and err.count("\n") == 1 and "LOAD REPORT" not in err and "Loading weights" not in err, err
    assert "do not match its config.json" in err and "mismatched" in err


def test_pickled_weights_with_code_never_quote_torchs_unsafe_advice(tmp_path, capfd):
    """Issue 23 item 8: the refusal quoted torch's 're-run with weights_only=False' for an untrusted file."""
    import transformers

    from snapvit_core.cli import main

    class Payload:
        def __reduce__(self):
            return (print, ("ran code",))

    (tmp_path / "bin").mkdir()
    transformers.ViTConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=4).save_pretrained(tmp_path / "bin")
    torch.save({"x": Payload()}, tmp_path / "bin" / "pytorch_model.bin")
    capfd.readouterr()
    assert main(["info", "--model", f"hf:{tmp_path / 'bin'}"]) == 2
    out, err = capfd.readouterr()
    assert "ran code" not in out + err and err.count("\n") == 1, err
    assert "weights_only" not in err and "trust the source" not in err and "refused" in err
