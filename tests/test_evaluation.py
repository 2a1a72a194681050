"""Feature cache per model state, and the explorer façade shared by the CLI and the app."""

from __future__ import annotations

import pytest
import torch
from conftest import make_vit

from snapvit_core.engine.backbones import Backbone
from snapvit_core.errors import SnapViTError
from snapvit_core.evaluation.features import KnnEvaluator, extract_features
from snapvit_core.explorer import Explorer, check_metrics
from snapvit_core.scoring.data_free import magnitude_scores


def small_evaluator(model, n_train=24, n_test=10):
    generator = torch.Generator().manual_seed(0)
    train = torch.randn(n_train, 3, 32, 32, generator=generator)
    test = torch.randn(n_test, 3, 32, 32, generator=generator)
    return KnnEvaluator(train, torch.arange(n_train) % 3, test, torch.arange(n_test) % 3, k=5)


def test_features_are_cached_per_key(tiny_vit, monkeypatch):
    evaluator = small_evaluator(tiny_vit)
    calls = []
    original = tiny_vit.forward_features
    monkeypatch.setattr(tiny_vit, "forward_features", lambda x: calls.append(1) or original(x))
    first = evaluator.features(tiny_vit, key="a")
    n_calls = len(calls)
    second = evaluator.features(tiny_vit, key="a")
    assert len(calls) == n_calls and first[0] is second[0]
    evaluator.features(tiny_vit, key="b")
    assert len(calls) > n_calls
    evaluator.features(tiny_vit)  # no key: never cached
    assert not evaluator.is_cached(None)


def test_cache_is_bounded(tiny_vit):
    evaluator = small_evaluator(tiny_vit)
    evaluator.cache_size = 2
    for key in ("a", "b", "c"):
        evaluator.features(tiny_vit, key)
    assert not evaluator.is_cached("a") and evaluator.is_cached("b") and evaluator.is_cached("c")


def test_extract_features_batches_match_single_pass(tiny_vit):
    images = torch.randn(7, 3, 32, 32)
    torch.testing.assert_close(
        extract_features(tiny_vit, images, batch_size=3), extract_features(tiny_vit, images, batch_size=64)
    )


def test_explorer_evaluates_and_restores_between_configurations():
    model = make_vit(depth=2)
    explorer = Explorer(Backbone(model, "tiny"), magnitude_scores(model))
    explorer.attach_knn(small_evaluator(model))
    full = explorer.evaluate(0.0, 0.0, ("knn", "flops", "params"))
    pruned = explorer.evaluate(0.6, 0.5, ("knn", "flops", "params"))
    again = explorer.evaluate(0.0, 0.0, ("knn", "flops", "params"))
    assert pruned.flops < full.flops and pruned.params < full.params
    assert full.embedding_cosine == pytest.approx(1.0, abs=1e-5) and pruned.embedding_cosine < 1.0
    assert again.knn_top1 == full.knn_top1 and again.flops == full.flops
    assert sum(pruned.kept_heads) < sum(full.kept_heads)


def test_metric_names_are_checked():
    assert check_metrics(["knn", " flops"]) == ("knn", "flops")
    with pytest.raises(SnapViTError, match="Choose from knn, linear, flops, params, latency"):
        check_metrics(["accuracy"])


def test_knn_without_data_is_a_clear_error():
    model = make_vit(depth=1)
    explorer = Explorer(Backbone(model, "tiny"), magnitude_scores(model))
    with pytest.raises(SnapViTError, match="labelled data"):
        explorer.evaluate(0.1, 0.1, ("knn",))


def test_two_threads_pruning_one_explorer_never_see_each_others_model():
    """Streamlit's fast reruns run two script threads of one session at once (a new one starts while the
    previous one is still in a forward pass); each must measure the configuration it asked for."""
    import sys
    import threading

    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # switch threads as often as possible, to provoke interleaving
    model = make_vit(depth=3)
    explorer = Explorer(Backbone(model, "tiny"), magnitude_scores(model))
    explorer.attach_knn(small_evaluator(model))
    configurations = [(0.0, 0.0), (0.6, 0.5)]
    expected = {c: explorer.evaluate(*c) for c in configurations}
    failures: list[str] = []

    def worker(configuration: tuple[float, float]) -> None:
        try:
            for _ in range(15):
                got = explorer.evaluate(*configuration)  # the one locked call
                want = expected[configuration]
                if (got.flops, got.kept_heads, got.knn_top1) != (want.flops, want.kept_heads, want.knn_top1):
                    failures.append(f"{configuration}: measured another configuration")
        except Exception as error:  # a shape mismatch when the other thread truncated the model mid-forward
            failures.append(f"{configuration}: {error!r}")

    try:
        threads = [threading.Thread(target=worker, args=(c,)) for c in configurations]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=120)
    finally:
        sys.setswitchinterval(interval)
    assert not failures, failures[:3]


def test_paired_latency_interleaves_the_models_and_the_explorer_reports_both(monkeypatch):
    from snapvit_core.evaluation.metrics import median_speedup, paired_rounds

    first, second = make_vit(depth=1), make_vit(depth=2)
    calls = []
    for name, model in (("first", first), ("second", second)):
        original = model.forward_features
        monkeypatch.setattr(model, "forward_features", lambda x, o=original, n=name: calls.append(n) or o(x))
    timings = paired_rounds([first, second], image_size=32, device="cpu", repeats=3)
    assert len(timings) == 2 and all(t > 0 for samples in timings for t in samples)
    assert calls == ["first", "second"] * 5  # 2 warm-up + 3 timed rounds, one forward of each per round

    calls.clear()
    fast, slow = (paired_rounds([first, second], 32, "cpu", repeats=3, budget_s=b, max_repeats=7) for b in (60, 1e-9))
    assert [len(t) for t in fast] == [7, 7] and [len(t) for t in slow] == [3, 3]  # the budget sets the rounds
    assert calls == ["first", "second"] * (9 + 5)
    assert median_speedup([1.0, 2.0, 3.0], [2.0, 2.0, 9.0]) == 2.0  # median of the per-round ratios 2, 1, 3

    model = make_vit(depth=2)
    explorer = Explorer(Backbone(model, "tiny"), magnitude_scores(model))
    result = explorer.measure_latency_now(0.5, 0.5)
    assert result.ms > 0 and result.speedup > 0 and result.source == "measured"


def test_extract_features_from_tensor_dataset_and_loader_agree(tiny_vit):
    from snapvit_core.data.streaming import TensorImageDataset, make_loader

    images = torch.randn(9, 3, 32, 32)
    dataset = TensorImageDataset(images, torch.arange(9))
    reference = extract_features(tiny_vit, images, batch_size=4)
    torch.testing.assert_close(extract_features(tiny_vit, dataset, batch_size=2), reference)
    torch.testing.assert_close(extract_features(tiny_vit, make_loader(dataset, 5), batch_size=99), reference)


def test_extract_features_reports_progress_and_can_be_cancelled(tiny_vit):
    from snapvit_core.errors import CancelledError

    images = torch.randn(7, 3, 32, 32)
    seen = []
    extract_features(tiny_vit, images, batch_size=3, progress=lambda done, total: seen.append((done, total)))
    assert seen == [(3, 7), (6, 7), (7, 7)]
    polls = []
    with pytest.raises(CancelledError):
        extract_features(tiny_vit, images, batch_size=3, cancel=lambda: polls.append(1) or len(polls) > 1)
    assert len(polls) == 2  # polled between batches: the first batch ran, the second was refused


def test_evaluator_from_splits_progress_and_fp16_bank(tiny_vit):
    from snapvit_core.data import KnnSplits
    from snapvit_core.evaluation.knn import DEFAULT_K

    generator = torch.Generator().manual_seed(1)
    splits = KnnSplits(
        torch.randn(12, 3, 32, 32, generator=generator),
        torch.arange(12) % 3,
        torch.randn(5, 3, 32, 32, generator=generator),
        torch.arange(5) % 3,
        ("a", "b", "c"),
        "random",
    )
    evaluator = KnnEvaluator.from_splits(splits)
    assert evaluator.k == DEFAULT_K == 20 and evaluator.train is splits.train and evaluator.vote == "uniform"
    seen = []
    train, test = evaluator.features(tiny_vit, progress=lambda done, total: seen.append((done, total)))
    assert seen[-1] == (17, 17) and train.shape[0] == 12 and test.shape[0] == 5
    half = KnnEvaluator.from_splits(splits, k=3, bank_dtype=torch.float16)
    assert half.features(tiny_vit, "k")[0].dtype == torch.float16
    assert half.top1(tiny_vit, "k") == KnnEvaluator.from_splits(splits, k=3).top1(tiny_vit)


def test_evaluate_cli_streams_a_folder_and_matches_the_in_memory_top1(tmp_path, capsys):
    """``evaluate --data folder:`` goes through the streaming datasets; same top-1 as tensors in memory."""
    import json

    import numpy as np
    from PIL import Image

    from snapvit_core.cli import main
    from snapvit_core.data import FolderImageDataset, load_knn_splits
    from snapvit_core.engine.backbones import load_backbone

    rng = np.random.default_rng(0)
    for index in range(24):
        folder = tmp_path / "pets" / f"class_{index % 3}"
        folder.mkdir(parents=True, exist_ok=True)
        tint = np.array([80 * (index % 3), 60, 200 - 80 * (index % 3)], dtype=np.float64)
        pixels = np.clip(tint + rng.normal(0, 30, (30, 30, 3)), 0, 255).astype(np.uint8)
        Image.fromarray(pixels).save(folder / f"{index}.png")
    data = f"folder:{tmp_path / 'pets'}"
    args = ["evaluate", "--model", "embedded", "--data", data, "--method", "magnitude"]
    args += ["--mlp-sparsity", "0.35", "--head-sparsity", "0.2", "--metrics", "knn", "--k", "3", "--json"]
    assert main(args) == 0
    top1 = json.loads(capsys.readouterr().out)["knn_top1"]
    backbone = load_backbone("embedded")
    streamed = load_knn_splits(data, backbone.data_config, stream=True)
    assert isinstance(streamed.train, FolderImageDataset)
    explorer = Explorer(backbone, magnitude_scores(backbone.model))
    explorer.attach_knn(KnnEvaluator.from_splits(load_knn_splits(data, backbone.data_config), k=3))
    assert explorer.evaluate(0.35, 0.2, ("knn",)).knn_top1 == pytest.approx(top1)
