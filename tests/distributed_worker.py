"""Worker for tests/test_distributed.py: scores, kNN and a search of tiny models, under torchrun or alone.

    torchrun --nproc_per_node 2 tests/distributed_worker.py OUT.pt    (2 gloo processes)
    python tests/distributed_worker.py OUT.pt                         (one process)

Rank 0 (or the single process) saves {scores, per-image scores, features, top-1, search result} to OUT.pt.
Kept tiny (3-block 48-wide ViT, 5 images, 12-evaluation search) so the two launches take seconds.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from conftest import make_vit  # noqa: E402  (also puts the repository root on sys.path)

from snapvit_core.data import procedural_images  # noqa: E402
from snapvit_core.engine.backbones import Backbone  # noqa: E402
from snapvit_core.evaluation.features import KnnEvaluator  # noqa: E402
from snapvit_core.explorer import Explorer  # noqa: E402
from snapvit_core.runtime import distributed  # noqa: E402
from snapvit_core.scoring.compute import ScoringConfig, compute_scores  # noqa: E402
from snapvit_core.scoring.data_free import magnitude_scores  # noqa: E402
from snapvit_core.search.evolution import SearchConfig, run_search  # noqa: E402

DATA_CONFIG = {"input_size": (3, 32, 32), "interpolation": "bicubic", "mean": (0.5,) * 3, "std": (0.25,) * 3}


def run() -> dict:
    torch.set_num_threads(1)
    distributed.init_from_env("cpu")
    model = make_vit()
    images = procedural_images(5, seed=1, size=48)  # odd count: uneven shards
    fast = {"samples": 5, "batch_size": 2, "local_crops": 4}
    scores = compute_scores(model, images, DATA_CONFIG, ScoringConfig(**fast))
    per_image = compute_scores(model, images, DATA_CONFIG, ScoringConfig(**fast, squared_gradients="per-image"))
    generator = torch.Generator().manual_seed(0)
    train, test = torch.randn(13, 3, 32, 32, generator=generator), torch.randn(7, 3, 32, 32, generator=generator)
    evaluator = KnnEvaluator(train, torch.arange(13) % 3, test, torch.arange(7) % 3, k=5, batch_size=4)
    features = evaluator.features(model)
    explorer = Explorer(Backbone(model, "tiny"), magnitude_scores(model))
    explorer.attach_knn(evaluator)
    both = explorer.evaluate(0.3, 0.2, ("knn", "linear"))  # one feature pass, both accuracy metrics
    search_images = torch.randn(12, 3, 32, 32, generator=generator)
    config = SearchConfig(evaluations=12, covariance="identity", pca_components=8, population_size=5)
    result = run_search(model, magnitude_scores(model), search_images, config)
    return {
        "world_size": distributed.world_size(),
        "mlp": scores.mlp,
        "heads": scores.heads,
        "per_image_mlp": per_image.mlp,
        "per_image_heads": per_image.heads,
        "train_features": features[0],
        "test_features": features[1],
        "top1": evaluator.top1(model),
        "explorer_knn": both.knn_top1,
        "explorer_linear": both.linear_top1,
        "multipliers": result.multipliers,
        "best_fitness": result.best_fitness,
        "fitness": result.fitness_history,
    }


if __name__ == "__main__":
    try:
        outcome = run()
        if distributed.is_main():
            torch.save(outcome, sys.argv[1])
        distributed.barrier()
    finally:
        # Leave the group explicitly: a gloo group torn down at interpreter exit can abort a rank
        # ("terminate called without an active exception", seen once in CI).
        distributed.shutdown()
