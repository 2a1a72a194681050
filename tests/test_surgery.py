"""Block surgery: selecting units by count or index, head counts, resizing to a width plan, per family."""

from __future__ import annotations

import copy
import itertools

import pytest
import torch
from conftest import make_vit
from test_elastic import masked_embedding
from test_families import _randomise_head_biases, _timm

from snapvit_core.engine.adapter import ViTAdapter, WidthFollowingEvaAttention
from snapvit_core.engine.surgery import resize_model, select_units, set_head_count, unit_index, widths
from snapvit_core.errors import SnapViTError

torch.set_num_threads(1)

MODELS = {
    "standard": lambda: make_vit(mlp="standard"),
    "swiglu": lambda: make_vit(mlp="swiglu", qkv_bias=False),
    "glu-packed": lambda: make_vit(mlp="glu-packed"),
    "dinov3-qkv-bias": lambda: _randomise_head_biases(_timm("vit_small_patch16_dinov3_qkvb")),
}


def _images(model: torch.nn.Module) -> torch.Tensor:
    size = ViTAdapter(model).shape().image_size
    return torch.randn(2, 3, size, size, generator=torch.Generator().manual_seed(1))


def _working_copy(model: torch.nn.Module) -> torch.nn.Module:
    """A structural copy sharing every tensor (what the elastic engine and the search resize)."""
    memo = {id(t): t for t in itertools.chain(model.parameters(), model.buffers())}
    return copy.deepcopy(model, memo)


def _random_units(adapter: ViTAdapter, seed: int = 0) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """Per block, a random subset of neurons and heads in a random order."""
    generator = torch.Generator().manual_seed(seed)
    neurons, heads = [], []
    for block in adapter.blocks:
        neurons.append(torch.randperm(block.mlp_hidden, generator=generator)[: block.mlp_hidden // 2])
        heads.append(torch.randperm(block.num_heads, generator=generator)[: max(1, block.num_heads // 2)])
    return neurons, heads


def test_unit_index_layouts():
    assert unit_index(4, 1, 4) == slice(None)  # everything: no copy
    assert unit_index(2, 3, 4) == slice(0, 6)  # a prefix of one chunk: a slice
    torch.testing.assert_close(unit_index(1, 2, 3, chunks=3), torch.tensor([0, 1, 6, 7, 12, 13]))
    torch.testing.assert_close(unit_index(torch.tensor([2, 0]), 2, 3), torch.tensor([4, 5, 0, 1]))
    torch.testing.assert_close(unit_index(torch.tensor([1]), 1, 3, chunks=2), torch.tensor([1, 4]))


@pytest.mark.parametrize("family", sorted(MODELS))
def test_selected_units_compute_the_masked_model(family):
    """Any subset in any order == the unpruned model with the other units zeroed; the source is untouched."""
    model = MODELS[family]()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    source, working = ViTAdapter(model), ViTAdapter(_working_copy(model))
    neurons, heads = _random_units(source)
    with torch.no_grad():
        for src, dst, n, h in zip(source.blocks, working.blocks, neurons, heads):
            select_units(src, dst, n, h)
    neuron_mask = torch.stack(
        [torch.zeros(b.mlp_hidden, dtype=torch.bool).index_fill(0, n, True) for b, n in zip(source.blocks, neurons)]
    )
    head_mask = torch.stack(
        [torch.zeros(b.num_heads, dtype=torch.bool).index_fill(0, h, True) for b, h in zip(source.blocks, heads)]
    )
    images = _images(model)
    with torch.no_grad():
        out = working.embed(images)
    torch.testing.assert_close(out, masked_embedding(model, neuron_mask, head_mask, images), atol=1e-5, rtol=1e-5)
    assert widths(working.model) == ([len(h) for h in heads], [len(n) for n in neurons])
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())


@pytest.mark.parametrize("family", sorted(MODELS))
def test_in_place_permutation_keeps_the_function(family):
    model = MODELS[family]()
    images = _images(model)
    with torch.no_grad():
        expected = ViTAdapter(model).embed(images)
        adapter = ViTAdapter(model)
        generator = torch.Generator().manual_seed(2)
        for block in adapter.blocks:
            perm_n = torch.randperm(block.mlp_hidden, generator=generator)
            perm_h = torch.randperm(block.num_heads, generator=generator)
            select_units(block, block, perm_n, perm_h)
        torch.testing.assert_close(adapter.embed(images), expected, atol=1e-5, rtol=1e-5)


def test_counts_equal_leading_indices_and_share_storage():
    model = make_vit(mlp="standard")
    source = ViTAdapter(model)
    by_count, by_index = ViTAdapter(_working_copy(model)), ViTAdapter(_working_copy(model))
    with torch.no_grad():
        for src, a, b in zip(source.blocks, by_count.blocks, by_index.blocks):
            select_units(src, a, 100, 4)
            select_units(src, b, torch.arange(100), torch.arange(4))
    for (name, x), (_, y) in zip(by_count.model.state_dict().items(), by_index.model.state_dict().items()):
        assert torch.equal(x, y), name
    first = by_count.blocks[0]
    # A leading run of fc1 rows is a view of the source weight: no copy for the elastic engine.
    assert first.fc1.weight.data_ptr() == source.blocks[0].fc1.weight.data_ptr()


def test_set_head_count_makes_eva_attention_follow_its_width():
    model = _timm("vit_small_patch16_dinov3_qkvb")
    block = ViTAdapter(model).blocks[0]
    assert type(block.attention) is not WidthFollowingEvaAttention  # the view changed nothing
    set_head_count(block, block.num_heads)
    assert type(block.attention) is WidthFollowingEvaAttention


@pytest.mark.parametrize("family", sorted(MODELS))
def test_resize_to_plan_loads_a_pruned_state_strictly(family):
    model = MODELS[family]()
    source, working = ViTAdapter(model), ViTAdapter(_working_copy(model))
    neurons, heads = _random_units(source, seed=4)
    with torch.no_grad():
        for src, dst, n, h in zip(source.blocks, working.blocks, neurons, heads):
            select_units(src, dst, n, h)
    kept_heads, kept_neurons = widths(working.model)
    rebuilt = resize_model(MODELS[family](), kept_heads, kept_neurons)
    rebuilt.load_state_dict({k: v.clone() for k, v in working.model.state_dict().items()}, strict=True)
    images = _images(model)
    with torch.no_grad():
        torch.testing.assert_close(ViTAdapter(rebuilt.eval()).embed(images), working.embed(images))


def test_resize_to_a_plan_of_another_depth_is_refused():
    with pytest.raises(SnapViTError, match="plan has 2 blocks"):
        resize_model(make_vit(depth=3), [6, 6], [192, 192])
