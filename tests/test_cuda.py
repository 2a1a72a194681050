"""The CUDA paths, in bf16 and fp32 (``pytest -m cuda``; skipped without a GPU; run by benchmarks/gpu_check.py).

Each test compares against the CPU result of the same computation: scoring, search, correction, kNN
(features and tally on the device, fp16 bank) and the explorer (features on the device, CPU-side
similarities for the app).
"""

from __future__ import annotations

import pytest
import torch
from conftest import make_vit

from snapvit_core.data import procedural_images
from snapvit_core.engine.backbones import Backbone
from snapvit_core.engine.correction import CorrectionConfig, correct_elastic
from snapvit_core.engine.elastic import ElasticViT
from snapvit_core.evaluation.features import KnnEvaluator, embedding_similarity
from snapvit_core.evaluation.knn import knn_predict
from snapvit_core.explorer import Explorer
from snapvit_core.scoring.compute import ScoringConfig, compute_scores
from snapvit_core.scoring.data_free import magnitude_scores, random_scores
from snapvit_core.search.evolution import SearchConfig, run_search

pytestmark = [pytest.mark.cuda, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]

DATA_CONFIG = {"input_size": (3, 32, 32), "interpolation": "bicubic", "mean": (0.5,) * 3, "std": (0.25,) * 3}
FAST = {"samples": 6, "batch_size": 3, "local_crops": 4}


def rank_correlation(a: torch.Tensor, b: torch.Tensor) -> float:
    ranks = [x.flatten().argsort().argsort().double() for x in (a.cpu(), b.cpu())]
    return float(torch.corrcoef(torch.stack(ranks))[0, 1])


@pytest.mark.parametrize("bf16", [False, True])
def test_scoring_on_cuda_matches_the_cpu(bf16):
    model, images = make_vit(), procedural_images(6, seed=1, size=48)
    config = ScoringConfig(**FAST, precision="bf16" if bf16 else "fp32")
    cpu = compute_scores(model, images, DATA_CONFIG, config, device="cpu")
    cuda = compute_scores(model, images, DATA_CONFIG, config, device="cuda")
    assert cuda.mlp.device.type == "cpu" and torch.isfinite(cuda.mlp).all()
    if bf16:
        assert rank_correlation(cuda.mlp, cpu.mlp) > 0.9 and rank_correlation(cuda.heads, cpu.heads) > 0.9
    else:
        torch.testing.assert_close(cuda.mlp, cpu.mlp, rtol=1e-3, atol=1e-12)
        torch.testing.assert_close(cuda.heads, cpu.heads, rtol=1e-3, atol=1e-12)


@pytest.mark.parametrize("dtype", [None, torch.float16])
def test_knn_runs_on_the_device_with_its_tally(dtype):
    generator = torch.Generator().manual_seed(0)
    bank, labels = torch.randn(3000, 64, generator=generator), torch.randint(0, 7, (3000,), generator=generator)
    queries = torch.randn(500, 64, generator=generator)
    cpu = knn_predict(bank, labels, queries, k=20, weighted=True)
    device_bank = bank.cuda() if dtype is None else bank.cuda().to(dtype)
    cuda = knn_predict(device_bank, labels.cuda(), queries.cuda(), k=20, weighted=True, bank_chunk_size=700)
    assert cuda.device.type == "cuda"
    assert (cuda.cpu() == cpu).float().mean() >= (1.0 if dtype is None else 0.98)


@pytest.mark.parametrize("bf16", [False, True])
def test_explorer_and_kNN_evaluator_on_cuda(bf16):
    model = make_vit(depth=2)
    generator = torch.Generator().manual_seed(0)
    train, test = torch.randn(40, 3, 32, 32, generator=generator), torch.randn(12, 3, 32, 32, generator=generator)
    explorer = Explorer(Backbone(model.cuda(), "tiny"), magnitude_scores(model), "cuda")
    evaluator = KnnEvaluator(train, torch.arange(40) % 4, test, torch.arange(12) % 4, k=5, device="cuda")
    if bf16:
        evaluator.bank_dtype = torch.float16
    explorer.attach_knn(evaluator)
    result = explorer.evaluate(0.35, 0.2, ("knn", "flops", "params", "latency"))
    plan = explorer.plan_for(0.0, 0.0)
    features = explorer.elastic.run(plan, lambda model: evaluator.features(model, explorer.feature_key(plan)))
    assert features[0].device.type == "cuda" and 0.0 <= result.knn_top1 <= 1.0
    similarity = embedding_similarity(explorer.unpruned_features(), features[1])
    assert similarity.device.type == "cpu" and similarity.numpy().shape == (12,)
    cpu_model = make_vit(depth=2)
    cpu_evaluator = KnnEvaluator(train, torch.arange(40) % 4, test, torch.arange(12) % 4, k=5)
    cpu_features = cpu_evaluator.features(cpu_model)
    full = evaluator.features(model.cuda())
    torch.testing.assert_close(full[1].cpu(), cpu_features[1], rtol=1e-3, atol=1e-3)


@pytest.mark.parametrize("bf16", [False, True])
def test_search_on_cuda(bf16):
    model = make_vit().cuda()
    images = torch.randn(24, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    config = SearchConfig(evaluations=11, covariance="cka", pca_components=8, population_size=5)
    with torch.autocast("cuda", torch.bfloat16, enabled=bf16):
        result = run_search(model, magnitude_scores(model), images, config, device="cuda")
    assert result.evaluations == 11 and result.best_fitness <= result.initial_fitness
    assert result.multipliers.device.type == "cpu" and torch.isfinite(result.multipliers).all()


@pytest.mark.parametrize("bf16", [False, True])
def test_correction_on_cuda_does_not_increase_the_error(bf16):
    model = make_vit(depth=2).cuda()
    elastic = ElasticViT(model, random_scores(model, 0))
    images = torch.randn(16, 3, 32, 32, generator=torch.Generator().manual_seed(1)).cuda()
    with torch.autocast("cuda", torch.bfloat16, enabled=bf16):
        corrected, report = correct_elastic(elastic, 0.5, 0.3, images, CorrectionConfig(samples=16))
    assert next(corrected.parameters()).device.type == "cuda"
    for layer in report.layers:
        assert layer.error_after <= layer.error_before * (1.05 if bf16 else 1.0 + 1e-6), layer
