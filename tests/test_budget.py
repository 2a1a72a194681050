"""budget: search of the whole (MLP, head) plane; never over budget; accuracy only on the boundary."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from test_explorer import FAST, _explorer

from snapvit_core.errors import CancelledError, SnapViTError
from snapvit_core.landscape.budget import BUDGET_COLUMNS, budget_boundary, cost_grid, find_best_under_budget
from snapvit_core.presets import PUBLISHED_SPARSITY_PAIRS


@pytest.fixture
def cached(tmp_path, monkeypatch):
    monkeypatch.setenv("SNAPVIT_CACHE_DIR", str(tmp_path))


def _exact(explorer, column, answer):
    cost = explorer.cost(answer.mlp_sparsity, answer.head_sparsity)
    return {"flops_pct": cost.cost.flops_pct, "params_m": cost.cost.params / 1e6, "latency_ms": cost.latency.ms}[column]


@pytest.mark.parametrize("column", BUDGET_COLUMNS)
def test_answers_never_exceed_the_budget(column, cached):
    explorer = _explorer(with_knn=False)
    explorer.ensure_latency_model(**FAST)
    grid = cost_grid(explorer, column, step=0.05)
    low, high = grid[column].min(), grid[column].max()
    assert find_best_under_budget(explorer, column, low * 0.999, step=0.05) is None  # nothing fits
    for limit in np.linspace(low, high * 1.01, 25):
        answer = find_best_under_budget(explorer, column, limit, step=0.05)
        assert answer is not None and answer.cost <= limit
        assert answer.cost == _exact(explorer, column, answer)
        assert answer.accuracy_kind == "none" and answer.accuracy is None
        # without data the answer is the boundary configuration closest to the limit
        assert answer.cost == answer.boundary[column].max()
    assert find_best_under_budget(explorer, column, high, step=0.05).mlp_sparsity == 0.0


def test_grid_matches_explorer_cost(cached):
    explorer = _explorer(with_knn=False)
    explorer.ensure_latency_model(**FAST)
    for column in BUDGET_COLUMNS:
        grid = cost_grid(explorer, column, step=0.25)
        for row in grid.itertuples(index=False):
            cost = explorer.cost(row[0], row[1])
            exact = {"flops_pct": cost.cost.flops_pct, "params_m": cost.cost.params / 1e6}.get(column)
            assert row[2] == pytest.approx(exact if exact is not None else cost.latency.ms, rel=1e-9)


def test_boundary_is_minimal_and_covers_every_fitting_configuration():
    explorer = _explorer(with_knn=False)
    grid = cost_grid(explorer, "flops_pct", step=0.05)
    boundary = budget_boundary(grid, "flops_pct", 60.0)
    points = list(zip(boundary["MLP sparsity"], boundary["head sparsity"]))
    for i, (m, h) in enumerate(points):
        assert not any(m2 <= m and h2 <= h for j, (m2, h2) in enumerate(points) if j != i)
    for row in grid[grid["flops_pct"] <= 60.0].itertuples(index=False):
        assert any(m <= row[0] and h <= row[1] for m, h in points)


def test_accuracy_is_evaluated_on_the_boundary_only():
    explorer = _explorer()
    steps = []
    answer = find_best_under_budget(
        explorer, "flops_pct", 70.0, step=0.05, max_evaluations=4, progress=lambda d, t: steps.append((d, t))
    )
    assert answer.accuracy_kind == "knn" and steps[-1] == (4, 4) and len(answer.candidates) == 4
    assert answer.accuracy == answer.candidates["accuracy"].max() and answer.cost <= 70.0
    boundary = set(zip(answer.boundary["MLP sparsity"], answer.boundary["head sparsity"]))
    assert set(zip(answer.candidates["MLP sparsity"], answer.candidates["head sparsity"])) <= boundary
    knn = explorer.evaluate(answer.mlp_sparsity, answer.head_sparsity).knn_top1
    assert answer.accuracy == pytest.approx(100.0 * knn)


def test_ranking_by_the_linear_probe(tmp_path):
    """metric="linear": the boundary search and the landscape read rank by linear-probe top-1."""
    from snapvit_core.landscape.budget import best_in_landscape
    from snapvit_core.landscape.store import Landscape, LandscapePoint, landscape_key

    explorer = _explorer()
    answer = find_best_under_budget(explorer, "flops_pct", 70.0, step=0.05, max_evaluations=4, metric="linear")
    assert answer.accuracy_kind == "linear" and answer.accuracy == answer.candidates["accuracy"].max()
    linear = explorer.evaluate(answer.mlp_sparsity, answer.head_sparsity, ("linear",)).linear_top1
    assert answer.accuracy == pytest.approx(100.0 * linear)
    landscape = Landscape(landscape_key(explorer, "test", grid=0.25))
    for m, h in landscape.configurations():
        landscape.add(LandscapePoint.from_result(explorer.evaluate(m, h, ("knn", "linear", "flops", "params"))))
    by_linear = best_in_landscape(explorer, landscape, "flops_pct", 80.0, metric="linear")
    best = max(
        (p for p in landscape.points() if explorer.cost(p.mlp_sparsity, p.head_sparsity).cost.flops_pct <= 80.0),
        key=lambda p: (p.linear_top1, -explorer.cost(p.mlp_sparsity, p.head_sparsity).cost.flops_pct),
    )
    assert by_linear.accuracy_kind == "linear" and by_linear.accuracy == pytest.approx(100.0 * best.linear_top1)
    with pytest.raises(SnapViTError, match="accuracy metric"):
        find_best_under_budget(explorer, "flops_pct", 70.0, metric="top5")


def test_label_free_similarity_without_labels():
    explorer = _explorer(with_knn=False)
    images = torch.randn(12, 3, 32, 32, generator=torch.Generator().manual_seed(2))
    answer = find_best_under_budget(explorer, "params_m", 0.07, step=0.1, max_evaluations=3, images=images)
    assert answer.accuracy_kind == "similarity" and 0.0 < answer.accuracy <= 1.0 + 1e-6
    expected = np.mean(explorer.image_similarity(answer.mlp_sparsity, answer.head_sparsity, images))
    assert answer.accuracy == pytest.approx(expected)


def test_bad_requests_and_cancel():
    explorer = _explorer()
    with pytest.raises(SnapViTError, match="budget column"):
        find_best_under_budget(explorer, "gflops", 1.0)
    with pytest.raises(SnapViTError, match="number"):
        find_best_under_budget(explorer, "flops_pct", "lots")
    with pytest.raises(SnapViTError, match="finite"):
        find_best_under_budget(explorer, "flops_pct", float("nan"))
    with pytest.raises(CancelledError):
        find_best_under_budget(explorer, "flops_pct", 70.0, cancel=lambda: True)


@pytest.mark.slow
def test_half_flops_on_the_embedded_backbone_lies_between_the_path_points():
    from conftest import ROOT

    from snapvit_core.data import load_knn_splits
    from snapvit_core.engine.backbones import load_backbone
    from snapvit_core.evaluation.features import KnnEvaluator
    from snapvit_core.explorer import Explorer
    from snapvit_core.scoring.scores_io import load_scores

    backbone = load_backbone("embedded")
    explorer = Explorer(backbone, load_scores(ROOT / "scores" / "embedded.xnes.safetensors"))
    splits = load_knn_splits("embedded", backbone.data_config)
    explorer.attach_knn(KnnEvaluator.from_splits(splits))
    path = {pair: explorer.cost(*pair).cost.flops_pct for pair in PUBLISHED_SPARSITY_PAIRS}
    assert path[(0.55, 0.4)] > 50.0 > path[(0.65, 0.5)]  # 51.4 % and 41.1 %: no published point fits well
    answer = find_best_under_budget(explorer, "flops_pct", 50.0, knn_images=300, max_evaluations=6)
    assert path[(0.65, 0.5)] < answer.cost <= 50.0
    assert (answer.mlp_sparsity, answer.head_sparsity) not in path
    assert answer.accuracy_kind == "knn" and len(answer.candidates) <= 6
