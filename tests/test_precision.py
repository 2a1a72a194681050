"""Precision of forward passes (precision.py) and the attention kernel of private CPU copies (adapter.py)."""

from __future__ import annotations

import pytest
import torch
from conftest import make_vit

import snapvit_core.engine.precision as precision
from snapvit_core.cli import main
from snapvit_core.data import preprocess, procedural_images
from snapvit_core.engine.adapter import EXPLICIT_ATTENTION_MAX_TOKENS, ViTAdapter, choose_attention_kernel
from snapvit_core.engine.elastic import ElasticViT
from snapvit_core.errors import SnapViTError
from snapvit_core.scoring.compute import ScoringConfig, compute_scores
from snapvit_core.scoring.data_free import magnitude_scores
from snapvit_core.search.evolution import CandidateFitness, SearchConfig, check_config, initial_mean

DATA_CONFIG = {"input_size": (3, 32, 32), "interpolation": "bicubic", "mean": (0.5,) * 3, "std": (0.25,) * 3}
NATIVE_BF16 = precision.native_bf16("cpu")
needs_native_bf16 = pytest.mark.skipif(not NATIVE_BF16, reason="this CPU has no native bf16 (AVX512-BF16 / AMX)")


def test_precision_names_and_what_they_mean_per_device(monkeypatch):
    assert precision.autocast_dtype("auto", "cpu") is None  # reproducible fp32 on the CPU
    assert precision.autocast_dtype("fp32", "cuda") is None
    monkeypatch.setattr(precision, "native_bf16", lambda device: torch.device(device).type == "cuda")
    assert precision.autocast_dtype("auto", "cuda") is torch.bfloat16
    assert precision.autocast_dtype("auto", "cpu") is None  # even on a CPU with bf16: opt-in only
    monkeypatch.setattr(precision, "native_bf16", lambda device: False)  # e.g. a pre-Ampere GPU
    assert precision.autocast_dtype("auto", "cuda") is None
    with pytest.raises(SnapViTError, match="auto, fp32, bf16"):
        precision.check_precision("fp16")
    for config in (lambda: ScoringConfig(precision="half"), lambda: check_config(SearchConfig(precision="x"), 4)):
        with pytest.raises(SnapViTError, match="Unknown precision"):
            config()
    monkeypatch.setattr(precision, "native_bf16", lambda device: False)
    with pytest.raises(SnapViTError, match="no native bfloat16.*--precision fp32"):
        precision.autocast_dtype("bf16", "cpu")
    monkeypatch.setattr(precision, "native_bf16", lambda device: True)
    assert precision.autocast_dtype("bf16", "cpu") is torch.bfloat16
    assert isinstance(precision.autocast_context(torch.bfloat16, "cpu"), torch.autocast)


def test_cli_refuses_bf16_without_native_support_before_loading(monkeypatch, capsys, tmp_path):
    from snapvit_core.engine.backbones import load_backbone
    from snapvit_core.scoring.scores_io import save_scores

    scores = tmp_path / "base.safetensors"
    save_scores(magnitude_scores(load_backbone("embedded", random_init=True).model), scores)
    monkeypatch.setattr(precision, "native_bf16", lambda device: False)
    monkeypatch.setattr("snapvit_core.engine.backbones.load_backbone", lambda *a, **k: pytest.fail("model loaded"))
    out = tmp_path / "out.safetensors"
    for command in (["score"], ["search", "--scores", str(scores)]):
        code = main([*command, "--precision", "bf16", "--out", str(out)])
        _, err = capsys.readouterr()
        assert code == 2 and err.startswith("error: ") and "bfloat16" in err and err.count("\n") == 1
        assert not out.exists()


@needs_native_bf16
def test_bf16_scoring_and_fitness_stay_close_to_fp32():
    model = make_vit()
    images = procedural_images(4, seed=1, size=48)
    settings = {"samples": 4, "batch_size": 2, "local_crops": 4}
    fp32 = compute_scores(model, images, DATA_CONFIG, ScoringConfig(**settings, precision="fp32"))
    bf16 = compute_scores(model, images, DATA_CONFIG, ScoringConfig(**settings, precision="bf16"))
    for low, full in ((bf16.mlp, fp32.mlp), (bf16.heads, fp32.heads)):
        assert not torch.equal(low, full)  # bf16 did run
        assert ((low - full).abs().max() / full.abs().max()).item() < 0.05
    tensors = preprocess(procedural_images(16, seed=2, size=48), DATA_CONFIG)
    scores = magnitude_scores(model)
    mean = initial_mean(3, 6, (1.2, 0.8))
    values = {
        name: CandidateFitness(model, scores, tensors, SearchConfig(precision=name), torch.device("cpu"))(mean)
        for name in ("fp32", "bf16")
    }
    assert values["fp32"] != values["bf16"] and abs(values["fp32"] - values["bf16"]) < 0.02


def test_private_cpu_copies_of_short_sequence_models_use_the_explicit_attention_path():
    short = make_vit()  # 16 patches + CLS
    assert ViTAdapter(short).shape().num_tokens <= EXPLICIT_ATTENTION_MAX_TOKENS
    choose_attention_kernel(short)
    assert not any(block.attn.fused_attn for block in short.blocks)
    long = make_vit(img_size=96)  # 144 patches + CLS
    assert ViTAdapter(long).shape().num_tokens > EXPLICIT_ATTENTION_MAX_TOKENS
    choose_attention_kernel(long)
    assert all(block.attn.fused_attn for block in long.blocks)
    caller = make_vit()
    elastic = ElasticViT(caller, magnitude_scores(caller))
    assert all(block.attn.fused_attn for block in caller.blocks)  # the caller's model is never switched
    unpruned = elastic.prune_to(0.0, 0.0)
    assert not any(block.attn.fused_attn for block in unpruned.blocks)
    with torch.inference_mode():  # same function: the explicit path equals the fused one to round-off
        x = torch.randn(3, 3, 32, 32)
        expected = caller(x)
        torch.testing.assert_close(ViTAdapter(unpruned).model(x), expected, rtol=1e-4, atol=1e-5)
