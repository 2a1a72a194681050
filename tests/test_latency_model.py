"""latency_model: calibration of a plan's pieces, prediction, disk cache and cancellation (no timed asserts)."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from conftest import make_vit
from test_families import FAMILIES

from snapvit_core.engine.backbones import Backbone
from snapvit_core.errors import CancelledError, SnapViTError
from snapvit_core.latency import calibration as latency_calibration
from snapvit_core.latency import model as lm
from snapvit_core.latency.calibration import (
    _spans,
    calibrate_latency_model,
    load_or_calibrate_latency_model,
    mlp_grid,
)
from snapvit_core.latency.model import LatencyModel, latency_model_key, load_cached_latency_model, save_latency_model

FAST = {"budget_s": 0.01, "min_rounds": 2, "max_rounds": 2}


@pytest.fixture(scope="module")
def tiny_model() -> LatencyModel:
    return calibrate_latency_model(make_vit(), 32, "cpu", (1, 4), backbone_id="tiny", **FAST)


def test_speedup_is_exactly_one_unpruned(tiny_model):
    for batch in (1, 4):
        prediction = tiny_model.predict([6] * 3, [192] * 3, batch)
        assert prediction.speedup == 1.0 and prediction.batch == batch and prediction.source == "predicted"
        assert 0 < prediction.low_ms <= prediction.ms <= prediction.high_ms


def test_unpruned_prediction_is_the_measured_forward(tiny_model):
    table = tiny_model.tables[1]
    full = [tiny_model.num_heads] * 3, [tiny_model.mlp_hidden] * 3
    for stat in range(3):  # the unpruned prediction is the timed unpruned forward, exactly
        assert table.predict(*full, stat) == table.full_ms[stat] and table.block_ms(6, 192, stat) == 0.0
    assert table.rounds == 2 and len(table.attention_ms) == 6 and table.mlp_widths == mlp_grid(192)
    assert table.attention_shape[-1] == 1.0 and table.mlp_shape[-1] == 1.0 and table.mlp_shape[0] == 0.0
    assert list(table.mlp_shape) == sorted(table.mlp_shape)  # monotone
    # the most pruned plan saves at most the two in-situ spans
    smallest = table.predict([1] * 3, [1] * 3, 0)
    assert smallest == pytest.approx(table.full_ms[0] - table.attention_span_ms[0] - table.mlp_span_ms[0])
    assert min(table.attention_span_ms + table.mlp_span_ms) >= 0.0 and smallest > 0.0


def test_spans_never_save_more_than_the_minimal_model():
    # noisy anchors: one head saves 8 ms and a narrow MLP 6 ms of 10, but the minimal model is 4 ms
    attention, mlp = _spans((10.0,), (2.0,), (4.0,), (4.0,))
    assert attention[0] + mlp[0] == pytest.approx(6.0) and attention[0] / mlp[0] == pytest.approx(8 / 6)
    attention, mlp = _spans((10.0,), (11.0,), (7.0,), (6.0,))  # a slower one-head anchor saves nothing
    assert attention == (0.0,) and mlp == (3.0,)


def test_prediction_covers_every_plan_and_refuses_bad_ones(tiny_model):
    for heads in range(0, 7):
        for neurons in (0, 1, 50, 192):
            prediction = tiny_model.predict([heads] * 3, [neurons] * 3)
            assert prediction.ms > 0 and prediction.speedup > 0
    with pytest.raises(SnapViTError, match="batches"):
        tiny_model.predict([6] * 3, [192] * 3, batch=7)
    with pytest.raises(SnapViTError, match="blocks"):
        tiny_model.predict([6] * 2, [192] * 2)


def test_predictions_are_monotone_and_never_slower_than_unpruned(tiny_model):
    """Structural, not timed: more kept units never predict less time, whatever the machine's load."""
    for batch in tiny_model.batches:
        by_width = [tiny_model.predict([6] * 3, [m] * 3, batch).ms for m in range(0, 193, 16)]
        by_heads = [tiny_model.predict([h] * 3, [192] * 3, batch).ms for h in range(0, 7)]
        assert by_width == sorted(by_width) and by_heads == sorted(by_heads)
        mixed = tiny_model.predict([1, 6, 3], [10, 192, 100], batch)
        assert mixed.ms <= tiny_model.predict([6] * 3, [192] * 3, batch).ms and mixed.speedup >= 1.0


def test_round_trip_through_dict_and_disk(tiny_model, tmp_path):
    again = LatencyModel.from_dict(tiny_model.to_dict())
    assert again.to_dict() == tiny_model.to_dict()
    assert again.predict([2, 3, 4], [10, 100, 150], 4) == tiny_model.predict([2, 3, 4], [10, 100, 150], 4)
    path = save_latency_model(tiny_model, tmp_path)
    assert path.parent == tmp_path and path.suffix == ".json"
    loaded = load_cached_latency_model(tiny_model.key, tmp_path, batches=(1,))
    assert loaded is not None and loaded.to_dict() == tiny_model.to_dict()
    assert load_cached_latency_model(tiny_model.key, tmp_path, batches=(1, 64)) is None  # batch not calibrated
    path.write_text("{not json")
    assert load_cached_latency_model(tiny_model.key, tmp_path) is None


def test_cache_key_follows_device_dtype_threads():
    backbone = Backbone(make_vit(), "tiny", {"input_size": (3, 32, 32)})
    key = latency_model_key(backbone, "cpu", threads=2)
    assert key.threads == 2 and key.dtype == "float32" and key.device == "cpu" and key.image_size == 32
    others = [
        latency_model_key(backbone, "cpu", threads=3),
        latency_model_key(backbone, "cuda:0", threads=2),
        latency_model_key(Backbone(make_vit().to(torch.float64), "tiny", {"input_size": (3, 32, 32)}), "cpu", 2),
        latency_model_key(Backbone(make_vit(), "other", {"input_size": (3, 32, 32)}), "cpu", 2),
        dataclasses.replace(key, image_size=64),
    ]
    slugs = {key.slug()} | {other.slug() for other in others}
    assert len(slugs) == 1 + len(others) and all(other != key for other in others)


def test_load_or_calibrate_uses_the_cache(tmp_path, monkeypatch):
    backbone = Backbone(make_vit(depth=2), "tiny2", {"input_size": (3, 32, 32)})
    calls = []
    first = load_or_calibrate_latency_model(
        backbone, "cpu", (1,), cache_dir=tmp_path, progress=lambda d, t: calls.append((d, t)), **FAST
    )
    assert calls and calls[-1][0] == calls[-1][1] == 2  # two timed rounds
    assert first.key == latency_model_key(backbone, "cpu")

    def refuse(*args, **kwargs):
        raise AssertionError("recalibrated despite a cached model")

    monkeypatch.setattr(latency_calibration, "calibrate_latency_model", refuse)
    second = load_or_calibrate_latency_model(backbone, "cpu", (1,), cache_dir=tmp_path)
    assert second.to_dict() == first.to_dict()
    monkeypatch.setenv("SNAPVIT_CACHE_DIR", str(tmp_path / "env"))
    assert lm.default_cache_dir() == tmp_path / "env" / "latency"


def test_calibration_cancels():
    with pytest.raises(CancelledError):
        calibrate_latency_model(make_vit(), 32, "cpu", (1,), cancel=lambda: True, **FAST)
    seen = []

    def cancel_after_first_round():
        if len(seen) >= 1:
            raise CancelledError("latency calibration")

    with pytest.raises(CancelledError):
        calibrate_latency_model(
            make_vit(), 32, "cpu", (1,), progress=lambda d, t: seen.append(d), cancel=cancel_after_first_round, **FAST
        )
    assert seen == [1]


@pytest.mark.slow
@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_calibration_runs_for_every_family(family):
    from snapvit_core.engine.adapter import ViTAdapter

    model = FAMILIES[family]()
    shape = ViTAdapter(model).shape()
    calibrated = calibrate_latency_model(model, shape.image_size, "cpu", (1,), backbone_id=family, **FAST)
    full = [shape.num_heads] * shape.num_blocks, [shape.mlp_hidden] * shape.num_blocks
    assert calibrated.predict(*full).speedup == 1.0
    assert calibrated.predict([1] * shape.num_blocks, [1] * shape.num_blocks).speedup >= 1.0


def _damaged(table: dict, part: str) -> object:
    """The JSON text of a cache file damaged the way issue 23 item 4 found."""
    import json

    first = next(iter(table["tables"]))
    edits = {
        "no attention points": ("attention_shape", []),
        "zero blocks": ("blocks", 0),
        "no MLP widths": ("mlp_widths", []),
        "NaN times": ("full_ms", [float("nan")] * 3),
        "string times": ("mlp_span_ms", ["1", "2", "3"]),
        "profile beyond 1": ("mlp_shape", [5.0] * len(table["tables"][first]["mlp_shape"])),
    }
    if part in edits:
        name, value = edits[part]
        table["tables"][first][name] = value
        return json.dumps(table)
    return {"JSON list": "[]", "deep nesting": "[" * 200_000 + "]" * 200_000, "not JSON": "{x"}[part]


PARTS = ["no attention points", "zero blocks", "no MLP widths", "NaN times", "string times", "profile beyond 1"]


@pytest.mark.parametrize("part", [*PARTS, "JSON list", "deep nesting", "not JSON"])
def test_invalid_cache_file_is_treated_as_absent_and_recalibrated(tiny_model, tmp_path, caplog, part):
    """Issue 23 item 4: a cache with a valid key but broken values crashed every later prediction."""
    import copy
    import logging

    path = save_latency_model(tiny_model, tmp_path)
    path.write_text(_damaged(copy.deepcopy(tiny_model.to_dict()), part))
    with caplog.at_level(logging.WARNING, logger="snapvit_core.latency.model"):
        assert load_cached_latency_model(tiny_model.key, tmp_path) is None
        assert load_cached_latency_model(tiny_model.key, tmp_path) is None
    assert caplog.text.count("ignoring the latency model cache") == 1  # warned once
    backbone = Backbone(make_vit(), "tiny", {"input_size": (3, 32, 32)})
    path = save_latency_model(dataclasses.replace(tiny_model, key=latency_model_key(backbone, "cpu")), tmp_path)
    path.write_text(_damaged(copy.deepcopy(tiny_model.to_dict()), part))
    again = load_or_calibrate_latency_model(backbone, "cpu", (1,), cache_dir=tmp_path, **FAST)
    assert again.predict([6] * 3, [192] * 3).speedup == 1.0  # recalibrated and written over the bad file
    assert load_cached_latency_model(again.key, tmp_path, (1,)) is not None


def test_unwritable_cache_location_still_gives_a_model(tmp_path, caplog, monkeypatch):
    """Issue 23 item 4: a read-only cache folder or a file where the folder should be reached the last resort."""
    import errno
    import logging

    backbone = Backbone(make_vit(depth=1), "tiny1", {"input_size": (3, 32, 32)})
    (tmp_path / "file").write_text("a file, not a folder")
    with caplog.at_level(logging.WARNING, logger="snapvit_core.latency.model"):
        model = load_or_calibrate_latency_model(backbone, "cpu", (1,), cache_dir=tmp_path / "file", **FAST)
    assert model.predict([6], [192]).speedup == 1.0 and "could not cache the latency model" in caplog.text

    def read_only(*args, **kwargs):
        raise OSError(errno.EROFS, "Read-only file system")

    monkeypatch.setattr(lm, "write_text_atomic", read_only)
    model = load_or_calibrate_latency_model(backbone, "cpu", (1,), cache_dir=tmp_path / "ro", **FAST)
    assert model.predict([6], [192]).speedup == 1.0 and "Read-only" in caplog.text


def test_cli_latency_model_with_an_unusable_cache_is_not_an_error(tmp_path, monkeypatch, capsys):
    import json

    from snapvit_core.cli import main

    (tmp_path / "cache").write_text("a file where the cache folder should be")
    monkeypatch.setenv("SNAPVIT_CACHE_DIR", str(tmp_path / "cache"))
    argv = ["evaluate", "--metrics", "flops", "--latency", "model", "--latency-batch", "2", "--json"]
    assert main([*argv, "--mlp-sparsity", "0.5", "--head-sparsity", "0"]) == 0
    out, err = capsys.readouterr()
    assert json.loads(out)["latency_source"] == "predicted" and "unexpected" not in err
