"""Latency tables (issue 24): calibrate -> table -> evaluate / budget round trip, and refusals of bad tables."""

from __future__ import annotations

import json

import pytest
import torch
from conftest import make_vit, small_landscape_argv

from snapvit_core.cli import main
from snapvit_core.engine.backbones import Backbone, load_backbone
from snapvit_core.errors import SnapViTError
from snapvit_core.explorer import Explorer
from snapvit_core.latency.calibration import calibrate_latency_model
from snapvit_core.latency.table import load_table, make_table, save_table, use_table
from snapvit_core.scoring.data_free import magnitude_scores


@pytest.fixture(scope="module")
def table_path(latency_table_path):
    return latency_table_path


def _cli(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_calibrated_table_records_what_it_is_valid_for(table_path):
    data = json.loads(table_path.read_text())
    assert data["format"] == "snapvit-latency-table" and data["runtime"] == "torch" and data["dtype"] == "float32"
    assert data["batches"] == [1, 4, 32] and data["threads"] == torch.get_num_threads()
    assert data["device"].startswith("cpu") and data["model_id"] == "embedded"
    assert data["architecture"]["num_blocks"] == 6 and data["architecture"]["mlp_hidden"] == 384
    table = load_table(table_path)
    assert table.batches == (1, 4, 32) and "torch" in table.label


def test_evaluate_predicts_from_the_table_with_its_labels(table_path, capsys):
    code, out, err = _cli(
        capsys, "evaluate", "--metrics", "flops", "--mlp-sparsity", "0.45", "--head-sparsity", "0.3",
        "--align", "16", "--latency-table", str(table_path), "--latency-batch", "4", "--json",
    )  # fmt: skip
    assert code == 0, err
    payload = json.loads(out)
    table = load_table(table_path)
    expected = table.predict(payload["kept_heads"], payload["kept_neurons"], 4)  # the aligned counts
    latency = payload["latency"]
    assert latency["batch_ms"] == pytest.approx(expected.ms) and payload["latency_source"] == "predicted"
    assert latency["device"] == table.device and latency["runtime"] == "torch" and latency["source"] == "latency table"
    assert all(n % 16 == 0 for n in payload["kept_neurons"])
    # an uncalibrated batch is refused in one line
    code, _, err = _cli(capsys, "evaluate", "--metrics", "flops", "--mlp-sparsity", "0.3", "--head-sparsity", "0",
                        "--latency-table", str(table_path), "--latency-batch", "64")  # fmt: skip
    assert code == 2 and err.count("\n") == 1 and "batches [1, 4, 32]" in err


def test_budget_finder_uses_the_table(table_path):
    from snapvit_core.landscape.budget import find_best_under_budget

    backbone = load_backbone("embedded")
    explorer = Explorer(backbone, magnitude_scores(backbone.model))
    table = load_table(table_path)
    use_table(explorer, table)
    # a limit the table says is reachable (a noisy fast calibration may save little; any table works)
    limit = table.predict_plan(explorer.plan_for(0.5, 0.4), 1).ms
    answer = find_best_under_budget(
        explorer, "latency_ms", limit, batch=1, max_evaluations=2, images=torch.randn(8, 3, 24, 24)
    )
    assert answer is not None
    plan = explorer.plan_for(answer.mlp_sparsity, answer.head_sparsity)
    assert answer.cost == pytest.approx(table.predict_plan(plan, 1).ms) and answer.cost <= limit
    assert explorer.latency_model is table.model  # no recalibration happened


def test_a_table_for_another_architecture_is_refused(tmp_path, capsys):
    model = make_vit()
    calibrated = calibrate_latency_model(model, 32, "cpu", (1, 32), backbone_id="tiny", budget_s=0.01, min_rounds=1)
    other = Backbone(model, "tiny", {"input_size": (3, 32, 32)})
    path = save_table(make_table(calibrated, "tiny", other.shape, "cpu", "torch"), tmp_path / "tiny.json")
    code, _, err = _cli(capsys, "evaluate", "--metrics", "flops", "--mlp-sparsity", "0.3", "--head-sparsity", "0",
                        "--latency-table", str(path))  # fmt: skip
    assert code == 2 and err.count("\n") == 1 and "another architecture" in err and "calibrate" in err
    backbone = load_backbone("embedded")
    with pytest.raises(SnapViTError, match="another architecture"):
        use_table(Explorer(backbone, magnitude_scores(backbone.model)), load_table(path))


def _mutated(table_path, tmp_path, change) -> str:
    data = json.loads(table_path.read_text())
    change(data)
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(data))
    return str(path)


def _set(path: list, value):
    def change(data):
        target = data
        for key in path[:-1]:
            target = target[key]
        target[path[-1]] = value

    return change


BAD_TABLES = {
    "wrong attention shape": _set(["latency_model", "tables", "1", "attention_shape"], [0.0, 1.0]),
    "negative time": _set(["latency_model", "tables", "1", "full_ms"], [-1.0, 1.0, 2.0]),
    "string time": _set(["latency_model", "tables", "1", "mlp_span_ms"], ["a", "b", "c"]),
    "unsorted widths": _set(["latency_model", "tables", "1", "mlp_widths"], [384, 1, 48, 96, 144, 192, 240, 288, 336]),
    "shape out of range": _set(["latency_model", "tables", "1", "mlp_shape"], [5.0] * 9),
    "bad batch key": _set(["latency_model", "tables", "x"], {}),
    "wrong block count": _set(["latency_model", "num_blocks"], 7),
    "no format": _set(["format"], "something"),
    "missing key": lambda data: data.pop("architecture"),
    "unknown runtime": _set(["runtime"], "tensorrt"),
}


@pytest.mark.parametrize("name", sorted(BAD_TABLES))
def test_malformed_tables_are_refused_in_one_line(name, table_path, tmp_path, capsys):
    path = _mutated(table_path, tmp_path, BAD_TABLES[name])
    with pytest.raises(SnapViTError, match="not a usable latency table"):
        load_table(path)
    code, _, err = _cli(capsys, "evaluate", "--metrics", "flops", "--mlp-sparsity", "0.3", "--head-sparsity", "0",
                        "--latency-table", path)  # fmt: skip
    assert code == 2 and err.count("\n") == 1 and "latency table" in err


def test_hostile_files_are_refused(table_path, tmp_path):
    text = table_path.read_text()
    cases = {
        "nan.json": text.replace('"blocks": 6', '"blocks": NaN', 1),
        "inf.json": text.replace('"rounds": ', '"rounds": Infinity, "x": ', 1),
        "deep.json": "[" * 100_000 + "]" * 100_000,
        "nested.json": json.dumps({"format": "snapvit-latency-table", "version": 1, "x": [[[[[[[[[[1]]]]]]]]]]}),
        "garbage.json": "\x00\xff not json",
        "list.json": "[1, 2, 3]",
    }
    for name, content in cases.items():
        path = tmp_path / name
        path.write_text(content, encoding="utf-8", errors="surrogateescape")
        with pytest.raises(SnapViTError, match="not a usable latency table"):
            load_table(path)
    huge = tmp_path / "huge.json"
    with huge.open("w") as handle:
        handle.write('{"pad": "' + "x" * (5 << 20) + '"}')
    with pytest.raises(SnapViTError, match="bytes"):
        load_table(huge)
    with pytest.raises(SnapViTError, match="Cannot read"):
        load_table(tmp_path / "missing.json")


def test_calibrate_refusals(tmp_path, capsys):
    code, _, err = _cli(capsys, "calibrate", "--out", str(tmp_path / "t.txt"))
    assert code == 2 and ".json" in err and err.count("\n") == 1
    code, _, err = _cli(capsys, "calibrate", "--runtime", "onnxruntime", "--dtype", "bf16", "--out",
                        str(tmp_path / "t.json"))  # fmt: skip
    assert code == 2 and "fp32" in err


def test_onnxruntime_calibration_makes_a_table(tmp_path):
    model = make_vit(depth=2)
    calibrated = calibrate_latency_model(
        model, 32, "cpu", (1,), backbone_id="tiny", budget_s=0.01, min_rounds=1, runtime="onnxruntime"
    )
    table = make_table(calibrated, "tiny", Backbone(model, "tiny", {}).shape, "cpu", "onnxruntime")
    loaded = load_table(save_table(table, tmp_path / "ort.json"))
    assert loaded.runtime == "onnxruntime" and "onnxruntime" in loaded.label
    prediction = loaded.predict([3, 6], [96, 192], 1)
    assert prediction.ms > 0 and prediction.speedup >= 1.0 - 1e-9


def test_landscape_predicts_latency_from_a_table_and_follows_the_alignment(table_path, capsys, tmp_path):
    import csv
    import json

    out = tmp_path / "plane.csv"
    common = [
        *small_landscape_argv(40),
        "--cache",
        str(tmp_path / "cache"),
        "--latency-batch",
        "4",
        "--json",
    ]
    code, printed, err = _cli(capsys, *common, "--out", str(out), "--latency-table", str(table_path))
    assert code == 0, err
    report = json.loads(printed)
    assert report["latency_table"]["made_on"] == load_table(table_path).label and report["align"] == 1
    rows = list(csv.DictReader(out.open()))
    model = load_table(table_path).model
    explorer = Explorer(load_backbone("embedded"), magnitude_scores(load_backbone("embedded").model))
    for row in rows:
        plan = explorer.plan_for(float(row["mlp_sparsity"]), float(row["head_sparsity"]))
        assert float(row["latency_ms"]) == model.predict_plan(plan, 1).ms  # the table's device, not this one
        assert float(row["latency_batch_ms"]) == model.predict_plan(plan, 4).ms
    aligned = tmp_path / "aligned.csv"
    code, printed, err = _cli(capsys, *common, "--out", str(aligned), "--align", "32", "--latency", "none")
    assert code == 0 and json.loads(printed)["align"] == 32 and json.loads(printed)["key"] != report["key"]
    widths = Explorer(load_backbone("embedded"), magnitude_scores(load_backbone("embedded").model), align=32)
    for row in csv.DictReader(aligned.open()):
        kept = widths.plan_for(float(row["mlp_sparsity"]), 0.0).kept_neurons
        assert all(k % 32 == 0 for k in kept)
        assert int(row["params"]) == widths.cost(float(row["mlp_sparsity"]), float(row["head_sparsity"])).cost.params
    code, _, err = _cli(
        capsys, *common, "--out", str(tmp_path / "x.csv"), "--latency-table", str(table_path), "--latency-batch", "7"
    )
    assert code == 2 and "no batch 7" in err
