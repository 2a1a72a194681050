"""sweep: costs from the plan and the latency model, accuracy from the explorer; Pareto front."""

from __future__ import annotations

import pytest
from test_explorer import FAST, _explorer

from snapvit_core.errors import CancelledError
from snapvit_core.landscape.sweep import LINEAR_COLUMN, SWEEP_COLUMNS, pareto_mask, sweep

PAIRS = [(0.0, 0.0), (0.3, 0.2), (0.6, 0.5)]


@pytest.fixture
def cached(tmp_path, monkeypatch):
    monkeypatch.setenv("SNAPVIT_CACHE_DIR", str(tmp_path))


def test_sweep_table_uses_plan_costs_and_the_latency_model(cached):
    first, second = _explorer(), _explorer()
    first.ensure_latency_model(**FAST)
    steps = []
    table = sweep({"a": first, "b": second}, PAIRS, progress=lambda d, t: steps.append((d, t)), knn_images=30)
    assert list(table.columns) == list(SWEEP_COLUMNS) and len(table) == 6
    assert steps[-1] == (6, 6)
    assert (table["latency_source"] == "predicted").all()
    assert table["speed-up (x)"].iloc[0] == 1.0 and table["flops_pct"].iloc[0] == 100.0
    assert list(table["flops_pct"].iloc[:3]) == sorted(table["flops_pct"].iloc[:3], reverse=True)
    # the second explorer loaded the first one's calibration from the disk cache: identical predictions
    assert table["latency_ms"].iloc[:3].tolist() == table["latency_ms"].iloc[3:].tolist()
    for row in table.itertuples():
        cost = first.cost(row[2], row[3]).cost
        assert row.params == cost.params
    accuracy = first.evaluate(0.3, 0.2, knn_images=30).knn_top1
    assert table["kNN top-1 (%)"].iloc[1] == pytest.approx(100.0 * accuracy)
    assert table[LINEAR_COLUMN].isna().all()  # computed only when asked for
    linear = sweep({"a": first}, PAIRS[:2], knn_images=30, linear=True)
    expected = first.evaluate(0.3, 0.2, ("linear",), knn_images=30).linear_top1
    assert linear[LINEAR_COLUMN].iloc[1] == pytest.approx(100.0 * expected)


def test_sweep_without_data_has_no_accuracy_and_cancels(cached):
    explorer = _explorer(with_knn=False)
    explorer.ensure_latency_model(**FAST)
    table = sweep({"m": explorer}, PAIRS)
    assert table["kNN top-1 (%)"].isna().all() and table["params"].is_monotonic_decreasing
    with pytest.raises(CancelledError):
        sweep({"m": explorer}, PAIRS, cancel=lambda: True)


def test_pareto_front():
    cost = [100, 80, 60, 70, 40]
    accuracy = [96.0, 95.0, 93.0, 92.0, 93.0]
    assert pareto_mask(cost, accuracy).tolist() == [True, True, False, False, True]
