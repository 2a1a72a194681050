"""The accuracy landscape: values equal evaluate, the cache file resumes and refuses bad files, fill order,
the shared filler (estimates, priority, preemption), budget answers and the CLI."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch
from conftest import make_vit, small_landscape_argv

from snapvit_core.engine.backbones import Backbone
from snapvit_core.engine.correction import CorrectionConfig
from snapvit_core.evaluation.features import KnnEvaluator
from snapvit_core.explorer import Explorer
from snapvit_core.landscape.budget import LandscapeGap, best_in_landscape, cost_grid
from snapvit_core.landscape.fill import LandscapeFiller
from snapvit_core.landscape.grid import grid_axis, neighbours, published_points
from snapvit_core.landscape.store import Landscape, LandscapePoint, fill_order, landscape_key, open_landscape
from snapvit_core.scoring.data_free import magnitude_scores

STEP = 0.25  # a 4 x 4 grid keeps the tests fast


def _explorer(seed: int = 0) -> Explorer:
    model = make_vit(seed=seed)
    explorer = Explorer(Backbone(model, "tiny", {"input_size": (3, 32, 32)}), magnitude_scores(model))
    generator = torch.Generator().manual_seed(0)
    images = torch.randn(60, 3, 32, 32, generator=generator)
    labels = torch.arange(60) % 3
    explorer.attach_knn(KnnEvaluator(images[:40], labels[:40], images[40:], labels[40:], k=5))
    return explorer


def _fill(explorer: Explorer, cache, correction=None) -> Landscape:
    landscape = open_landscape(landscape_key(explorer, "random", correction=correction, grid=STEP), cache, None)
    filler = LandscapeFiller(explorer, landscape, correction=correction).start()
    assert filler.wait(timeout=120)
    assert filler.status().error is None
    return landscape


def test_grid_axis_is_the_sliders_grid():
    axis = grid_axis()
    assert len(axis) == 20 and axis[0] == 0.0 and axis[-1] == 0.95 and axis[7] == 0.35
    assert grid_axis(STEP) == (0.0, 0.25, 0.5, 0.75)


def test_landscape_values_equal_evaluate_after_a_round_trip_through_the_cache(tmp_path):
    explorer = _explorer()
    _fill(explorer, tmp_path)
    reloaded = open_landscape(landscape_key(explorer, "random", grid=STEP), tmp_path, None)  # from the file
    assert reloaded.complete and len(reloaded) == 16 and not reloaded.warnings
    fresh = _explorer()
    for mlp, head in [(0.0, 0.0), (0.25, 0.5), (0.75, 0.75), (0.5, 0.0)]:
        point = reloaded.get(mlp, head)
        result = fresh.evaluate(mlp, head, ("knn", "flops", "params"))
        assert point.knn_top1 == result.knn_top1  # identical, not close
        assert abs(point.mean_cosine - result.embedding_cosine) <= 1e-6
        assert (point.params, point.flops) == (result.params, result.flops)
        assert point.realised_mlp_sparsity == result.realised_mlp_sparsity


def test_corrected_landscape_equals_corrected_evaluate(tmp_path):
    explorer = _explorer()
    calibration = torch.randn(16, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    correction = (CorrectionConfig(samples=16), calibration)
    landscape = open_landscape(landscape_key(explorer, "random", correction=correction, grid=STEP), tmp_path, None)
    filler = LandscapeFiller(explorer, landscape, correction=correction)
    filler.request(0.5, 0.25)
    assert filler.wait(timeout=120, until=(0.5, 0.25))
    filler.stop()
    point = landscape.get(0.5, 0.25)
    result = _explorer().evaluate(0.5, 0.25, ("knn", "flops", "params"), correction=correction)
    assert point.knn_top1 == result.knn_top1 and abs(point.mean_cosine - result.embedding_cosine) <= 1e-6
    plain = landscape_key(explorer, "random", grid=STEP)
    assert landscape.key.digest != plain.digest  # corrected values never mix with plain ones


def test_key_changes_with_everything_the_values_depend_on():
    explorer = _explorer()
    base = landscape_key(explorer, "random", grid=STEP)
    assert landscape_key(_explorer(), "random", grid=STEP) == base  # same content, same key
    assert landscape_key(_explorer(seed=1), "random", grid=STEP).weights != base.weights
    other_scores = _explorer()
    other_scores.scores = magnitude_scores(make_vit(seed=2))
    assert landscape_key(other_scores, "random", grid=STEP).scores != base.scores
    assert landscape_key(explorer, "random", grid=STEP, knn_images=30).digest != base.digest


def _edit_point(text: str, index: int, column: int, value) -> str:
    document = json.loads(text)
    document["points"][index][column] = value
    return json.dumps(document)


@pytest.mark.parametrize(
    "damage, reason",
    [
        (lambda text: text[: len(text) // 2], "truncated"),
        (lambda text: "not json at all", "not JSON"),
        (lambda text: "[" * 200_000 + "]" * 200_000, "RecursionError"),
        (lambda text: text.replace('"snapvit-landscape"', '"something-else"'), "not a landscape"),
        (lambda text: _edit_point(text, 1, 0, 0.3), "not on the"),  # a point off the grid
        (lambda text: _edit_point(text, 2, 2, 7.5), "outside 0..1"),  # kNN top-1 of 750 %
        (lambda text: _edit_point(text, 2, 4, "__import__('os')"), "not a finite number"),
        (lambda text: _edit_point(text, 2, 5, float("nan")), "not a finite number"),
    ],
)
def test_a_damaged_cache_file_is_refused_and_recomputed(tmp_path, damage, reason):
    explorer = _explorer()
    landscape = _fill(explorer, tmp_path)
    landscape.path.write_text(damage(landscape.path.read_text()))
    reopened = open_landscape(landscape.key, tmp_path, None)
    assert len(reopened) == 0 and reopened.warnings and reason in reopened.warnings[0]
    assert "ignored" in reopened.warnings[0]
    again = _fill(explorer, tmp_path)  # recomputed and rewritten whole
    assert again.complete and len(open_landscape(landscape.key, tmp_path, None)) == 16


def test_a_foreign_cache_file_is_refused(tmp_path):
    first = _fill(_explorer(), tmp_path)
    other = landscape_key(_explorer(seed=1), "random", grid=STEP)
    (tmp_path / other.file_name()).write_text(first.path.read_text())  # right name, another model's content
    reopened = open_landscape(other, tmp_path, None)
    assert len(reopened) == 0 and "another backbone" in reopened.warnings[0]


def test_a_second_process_continues_where_the_first_stopped(tmp_path):
    explorer = _explorer()
    key = landscape_key(explorer, "random", grid=STEP)
    first = open_landscape(key, tmp_path, None)
    for mlp, head in [(0.0, 0.0), (0.25, 0.25)]:
        first.add(LandscapePoint.from_result(explorer.evaluate(mlp, head, ("knn", "flops", "params"))))
    assert first.save()
    second = open_landscape(key, tmp_path, None)
    assert len(second) == 2 and (0.0, 0.0) not in second.missing() and len(second.missing()) == 14


def test_fill_order_requested_first_then_neighbours_then_published_path():
    axis = grid_axis()
    order = fill_order(axis, done=[(0.0, 0.0)], requested=[(0.5, 0.5), (0.9, 0.1)])
    assert order[:2] == [(0.5, 0.5), (0.9, 0.1)]  # latest request first
    assert set(order[2:10]) == set(neighbours((0.5, 0.5), axis))
    assert set(order[10:18]) == set(neighbours((0.9, 0.1), axis))
    path = [c for c in published_points() if c != (0.0, 0.0)]
    assert order[18 : 18 + len(path)] == path
    assert len(order) == 399 and (0.0, 0.0) not in order


def test_filler_serves_the_latest_request_first_with_an_estimate(tmp_path):
    explorer = _explorer()
    landscape = open_landscape(landscape_key(explorer, "random", grid=STEP), tmp_path, None)
    metrics_asked = []
    real = explorer.evaluate
    explorer.evaluate = lambda *args, **kwargs: metrics_asked.append(tuple(args[2])) or real(*args, **kwargs)
    filler = LandscapeFiller(explorer, landscape, estimate_images=30, autofill=False, exact_requests=False)
    assert filler.with_linear  # exact points carry the probe ...
    filler.request(0.75, 0.5)
    assert filler.wait(timeout=60)
    assert metrics_asked and not any("linear" in asked for asked in metrics_asked)  # ... estimates never train one
    estimate = filler.estimate(0.75, 0.5)
    assert estimate is not None and "subset" in estimate.knn_set and estimate.baseline_top1 is not None
    assert len(landscape) == 0  # a heavy backbone: estimates only
    filler.exact_requests = True  # random weights on a small model: what is asked for, exactly, nothing more
    filler.request(0.25, 0.25)
    assert filler.wait(timeout=60)
    computed = {p[:2] for p in landscape.frame().itertuples(index=False)}
    assert computed == {(0.25, 0.25), (0.75, 0.5)}  # the two requested, nothing else
    filler.start_fill()
    assert filler.wait(timeout=120) and landscape.complete
    assert filler.estimate(0.75, 0.5) is None or landscape.get(0.75, 0.5) is not None


def test_two_viewers_share_one_computation(tmp_path):
    explorer = _explorer()
    landscape = open_landscape(landscape_key(explorer, "random", grid=STEP), tmp_path, None)
    calls = []
    original = explorer.evaluate

    def counting(*args, **kwargs):
        calls.append(args[:2])
        return original(*args, **kwargs)

    explorer.evaluate = counting
    filler = LandscapeFiller(explorer, landscape)
    for _ in range(2):  # two viewers ask for the same configuration
        filler.request(0.5, 0.25)
    assert filler.wait(timeout=120) and landscape.complete
    # each configuration once, the requested one first: its kNN, then its probe on the cached features
    assert len(calls) == 17 and calls[:2] == [(0.5, 0.25)] * 2 and len(set(calls)) == 16


def test_budget_answer_from_the_landscape_is_never_over_budget(tmp_path):
    explorer = _explorer()
    landscape = _fill(explorer, tmp_path)
    for limit in (60.0, 80.0, 95.0):
        answer = best_in_landscape(explorer, landscape, "flops_pct", limit)
        assert answer.source == "landscape" and answer.cost <= limit
        assert explorer.cost(answer.mlp_sparsity, answer.head_sparsity).cost.flops_pct <= limit
        grid = cost_grid(explorer, "flops_pct", step=STEP)
        fitting = grid[grid["flops_pct"] <= limit]
        best = max(
            100 * landscape.get(m, h).knn_top1 for m, h in zip(fitting["MLP sparsity"], fitting["head sparsity"])
        )
        assert answer.accuracy == pytest.approx(best)
    assert best_in_landscape(explorer, landscape, "flops_pct", 1.0) is None  # nothing fits


def test_budget_on_an_incomplete_landscape_says_so(tmp_path):
    explorer = _explorer()
    landscape = open_landscape(landscape_key(explorer, "random", grid=STEP), tmp_path, None)
    with pytest.raises(LandscapeGap):
        best_in_landscape(explorer, landscape, "flops_pct", 80.0)


def test_cli_landscape_writes_a_resumable_csv(tmp_path):
    out = tmp_path / "plane.csv"
    command = [
        sys.executable,
        "-m",
        "snapvit_core",
        *small_landscape_argv(60),
        "--out",
        str(out),
        "--cache",
        str(tmp_path / "cache"),
        "--latency",
        "none",
        "--json",
    ]
    first = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert first.returncode == 0, first.stderr
    report = json.loads(first.stdout)
    assert report["points"] == 4 and report["computed"] == 4 and "landscape: 100%" in first.stderr  # tqdm's bar
    lines = out.read_text().splitlines()
    assert lines[0] == (
        "mlp_sparsity,head_sparsity,knn_top1,mean_cosine,params,flops,latency_ms,latency_batch_ms,"
        "realised_mlp_sparsity,realised_head_sparsity,linear_top1"
    )
    row = dict(zip(lines[0].split(","), lines[2].split(",")))
    assert 0.0 <= float(row["knn_top1"]) <= 1.0 and int(row["params"]) > 0 and row["linear_top1"] == ""
    again = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert (
        again.returncode == 0 and json.loads(again.stdout)["resumed"] == 4 and json.loads(again.stdout)["computed"] == 0
    )
    evaluate = subprocess.run(
        [
            sys.executable,
            "-m",
            "snapvit_core",
            "evaluate",
            "--model",
            "embedded",
            "--method",
            "magnitude",
            "--limit",
            "60",
            "--mlp-sparsity",
            row["mlp_sparsity"],
            "--head-sparsity",
            row["head_sparsity"],
            "--json",
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert json.loads(evaluate.stdout)["knn_top1"] == float(row["knn_top1"])  # full precision, same value

    # --metrics knn,linear adds the linear column to the same points (kNN kept), equal to evaluate's
    linear = subprocess.run([*command, "--metrics", "knn,linear"], capture_output=True, text=True, timeout=600)
    assert linear.returncode == 0, linear.stderr
    assert json.loads(linear.stdout)["linear_points"] == 4 and json.loads(linear.stdout)["computed"] == 4
    lines = out.read_text().splitlines()
    linear_row = dict(zip(lines[0].split(","), lines[2].split(",")))
    assert linear_row["knn_top1"] == row["knn_top1"] and 0.0 < float(linear_row["linear_top1"]) <= 1.0
    evaluate_linear = subprocess.run(
        [*evaluate.args[:-1], "--metrics", "linear", "--json"], capture_output=True, text=True, timeout=600
    )
    assert json.loads(evaluate_linear.stdout)["linear_top1"] == float(linear_row["linear_top1"])


def test_cli_landscape_refuses_a_bad_grid(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "snapvit_core", "landscape", "--grid", "0", "--out", str(tmp_path / "x.csv")],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 2 and result.stderr.count("\n") == 1 and "--grid" in result.stderr


def test_shipped_points_are_read_but_never_copied_into_the_cache(tmp_path):
    explorer = _explorer()
    shipped = _fill(explorer, tmp_path / "shipped")
    key = shipped.key
    viewer = open_landscape(key, tmp_path / "cache", tmp_path / "shipped")
    assert viewer.complete and viewer.save()
    assert not (tmp_path / "cache" / key.file_name()).exists()


def test_embedded_data_key_hashes_the_source_images_not_the_rounded_floats(monkeypatch):
    """Float preprocessing rounds differently on AMD and Intel CPUs; the shipped landscapes must still be found."""
    from snapvit_core.data import load_knn_splits
    from snapvit_core.engine import embedded
    from snapvit_core.landscape.store import data_digest

    config = embedded.read_embedded_config()["preprocessing"]
    data_config = {"input_size": tuple(config["input_size"]), "mean": config["mean"], "std": config["std"]}
    reference = data_digest(load_knn_splits("embedded", data_config, limit_per_split=50))
    normalize = embedded.normalize_images
    monkeypatch.setattr(
        embedded, "normalize_images", lambda images: torch.nextafter(normalize(images), torch.tensor(9.0))
    )
    assert data_digest(load_knn_splits("embedded", data_config, limit_per_split=50)) == reference  # one ulp off
    load = embedded.load_embedded_split

    def one_pixel_changed(split):
        images, labels = load(split)
        images = images.clone()
        images[:, 0, 0, 0] ^= 1  # one pixel of every image
        return images, labels

    monkeypatch.setattr(embedded, "load_embedded_split", one_pixel_changed)
    assert data_digest(load_knn_splits("embedded", data_config, limit_per_split=50)) != reference
    assert data_digest(load_knn_splits("embedded", data_config, limit_per_split=60)) != reference


def test_a_waited_for_point_gets_its_knn_before_the_linear_probe(tmp_path, monkeypatch):
    """A viewer's requested point: the kNN value goes into the landscape first (the card is exact at once), the
    probe follows on the cached features; points nobody waits for are computed in one pass."""
    explorer = _explorer()
    landscape = open_landscape(landscape_key(explorer, "random", grid=0.05), tmp_path, None)
    calls: list[tuple[tuple[float, float], tuple[str, ...], bool]] = []
    real = explorer.evaluate

    def recording(mlp, head, metrics, **kwargs):
        calls.append(((mlp, head), tuple(metrics), landscape.get(mlp, head) is not None))
        return real(mlp, head, metrics, **kwargs)

    monkeypatch.setattr(explorer, "evaluate", recording)
    filler = LandscapeFiller(explorer, landscape, autofill=False)
    filler.request(0.35, 0.2)
    assert filler.wait(timeout=120, until=(0.35, 0.2))
    filler.stop()
    first, second = [c for c in calls if c[0] == (0.35, 0.2)][:2]
    assert "linear" not in first[1] and not first[2]  # kNN alone, before anything is stored
    assert "linear" in second[1] and second[2]  # the probe after the kNN point is in
    point = landscape.get(0.35, 0.2)
    assert point.linear_top1 is not None and point.knn_top1 == _explorer().evaluate(0.35, 0.2, ("knn",)).knn_top1


def test_the_fill_computes_the_linear_probe_with_each_point_or_on_request_along_the_path(tmp_path, monkeypatch):
    """A small kNN bank: every filled point carries its linear-probe value, equal to evaluate's. A large bank
    (made 'large' here by lowering the bound): the fill computes kNN only, and the probe along the published
    path when a viewer asks, nowhere else."""
    from snapvit_core.landscape import fill as landscape_fill

    explorer = _explorer()
    landscape = open_landscape(landscape_key(explorer, "random", grid=0.05), tmp_path, None)
    filler = LandscapeFiller(explorer, landscape, autofill=False)
    assert filler.with_linear
    filler.request(0.35, 0.2)
    assert filler.wait(timeout=120, until=(0.35, 0.2))
    filler.stop()
    point = landscape.get(0.35, 0.2)
    assert point.linear_top1 == _explorer().evaluate(0.35, 0.2, ("linear",)).linear_top1

    monkeypatch.setattr(landscape_fill, "LINEAR_FILL_MAX_TRAIN", 10)
    large = open_landscape(landscape_key(explorer, "random", grid=0.05), tmp_path / "large", None)
    filler = LandscapeFiller(explorer, large, autofill=False)
    assert not filler.with_linear
    filler.request(0.5, 0.5)
    assert filler.wait(timeout=120, until=(0.5, 0.5))
    assert large.get(0.5, 0.5).linear_top1 is None and not filler.plane_done()
    path = published_points(0.05)
    assert filler.linear_path_missing() == path
    filler.request_linear_path()
    assert filler.wait(timeout=120)
    filler.stop()
    assert filler.linear_path_missing() == []
    with_linear = {(p.mlp_sparsity, p.head_sparsity) for p in large.points() if p.linear_top1 is not None}
    assert with_linear == set(path)  # the path, and nothing else
    assert large.get(0.35, 0.2).linear_top1 == point.linear_top1
