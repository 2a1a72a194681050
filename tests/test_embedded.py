"""The embedded backbone and dataset: shipped assets, fixed split, and that pruning visibly matters."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import torch
from conftest import ROOT

from snapvit_core import embedded
from snapvit_core.backbones import load_backbone
from snapvit_core.data import load_knn_splits
from snapvit_core.data_free import magnitude_scores
from snapvit_core.elastic import ElasticViT
from snapvit_core.evaluation import KnnEvaluator
from snapvit_core.explorer import Explorer


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


def test_embedded_ssl_works_through_the_cli(capsys):
    """The DINO-trained backbone: its own assets, no class head, same data; info and evaluate run on it."""
    from snapvit_core.cli import main

    assert main(["info", "--model", "embedded-ssl", "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert (info["num_blocks"], info["embed_dim"]) == (6, 96)
    config = embedded.read_embedded_config("embedded-ssl")
    assert config["model_id"] == "embedded-ssl" and config["architecture"]["num_classes"] == 0
    assert config["preprocessing"] == embedded.read_embedded_config()["preprocessing"]  # same inputs, same fast path
    scores = ROOT / "scores" / "embedded-ssl.xnes.safetensors"
    argv = ["evaluate", "--model", "embedded-ssl", "--scores", str(scores), "--json"]
    assert main([*argv, "--mlp-sparsity", "0", "--head-sparsity", "0"]) == 0
    unpruned = json.loads(capsys.readouterr().out)
    assert unpruned["knn_top1"] == pytest.approx(config["metrics"]["knn_top1_unpruned"], abs=0.005)
    assert main([*argv, "--mlp-sparsity", "0.35", "--head-sparsity", "0.2"]) == 0
    pruned = json.loads(capsys.readouterr().out)
    assert pruned["params"] < unpruned["params"] and 0.0 <= pruned["knn_top1"] <= 1.0


def test_unknown_embedded_id_is_a_clear_error():
    with pytest.raises(Exception, match="embedded model id"):
        embedded.asset_paths("embedded-xl")
