"""What sessions share (ui/shared.py): one explorer per key, its filler on a private explorer."""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import replace

import pytest

from ui import shared
from ui.state import Selection


@pytest.fixture
def fresh(monkeypatch, tmp_path):
    monkeypatch.setenv("SNAPVIT_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(shared, "_SHARED", OrderedDict())
    made = shared.shared_explorer(Selection(), shared.data_free(Selection(), "magnitude"), 1)
    yield made
    made.stop()


def test_one_shared_explorer_per_key(fresh):
    scores = shared.data_free(Selection(), "magnitude")
    assert shared.shared_explorer(Selection(), scores, 1) is fresh
    assert shared.shared_explorer(Selection(), scores, 8) is not fresh  # another alignment: another landscape


def test_the_filler_prunes_a_private_explorer(fresh):
    private = fresh.filler.explorer
    assert private is not fresh.explorer and private.elastic is not fresh.explorer.elastic
    assert private.backbone is fresh.explorer.backbone  # one loaded backbone, read-only
    assert private.knn is not None and private.knn is not fresh.explorer.knn


def test_the_pages_explorer_adopts_the_fillers_latency_model(fresh, monkeypatch):
    private = fresh.filler.explorer
    private.ensure_latency_model(batches=(1,), budget_s=0.01, min_rounds=2)
    monkeypatch.setattr(fresh.filler, "latency_status", lambda: ("ready", 1.0))
    assert fresh.explorer.latency_model is None
    assert fresh.latency_status() == ("ready", 1.0)
    assert fresh.explorer.latency_model is private.latency_model
    assert fresh.explorer.cost(0.5, 0.2).latency is not None


def test_a_latency_model_of_another_backbone_is_refused(fresh):
    private = fresh.filler.explorer
    model = private.ensure_latency_model(batches=(1,), budget_s=0.01, min_rounds=2)
    other = replace(model, key=replace(model.key, backbone="vit_small_patch16_224"))
    with pytest.raises(ValueError, match="does not fit"):
        fresh.explorer.use_latency_model(other)
