"""The backbone adapter: a read-only view of where a ViT keeps its prunable layers."""

from __future__ import annotations

import copy

import pytest
import torch
from conftest import make_vit
from test_families import FAMILIES

from snapvit_core.engine.adapter import (
    MLP_GLU_PACKED,
    MLP_STANDARD,
    MLP_SWIGLU,
    ViTAdapter,
    WidthFollowingEvaAttention,
    make_width_following,
)
from snapvit_core.errors import SnapViTError

torch.set_num_threads(1)


@pytest.mark.parametrize("family", ["dinov3", "dinov3-qkv-bias", "hf-vit", "deit-distilled"])
def test_building_a_view_changes_nothing(family):
    model = FAMILIES[family]()
    classes = [type(m) for m in model.modules()]
    state = {k: v.clone() for k, v in model.state_dict().items()}
    adapter = ViTAdapter(model)
    adapter.shape()
    assert [type(m) for m in model.modules()] == classes
    assert all(torch.equal(v, state[k]) for k, v in model.state_dict().items())
    assert not any(isinstance(b.attention, WidthFollowingEvaAttention) for b in adapter.blocks)


@pytest.mark.parametrize(
    "mlp, kind", [("standard", MLP_STANDARD), ("swiglu", MLP_SWIGLU), ("glu-packed", MLP_GLU_PACKED)]
)
def test_block_layers_point_at_the_model(mlp, kind):
    model = make_vit(mlp=mlp)
    adapter = ViTAdapter(model)
    assert adapter.num_blocks == 3 and adapter.embed_dim == 48
    for block, timm_block in zip(adapter.blocks, model.blocks):
        assert block.module is timm_block and block.attention is timm_block.attn
        assert block.qkv is timm_block.attn.qkv and block.proj is timm_block.attn.proj
        assert block.mlp_kind == kind and block.num_heads == 6 and block.head_dim == 8
        hidden = 96 if kind == MLP_GLU_PACKED else 192  # a packed GLU's fc1 emits [value | gate] halves
        assert block.mlp_hidden == block.mlp_output.in_features == hidden
        assert block.fc1.out_features == (2 * hidden if kind == MLP_GLU_PACKED else hidden)
    shape = adapter.shape()
    assert shape.num_tokens == (32 // 8) ** 2 + 1 and shape.heads_per_block == (6, 6, 6)


def test_value_rows_are_the_last_third_of_qkv():
    adapter = ViTAdapter(make_vit())
    block = adapter.blocks[0]
    assert adapter.value_rows(block) == slice(96, 144)


def test_hf_blocks_are_the_transformers_layers():
    model = FAMILIES["hf-dinov2"]()
    adapter = ViTAdapter(model)
    assert [b.module for b in adapter.blocks] == list(model.layers)
    assert all(b.attention is layer.attention for b, layer in zip(adapter.blocks, model.layers))


def test_make_width_following_keeps_other_attentions():
    model = make_vit()
    attention = model.blocks[0].attn
    make_width_following(attention)
    assert type(attention) is type(model.blocks[1].attn)


def test_not_a_vit_is_refused():
    with pytest.raises(SnapViTError, match="not a Vision Transformer"):
        ViTAdapter(torch.nn.Sequential(torch.nn.Linear(2, 2)))


@pytest.mark.parametrize("family", ["dinov3", "hf-vit", "deit-distilled"])
def test_first_block_call_replays_the_models_own_block_forward(family):
    """Replaying every block from the recorded call gives what the model's forward gives the last block."""
    model = FAMILIES[family]()
    adapter = ViTAdapter(model)
    images = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    seen = []
    handle = adapter.blocks[-1].module.register_forward_hook(lambda m, a, out: seen.append(out))
    with torch.no_grad():
        adapter.embed(images)
        handle.remove()
        x, call = adapter.first_block_call(images)
        for block in adapter.blocks:
            x = call.replay(block.module, x)
    expected = seen[0][0] if isinstance(seen[0], tuple) else seen[0]
    torch.testing.assert_close(x, expected)


@pytest.mark.parametrize(
    "options",
    [dict(mlp="standard"), dict(mlp="swiglu", qkv_bias=False), dict(mlp="glu-packed", init_values=0.1)],
)
def test_private_copy_with_a_cls_only_last_block_gives_the_same_embedding_and_gradients(options):
    from snapvit_core.engine.adapter import ClsOutputBlock, prepare_private_copy

    plain = make_vit(**options)
    fast = copy.deepcopy(plain)
    prepare_private_copy(fast)
    assert type(fast.blocks[-1]) is ClsOutputBlock and type(plain.blocks[-1]) is not ClsOutputBlock
    images = torch.randn(5, 3, 32, 32)
    for model in (plain, fast):
        for block in model.blocks:
            block.attn.qkv.weight.requires_grad_(True)
            ViTAdapter(model).blocks[-1].fc1.weight.requires_grad_(True)
    embeddings = [ViTAdapter(model).embed(images) for model in (plain, fast)]
    torch.testing.assert_close(embeddings[1], embeddings[0], rtol=1e-5, atol=1e-5)
    for embedding in embeddings:
        embedding.square().sum().backward()
    pairs = [(a.qkv.weight.grad, b.qkv.weight.grad) for a, b in zip(ViTAdapter(fast).blocks, ViTAdapter(plain).blocks)]
    pairs.append(tuple(ViTAdapter(m).blocks[-1].fc1.weight.grad for m in (fast, plain)))
    for mine, theirs in pairs:  # relative to the largest gradient: fp32 attention kernels differ by up to ~7e-4
        assert ((mine - theirs).abs().max() / theirs.abs().max()).item() < 2e-3
    torch.testing.assert_close(fast(images), plain(images), rtol=1e-5, atol=1e-5)  # logits read the CLS token too


def test_cls_only_last_block_is_used_only_where_the_embedding_is_the_cls_token():
    from snapvit_core.engine.adapter import ClsOutputBlock, prepare_private_copy

    pooled = make_vit(global_pool="avg")
    prepare_private_copy(pooled)
    assert type(pooled.blocks[-1]) is not ClsOutputBlock  # average pooling reads every token
    from timm.models.deit import VisionTransformerDistilled

    distilled = VisionTransformerDistilled(img_size=32, patch_size=8, embed_dim=48, depth=2, num_heads=6)
    prepare_private_copy(distilled)
    assert type(distilled.blocks[-1]) is not ClsOutputBlock  # its logits read the distillation token too


def test_search_fitness_with_the_faster_working_copy_equals_the_plain_one(monkeypatch):
    import snapvit_core.search.evolution as search
    from snapvit_core.scoring.data_free import magnitude_scores

    model = make_vit()
    scores = magnitude_scores(model)
    images = torch.randn(12, 3, 32, 32)
    mean = search.initial_mean(3, 6, (1.2, 0.8))
    fast = search.CandidateFitness(model, scores, images, search.SearchConfig(), torch.device("cpu"))(mean)
    monkeypatch.setattr(search, "prepare_private_copy", lambda model: None)
    plain = search.CandidateFitness(model, scores, images, search.SearchConfig(), torch.device("cpu"))(mean)
    assert fast == pytest.approx(plain, rel=1e-5, abs=1e-7)
