"""The multiplier search: masked fitness, search loop, checkpoints, CLI (DESIGN section 4; see test_xnes, test_cka)."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest
import torch

from snapvit_core.engine.adapter import ViTAdapter
from snapvit_core.engine.elastic import ElasticViT
from snapvit_core.errors import CancelledError, SnapViTError
from snapvit_core.scoring.data_free import magnitude_scores
from snapvit_core.scoring.scores import ImportanceScores
from snapvit_core.search.evolution import CandidateFitness, SearchConfig, initial_mean, run_search, scale_scores

torch.set_num_threads(1)

SMALL = SearchConfig(evaluations=30, pca_components=16)  # tiny-model settings: 1 + 2 generations of 13 + mean


@pytest.fixture
def images() -> torch.Tensor:
    return torch.randn(24, 3, 32, 32, generator=torch.Generator().manual_seed(3))


def _truncated_fitness(model, scores: ImportanceScores, images, fitness: CandidateFitness) -> float:
    elastic = ElasticViT(model, scores)
    values = []
    with torch.inference_mode():
        for pair in fitness.config.pairs:
            embedded = ViTAdapter(elastic.prune_to(*pair)).embed(images)
            cosine = torch.nn.functional.cosine_similarity(fitness._project(embedded), fitness.teacher, dim=1)
            values.append(1.0 - float(cosine.mean()))
    return sum(values) / len(values)


def test_masked_fitness_equals_truncated_pruning(tiny_vit, images):
    scores = magnitude_scores(tiny_vit)
    multipliers = torch.rand(21, generator=torch.Generator().manual_seed(5), dtype=torch.float64) * 2
    before = {name: tensor.clone() for name, tensor in tiny_vit.state_dict().items()}
    fitness = CandidateFitness(tiny_vit, scores, images, SMALL, torch.device("cpu"))
    ones = fitness(torch.ones(21))
    scaled = fitness(multipliers)
    assert ones == pytest.approx(_truncated_fitness(tiny_vit, scores, images, fitness), abs=1e-5)
    baked = ImportanceScores(*scale_scores(scores, multipliers))
    assert scaled == pytest.approx(_truncated_fitness(tiny_vit, baked, images, fitness), abs=1e-5)
    assert fitness.pair_fitness(scores.mlp, scores.heads, (0.0, 0.0)) == pytest.approx(0.0, abs=1e-5)
    after = tiny_vit.state_dict()
    assert all(torch.equal(before[name], after[name]) for name in before)  # the caller's model is untouched
    assert tiny_vit.blocks[0].attn.num_heads == 6


def test_search_is_monotone_improves_and_bakes_multipliers(tiny_vit, images):
    scores = magnitude_scores(tiny_vit)
    calls = []
    result = run_search(tiny_vit, scores, images, SMALL, progress=lambda *a: calls.append(a), model_id="tiny")
    assert result.evaluations == len(calls) == 1 + 2 * 13 + 1 <= SMALL.evaluations
    assert all(b <= a for a, b in zip(result.best_history, result.best_history[1:]))
    assert result.best_history == [min(result.fitness_history[: i + 1]) for i in range(result.evaluations)]
    assert result.best_fitness <= result.initial_fitness
    assert result.fitness_history[0] == result.initial_fitness
    assert torch.all((result.multipliers >= 0) & (result.multipliers <= 2))
    w = result.multipliers
    assert torch.allclose(result.scores.mlp, scores.mlp * w[:3, None])
    assert torch.allclose(result.scores.heads, scores.heads * w[3:].reshape(3, 6))
    meta = result.scores.metadata
    assert meta["method"] == "xnes" and meta["base_method"] == "magnitude" and meta["backbone"] == "tiny"
    assert meta["search"]["fitness"] == result.fitness_history and len(meta["search"]["multipliers"]) == 21
    fitness = CandidateFitness(tiny_vit, scores, images, SMALL, torch.device("cpu"))
    assert fitness(w) == pytest.approx(result.best_fitness, abs=1e-6)
    assert fitness(initial_mean(3, 6, SMALL.mean_ramp)) == pytest.approx(result.initial_fitness, abs=1e-6)


def test_search_with_identity_covariance_is_deterministic(tiny_vit, images):
    config = SearchConfig(evaluations=15, covariance="identity", pca_components=8, population_size=6)
    first = run_search(tiny_vit, magnitude_scores(tiny_vit), images, config)
    second = run_search(tiny_vit, magnitude_scores(tiny_vit), images, config)
    assert first.fitness_history == second.fitness_history and first.cka_seconds == 0.0
    assert torch.equal(first.multipliers, second.multipliers)


@pytest.mark.parametrize(
    "config",
    [
        SearchConfig(pairs=()),
        SearchConfig(pairs=((1.0, 0.0),)),
        SearchConfig(pairs=((0.3, -0.1),)),
        SearchConfig(evaluations=10),  # the default population for 21 multipliers is 13
        SearchConfig(covariance="hessian"),
    ],
)
def test_bad_settings_are_refused(tiny_vit, images, config):
    with pytest.raises(SnapViTError):
        run_search(tiny_vit, magnitude_scores(tiny_vit), images, config)


def test_scores_of_another_model_are_refused(tiny_vit, images):
    from tests.conftest import make_vit

    with pytest.raises(SnapViTError, match="do not fit"):
        run_search(tiny_vit, magnitude_scores(make_vit(depth=2)), images, SMALL)


def test_cancel_returns_the_best_so_far(tiny_vit, images):
    done = []
    with pytest.raises(CancelledError) as caught:
        run_search(
            tiny_vit,
            magnitude_scores(tiny_vit),
            images,
            SMALL,
            progress=lambda k, n, best: done.append(best),
            cancel=lambda: len(done) >= 5,
        )
    partial = caught.value.partial_result
    assert partial.evaluations == 5 and partial.best_fitness == min(partial.fitness_history) == done[-1]
    assert partial.scores.metadata["method"] == "xnes"


def _interrupt_search(model, scores, images, checkpoint) -> None:
    """A SMALL search cancelled mid-way through its second generation, checkpointing to ``checkpoint``."""
    done = []
    with pytest.raises(CancelledError):
        run_search(
            model,
            scores,
            images,
            SMALL,
            progress=lambda *a: done.append(a),
            cancel=lambda: len(done) >= 20,
            checkpoint_path=checkpoint,
        )


def test_resume_from_checkpoint_equals_uninterrupted_run(tiny_vit, images, tmp_path):
    scores = magnitude_scores(tiny_vit)
    straight = run_search(tiny_vit, scores, images, SMALL, checkpoint_path=tmp_path / "a.pt")
    _interrupt_search(tiny_vit, scores, images, tmp_path / "b.pt")
    resumed = run_search(tiny_vit, scores, images, SMALL, checkpoint_path=tmp_path / "b.pt", resume=True)
    assert resumed.fitness_history == straight.fitness_history
    assert torch.equal(resumed.multipliers, straight.multipliers)
    assert torch.equal(resumed.scores.heads, straight.scores.heads)
    with pytest.raises(SnapViTError, match="other settings"):
        run_search(
            tiny_vit,
            scores,
            images,
            SearchConfig(evaluations=31, pca_components=16),
            checkpoint_path=tmp_path / "b.pt",
            resume=True,
        )


# ---------------------------------------------------------------- command line


def test_cli_search_writes_loadable_scores(tmp_path, capsys):
    from snapvit_core.cli import main
    from snapvit_core.engine.backbones import load_backbone
    from snapvit_core.scoring.scores_io import load_scores, save_scores

    base = tmp_path / "base.safetensors"
    save_scores(magnitude_scores(load_backbone("embedded", random_init=True).model), base)
    out = tmp_path / "searched.safetensors"
    argv = [
        "search",
        "--model",
        "embedded",
        "--random-init",
        "--data",
        "procedural",
        "--eval-images",
        "16",
        "--evaluations",
        "12",
        "--population-size",
        "5",
        "--scores",
        str(base),
        "--out",
        str(out),
        "--json",
    ]
    assert main(argv) == 0
    payload = json.loads(capsys.readouterr().out)
    assert payload["evaluations"] == 12 and len(payload["multipliers"]) == 6 + 6 * 6
    assert set(payload) >= {"out", "evaluations", "best_fitness", "seconds", "cka_seconds", "multipliers"}
    loaded = load_scores(out)
    assert loaded.metadata["method"] == "xnes" and loaded.metadata["base_method"] == "magnitude"
    assert main(argv[:-5] + ["--pairs", "0.3,1.5", "--scores", str(base), "--out", str(out)]) == 2
    assert "head sparsity" in capsys.readouterr().err


def test_checkpoint_from_before_the_precision_setting_still_resumes(tiny_vit, images, tmp_path):
    scores = magnitude_scores(tiny_vit)
    _interrupt_search(tiny_vit, scores, images, tmp_path / "old.pt")
    state = torch.load(tmp_path / "old.pt", weights_only=True)
    del state["config"]["precision"]  # as written before SearchConfig.precision existed (it ran "auto")
    torch.save(state, tmp_path / "old.pt")
    resumed = run_search(tiny_vit, scores, images, SMALL, checkpoint_path=tmp_path / "old.pt", resume=True)
    assert resumed.fitness_history == run_search(tiny_vit, scores, images, SMALL).fitness_history
    with pytest.raises(SnapViTError, match="other settings"):  # a different precision is another setting
        torch.save(state, tmp_path / "old.pt")
        run_search(
            tiny_vit,
            scores,
            images,
            replace(SMALL, precision="fp32"),
            checkpoint_path=tmp_path / "old.pt",
            resume=True,
        )
