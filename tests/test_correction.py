"""SparseGPT-style weight correction (DESIGN section 6): error reduction, isolation, retries, cancellation."""

from __future__ import annotations

import pytest
import torch
from conftest import make_vit

from snapvit_core.engine.adapter import ViTAdapter
from snapvit_core.engine.correction import (
    CorrectionConfig,
    correct_elastic,
    correct_layer,
    correct_pruned_model,
    eliminate_columns,
    reconstruction_error,
)
from snapvit_core.engine.elastic import ElasticViT
from snapvit_core.errors import CancelledError, SnapViTError
from snapvit_core.scoring.data_free import random_scores

torch.set_num_threads(1)

SHAPES = [
    dict(mlp="standard", qkv_bias=True),
    dict(mlp="swiglu", qkv_bias=True, fused_attn=False),
    dict(mlp="standard", qkv_bias=False),
]
SPARSITIES = [(0.3, 0.2), (0.65, 0.5)]
FAST = CorrectionConfig(batch_size=4)


def make_elastic(seed: int = 0, **shape) -> ElasticViT:
    model = make_vit(seed=seed, **shape)
    return ElasticViT(model, random_scores(model, seed))


def calibration(count: int = 8, seed: int = 1) -> torch.Tensor:
    return torch.randn(count, 3, 32, 32, generator=torch.Generator().manual_seed(seed))


def snapshot(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {name: tensor.detach().clone() for name, tensor in model.state_dict().items()}


def assert_same_state(model: torch.nn.Module, reference: dict[str, torch.Tensor]) -> None:
    state = model.state_dict()
    assert state.keys() == reference.keys()
    for name, tensor in reference.items():
        assert torch.equal(state[name], tensor), name


def closed_form(weight: torch.Tensor, hessian: torch.Tensor, keep: int) -> torch.Tensor:
    """Optimal kept columns for removing the suffix: W_K + W_S H_SK H_KK^-1."""
    weight, hessian = weight.double(), hessian.double()
    transfer = torch.linalg.solve(hessian[:keep, :keep], hessian[:keep, keep:]).T  # H_SK H_KK^-1, (S, K)
    return weight[:, :keep] + weight[:, keep:] @ transfer


def synthetic_layer(outliers: bool = False, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """A (12, 20) weight, its inputs X (20, 200) with correlated features, and G = X X^T."""
    generator = torch.Generator().manual_seed(seed)
    mixing = torch.randn(20, 20, generator=generator, dtype=torch.float64)
    inputs = mixing @ torch.randn(20, 200, generator=generator, dtype=torch.float64)
    if outliers:
        inputs[[2, 15]] *= 1e4  # a few features with huge magnitude, as in DINOv3
    weight = torch.randn(12, 20, generator=generator, dtype=torch.float64)
    return weight, inputs, inputs @ inputs.T


@pytest.mark.parametrize("block_size", [1, 3, 128])
def test_elimination_equals_closed_form(block_size):
    weight, _, gram = synthetic_layer()
    damped = gram + 0.01 * gram.diagonal().mean() * torch.eye(20, dtype=torch.float64)
    result = eliminate_columns(weight, damped, keep=13, block_size=block_size)
    assert result.shape == (12, 13)
    torch.testing.assert_close(result, closed_form(weight, damped, 13), rtol=1e-8, atol=1e-8)


def test_reconstruction_error_matches_activations():
    weight, inputs, gram = synthetic_layer()
    new_kept = weight[:, :9] + 0.1
    direct = (weight @ inputs - new_kept @ inputs[:9]).square().sum() / (weight @ inputs).square().sum()
    assert reconstruction_error(weight, new_kept, gram) == pytest.approx(float(direct), rel=1e-9)


def test_truncation_error_matches_activations():
    """Plain truncation takes a shortcut (only the removed columns' block of G); same value."""
    weight, inputs, gram = synthetic_layer()
    kept = weight[:, :9]
    direct = (weight @ inputs - kept @ inputs[:9]).square().sum() / (weight @ inputs).square().sum()
    assert reconstruction_error(weight, kept, gram) == pytest.approx(float(direct), rel=1e-9)
    assert reconstruction_error(weight, weight, gram) == 0.0


@pytest.mark.parametrize("damping", ["mean", "max", "percentile"])
@pytest.mark.parametrize("outliers", [False, True], ids=["plain", "outliers"])
def test_damping_strategies_reduce_error(damping, outliers):
    weight, _, gram = synthetic_layer(outliers)
    config = CorrectionConfig(damping=damping, damping_fraction=0.1 if damping == "max" else 0.01)
    corrected, row, messages = correct_layer(weight.float(), gram, 11, config, "layer")
    assert corrected.dtype == torch.float32 and corrected.shape == (12, 11)
    assert torch.isfinite(corrected).all()
    assert row.error_after <= row.error_before
    assert row.retries == 0 and messages == []


def test_dead_input_channel_is_harmless():
    weight, inputs, _ = synthetic_layer()
    inputs[[4, 17]] = 0.0  # channels that never fire on the calibration data: zero rows and columns in G
    corrected, row, _ = correct_layer(weight, inputs @ inputs.T, 10, CorrectionConfig(), "layer")
    assert torch.isfinite(corrected).all()
    assert row.error_after <= row.error_before
    assert torch.equal(corrected[:, 4], weight[:, 4])  # nothing is known about a silent kept channel


def test_outlier_activations_with_max_damping():
    model = make_vit()
    with torch.no_grad():
        for block in model.blocks:  # a few MLP neurons and attention channels with huge activations
            block.mlp.fc1.weight[:3] *= 1e4
            block.attn.qkv.weight[96:99] *= 1e4  # value rows of head 0 feed proj's first columns
    elastic = ElasticViT(model, random_scores(model, 0))
    config = CorrectionConfig(damping="max", damping_fraction=0.1, batch_size=4)
    corrected, report = correct_elastic(elastic, 0.65, 0.5, calibration(), config)
    assert all(torch.isfinite(p).all() for p in corrected.parameters())
    for row in report.layers:
        assert row.error_after <= row.error_before * (1 + 1e-9) + 1e-12, row


@pytest.mark.parametrize("sparsity", SPARSITIES, ids=str)
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "-".join(f"{k}={v}" for k, v in s.items()))
def test_correction_reduces_every_layer_error(shape, sparsity):
    elastic = make_elastic(**shape)
    model, report = correct_elastic(elastic, *sparsity, calibration(), FAST)
    assert len(report.layers) == 2 * len(model.blocks)  # every block loses heads and neurons here
    for row in report.layers:
        assert row.kept_columns < row.total_columns
        assert row.error_after <= row.error_before * (1 + 1e-9) + 1e-12, row
        assert row.error_after < 0.5 * row.error_before, row  # the fit is not just "no worse"
    assert report.samples == 8 and report.messages == ()
    assert all(torch.isfinite(p).all() for p in model.parameters())


def test_corrected_model_has_truncated_architecture_and_only_proj_fc2_change():
    elastic = make_elastic()
    model, _ = correct_elastic(elastic, 0.65, 0.5, calibration(), FAST)
    truncated = elastic.prune_to(0.65, 0.5)
    assert ViTAdapter(model).shape() == ViTAdapter(truncated).shape()
    corrected_names = {
        f"blocks.{i}.{layer}.weight" for i in range(len(model.blocks)) for layer in ("attn.proj", "mlp.fc2")
    }
    reference = truncated.state_dict()
    for name, tensor in model.state_dict().items():
        assert tensor.shape == reference[name].shape, name
        assert torch.equal(tensor, reference[name]) != (name in corrected_names), name
    images = calibration(2, seed=5)
    with torch.no_grad():
        assert model(images).shape == truncated(images).shape


def test_correction_brings_embedding_closer_to_unpruned():
    elastic = make_elastic()
    images = calibration(24)
    with torch.no_grad():
        target = ViTAdapter(elastic.full).embed(images)
        truncated = ViTAdapter(elastic.prune_to(0.65, 0.5)).embed(images)
        model, _ = correct_elastic(elastic, 0.65, 0.5, images, FAST)
        corrected = ViTAdapter(model).embed(images)
    assert (corrected - target).norm() < 0.5 * (truncated - target).norm()


def test_full_model_and_later_truncations_unchanged():
    elastic = make_elastic(mlp="swiglu")
    full_before = snapshot(elastic.full)
    truncation_before = snapshot(elastic.prune_to(0.3, 0.2))
    correct_elastic(elastic, 0.3, 0.2, calibration(), FAST)
    assert_same_state(elastic.full, full_before)
    assert_same_state(elastic.prune_to(0.3, 0.2), truncation_before)
    # the engine's own truncation (what evaluations measure) is the plain one too
    elastic.run(elastic.plan_for(0.3, 0.2), lambda working: assert_same_state(working, truncation_before))


def test_in_place_correction_of_working_model_never_writes_full():
    elastic = make_elastic()
    full_before = snapshot(elastic.full)
    truncation_before = snapshot(elastic.prune_to(0.65, 0.5))

    def correct_in_place(working):  # the engine's sliced views share their storage with `full`
        return correct_pruned_model(elastic.full, working, calibration(), FAST), snapshot(working)

    report, corrected = elastic.run(elastic.plan_for(0.65, 0.5), correct_in_place)
    assert report.layers
    assert not torch.equal(corrected["blocks.0.mlp.fc2.weight"], truncation_before["blocks.0.mlp.fc2.weight"])
    assert_same_state(elastic.full, full_before)
    assert_same_state(elastic.prune_to(0.65, 0.5), truncation_before)


def test_zero_sparsity_is_a_no_op():
    elastic = make_elastic()
    model, report = correct_elastic(elastic, 0.0, 0.0, calibration(), FAST)
    assert report.layers == ()
    assert_same_state(model, snapshot(elastic.full))


def test_cholesky_failure_retries_with_more_damping(monkeypatch):
    original, calls = torch.linalg.cholesky, []

    def fail_once(*args, **kwargs):
        calls.append(1)
        if len(calls) == 1:
            raise torch.linalg.LinAlgError("forced failure")
        return original(*args, **kwargs)

    monkeypatch.setattr(torch.linalg, "cholesky", fail_once)
    _, report = correct_elastic(make_elastic(), 0.3, 0.2, calibration(), FAST)
    first = report.layers[0]
    assert first.layer == "blocks.0.attn.proj" and first.retries == 1
    assert first.damping_fraction == pytest.approx(0.1)
    assert report.messages == ("Cholesky failed for blocks.0.attn.proj; retried with damping 0.1",)
    assert all(row.retries == 0 for row in report.layers[1:])
    assert report.to_dict()["messages"] == list(report.messages)


def test_exhausted_retries_raise_and_restore_model(monkeypatch):
    elastic = make_elastic()
    working = elastic.prune_to(0.3, 0.2)
    before = snapshot(working)

    def always_fail(*args, **kwargs):
        raise torch.linalg.LinAlgError("forced failure")

    monkeypatch.setattr(torch.linalg, "cholesky", always_fail)
    with pytest.raises(SnapViTError, match="blocks.0.attn.proj.*4 retries"):
        correct_pruned_model(elastic.full, working, calibration(), CorrectionConfig(batch_size=4, max_retries=4))
    assert_same_state(working, before)


def test_indefinite_hessian_exhausts_retries():
    weight, _, gram = synthetic_layer()
    indefinite = gram - 2 * torch.linalg.eigvalsh(gram).max() * torch.eye(20, dtype=torch.float64)
    with pytest.raises(SnapViTError, match="Cholesky"):
        correct_layer(weight, indefinite, 10, CorrectionConfig(damping_fraction=1e-6, max_retries=1), "layer")


@pytest.mark.parametrize("stop_after", [1, 4])
def test_cancellation_from_progress_restores_model(stop_after):
    elastic = make_elastic()
    working = elastic.prune_to(0.65, 0.5)
    before = snapshot(working)
    seen: list[float] = []

    def progress(fraction: float, message: str) -> None:
        seen.append(fraction)
        if len(seen) == stop_after:
            raise CancelledError("weight correction")

    with pytest.raises(CancelledError):
        correct_pruned_model(elastic.full, working, calibration(), FAST, progress=progress)
    assert_same_state(working, before)


def test_cancel_flag_and_progress_fractions():
    elastic = make_elastic()
    working = elastic.prune_to(0.65, 0.5)
    before = snapshot(working)
    with pytest.raises(CancelledError):
        correct_pruned_model(elastic.full, working, calibration(), FAST, cancel=lambda: True)
    assert_same_state(working, before)
    seen: list[float] = []
    correct_pruned_model(elastic.full, working, calibration(), FAST, progress=lambda f, m: seen.append(f))
    assert seen == sorted(seen) and seen[-1] == pytest.approx(1.0) and len(seen) == 3 * len(working.blocks)


@pytest.mark.parametrize(
    "settings, allowed",
    [
        (dict(damping="median"), "mean, max, percentile"),
        (dict(damping_fraction=0.0), "positive"),
        (dict(damping_fraction=float("nan")), "positive"),
        (dict(percentile=150.0), r"\(0, 100\]"),
        (dict(samples=0), ">= 1"),
        (dict(block_size=2.5), ">= 1"),
        (dict(batch_size=True), ">= 1"),
        (dict(max_retries=-1), ">= 0"),
    ],
)
def test_bad_config_values_are_refused(settings, allowed):
    with pytest.raises(SnapViTError, match=allowed):
        CorrectionConfig(**settings)


def test_samples_limit_and_bad_images():
    elastic = make_elastic()
    _, report = correct_elastic(elastic, 0.3, 0.2, calibration(6), CorrectionConfig(samples=3, batch_size=2))
    assert report.samples == 3
    with pytest.raises(SnapViTError, match="non-empty"):
        correct_elastic(elastic, 0.3, 0.2, torch.zeros(0, 3, 32, 32), FAST)
