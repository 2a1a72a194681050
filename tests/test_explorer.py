"""Explorer: instant plan costs, the one locked evaluate call (cancel, kNN subsets, similarity), latency."""

from __future__ import annotations

import pytest
import torch
from conftest import make_vit

from snapvit_core.engine.backbones import Backbone
from snapvit_core.errors import CancelledError, SnapViTError
from snapvit_core.evaluation.features import KnnEvaluator
from snapvit_core.evaluation.knn import stratified_subset
from snapvit_core.evaluation.metrics import analytic_flops, count_parameters
from snapvit_core.explorer import Explorer
from snapvit_core.scoring.data_free import magnitude_scores

FAST = {"budget_s": 0.01, "min_rounds": 2, "max_rounds": 2}


def _explorer(with_knn: bool = True) -> Explorer:
    model = make_vit()
    explorer = Explorer(Backbone(model, "tiny", {"input_size": (3, 32, 32)}), magnitude_scores(model))
    if with_knn:
        generator = torch.Generator().manual_seed(0)
        images = torch.randn(60, 3, 32, 32, generator=generator)
        labels = torch.arange(60) % 3
        explorer.attach_knn(KnnEvaluator(images[:40], labels[:40], images[40:], labels[40:], k=5))
    return explorer


def test_cost_is_instant_and_equals_the_pruned_model():
    explorer = _explorer(with_knn=False)
    for mlp_s, head_s in [(0.0, 0.0), (0.35, 0.2), (0.7, 0.6)]:
        cost = explorer.cost(mlp_s, head_s)
        pruned = explorer.elastic.prune_to(mlp_s, head_s)
        assert cost.cost.flops == analytic_flops(pruned) and cost.cost.params == count_parameters(pruned)
        assert cost.neuron_mask.sum(dim=1).tolist() == cost.kept_neurons
        assert cost.head_mask.sum(dim=1).tolist() == cost.kept_heads
        assert cost.latency is None  # no latency model yet
    assert explorer.cost(0.0, 0.0).cost.flops_pct == 100.0
    assert explorer.plan_for(0.35, 0.2) == explorer.cost(0.35, 0.2).plan


def test_cost_predicts_latency_once_the_model_is_ready(tmp_path):
    explorer = _explorer(with_knn=False)
    explorer.ensure_latency_model(batches=(1, 4), cache_dir=tmp_path, **FAST)
    assert explorer.cost(0.0, 0.0).latency.speedup == 1.0
    assert explorer.cost(0.0, 0.0, batch=4).latency.speedup == 1.0
    assert explorer.cost(0.5, 0.5, batch=4).latency.batch == 4
    assert explorer.cost(0.5, 0.5, batch=7).latency is None  # not calibrated at that batch
    result = explorer.evaluate(0.0, 0.0, ("flops", "latency"), latency_batch=4, latency="model")
    assert result.latency_source == "predicted" and result.latency["speedup"] == 1.0
    assert result.latency_ms == explorer.cost(0.0, 0.0).latency.ms
    with pytest.raises(SnapViTError, match="latency source"):
        explorer.evaluate(0.0, 0.0, ("flops",), latency="guess")


def test_similarity_is_returned_at_zero_sparsity():
    explorer = _explorer()
    result = explorer.evaluate(0.0, 0.0)
    assert result.per_image_similarity is not None and len(result.per_image_similarity) == 20
    assert all(value == pytest.approx(1.0, abs=1e-5) for value in result.per_image_similarity)
    assert result.knn_set == "all 60 images"
    pruned = explorer.evaluate(0.6, 0.5)
    assert min(pruned.per_image_similarity) < 0.9999
    assert pruned.embedding_cosine == pytest.approx(sum(pruned.per_image_similarity) / 20, abs=1e-5)


def test_evaluate_cancel_raises_and_leaves_the_explorer_usable():
    explorer = _explorer()
    with pytest.raises(CancelledError):
        explorer.evaluate(0.4, 0.2, cancel=lambda: True)
    calls = []

    def cancel_mid_embedding():
        calls.append(1)
        return len(calls) > 1  # let the first check pass, stop inside the embedding pass

    with pytest.raises(CancelledError):
        explorer.evaluate(0.4, 0.2, cancel=cancel_mid_embedding)
    assert not explorer.knn.is_cached(explorer.feature_key(explorer.plan_for(0.4, 0.2)))  # nothing half-done cached
    done = explorer.evaluate(0.4, 0.2, cancel=lambda: False, progress=lambda d, t: calls.append((d, t)))
    fresh = _explorer().evaluate(0.4, 0.2)
    assert done.knn_top1 == fresh.knn_top1 and done.per_image_similarity == fresh.per_image_similarity
    assert (60, 60) in calls  # progress reached the end of the embedding pass


def test_knn_subset_is_deterministic_and_reported():
    explorer = _explorer()
    first = explorer.evaluate(0.3, 0.2, knn_images=30)
    assert first.knn_set == "subset: 30 of 60 images" and len(first.per_image_similarity) == 10
    again = _explorer().evaluate(0.3, 0.2, knn_images=30)
    assert again.knn_top1 == first.knn_top1 and again.per_image_similarity == first.per_image_similarity
    assert explorer.evaluate(0.3, 0.2, knn_images=1000).knn_set == "all 60 images"
    with pytest.raises(SnapViTError, match="knn_images"):
        explorer.evaluate(0.3, 0.2, knn_images=1)


def test_stratified_subset():
    labels = torch.tensor([0] * 50 + [1] * 30 + [2] * 20)
    picked = stratified_subset(labels, 10)
    assert picked.tolist() == stratified_subset(labels, 10).tolist()
    assert torch.bincount(labels[picked]).tolist() == [5, 3, 2]
    assert len(stratified_subset(labels, 2)) == 2
    assert stratified_subset(labels, 1000).tolist() == list(range(100))
    assert stratified_subset(labels, 10, seed=1).tolist() != picked.tolist()


def test_measure_latency_now_is_labelled_measured():
    prediction = _explorer(with_knn=False).measure_latency_now(0.5, 0.5, batch=2)
    assert prediction.source == "measured" and prediction.batch == 2
    assert 0 < prediction.low_ms <= prediction.ms <= prediction.high_ms and prediction.speedup > 0


def test_pruned_model_is_a_standalone_pruned_copy():
    explorer = _explorer(with_knn=False)
    model, report = explorer.pruned_model(0.5, 0.5)
    assert report is None and count_parameters(model) == explorer.cost(0.5, 0.5).cost.params
    explorer.evaluate(0.0, 0.0, ("params",))  # moving the working model leaves the copy alone
    assert count_parameters(model) == explorer.cost(0.5, 0.5).cost.params
    assert all(p.data_ptr() != q.data_ptr() for p in model.parameters() for q in explorer.elastic.full.parameters())


def test_concurrent_callers_share_one_calibration(tmp_path, monkeypatch):
    import threading

    from snapvit_core import explorer as explorer_module

    calls = []
    original = explorer_module.load_or_calibrate_latency_model

    def counting(*args, **kwargs):
        calls.append(args[2])
        return original(*args, **kwargs)

    monkeypatch.setattr(explorer_module, "load_or_calibrate_latency_model", counting)
    explorer = _explorer(with_knn=False)
    threads = [
        threading.Thread(target=explorer.ensure_latency_model, kwargs={"cache_dir": tmp_path, **FAST}) for _ in range(3)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert calls == [(1, 32)]
    explorer.ensure_latency_model(batches=(4,), cache_dir=tmp_path, **FAST)  # keeps 1 and 32
    assert calls[-1] == (1, 4, 32) and explorer.latency_model.batches == (1, 4, 32)
