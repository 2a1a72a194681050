"""plan_metrics: a plan's parameters and FLOPs without a forward pass equal the truncated model's."""

from __future__ import annotations

import pytest
import torch
from conftest import make_vit
from test_elastic import skewed_scores
from test_families import FAMILIES

from snapvit_core.engine.adapter import ViTAdapter
from snapvit_core.engine.elastic import ElasticViT
from snapvit_core.errors import SnapViTError
from snapvit_core.evaluation.metrics import analytic_flops, count_parameters
from snapvit_core.evaluation.plan_metrics import cost_table, plan_cost

PAIRS = [(0.0, 0.0), (0.3, 0.2), (0.55, 0.4), (0.9, 0.8)]

TINY = {
    "standard": lambda: make_vit(),
    "no-qkv-bias": lambda: make_vit(qkv_bias=False),
    "glu-packed": lambda: make_vit(mlp="glu-packed"),
    "swiglu": lambda: make_vit(mlp="swiglu"),
}


def _check(model: torch.nn.Module) -> None:
    elastic = ElasticViT(model, skewed_scores(model))
    table = cost_table(model)
    full_params, full_flops = count_parameters(model), analytic_flops(model)
    for mlp_s, head_s in PAIRS:
        pruned = elastic.prune_to(mlp_s, head_s)
        plan = elastic.plan_for(mlp_s, head_s)
        cost = plan_cost(table, plan.kept_heads, plan.kept_neurons)
        assert cost.params == count_parameters(pruned), (mlp_s, head_s)
        assert cost.flops == analytic_flops(pruned), (mlp_s, head_s)
        assert cost.params_pct == pytest.approx(100.0 * cost.params / full_params)
        assert cost.flops_pct == pytest.approx(100.0 * cost.flops / full_flops)
    assert cost.flops_pct < 100.0 and cost.params_pct < 100.0


@pytest.mark.parametrize("kind", sorted(TINY))
def test_plan_cost_equals_truncated_model_tiny(kind):
    _check(TINY[kind]())


@pytest.mark.slow
@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_plan_cost_equals_truncated_model_every_family(family):
    _check(FAMILIES[family]())


def test_plan_cost_from_shape_matches_a_standard_vit():
    model = make_vit()
    elastic = ElasticViT(model, skewed_scores(model))
    shape = ViTAdapter(model).shape()
    pruned = elastic.prune_to(0.4, 0.3)
    plan = elastic.plan_for(0.4, 0.3)
    cost = plan_cost(shape, plan.kept_heads, plan.kept_neurons)
    assert cost.flops == analytic_flops(pruned)
    assert cost.params == count_parameters(pruned)
    full = plan_cost(shape, *cost_table(model).unpruned)
    assert full.flops_pct == 100.0 and full.params_pct == 100.0


def test_plan_cost_refuses_a_plan_of_another_depth():
    with pytest.raises(SnapViTError, match="blocks"):
        plan_cost(cost_table(make_vit()), [6, 6], [192, 192])
