"""The elastic engine: pruned == masked equivalence, plans, isolation (DESIGN section 5)."""

from __future__ import annotations

import pytest
import torch
from conftest import make_vit

from snapvit_core.engine.adapter import ViTAdapter
from snapvit_core.engine.elastic import ElasticViT, check_sparsity, plan_keep_counts, plan_pruning
from snapvit_core.errors import SnapViTError
from snapvit_core.scoring.data_free import random_scores
from snapvit_core.scoring.scores import ImportanceScores

SHAPES = [
    dict(mlp="standard", qkv_bias=True, fused_attn=True),
    dict(mlp="standard", qkv_bias=False, fused_attn=False),
    dict(mlp="swiglu", qkv_bias=True, fused_attn=False),
    dict(mlp="glu-packed", qkv_bias=False, fused_attn=True),
    dict(mlp="standard", qkv_bias=True, fused_attn=True, init_values=0.1, embed_dim=40, num_heads=5),
]


def masked_embedding(model, neuron_mask, head_mask, images):
    """The unpruned model with removed neurons' activations and removed heads' outputs zeroed."""
    adapter = ViTAdapter(model)
    handles = []
    for block, neurons, heads in zip(adapter.blocks, neuron_mask, head_mask):
        neuron_gate = neurons.float()
        head_gate = heads.float().repeat_interleave(block.head_dim)
        handles.append(block.mlp_output.register_forward_pre_hook(lambda m, a, g=neuron_gate: (a[0] * g,)))
        handles.append(block.proj.register_forward_pre_hook(lambda m, a, g=head_gate: (a[0] * g,)))
    try:
        with torch.no_grad():
            return adapter.embed(images)
    finally:
        for handle in handles:
            handle.remove()


def prune_and_check_masked(elastic, model, mlp_sparsity, head_sparsity, images):
    """Prune to the pair; assert it computes the masked unpruned model and has the plan's widths."""
    pruned = elastic.prune_to(mlp_sparsity, head_sparsity)
    plan = elastic.plan_for(mlp_sparsity, head_sparsity)
    with torch.no_grad():
        out = ViTAdapter(pruned).embed(images)
        in_engine = elastic.run(plan, lambda working: ViTAdapter(working).embed(images))
    neuron_mask, head_mask = elastic.kept_masks(plan)
    torch.testing.assert_close(out, masked_embedding(model, neuron_mask, head_mask, images), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(in_engine, out, atol=1e-5, rtol=1e-5)  # the engine's view computes the same
    now = ViTAdapter(pruned).shape()
    assert list(now.heads_per_block) == list(plan.kept_heads)
    assert list(now.mlp_hidden_per_block) == list(plan.kept_neurons)
    return pruned


def skewed_scores(model, seed=0):
    """Random scores with block 0 far below the rest, so its minimum keeps must bind."""
    scores = random_scores(model, seed)
    mlp, heads = scores.mlp.clone(), scores.heads.clone()
    mlp[0] *= 1e-3
    heads[0] *= 1e-3
    return ImportanceScores(mlp, heads)


@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "-".join(f"{k}={v}" for k, v in s.items()))
def test_pruned_equals_masked(shape):
    model = make_vit(**shape)
    scores = skewed_scores(model)
    elastic = ElasticViT(model, scores)
    images = torch.randn(3, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    reference = {p: t.clone() for p, t in model.state_dict().items()}
    sequence = [(0.0, 0.0), (0.3, 0.2), (0.9, 0.8), (0.0, 0.0), (0.3, 0.2), (0.9, 0.8), (0.5, 0.4)]
    for mlp_s, head_s in sequence:
        prune_and_check_masked(elastic, model, mlp_s, head_s, images)
    # Minimum keeps bind in block 0 at (0.9, 0.8): exactly the protected count survives there.
    plan = plan_pruning(scores, 0.9, 0.8)
    heads, hidden = scores.heads.shape[1], scores.mlp.shape[1]
    assert plan.kept_heads[0] == int(heads * 0.2) >= 1
    assert plan.kept_neurons[0] == int(hidden * 0.05) >= 1
    # The caller's model was never touched.
    for name, tensor in model.state_dict().items():
        assert torch.equal(tensor, reference[name]), name


def test_a_pruned_model_is_a_value(tiny_vit):
    """What prune_to hands out owns its tensors: later configurations, runs and copies never change it."""
    elastic = ElasticViT(tiny_vit, random_scores(tiny_vit, 2))
    images = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    small = elastic.prune_to(0.45, 0.3)
    before = {k: v.clone() for k, v in small.state_dict().items()}
    with torch.no_grad():
        expected = ViTAdapter(small).embed(images)
    heads, neurons = ViTAdapter(small).shape().heads_per_block, ViTAdapter(small).shape().mlp_hidden_per_block
    for mlp_s, head_s in ((0.0, 0.0), (0.9, 0.8), (0.2, 0.1)):
        elastic.prune_to(mlp_s, head_s)
        elastic.run(elastic.plan_for(mlp_s, head_s), lambda working: ViTAdapter(working).embed(images))
    assert ViTAdapter(small).shape().heads_per_block == heads
    assert ViTAdapter(small).shape().mlp_hidden_per_block == neurons
    for name, tensor in small.state_dict().items():
        assert torch.equal(tensor, before[name]), name
    with torch.no_grad():
        torch.testing.assert_close(ViTAdapter(small).embed(images), expected, atol=0, rtol=0)
    working = {t.data_ptr() for t in elastic.full.parameters()}
    assert not any(p.data_ptr() in working for p in small.parameters())  # no storage shared with the engine
    assert not hasattr(elastic, "model")  # the working model never leaves the engine


def test_reorder_preserves_function(tiny_vit):
    elastic = ElasticViT(tiny_vit, random_scores(tiny_vit, 3))
    images = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(
            ViTAdapter(elastic.full).embed(images), ViTAdapter(tiny_vit).embed(images), atol=1e-5, rtol=1e-5
        )


def test_sparser_shrinks_parameters(tiny_vit):
    elastic = ElasticViT(tiny_vit, random_scores(tiny_vit))
    counts = []
    for s in (0.0, 0.2, 0.5, 0.8):
        pruned = elastic.prune_to(s, s)
        counts.append(sum(p.numel() for p in pruned.parameters()))
    assert counts == sorted(counts, reverse=True) and counts[0] > counts[-1]
    assert counts[0] == sum(p.numel() for p in tiny_vit.parameters())


def test_plan_keep_counts_rule():
    scores = torch.tensor([[5.0, 1.0, 3.0, 0.5], [4.0, 2.0, 0.1, 0.2]])
    assert plan_keep_counts(scores, 0.0, 0.25) == [4, 4]
    # n = floor(8 * 0.5) = 4 smallest: 0.1, 0.2, 0.5, 1.0 -> keep 5, 3 | 4, 2
    assert plan_keep_counts(scores, 0.5, 0.0) == [2, 2]
    # Protect the top 2 of each block: block 1 keeps 4.0 and 2.0 even though 3.0 > 2.0 elsewhere.
    assert plan_keep_counts(scores, 0.75, 0.5) == [2, 2]
    # n = 6, but only 4 units are unprotected: the protected ones always stay.
    assert plan_keep_counts(torch.ones(2, 4), 0.8, 0.5) == [2, 2]


def test_plan_is_monotone_in_sparsity(tiny_vit):
    scores = random_scores(tiny_vit, 5)
    previous = None
    for s in [i / 20 for i in range(20)]:
        plan = plan_pruning(scores, s, s)
        totals = (sum(plan.kept_neurons), sum(plan.kept_heads))
        if previous:
            assert totals[0] <= previous[0] and totals[1] <= previous[1]
        assert plan.realised_mlp_sparsity >= 0
        previous = totals


@pytest.mark.parametrize("bad", [1.0, -0.1, 1.5, "abc", None, float("nan"), "0.3x"])
def test_bad_sparsity_is_refused(bad):
    with pytest.raises(SnapViTError, match=r"\[0, 1\)"):
        check_sparsity(bad, "MLP sparsity")


def test_scores_for_another_architecture_are_refused(tiny_vit):
    other = make_vit(embed_dim=64, num_heads=8)
    with pytest.raises(SnapViTError, match=r"do not fit.*\[3, 256\].*\[3, 192\]"):
        ElasticViT(tiny_vit, random_scores(other))


def test_not_a_vit_is_refused():
    with pytest.raises(SnapViTError, match="not a Vision Transformer"):
        ViTAdapter(torch.nn.Linear(3, 3))
