"""What an export writes is the configuration asked for, through every entry point and option (issue 35).

``export --knn`` once wrote an unpruned model: it exported the engine's working model, which the kNN
measurement then moved back to full width. Now the model leaves the explorer as a value and every
export checks itself before it is put in place; these tests hold each way in to that.
"""

from __future__ import annotations

import itertools
import json
import threading

import pytest
import torch
from conftest import ROOT, with_every_combination

from snapvit_core.cli import main
from snapvit_core.data import load_images, load_knn_splits, preprocess
from snapvit_core.engine.backbones import load_backbone
from snapvit_core.engine.correction import CorrectionConfig
from snapvit_core.engine.elastic import plan_pruning
from snapvit_core.errors import SnapViTError
from snapvit_core.evaluation.features import KnnEvaluator
from snapvit_core.explorer import Explorer
from snapvit_core.export.configuration import ExportRequest, export_configuration
from snapvit_core.export.writer import EXPORT_TOLERANCE, kept_widths, load_pruned
from snapvit_core.scoring.scores_io import load_scores

SCORES = ROOT / "scores" / "embedded.xnes.safetensors"
PAIR = (0.45, 0.3)
CORRECTION_SAMPLES = 16


@pytest.fixture(scope="module")
def table_path(latency_table_path):
    return latency_table_path


@pytest.fixture(scope="module")
def backbone():
    return load_backbone("embedded")


@pytest.fixture(scope="module")
def knn_splits(backbone):
    return load_knn_splits("embedded", backbone.data_config, stream=True)


def _explorer(backbone, knn_splits, align: int = 1) -> Explorer:
    explorer = Explorer(backbone, load_scores(SCORES), "cpu", align)
    explorer.attach_knn(KnnEvaluator.from_splits(knn_splits))
    return explorer


def _calibration(backbone) -> torch.Tensor:
    """The images the CLI's --correct uses (--data embedded, seed 0)."""
    images = load_images("embedded", "train", limit=CORRECTION_SAMPLES, seed=0)
    return preprocess(images.images, backbone.data_config)


def _check_folder(folder, plan) -> dict:
    config = json.loads((folder / "config.json").read_text())
    assert config["pruning"]["kept_heads"] == list(plan.kept_heads)
    assert config["pruning"]["kept_neurons"] == list(plan.kept_neurons)
    assert kept_widths(load_pruned(folder)) == (list(plan.kept_heads), list(plan.kept_neurons))
    card = (folder / "README.md").read_text()
    realised = 100 * plan.realised_mlp_sparsity
    assert f"realised {realised:.1f} %" in card and "n/a" not in card.split("## Per-block widths")[0]
    return config


OPTIONS = ("knn", "correct", "onnx", "latency_table", "align")


@pytest.mark.slow
@with_every_combination(OPTIONS)
def test_cli_export_writes_the_plans_widths_with_every_option(
    chosen, tmp_path, capsys, table_path, backbone, knn_splits
):
    align = 16 if "align" in chosen else 1
    argv = ["export", "--model", "embedded", "--scores", str(SCORES), "--json", "--out", str(tmp_path / "x")]
    argv += ["--mlp-sparsity", str(PAIR[0]), "--head-sparsity", str(PAIR[1]), "--align", str(align)]
    argv += ["--knn"] * ("knn" in chosen) + ["--onnx"] * ("onnx" in chosen)
    argv += ["--correct", "--correction-samples", str(CORRECTION_SAMPLES)] if "correct" in chosen else []
    argv += ["--latency-table", str(table_path)] if "latency_table" in chosen else []
    assert main(argv) == 0, capsys.readouterr().err
    report = json.loads(capsys.readouterr().out)
    plan = plan_pruning(load_scores(SCORES), *PAIR, align)
    assert (report["kept_heads"], report["kept_neurons"]) == (list(plan.kept_heads), list(plan.kept_neurons))
    config = _check_folder(tmp_path / "x", plan)
    assert config["pruning"]["corrected"] == ("correct" in chosen)
    assert ("model.onnx" in report["files"]) == ("onnx" in chosen)
    if "latency_table" in chosen:
        assert report["latency"]["predicted_on"].startswith("latency table:")
    if "knn" in chosen:  # the exported model's kNN equals evaluate's at that configuration
        explorer = _explorer(backbone, knn_splits, align)
        correction = (
            (CorrectionConfig(samples=CORRECTION_SAMPLES), _calibration(backbone)) if "correct" in chosen else None
        )
        expected = explorer.evaluate(*PAIR, ("knn",), correction=correction).knn_top1
        assert report["knn"]["top1"] == pytest.approx(100 * expected, abs=1e-9)
    else:
        assert report["knn"] is None


def test_cli_export_with_knn_writes_the_pruned_model_and_evaluate_agrees(tmp_path, capsys):
    """The reported bug: with --knn the file held 6 heads and 384 neurons in every block."""
    argv = ["export", "--model", "embedded", "--scores", str(SCORES), "--mlp-sparsity", "0.45"]
    assert main([*argv, "--head-sparsity", "0.3", "--knn", "--no-latency", "--json", "--out", str(tmp_path / "x")]) == 0
    report = json.loads(capsys.readouterr().out)
    plan = plan_pruning(load_scores(SCORES), 0.45, 0.3)
    _check_folder(tmp_path / "x", plan)
    assert sum(report["kept_neurons"]) < 6 * 384 and report["params"] < 684_394
    evaluate = ["evaluate", "--model", "embedded", "--scores", str(SCORES), "--metrics", "knn", "--json"]
    assert main([*evaluate, "--mlp-sparsity", "0.45", "--head-sparsity", "0.3"]) == 0
    assert report["knn"]["top1"] == pytest.approx(100 * json.loads(capsys.readouterr().out)["knn_top1"], abs=1e-9)


def test_cli_export_linear_puts_the_linear_probe_on_the_card(tmp_path, capsys):
    argv = ["export", "--model", "embedded", "--scores", str(SCORES), "--mlp-sparsity", "0.45", "--head-sparsity"]
    assert main([*argv, "0.3", "--linear", "--no-latency", "--json", "--out", str(tmp_path / "x")]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["knn"] is None and report["linear"]["probe"]["epochs"] == 100
    card = (tmp_path / "x" / "README.md").read_text()
    assert "| linear-probe top-1 (embedded, DINOv1 protocol: 100 epochs" in card and "| kNN top-1 (" not in card
    evaluate = ["evaluate", "--model", "embedded", "--scores", str(SCORES), "--metrics", "linear", "--json"]
    assert main([*evaluate, "--mlp-sparsity", "0.45", "--head-sparsity", "0.3"]) == 0
    assert report["linear"]["top1"] == pytest.approx(100 * json.loads(capsys.readouterr().out)["linear_top1"], abs=1e-9)


@pytest.mark.parametrize("bug", ["unpruned", "other-weights"])
def test_an_export_that_is_not_the_configuration_is_refused_and_writes_nothing(bug, tmp_path, monkeypatch, backbone):
    explorer = Explorer(backbone, load_scores(SCORES))
    honest = Explorer.pruned_model

    def wrong(self, mlp, head, correction=None, **kwargs):
        if bug == "unpruned":  # what the old --knn path exported
            return self.elastic.prune_to(0.0, 0.0), None
        model, report = honest(self, mlp, head, correction, **kwargs)
        with torch.no_grad():
            model.blocks[2].mlp.fc2.weight.mul_(1.01)  # right widths, other weights
        return model, report

    monkeypatch.setattr(Explorer, "pruned_model", wrong)
    (tmp_path / "out").mkdir()
    request = ExportRequest(*PAIR, out=tmp_path / "out", source_model="embedded", latency=False)
    match = "not the configuration asked for" if bug == "unpruned" else "embedding differs"
    with pytest.raises(SnapViTError, match=match):
        export_configuration(explorer, request)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"] and not any((tmp_path / "out").iterdir())


def test_the_self_check_tolerance_is_far_above_the_copy_round_off(backbone):
    """A compact copy and the engine's sliced views give the same embedding to well within EXPORT_TOLERANCE."""
    from snapvit_core.export.writer import _embed_on

    explorer = Explorer(backbone, load_scores(SCORES))
    images = torch.randn(8, 3, 24, 24, generator=torch.Generator().manual_seed(0))
    worst = 0.0
    for pair in [(0.15, 0.0), (0.45, 0.3), (0.75, 0.6)]:
        plan = explorer.plan_for(*pair)
        copy = _embed_on(explorer.pruned_model(*pair)[0], images)
        view = explorer.elastic.run(plan, lambda model: _embed_on(model, images))
        worst = max(worst, float((copy - view).abs().max()) / max(1.0, float(view.abs().max())))
    assert worst <= EXPORT_TOLERANCE / 10, worst


def test_concurrent_landscape_measure_and_budget_search_do_not_change_the_export(tmp_path, backbone, knn_splits):
    """One shared explorer, as on the app's server: other work prunes it while an export runs."""
    from snapvit_core.landscape.budget import find_best_under_budget

    explorer = _explorer(backbone, knn_splits)
    stop = threading.Event()
    failures: list[BaseException] = []

    def keep_busy(work):
        try:
            while not stop.is_set():
                work()
        except BaseException as error:  # noqa: BLE001 - reported below
            failures.append(error)

    pairs = itertools.cycle([(0.0, 0.0), (0.9, 0.8), (0.2, 0.6), (0.7, 0.1)])
    workers = [
        threading.Thread(target=keep_busy, args=(lambda: explorer.evaluate(*next(pairs), ("knn", "params")),)),
        threading.Thread(target=keep_busy, args=(lambda: explorer.measure_latency_now(*next(pairs)),)),
        threading.Thread(
            target=keep_busy,
            args=(lambda: find_best_under_budget(explorer, "flops_pct", 70.0, max_evaluations=3, knn_images=200),),
        ),
    ]
    for worker in workers:
        worker.start()
    try:
        reports = [
            export_configuration(
                explorer,
                ExportRequest(
                    *PAIR, out=tmp_path / f"x{i}", source_model="embedded", data="embedded", knn=True, latency=False
                ),
            )
            for i in range(3)
        ]
    finally:
        stop.set()
        for worker in workers:
            worker.join()
    assert not failures, failures
    plan = explorer.plan_for(*PAIR)
    reference = explorer.pruned_model(*PAIR)[0].state_dict()
    expected_knn = explorer.evaluate(*PAIR, ("knn",)).knn_top1
    for report in reports:
        _check_folder(report.directory, plan)
        loaded = load_pruned(report.directory).state_dict()
        assert all(torch.equal(loaded[name], tensor.float()) for name, tensor in reference.items())
        assert report.knn["top1"] == pytest.approx(100 * expected_knn, abs=1e-9)
