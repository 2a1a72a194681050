"""Backbone families (issue 7): DeiT distilled, SigLIP2, DINOv3 (Eva) and transformers ViT / DINOv2.

Every family is built with random weights from its real configuration (depth and image size reduced)
and checked for pruned == masked equivalence, computable scores, analytic FLOPs within 1% of torch's
FlopCounterMode, weight correction that never worsens a layer, and family-specific embedding rules.
The transformers wrapper itself is tested in test_hf_vit.py.
"""

from __future__ import annotations

import json

import pytest
import torch
from conftest import SHARED_REFERENCE
from test_elastic import prune_and_check_masked, skewed_scores

from snapvit_core.engine.adapter import ViTAdapter
from snapvit_core.engine.backbones import load_backbone
from snapvit_core.engine.elastic import ElasticViT, plan_pruning
from snapvit_core.errors import SnapViTError
from snapvit_core.evaluation.metrics import analytic_flops, count_parameters, counted_flops
from snapvit_core.scoring.data_free import magnitude_scores

torch.set_num_threads(1)

PAIRS = [(0.0, 0.0), (0.3, 0.2), (0.9, 0.8)]


def _timm(name: str, **kwargs) -> torch.nn.Module:
    import timm

    torch.manual_seed(0)
    return timm.create_model(name, pretrained=False, depth=2, img_size=64, **kwargs).eval()


def _randomise_head_biases(model: torch.nn.Module) -> torch.nn.Module:
    """Random-init Eva q/v biases are zero; make them matter so their reordering is tested."""
    generator = torch.Generator().manual_seed(3)
    for block in ViTAdapter(model).blocks:
        for name in block.head_vectors:
            vector = getattr(block.attention, name)
            if isinstance(vector, torch.nn.Parameter):
                vector.data = torch.randn(vector.shape, generator=generator) * 0.5
    return model


def _hf(kind: str) -> torch.nn.Module:
    """transformers encoders of the real base configurations (2 layers, small images)."""
    import transformers

    from snapvit_core.engine.hf_vit import HFVisionBackbone

    torch.manual_seed(0)
    if kind == "vit":
        config = transformers.ViTConfig(num_hidden_layers=2, image_size=64, patch_size=16)
        model = transformers.ViTModel(config, add_pooling_layer=False)
    elif kind == "dinov2-swiglu":
        config = transformers.Dinov2Config(num_hidden_layers=2, image_size=56, patch_size=14, use_swiglu_ffn=True)
        model = transformers.Dinov2Model(config)
    elif kind == "dinov2-registers":
        config = transformers.Dinov2WithRegistersConfig(num_hidden_layers=2, image_size=56, patch_size=14)
        model = transformers.Dinov2WithRegistersModel(config)
    else:
        config = transformers.Dinov2Config(num_hidden_layers=2, image_size=56, patch_size=14)
        model = transformers.Dinov2Model(config)
    for parameter in model.parameters():  # HF initialises biases to zero; make them matter
        if parameter.dim() == 1:
            parameter.data.normal_(0, 0.02).add_(1.0 if parameter.numel() == config.hidden_size else 0.0)
    return HFVisionBackbone(model.eval())


FAMILIES = {
    "deit-distilled": lambda: _timm("deit_base_distilled_patch16_224.fb_in1k"),
    "siglip2": lambda: _timm("vit_base_patch16_siglip_224.v2_webli"),
    "dinov3": lambda: _timm("vit_base_patch16_dinov3.lvd1689m"),
    "dinov3-swiglu": lambda: _timm("vit_small_plus_patch16_dinov3"),
    "dinov3-qkv-bias": lambda: _randomise_head_biases(_timm("vit_small_patch16_dinov3_qkvb")),
    "hf-vit": lambda: _hf("vit"),
    "hf-dinov2": lambda: _hf("dinov2"),
    "hf-dinov2-swiglu": lambda: _hf("dinov2-swiglu"),
    "hf-dinov2-registers": lambda: _hf("dinov2-registers"),
}


def _images(model: torch.nn.Module, count: int = 2) -> torch.Tensor:
    size = ViTAdapter(model).shape().image_size
    return torch.randn(count, 3, size, size, generator=torch.Generator().manual_seed(1))


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_family_prunes_exactly_and_counts_flops(family):
    model = FAMILIES[family]()
    scores = magnitude_scores(model)  # computable from the adapter's fc1 / value rows
    shape = ViTAdapter(model).shape()
    assert tuple(scores.mlp.shape) == (shape.num_blocks, shape.mlp_hidden)
    assert tuple(scores.heads.shape) == (shape.num_blocks, shape.num_heads)
    assert torch.isfinite(scores.mlp).all() and torch.isfinite(scores.heads).all()

    elastic = ElasticViT(model, skewed_scores(model))
    images = _images(model)
    for mlp_s, head_s in PAIRS:
        pruned = prune_and_check_masked(elastic, model, mlp_s, head_s, images)
        analytic, counted = analytic_flops(pruned), counted_flops(pruned)
        assert abs(analytic - counted) <= 0.01 * counted, (family, mlp_s, head_s, analytic, counted)
    assert sum(elastic.plan_for(*PAIRS[-1]).kept_heads) < shape.num_blocks * shape.num_heads


def test_deit_distilled_embeds_the_cls_token_without_heads():
    model = FAMILIES["deit-distilled"]()
    images = _images(model)
    with torch.no_grad():
        features = model.forward_features(images)
        torch.testing.assert_close(ViTAdapter(model).embed(images), features[:, 0])
    heads = sum(p.numel() for p in model.head.parameters()) + sum(p.numel() for p in model.head_dist.parameters())
    assert heads > 0 and count_parameters(model) == sum(p.numel() for p in model.parameters()) - heads
    assert ViTAdapter(model).shape().num_tokens == (64 // 16) ** 2 + 2  # CLS + distillation token


def test_siglip2_attention_pool_is_embedded_and_never_pruned():
    model = FAMILIES["siglip2"]()
    adapter = ViTAdapter(model)
    assert adapter.attention_pool is model.attn_pool and adapter.num_blocks == len(model.blocks)
    images = _images(model)
    with torch.no_grad():
        torch.testing.assert_close(adapter.embed(images), model.forward_head(model.forward_features(images), True))
    pool_state = {k: v.clone() for k, v in model.attn_pool.state_dict().items()}
    pruned = ElasticViT(model, skewed_scores(model)).prune_to(0.5, 0.5)
    assert pruned.attn_pool.num_heads == model.attn_pool.num_heads
    assert all(torch.equal(v, pool_state[k]) for k, v in pruned.attn_pool.state_dict().items())
    pool_params = sum(p.numel() for p in model.attn_pool.parameters())
    assert count_parameters(model) == sum(p.numel() for p in model.parameters())  # no head; the pool counts
    assert pool_params > 0 and analytic_flops(pruned) > 0


@pytest.mark.parametrize("family", ["dinov3", "dinov3-swiglu"])
def test_dinov3_embeds_the_final_norm_cls_token(family):
    model = FAMILIES[family]()
    adapter = ViTAdapter(model)
    images = _images(model)
    with torch.no_grad():
        torch.testing.assert_close(adapter.embed(images), model.forward_features(images)[:, 0])
    assert adapter.shape().num_tokens == (64 // 16) ** 2 + 5  # CLS + 4 register tokens
    expected_kind = "swiglu" if family == "dinov3-swiglu" else "standard"
    assert adapter.shape().mlp_kind == expected_kind


def test_dinov3_forward_is_unchanged_by_the_width_following_attention():
    import timm
    from timm.models.eva import EvaAttention

    from snapvit_core.engine.adapter import WidthFollowingEvaAttention, make_width_following

    torch.manual_seed(0)
    reference = timm.create_model("vit_small_patch16_dinov3_qkvb", pretrained=False, depth=2, img_size=64).eval()
    _randomise_head_biases(reference)
    images = _images(reference)
    with torch.no_grad():
        before = reference.forward_features(images)
        for block in ViTAdapter(reference).blocks:  # the view itself changes nothing
            assert type(block.attention) is EvaAttention
            make_width_following(block.attention)  # what surgery does before resizing a block
            assert type(block.attention) is WidthFollowingEvaAttention
        after = reference.forward_features(images)
    torch.testing.assert_close(after, before, atol=1e-5, rtol=1e-5)


PUBLISHED = [
    ("dino_vitb16.imagenet-1k.pt", "vit_base_patch16_224.dino", (3072, 12)),
    ("deit-3-vit-s-16.imagenet-1k.pt", "deit3_small_patch16_224.fb_in22k_ft_in1k", (1536, 6)),
    ("dinov3_vitb16.imagenet-1k.pt", "vit_base_patch16_dinov3.lvd1689m", (3072, 12)),
]


@pytest.mark.parametrize("file, architecture, widths", PUBLISHED, ids=[p[0] for p in PUBLISHED])
def test_published_scores_import_onto_their_architectures(file, architecture, widths):
    import timm

    from snapvit_core.scoring.scores_io import load_scores

    path = SHARED_REFERENCE / "snapvit-scores" / file
    if not path.is_file():
        pytest.skip(f"{path} is not available")
    scores = load_scores(path)
    assert tuple(scores.mlp.shape) == (12, widths[0]) and tuple(scores.heads.shape) == (12, widths[1])
    model = timm.create_model(architecture, pretrained=False, img_size=32, num_classes=0).eval()
    elastic = ElasticViT(model, scores, architecture)
    for mlp_s, head_s in [(0.35, 0.2), (0.65, 0.5)]:
        pruned = elastic.prune_to(mlp_s, head_s)
        assert elastic.plan_for(mlp_s, head_s) == plan_pruning(scores, mlp_s, head_s)
        assert list(ViTAdapter(pruned).shape().heads_per_block) == list(plan_pruning(scores, mlp_s, head_s).kept_heads)


def _cli_json(argv: list[str], capsys) -> dict:
    from snapvit_core.cli import main

    assert main(argv) == 0
    return json.loads(capsys.readouterr().out)


@pytest.mark.slow
def test_cli_info_and_evaluate_for_every_timm_preset(capsys):
    from snapvit_core.presets import BACKBONE_PRESETS, EMBEDDED_MODEL_IDS

    for model_id in (m for m in BACKBONE_PRESETS.values() if m not in EMBEDDED_MODEL_IDS):
        info = _cli_json(["info", "--model", model_id, "--random-init", "--json"], capsys)
        assert info["num_blocks"] >= 12 and info["params"] > 0 and info["flops"] > 0, model_id
    for model_id in ("deit_base_distilled_patch16_224.fb_in1k", "vit_base_patch16_dinov3.lvd1689m"):
        argv = ["evaluate", "--model", model_id, "--random-init", "--metrics", "flops,params", "--json"]
        argv += ["--mlp-sparsity", "0.3", "--head-sparsity", "0.2"]
        result = _cli_json(argv, capsys)
        assert result["flops"] > 0 and result["params"] > 0, model_id


def test_non_vit_timm_model_names_the_supported_families():
    with pytest.raises(SnapViTError, match="not a Vision Transformer.*DINOv3"):
        load_backbone("convnext_atto", random_init=True)


@pytest.mark.slow
@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_family_weight_correction_never_worsens_a_layer(family):
    """Correction replays each block through the adapter (RoPE, transformers layers) for every family."""
    from snapvit_core.engine.correction import CorrectionConfig, correct_elastic

    model = FAMILIES[family]()
    elastic = ElasticViT(model, skewed_scores(model))
    images = _images(model, count=4)
    corrected, report = correct_elastic(elastic, 0.5, 0.4, images, CorrectionConfig(batch_size=2))
    plan, shape = elastic.plan_for(0.5, 0.4), ViTAdapter(model).shape()
    expected = sum(h < shape.num_heads for h in plan.kept_heads) + sum(n < shape.mlp_hidden for n in plan.kept_neurons)
    assert len(report.layers) == expected > 0  # one row per layer that lost columns
    for row in report.layers:
        assert row.kept_columns < row.total_columns
        assert row.error_after <= row.error_before * (1 + 1e-9) + 1e-12, (family, row)
    with torch.no_grad():
        embedding = ViTAdapter(corrected).embed(images)
    assert embedding.shape[0] == 4 and torch.isfinite(embedding).all()
