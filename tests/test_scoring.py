"""Scoring: shapes and finiteness of every method, determinism, micro-batch equivalence, no mutation, errors, CLI."""

from __future__ import annotations

import copy
import json
from dataclasses import asdict, fields
from pathlib import Path

import pytest
import torch
from conftest import make_vit

import snapvit_core.scoring.compute as scoring
from devtools.reference_code import REFERENCE_COMMIT, ReferenceMissing, load_reference
from snapvit_core.cli import main
from snapvit_core.data import ImageSet, procedural_images
from snapvit_core.errors import CancelledError, SnapViTError
from snapvit_core.scoring.compute import METHODS, ScoringConfig, compute_scores, make_crops, sample_crop_box
from snapvit_core.scoring.scores_io import load_scores

torch.set_num_threads(1)

SIZE = 32  # conftest models take 32 px inputs
DATA_CONFIG = {
    "input_size": (3, SIZE, SIZE),
    "interpolation": "bicubic",
    "mean": (0.485, 0.456, 0.406),
    "std": (0.229, 0.224, 0.225),
}
LABELS = [0, 3, 7, 9]
FAST = {"samples": 4, "batch_size": 2, "local_crops": 4}  # fewer crops than published, for speed


@pytest.fixture(scope="module")
def images():
    return procedural_images(4, seed=1, size=48)


def score(model, images, method="snapvit", labels=None, **overrides):
    config = ScoringConfig(method=method, **{**FAST, **overrides})
    return compute_scores(model, images, DATA_CONFIG, config, labels=labels)


def make_headless_vit() -> torch.nn.Module:
    model = make_vit()
    model.reset_classifier(0)  # num_classes = 0, head = Identity
    return model


def assert_no_temp_files(folder: Path) -> None:
    """Atomic writes leave nothing but finished files behind (no '.name.*.tmp' leftovers)."""
    leftovers = [p.name for p in folder.iterdir() if p.name.startswith(".") or p.suffix == ".tmp"]
    assert leftovers == []


@pytest.mark.parametrize(
    "variant", [{"mlp": "standard"}, {"mlp": "swiglu"}, {"mlp": "glu-packed"}, {"qkv_bias": False}]
)
def test_every_method_gives_finite_scores_of_the_right_shape(images, variant):
    model = make_vit(**variant)
    for method in METHODS:
        scores = score(model, images, method, labels=LABELS)
        assert scores.mlp.shape == (3, model.blocks[0].mlp.fc2.in_features)
        assert scores.heads.shape == (3, 6)
        assert torch.isfinite(scores.mlp).all() and torch.isfinite(scores.heads).all()
        assert (scores.mlp >= 0).all() and (scores.heads >= 0).all()
        if method not in ("random", "lamp", "magnitude"):
            assert scores.mlp.sum() > 0 and scores.heads.sum() > 0, method
        assert scores.metadata["method"] == method
        assert set(scores.metadata["config"]) == {f.name for f in fields(ScoringConfig)}
        assert scores.metadata["config"]["method"] == method


def test_metadata_records_config_samples_and_source(images):
    config = ScoringConfig(samples=3, batch_size=2, local_crops=2, seed=5)
    image_set = ImageSet(list(images), None, (), "procedural")
    scores = compute_scores(make_vit(), image_set, DATA_CONFIG, config, model_id="tiny")
    meta = scores.metadata
    assert meta["config"] == asdict(config)
    assert (meta["samples"], meta["data"], meta["model_id"], meta["device"]) == (3, "procedural", "tiny", "cpu")
    assert meta["seconds"] >= 0 and meta["library_version"]
    assert (scores.min_mlp_keep_ratio, scores.min_head_keep_ratio) == (0.05, 0.2)


def test_same_seed_is_identical_other_seed_differs(images):
    model = make_vit()
    first, second = score(model, images, seed=3), score(model, images, seed=3)
    other = score(model, images, seed=4)
    assert torch.equal(first.mlp, second.mlp) and torch.equal(first.heads, second.heads)
    assert not torch.equal(first.mlp, other.mlp)


def test_crop_micro_batching_gives_the_same_scores(images):
    model = make_vit(mlp="swiglu")
    for method in ("snapvit", "cross-entropy"):
        whole = score(model, images, method, labels=LABELS, crop_micro_batch=64)
        pieces = score(model, images, method, labels=LABELS, crop_micro_batch=5)
        torch.testing.assert_close(pieces.mlp, whole.mlp, rtol=1e-4, atol=1e-12)
        torch.testing.assert_close(pieces.heads, whole.heads, rtol=1e-4, atol=1e-12)


def test_per_image_squared_gradients_are_the_mean_of_single_image_scores(images, monkeypatch):
    """squared_gradients='per-image' = 1/N sum_i (grad L_i)^2, i.e. the mean of one-image accumulated scores.

    Crops are made a deterministic function of the image here, so each image's crops are the same
    whichever run draws them; in normal runs they come from the seeded generator.
    """
    import snapvit_core.scoring.crops as crops

    real_make_crops = crops.make_crops

    def fixed_crops(batch, data_config, config, generator):
        per_image = [
            real_make_crops([image], data_config, config, torch.Generator().manual_seed(11)) for image in batch
        ]
        return torch.cat(per_image)

    monkeypatch.setattr(crops, "make_crops", fixed_crops)
    model = make_vit()
    for method, labels in (("snapvit", None), ("cross-entropy", LABELS[:2])):
        per_image = score(model, images[:2], method, labels, samples=2, squared_gradients="per-image")
        singles = [
            score(model, images[i : i + 1], method, None if labels is None else labels[i : i + 1], samples=1)
            for i in range(2)
        ]
        torch.testing.assert_close(per_image.mlp, (singles[0].mlp + singles[1].mlp) / 2, rtol=1e-4, atol=1e-14)
        torch.testing.assert_close(per_image.heads, (singles[0].heads + singles[1].heads) / 2, rtol=1e-4, atol=1e-14)
        accumulated = score(model, images[:2], method, labels, samples=2)
        assert not torch.allclose(accumulated.mlp, per_image.mlp)  # squaring after the sum is not the same
    assert per_image.metadata["config"]["squared_gradients"] == "per-image"


def test_per_image_scores_do_not_depend_on_batching(images):
    model = make_vit()
    whole = score(model, images, squared_gradients="per-image", batch_size=4, crop_micro_batch=64)
    pieces = score(model, images, squared_gradients="per-image", batch_size=1, crop_micro_batch=5)
    torch.testing.assert_close(pieces.mlp, whole.mlp, rtol=1e-4, atol=1e-14)
    torch.testing.assert_close(pieces.heads, whole.heads, rtol=1e-4, atol=1e-14)


def test_snapvit_is_label_free_and_works_without_a_head(images):
    headless = make_headless_vit()
    scores = score(headless, images, "snapvit", labels=None)
    assert scores.mlp.sum() > 0 and scores.heads.sum() > 0
    assert (scores.mlp > 0).float().mean() > 0.9  # gradients reach (almost) every neuron


def test_callers_model_is_unchanged(images):
    model = make_vit()
    model.blocks[1].mlp.fc2.weight.requires_grad_(False)
    before = copy.deepcopy(model.state_dict())
    flags = {name: p.requires_grad for name, p in model.named_parameters()}
    for method in ("snapvit", "snip-magnitude"):
        score(model, images, method, labels=LABELS)
    after = model.state_dict()
    assert all(torch.equal(before[key], after[key]) for key in before)
    assert flags == {name: p.requires_grad for name, p in model.named_parameters()}
    assert all(p.grad is None for p in model.parameters())
    assert not model.training


def test_crops_are_seeded_in_range_and_at_model_size(images):
    config = ScoringConfig(**FAST)
    crops = make_crops(images[:2], DATA_CONFIG, config, torch.Generator().manual_seed(0))
    again = make_crops(images[:2], DATA_CONFIG, config, torch.Generator().manual_seed(0))
    assert crops.shape == (2 * config.crops_per_image, 3, SIZE, SIZE) and torch.equal(crops, again)
    generator = torch.Generator().manual_seed(0)
    for _ in range(200):
        left, top, width, height = sample_crop_box(100, 60, (0.05, 0.25), generator)
        assert 0 <= left and left + width <= 100 and 0 <= top and top + height <= 60
        assert width * height <= 0.25 * 6000 * 1.05


def test_cross_entropy_needs_a_head_and_labels(images):
    with pytest.raises(SnapViTError, match="classification head"):
        score(make_headless_vit(), images, "cross-entropy", labels=LABELS)
    with pytest.raises(SnapViTError, match="labels"):
        score(make_vit(), images, "snip-magnitude", labels=None)
    with pytest.raises(SnapViTError, match="10 classes"):
        score(make_vit(), images, "cross-entropy", labels=[0, 1, 2, 10])


def test_config_errors():
    with pytest.raises(SnapViTError) as error:
        ScoringConfig(method="fisher")
    assert all(method in str(error.value) for method in METHODS)
    for samples in (0, -3, 2.5, True):
        with pytest.raises(SnapViTError, match="samples"):
            ScoringConfig(samples=samples)
    with pytest.raises(SnapViTError, match="local_scale"):
        ScoringConfig(local_scale=(0.0, 0.25))
    with pytest.raises(SnapViTError, match="needs images"):
        compute_scores(make_vit(), [], DATA_CONFIG, ScoringConfig())
    with pytest.raises(SnapViTError, match="accumulated, per-image"):
        ScoringConfig(squared_gradients="per-batch")
    with pytest.raises(SnapViTError, match="snapvit or cross-entropy"):
        ScoringConfig(method="snip-magnitude", squared_gradients="per-image")


def test_cancel_raises_and_progress_reports(images):
    calls, reports = [], []

    def cancel() -> bool:
        calls.append(1)
        return len(calls) > 1  # cancel before the second batch

    two_per_step = ScoringConfig(**FAST, crop_micro_batch=12)  # 2 images of 6 crops per forward
    with pytest.raises(CancelledError):
        compute_scores(make_vit(), images, DATA_CONFIG, two_per_step, cancel=cancel)
    compute_scores(make_vit(), images, DATA_CONFIG, two_per_step, progress=lambda *a: reports.append(a))
    assert [r[0] for r in reports] == [0.5, 1.0] and reports[-1][2] == 0


def run_cli(capsys, *argv: str) -> tuple[int, str, str]:
    try:
        code = main(list(argv))
    except SystemExit as usage_error:  # argparse refuses bad values (e.g. --samples 0) before the command runs
        code = usage_error.code
    out, err = capsys.readouterr()
    return code, out, err


def test_cli_writes_loadable_scores(capsys, tmp_path):
    out = tmp_path / "scores.safetensors"
    common = ("score", "--model", "embedded", "--random-init", "--data", "procedural", "--samples", "4")
    code, stdout, _ = run_cli(capsys, *common, "--method", "snapvit", "--out", str(out), "--json")
    payload = json.loads(stdout)
    assert code == 0
    keys = {"method", "squared_gradients", "samples", "seconds", "out", "model", "data", "skipped", "precision"}
    assert set(payload) == keys
    assert (payload["method"], payload["samples"], payload["model"]) == ("snapvit", 4, "embedded")
    loaded = load_scores(out)
    assert loaded.metadata["method"] == "snapvit" and loaded.metadata["config"]["samples"] == 4
    code, stdout, _ = run_cli(capsys, *common, "--squared-gradients", "per-image", "--out", str(out), "--json")
    assert code == 0 and json.loads(stdout)["squared_gradients"] == "per-image"
    assert load_scores(out).metadata["config"]["squared_gradients"] == "per-image"
    code, stdout, _ = run_cli(capsys, *common, "--method", "magnitude", "--out", str(out))
    assert code == 0 and "magnitude" in stdout
    assert load_scores(out).metadata["method"] == "magnitude"
    assert_no_temp_files(tmp_path)


@pytest.mark.parametrize(
    "argv",
    [
        ("--data", "bogus:"),
        ("--samples", "0"),
        ("--samples", "-3"),
        ("--method", "nope"),
        ("--method", "cross-entropy", "--data", "procedural"),  # procedural images have no labels
        ("--squared-gradients", "sometimes"),
        ("--method", "lamp", "--squared-gradients", "per-image"),
    ],
)
def test_cli_errors_are_one_line_and_write_nothing(capsys, tmp_path, argv):
    out = tmp_path / "scores.safetensors"
    base = ("score", "--model", "embedded", "--random-init", "--samples", "2")
    code, stdout, stderr = run_cli(capsys, *base, *argv, "--out", str(out))
    assert code == 2 and stdout == ""
    assert stderr.startswith("error: ") and stderr.count("\n") == 1
    assert list(tmp_path.iterdir()) == []


def load_reference_scoring():
    """The scoring pass as of REFERENCE_COMMIT (before the faster pass: teacher = detached student,
    whole-image forwards), imported beside today's package."""
    try:
        return load_reference("scoring")
    except ReferenceMissing:
        pytest.skip(f"commit {REFERENCE_COMMIT} is not in this clone (shallow?)")


@pytest.mark.parametrize(
    ("method", "overrides"),
    [
        ("snapvit", {}),
        ("snapvit", {"crop_micro_batch": 5}),  # micro-batch smaller than one image's crops: separate targets
        ("snapvit", {"squared_gradients": "per-image"}),
        ("cross-entropy", {"batch_size": 3}),  # uneven last batch: batch-mean weights
        ("snip-magnitude-dino", {}),
    ],
)
def test_scores_equal_the_previous_implementation_on_identical_crops(images, monkeypatch, method, overrides):
    import snapvit_core.scoring.crops as crops

    reference = load_reference_scoring()
    real_make_crops = crops.make_crops

    def fixed_crops(batch, data_config, config, generator):  # a function of the image only
        return torch.cat(
            [real_make_crops([im], data_config, config, torch.Generator().manual_seed(11)) for im in batch]
        )

    monkeypatch.setattr(crops, "make_crops", fixed_crops)
    monkeypatch.setattr(reference, "make_crops", fixed_crops)
    monkeypatch.setattr(scoring, "prepare_private_copy", lambda model: None)  # the old pass's kernels: see below
    model = make_vit()
    labels = LABELS if method == "cross-entropy" else None
    config = ScoringConfig(method=method, **{**FAST, **overrides})
    new = compute_scores(model, images, DATA_CONFIG, config, labels=labels)
    settings = {k: v for k, v in asdict(config).items() if k != "precision"}  # fp32 on the CPU either way
    settings["crop_micro_batch"] = config.crop_micro_batch or 64  # the old default
    old = reference.compute_scores(model, images, DATA_CONFIG, reference.ScoringConfig(**settings), labels=labels)
    for now, before in ((new.mlp, old.mlp), (new.heads, old.heads)):
        # equal to round-off relative to the largest score (torch 2.14's CPU kernels round tiny squared
        # gradients differently by batch shape: elementwise rtol 1e-5 fails on scores 1e6 below the largest)
        assert ((now - before).abs().max() / before.abs().max()).item() < 1e-5


def test_crops_depend_on_seed_and_image_index_only(images, monkeypatch):
    """Scores do not depend on batch size (or, see test_distributed, on the number of processes)."""
    model = make_vit()
    small = score(model, images, batch_size=2, crop_micro_batch=6)  # one image per forward
    large = score(model, images, batch_size=2, crop_micro_batch=64)  # two images per forward
    # the same crops; batched matmuls round differently (rel. 2.5e-5 on an Intel CPU), other crops differ by far more
    torch.testing.assert_close(small.mlp, large.mlp, rtol=1e-4, atol=1e-12)
    from snapvit_core.scoring.compute import crop_generator

    draws = {(s, i): torch.rand(3, generator=crop_generator(s, i)) for s in (0, 1) for i in (0, 1, 2)}
    assert torch.equal(draws[(0, 1)], torch.rand(3, generator=crop_generator(0, 1)))
    assert len({tuple(v.tolist()) for v in draws.values()}) == 6


def test_crop_worker_processes_do_not_change_the_scores(images):
    model = make_vit()
    config = ScoringConfig(**FAST)
    inline = compute_scores(model, images, DATA_CONFIG, config, workers=0)
    workers = compute_scores(model, images, DATA_CONFIG, config, workers=2)
    for a, b in ((inline.mlp, workers.mlp), (inline.heads, workers.heads)):
        assert ((a - b).abs().max() / a.abs().max()).item() < 1e-5  # the same crops; round-off only (measured 2e-6)
    with pytest.raises(SnapViTError, match="workers"):
        compute_scores(model, images, DATA_CONFIG, config, workers=-1)


def test_faster_private_copy_changes_scores_only_at_round_off(images, monkeypatch):
    """The scoring student uses the explicit attention path on the CPU for short sequences and a CLS-only
    last block (faster); the scores stay the plain model's to round-off, relative to the largest score."""
    model = make_vit()
    assert all(block.attn.fused_attn for block in model.blocks)
    for method in ("snapvit", "snip-magnitude-dino"):
        explicit = score(model, images, method)
        monkeypatch.setattr(scoring, "prepare_private_copy", lambda model: None)
        fused = score(model, images, method)
        monkeypatch.undo()
        for new, old in ((explicit.mlp, fused.mlp), (explicit.heads, fused.heads)):
            assert not torch.equal(new, old)  # the kernel did change (so this test can fail)
            assert ((new - old).abs().max() / old.abs().max()).item() < 1e-5  # measured: 1.1e-6
    assert all(block.attn.fused_attn for block in model.blocks)  # the caller's model is untouched
