"""Parameter counts, analytic FLOPs vs torch's FlopCounterMode, latency reports."""

from __future__ import annotations

import pytest
import torch
from conftest import make_vit

from snapvit_core.engine.elastic import ElasticViT
from snapvit_core.evaluation.metrics import analytic_flops, count_parameters, counted_flops, measure_latency
from snapvit_core.scoring.data_free import random_scores


@pytest.mark.parametrize("mlp", ["standard", "swiglu", "glu-packed"])
@pytest.mark.parametrize("fused", [True, False])
def test_analytic_flops_match_flop_counter(mlp, fused):
    model = make_vit(mlp=mlp, fused_attn=fused)
    elastic = ElasticViT(model, random_scores(model))
    for mlp_s, head_s in [(0.0, 0.0), (0.35, 0.2), (0.65, 0.5), (0.9, 0.8)]:
        pruned = elastic.prune_to(mlp_s, head_s)
        analytic, counted = analytic_flops(pruned), counted_flops(pruned)
        assert abs(analytic - counted) <= 0.01 * counted, (mlp_s, head_s, analytic, counted)


def test_vit_small_flops_match_published_shape():
    import timm

    model = timm.create_model("vit_small_patch16_224", pretrained=False, num_classes=0)
    counted = counted_flops(model)
    assert abs(analytic_flops(model) - counted) <= 0.01 * counted
    assert 9.0e9 < counted < 9.4e9  # ViT-S/16 at 224 px: ~4.6 GMACs


def test_flops_and_params_shrink_when_pruned(tiny_vit):
    elastic = ElasticViT(tiny_vit, random_scores(tiny_vit))
    full_flops, full_params = analytic_flops(tiny_vit), count_parameters(tiny_vit)
    pruned = elastic.prune_to(0.5, 0.5)
    assert analytic_flops(pruned) < full_flops
    assert count_parameters(pruned) < full_params
    # The classification head is not part of the embedding path.
    assert full_params == sum(p.numel() for p in tiny_vit.parameters()) - sum(
        p.numel() for p in tiny_vit.head.parameters()
    )


def test_latency_report_is_complete(tiny_vit):
    report = measure_latency(tiny_vit, batch_size=4, min_run_time=0.05)
    assert report.median_ms > 0 and report.iqr_ms >= 0 and report.throughput_per_s > 0
    assert report.device == "cpu" and report.dtype == "float32" and report.threads >= 1
    assert report.repeats >= 1 and report.batch_size == 4
    assert set(report.to_dict()) >= {"median_ms", "iqr_ms", "throughput_per_s", "device", "dtype", "threads"}


def test_counted_flops_leave_model_untouched(tiny_vit):
    before = {k: v.clone() for k, v in tiny_vit.state_dict().items()}
    counted_flops(tiny_vit)
    assert all(torch.equal(v, before[k]) and v.device.type == "cpu" for k, v in tiny_vit.state_dict().items())
