"""The embedded backbone and dataset: shipped assets, fixed split, and that pruning visibly matters."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import torch
from conftest import ROOT

from snapvit_core.data import load_knn_splits
from snapvit_core.engine import embedded
from snapvit_core.engine.backbones import load_backbone
from snapvit_core.engine.elastic import ElasticViT
from snapvit_core.errors import SnapViTError
from snapvit_core.evaluation.features import KnnEvaluator
from snapvit_core.explorer import Explorer
from snapvit_core.presets import EMBEDDED_MODEL_IDS
from snapvit_core.scoring.data_free import magnitude_scores


def test_assets_are_small_and_describe_themselves():
    weights = embedded.ASSETS_DIR / embedded.WEIGHTS_FILENAME
    config_path = embedded.ASSETS_DIR / embedded.CONFIG_FILENAME
    assert weights.stat().st_size + config_path.stat().st_size <= 12 * 1024 * 1024
    config = json.loads(config_path.read_text())
    architecture = config["architecture"]
    assert architecture["depth"] >= 6 and architecture["num_heads"] >= 6
    assert config["dataset"]["sizes"] == {"train": 1257, "test": 540}
    assert config["training"]["seed"] == 0


def test_split_is_fixed_stratified_and_disjoint():
    train_x, train_y = embedded.load_embedded_split("train")
    test_x, test_y = embedded.load_embedded_split("test")
    assert train_x.shape == (1257, 3, 24, 24) and train_x.dtype == torch.uint8 and test_x.shape[0] == 540
    assert set(np.unique(train_y)) == set(np.unique(test_y)) == set(range(10))
    again_x, again_y = embedded.load_embedded_split("test")
    assert torch.equal(test_x, again_x) and np.array_equal(test_y, again_y)
    train_glyphs, _ = embedded.load_digit_glyphs("train")
    test_glyphs, _ = embedded.load_digit_glyphs("test")
    train_keys = {g.tobytes() for g in train_glyphs}
    # sklearn's digits contain a few exact duplicates; nearly all test glyphs must be unseen.
    assert sum(g.tobytes() in train_keys for g in test_glyphs) <= 5


def test_the_dataset_is_the_shipped_bytes_not_this_cpus_rendering(monkeypatch):
    """Loading never renders: another CPU's float rounding cannot change the images, nor the data key."""
    from safetensors.torch import load_file

    shipped = load_file(str(embedded.data_path()))
    embedded._shipped_splits.cache_clear()

    def no_rendering(*args, **kwargs):
        raise AssertionError("the dataset was rendered instead of read")

    monkeypatch.setattr(embedded, "render_digits", no_rendering)
    try:
        for split in embedded.SPLITS:
            images, labels = embedded.load_embedded_split(split)
            assert torch.equal(images, shipped[f"{split}_images"]) and torch.equal(labels, shipped[f"{split}_labels"])
        splits = load_knn_splits("embedded", load_backbone("embedded").data_config)
    finally:
        embedded._shipped_splits.cache_clear()
    # the key of the shipped landscapes: a hash of these bytes (recorded when they were made)
    names = {p.name.split(".")[1] for p in (embedded.ASSETS_DIR / "landscapes").glob("embedded.*.landscape.json")}
    assert names and splits.source_digest is not None
    assert embedded.data_path().stat().st_size < 4 * 1024 * 1024


@pytest.mark.parametrize(
    "damage, match",
    [
        (lambda path: path.unlink(), "is missing"),
        (lambda path: path.write_bytes(b"\x00" * 64), "is corrupt"),
        (lambda path: path.write_bytes(path.read_bytes()[:1000]), "is corrupt"),
        ("fifo", "not a regular file"),
        ("wrong-shape", "does not hold the train split"),
    ],
)
def test_a_damaged_data_file_is_one_clear_error(tmp_path, monkeypatch, damage, match):
    import os

    from safetensors.torch import save_file

    path = tmp_path / embedded.DATA_FILENAME
    path.write_bytes(embedded.data_path().read_bytes())
    if damage == "fifo":
        path.unlink()
        os.mkfifo(path)
    elif damage == "wrong-shape":
        images, labels = embedded.load_embedded_split("train")
        test_images, test_labels = embedded.load_embedded_split("test")
        tensors = {"train_images": images[:10], "train_labels": labels[:10]}
        save_file({**tensors, "test_images": test_images, "test_labels": test_labels}, str(path))
    else:
        damage(path)
    monkeypatch.setattr(embedded, "ASSETS_DIR", tmp_path)
    embedded._shipped_splits.cache_clear()
    try:
        with pytest.raises(SnapViTError, match=match) as raised:
            embedded.load_embedded_split("train")
        assert "git checkout" in raised.value.fix
    finally:
        monkeypatch.undo()
        embedded._shipped_splits.cache_clear()


def test_bad_split_name_is_a_clear_error():
    with pytest.raises(Exception, match="split"):
        embedded.load_embedded_split("validation")


@pytest.fixture(scope="module")
def embedded_knn():
    backbone = load_backbone("embedded")
    splits = load_knn_splits("embedded", backbone.data_config)
    return backbone, KnnEvaluator.from_splits(splits)


def test_unpruned_knn_is_high_and_magnitude_pruning_costs_accuracy(embedded_knn):
    backbone, evaluator = embedded_knn
    explorer = Explorer(backbone, magnitude_scores(backbone.model))
    explorer.attach_knn(evaluator)
    unpruned = explorer.evaluate(0.0, 0.0, ("knn",)).knn_top1
    pruned = explorer.evaluate(0.65, 0.5, ("knn",)).knn_top1
    assert unpruned >= 0.90
    assert unpruned - pruned >= 0.05
    recorded = json.loads((embedded.ASSETS_DIR / embedded.CONFIG_FILENAME).read_text())["metrics"]
    assert unpruned == pytest.approx(recorded["knn_top1_unpruned"], abs=0.005)


def test_embedded_model_is_loaded_strictly_and_shared_model_is_never_mutated(embedded_knn):
    backbone, _ = embedded_knn
    before = {k: v.clone() for k, v in backbone.model.state_dict().items()}
    ElasticViT(backbone.model, magnitude_scores(backbone.model)).prune_to(0.5, 0.5)
    after = backbone.model.state_dict()
    assert before.keys() == after.keys() and all(torch.equal(before[k], after[k]) for k in before)


def test_missing_assets_name_the_fix(monkeypatch, tmp_path):
    monkeypatch.setattr(embedded, "ASSETS_DIR", tmp_path)
    with pytest.raises(Exception, match="train_embedded.py"):
        embedded.load_embedded_model()


@pytest.mark.slow
def test_training_script_reproduces_the_asset(tmp_path):
    """Full retraining (~7 min on 2 cores): the result meets the same bars as the shipped asset."""
    result = subprocess.run(
        [sys.executable, "scripts/train_embedded.py", "--out-dir", str(tmp_path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=1500,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    metrics = json.loads((tmp_path / embedded.CONFIG_FILENAME).read_text())["metrics"]
    assert metrics["knn_top1_unpruned"] >= 0.90
    assert metrics["knn_top1_unpruned"] - metrics["knn_top1_magnitude"]["mlp0.65_heads0.5"] >= 0.05
    assert metrics["train_seconds"] < 20 * 60


@pytest.mark.parametrize("model_id", EMBEDDED_MODEL_IDS)
def test_every_shipped_model_is_worth_pruning(model_id, capsys):
    """No shipped model id has an unpruned kNN top-1 below 90 % (measured through the CLI, as a user would)."""
    from snapvit_core.cli import main

    assert main(["evaluate", "--model", model_id, "--mlp-sparsity", "0", "--head-sparsity", "0", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["knn_top1"] >= 0.90
    stems = {embedded.asset_paths(i)[0].name for i in EMBEDDED_MODEL_IDS}
    shipped = {p.name for p in embedded.ASSETS_DIR.glob("*.safetensors")} - {embedded.DATA_FILENAME}
    assert shipped == stems  # no weights ship without a model id


def test_removed_model_id_is_a_clear_error_naming_the_available_ids(capsys):
    from snapvit_core.cli import main

    assert main(["info", "--model", "embedded-ssl"]) == 2
    message = capsys.readouterr().err.strip()
    assert len(message.splitlines()) == 1
    assert "no longer shipped" in message and "chance" in message and "'embedded'" in message
    assert not list((ROOT / "scores").glob("embedded-ssl*"))


def test_unknown_embedded_id_is_a_clear_error():
    with pytest.raises(Exception, match="embedded model id"):
        embedded.asset_paths("embedded-xl")
