"""Hostile checkpoint directories: clear refusals, never a traceback or a silently random model (issue 16, 8/13)."""

from __future__ import annotations

import json

import pytest
import torch

from snapvit_core.cli import main
from snapvit_core.engine.backbones import load_backbone
from snapvit_core.errors import SnapViTError


def _timm_dir(path, model_args, **extra):
    path.mkdir()
    config = {"architecture": "vit_tiny_patch16_224", "num_classes": 0, "model_args": model_args, **extra}
    (path / "config.json").write_text(json.dumps(config))
    return path


@pytest.mark.parametrize(
    ("model_args", "words"),
    [
        (["depth", 2], "must be an object"),
        ("bogus", "must be an object"),
        ({"depth": "abc"}, "expected an integer"),
        ({"depth": 2.5}, "expected an integer"),
        ({"depth": 10**9}, "[1, 256]"),
        ({"depth": 100000}, "[1, 256]"),
        ({"embed_dim": -4}, "[1, 16384]"),
        ({"pretrained": True}, "may not set"),
        ({"checkpoint_path": "/etc/passwd"}, "may not set"),
        ({"device": "cuda"}, "may not set"),
        ({"block_fn": "os.system"}, "may not set"),
        ({"no_such_argument": 1}, "unknown model argument"),
        ({"qkv_bias": "yes"}, "true or false"),
        ({"embed_dim": 100, "num_heads": 3}, "timm cannot build"),  # 100 is not divisible by 3
    ],
)
def test_bogus_model_args_are_refused(tmp_path, model_args, words):
    path = _timm_dir(tmp_path / "ckpt", model_args)
    with pytest.raises(SnapViTError) as info:
        load_backbone(str(path), random_init=True)
    assert words in str(info.value) and "\n" not in str(info.value), str(info.value)


def test_checkpoint_path_is_never_passed_through(tmp_path, monkeypatch):
    """Even a weights file that exists is not loaded from a config's checkpoint_path."""
    import timm

    bait = tmp_path / "bait.pth"
    torch.save({}, bait)
    calls = []
    real = timm.create_model
    monkeypatch.setattr(timm, "create_model", lambda *a, **k: calls.append(k) or real(*a, **k))
    path = _timm_dir(tmp_path / "ckpt", {"img_size": 32, "depth": 1, "checkpoint_path": str(bait)})
    with pytest.raises(SnapViTError, match="checkpoint_path"):
        load_backbone(str(path), random_init=True)
    assert not any("checkpoint_path" in k for k in calls)


def test_valid_model_args_still_load(tmp_path):
    path = _timm_dir(tmp_path / "ckpt", {"img_size": [32, 32], "depth": 2, "mlp_ratio": 2, "qkv_bias": False})
    backbone = load_backbone(str(path), random_init=True)
    assert backbone.shape.num_blocks == 2


def test_bogus_num_classes_and_pretrained_cfg(tmp_path):
    with pytest.raises(SnapViTError, match="num_classes"):
        load_backbone(str(_timm_dir(tmp_path / "a", {}, num_classes="many")), random_init=True)
    with pytest.raises(SnapViTError, match="pretrained_cfg"):
        load_backbone(str(_timm_dir(tmp_path / "b", {}, pretrained_cfg=[1])), random_init=True)


def test_cli_bogus_model_dir_is_one_line(tmp_path, capsys):
    path = _timm_dir(tmp_path / "ckpt", {"depth": "abc"})
    code = main(["info", "--model", str(path), "--random-init"])
    _, err = capsys.readouterr()
    assert code == 2 and err.count("\n") == 1 and "Traceback" not in err


# --- transformers directories ------------------------------------------------------------------


def _hf_dir(tmp_path, name="vit"):
    import transformers

    torch.manual_seed(0)
    config = transformers.ViTConfig(
        hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64, image_size=32, patch_size=16
    )
    transformers.ViTModel(config, add_pooling_layer=False).save_pretrained(tmp_path / name)
    return tmp_path / name


@pytest.mark.parametrize("model_type", [["vit"], {"a": 1}, 3])
def test_hf_model_type_that_is_not_a_string(tmp_path, model_type):
    path = _hf_dir(tmp_path)
    config = json.loads((path / "config.json").read_text())
    (path / "config.json").write_text(json.dumps({**config, "model_type": model_type}))
    for model_id in (f"hf:{path}", str(path)):
        with pytest.raises(SnapViTError, match="Unsupported transformers model type"):
            load_backbone(model_id)


def test_hf_config_with_huge_sizes_is_refused(tmp_path):
    path = _hf_dir(tmp_path)
    config = json.loads((path / "config.json").read_text())
    (path / "config.json").write_text(json.dumps({**config, "num_hidden_layers": 10**6}))
    with pytest.raises(SnapViTError, match="num_hidden_layers"):
        load_backbone(f"hf:{path}", random_init=True)


def test_hf_weights_with_other_keys_are_refused_not_randomly_initialised(tmp_path):
    """Item 13: renamed weight keys used to load a random model reported as random_init false."""
    from safetensors.torch import load_file, save_file

    path = _hf_dir(tmp_path)
    weights = path / "model.safetensors"
    state = load_file(str(weights))
    save_file({f"renamed.{key}": value for key, value in state.items()}, str(weights), metadata={"format": "pt"})
    with pytest.raises(SnapViTError, match="do not match") as info:
        load_backbone(f"hf:{path}")
    assert "missing" in str(info.value) and "unexpected" in str(info.value)
    assert load_backbone(f"hf:{path}", random_init=True).random_init  # the architecture alone still loads


def test_hf_weights_missing_one_tensor_are_refused(tmp_path):
    from safetensors.torch import load_file, save_file

    path = _hf_dir(tmp_path)
    weights = path / "model.safetensors"
    state = load_file(str(weights))
    state.pop(next(key for key in state if key.endswith("mlp.fc1.weight") or "intermediate" in key))
    save_file(state, str(weights), metadata={"format": "pt"})
    with pytest.raises(SnapViTError, match="1 missing"):
        load_backbone(f"hf:{path}")


def test_oversized_or_deeply_nested_config_json(tmp_path):
    path = tmp_path / "ckpt"
    path.mkdir()
    (path / "config.json").write_text("[" * 100_000 + "]" * 100_000)
    with pytest.raises(SnapViTError, match="not valid JSON"):
        load_backbone(str(path), random_init=True)
    (path / "config.json").write_text(json.dumps({"architecture": "x", "pad": "y" * (2 << 20)}))
    with pytest.raises(SnapViTError, match="larger than"):
        load_backbone(str(path), random_init=True)
