"""Width alignment (issue 24): kept MLP neurons per block rounded to multiples of N, and every consumer follows.

The rounding: each block down to a multiple of N (never below N, or the whole block when narrower,
nor below its protected minimum), then chunks of N back to the blocks whose next chunk scores highest
while that brings the total nearer the request. align=1 is the published rule exactly.
"""

from __future__ import annotations

import json

import pytest
import torch
from conftest import export_from, make_vit

from snapvit_core.cli import main
from snapvit_core.engine.adapter import ViTAdapter
from snapvit_core.engine.backbones import load_backbone
from snapvit_core.engine.elastic import (
    ALIGN_AUTO,
    ElasticViT,
    align_keep_counts,
    check_align,
    plan_keep_counts,
    plan_pruning,
)
from snapvit_core.errors import SnapViTError
from snapvit_core.evaluation.metrics import analytic_flops, count_parameters
from snapvit_core.explorer import Explorer
from snapvit_core.latency.model import BatchTable, LatencyModel, LatencyModelKey
from snapvit_core.scoring.data_free import magnitude_scores, random_scores
from snapvit_core.scoring.scores import ImportanceScores

SPARSITIES = [0.0, 0.05, 0.15, 0.35, 0.5, 0.65, 0.8, 0.95]


def _scores(blocks: int, units: int, seed: int) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    scale = torch.rand(blocks, 1, generator=generator) * 3  # blocks differ, so the threshold spreads unevenly
    return torch.rand(blocks, units, generator=generator) * scale


@pytest.mark.parametrize("blocks, units", [(6, 384), (12, 100), (3, 20), (4, 7)])
@pytest.mark.parametrize("align", [8, 16, 32, 64])
def test_aligned_counts_are_multiples_never_empty_and_near_the_request(blocks, units, align):
    for seed in range(3):
        scores = _scores(blocks, units, seed)
        for sparsity in SPARSITIES:
            for min_keep in (0.0, 0.05):
                plain = plan_keep_counts(scores, sparsity, min_keep)
                aligned = plan_keep_counts(scores, sparsity, min_keep, align)
                floor = min(units, max(align, -(-int(units * min_keep) // align) * align))
                assert all(c == units or c % align == 0 for c in aligned), (aligned, align)
                assert all(floor <= c <= units for c in aligned), (aligned, floor)  # never emptied
                if sum(floor if k < units else units for k in plain) <= sum(plain):
                    # within half a chunk of the request (one unit of N per block is the promise; this is tighter)
                    assert abs(sum(aligned) - sum(plain)) <= align / 2, (sparsity, plain, aligned)
                else:  # the floors alone exceed the request: nothing above a floor is kept beyond it
                    assert abs(sum(aligned) - sum(plain)) <= blocks * align


def test_align_one_is_the_published_rule_exactly():
    for seed in range(5):
        scores = _scores(12, 3072, seed)
        mlp, heads = scores, _scores(12, 12, seed + 10)
        importance = ImportanceScores(mlp, heads)
        for sparsity in SPARSITIES:
            assert plan_keep_counts(scores, sparsity, 0.05, 1) == plan_keep_counts(scores, sparsity, 0.05)
            assert align_keep_counts(scores, [5, 7], 1) == [5, 7]
            assert plan_pruning(importance, sparsity, 0.3) == plan_pruning(importance, sparsity, 0.3, align=1)


def test_chunks_go_back_to_the_blocks_whose_next_chunk_scores_highest():
    # Two blocks of 64 units; request 22 + 22 = 44 kept, align 16: floors give 16 + 16 = 32, one chunk goes back.
    strong = torch.linspace(10, 9, 64)  # block 1's next chunk (units 16..31) scores higher than block 0's
    weak = torch.linspace(10, 0, 64)
    scores = torch.stack([weak, strong])
    assert align_keep_counts(scores, [22, 22], 16) == [16, 32]
    assert align_keep_counts(scores.flip(0), [22, 22], 16) == [32, 16]
    # A block asked for 3 units keeps 16 (never emptied); the 13-unit overshoot comes back from the block whose
    # last chunk scores lowest.
    assert align_keep_counts(scores, [64, 3], 16) == [48, 16]
    assert align_keep_counts(scores, [64, 64], 16) == [64, 64]  # full blocks stay whole


def test_heads_are_never_aligned_and_the_plan_records_align():
    scores = ImportanceScores(_scores(6, 384, 0), _scores(6, 6, 1))
    plain, aligned = plan_pruning(scores, 0.35, 0.5), plan_pruning(scores, 0.35, 0.5, align=32)
    assert aligned.kept_heads == plain.kept_heads and aligned.align == 32 and plain.align == 1
    assert aligned.to_dict()["align"] == 32


@pytest.mark.parametrize("value", [0, -8, "x", "8.5", 1.5, True, 10**9])
def test_bad_align_is_refused_clearly(value):
    with pytest.raises(SnapViTError, match="align must be"):
        check_align(value)


def test_auto_align_resolves_per_device():
    assert check_align("auto", "cpu") == ALIGN_AUTO["cpu"]
    assert check_align("auto", "cuda:0") == ALIGN_AUTO["cuda"]
    assert check_align("16") == 16


def test_every_consumer_follows_the_aligned_plan(tmp_path):
    """Engine widths, plan costs, latency-model inputs, correction and the export all use the aligned counts."""
    from snapvit_core.engine.correction import CorrectionConfig, correct_elastic
    from snapvit_core.export.writer import kept_widths, load_pruned

    backbone = load_backbone("embedded")
    scores = magnitude_scores(backbone.model)
    explorer = Explorer(backbone, scores, align=32)
    plan = explorer.plan_for(0.45, 0.3)
    assert plan.align == 32 and all(n % 32 == 0 for n in plan.kept_neurons)
    assert plan.kept_neurons != plan_pruning(scores, 0.45, 0.3).kept_neurons  # alignment changed something
    model = explorer.elastic.prune_to(0.45, 0.3)
    assert list(ViTAdapter(model).shape().mlp_hidden_per_block) == list(plan.kept_neurons)

    # plan costs == the truncated model's parameters and FLOPs
    explorer.latency_model = _fake_latency_model(explorer)
    cost = explorer.cost(0.45, 0.3)
    assert cost.kept_neurons == list(plan.kept_neurons)
    assert cost.cost.flops == analytic_flops(model) and cost.cost.params == count_parameters(model)
    # the latency model is asked about the aligned counts
    assert cost.latency == explorer.latency_model.predict(plan.kept_heads, plan.kept_neurons, 1)

    # correction corrects the aligned truncation
    images = torch.randn(8, 3, backbone.image_size, backbone.image_size, generator=torch.Generator().manual_seed(0))
    corrected, report = correct_elastic(explorer.elastic, 0.45, 0.3, images, CorrectionConfig(samples=8, batch_size=4))
    assert kept_widths(corrected)[1] == list(plan.kept_neurons)
    assert all(row.kept_columns % 32 == 0 for row in report.layers if row.layer.endswith("fc2"))

    # the export (and its ONNX model) carries the aligned widths
    exported, _ = explorer.pruned_model(0.45, 0.3)
    result = export_from(backbone, exported, tmp_path / "aligned", plan=plan, pruning={"align": 32}, onnx=True)
    config = json.loads((result.directory / "config.json").read_text())
    assert config["pruning"]["kept_neurons"] == list(plan.kept_neurons) and result.onnx_max_abs_diff < 1e-4
    assert kept_widths(load_pruned(result.directory))[1] == list(plan.kept_neurons)
    import onnx

    graph = onnx.load(str(result.directory / "model.onnx")).graph
    widths = sorted({int(d) for t in graph.initializer for d in t.dims if "fc2" in t.name or "fc1" in t.name})
    assert set(plan.kept_neurons) <= set(widths)


def _fake_latency_model(explorer: Explorer) -> LatencyModel:
    shape = explorer.elastic.shape
    widths = (1, shape.mlp_hidden // 2, shape.mlp_hidden)
    table = BatchTable(
        full_ms=(10.0, 9.0, 11.0),
        attention_span_ms=(3.0, 2.5, 3.5),
        mlp_span_ms=(4.0, 3.5, 4.5),
        attention_shape=tuple(h / shape.num_heads for h in range(shape.num_heads + 1)),
        mlp_widths=widths,
        mlp_shape=(0.0, 0.4, 1.0),
        blocks=shape.num_blocks,
        rounds=3,
    )
    key = LatencyModelKey("embedded", "cpu", "float32", 1, 24, shape.describe())
    return LatencyModel(key, shape.num_blocks, shape.num_heads, shape.mlp_hidden, {1: table})


@pytest.mark.parametrize("mlp", ["standard", "swiglu", "glu-packed"])
def test_aligned_pruning_is_exact_for_every_mlp_kind(mlp):
    from test_elastic import prune_and_check_masked

    model = make_vit(mlp=mlp)
    elastic = ElasticViT(model, random_scores(model, 0), align=16)
    images = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    for pair in [(0.3, 0.2), (0.7, 0.5)]:
        prune_and_check_masked(elastic, model, *pair, images)
        assert all(n % 16 == 0 for n in elastic.plan_for(*pair).kept_neurons)


def _cli(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_cli_align_for_plan_evaluate_and_export(tmp_path, capsys):
    scores = "scores/embedded.xnes.safetensors"
    code, out, err = _cli(capsys, "plan", "--scores", scores, "--mlp-sparsity", "0.35", "--head-sparsity", "0.2",
                          "--align", "16", "--json")  # fmt: skip
    assert code == 0, err
    payload = json.loads(out)
    assert payload["align"] == 16 and all(n % 16 == 0 for n in payload["kept_neurons"])
    code, out, _ = _cli(capsys, "plan", "--scores", scores, "--mlp-sparsity", "0.35", "--head-sparsity", "0.2",
                        "--align", "1", "--json")  # fmt: skip
    from snapvit_core.scoring.scores_io import load_scores

    assert json.loads(out)["kept_neurons"] == list(plan_pruning(load_scores(scores), 0.35, 0.2).kept_neurons)

    code, out, err = _cli(capsys, "evaluate", "--metrics", "flops,params", "--mlp-sparsity", "0.45",
                          "--head-sparsity", "0.3", "--align", "32", "--json")  # fmt: skip
    assert code == 0, err
    payload = json.loads(out)
    assert payload["align"] == 32 and all(n % 32 == 0 for n in payload["kept_neurons"])

    code, out, err = _cli(capsys, "export", "--mlp-sparsity", "0.45", "--head-sparsity", "0.3", "--align", "32",
                          "--out", str(tmp_path / "e"), "--json")  # fmt: skip
    assert code == 0, err
    assert all(n % 32 == 0 for n in json.loads(out)["kept_neurons"])
    config = json.loads((tmp_path / "e" / "config.json").read_text())
    assert config["pruning"]["align"] == 32

    code, _, err = _cli(capsys, "plan", "--scores", scores, "--mlp-sparsity", "0.3", "--head-sparsity", "0",
                        "--align", "seven")  # fmt: skip
    assert code == 2 and err.count("\n") == 1 and "align must be" in err
