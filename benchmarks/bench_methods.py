"""kNN top-1 of every scoring method at the published (MLP, head) pairs on the embedded backbone.

Also compares SnapViT scores computed from procedural (label-free, generated) images with scores
from the real training images: Spearman rank correlation of the scores and kNN at the same pairs.

    .venv/bin/python benchmarks/bench_methods.py [--samples 1000] [--threads 2] [--out results/methods.md]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from snapvit_core.backbones import load_backbone  # noqa: E402
from snapvit_core.data import load_images, load_knn_splits  # noqa: E402
from snapvit_core.evaluation import KnnEvaluator  # noqa: E402
from snapvit_core.explorer import Explorer  # noqa: E402
from snapvit_core.presets import PUBLISHED_SPARSITY_PAIRS  # noqa: E402
from snapvit_core.scores import ImportanceScores  # noqa: E402
from snapvit_core.scoring import METHODS, ScoringConfig, compute_scores  # noqa: E402

PAIRS = PUBLISHED_SPARSITY_PAIRS[1:]  # the six pruned pairs


def knn_row(backbone, evaluator: KnnEvaluator, scores: ImportanceScores) -> list[float]:
    """kNN top-1 (%) at each of PAIRS."""
    explorer = Explorer(backbone, scores)
    explorer.attach_knn(evaluator)
    return [100 * explorer.evaluate(m, h, ("knn",)).knn_top1 for m, h in PAIRS]


def spearman(a: torch.Tensor, b: torch.Tensor) -> float:
    """Spearman rank correlation of two flattened score tensors."""
    from scipy.stats import spearmanr

    return float(spearmanr(a.flatten().numpy(), b.flatten().numpy()).statistic)


def within_block_spearman(a: torch.Tensor, b: torch.Tensor) -> float:
    """Mean over blocks of the rank correlation within each block (what decides the order of units)."""
    return sum(spearman(x, y) for x, y in zip(a, b)) / len(a)


def markdown_table(header: list[str], rows: list[list]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in rows:
        lines.append("| " + " | ".join(f"{v:.2f}" if isinstance(v, float) else str(v) for v in row) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> str:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=1000, help="scoring images per gradient method")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, default=None, help="also write the report (markdown) here")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)

    backbone = load_backbone("embedded")
    splits = load_knn_splits("embedded", backbone.data_config)
    evaluator = KnnEvaluator(splits.train, splits.train_labels, splits.test, splits.test_labels, k=20)
    real = load_images("embedded", "train", limit=args.samples, seed=0)
    procedural = load_images("procedural", limit=args.samples, seed=0)
    rows, timings, all_scores = [], {}, {}
    for method in METHODS:
        config = ScoringConfig(method=method, samples=args.samples)
        images = real if config.needs_images else None
        start = time.perf_counter()
        scores = compute_scores(
            backbone.model,
            images,
            backbone.data_config,
            config,
            labels=real.labels if config.needs_labels else None,
            model_id="embedded",
        )
        timings[method] = time.perf_counter() - start
        all_scores[method] = scores
        rows.append([method, f"{timings[method]:.1f}", *knn_row(backbone, evaluator, scores)])
        print(rows[-1], flush=True)
    start = time.perf_counter()
    from_procedural = compute_scores(
        backbone.model,
        procedural,
        backbone.data_config,
        ScoringConfig(method="snapvit", samples=args.samples),
        model_id="embedded",
    )
    timings["snapvit (procedural)"] = time.perf_counter() - start
    rows.append(
        [
            "snapvit (procedural images)",
            f"{timings['snapvit (procedural)']:.1f}",
            *knn_row(backbone, evaluator, from_procedural),
        ]
    )
    print(rows[-1], flush=True)

    explorer = Explorer(backbone, all_scores["magnitude"])
    explorer.attach_knn(evaluator)
    base = 100 * explorer.evaluate(0.0, 0.0, ("knn",)).knn_top1
    header = ["method", "scoring s", *[f"({m:.2f},{h:.2f})" for m, h in PAIRS]]
    real_snapvit = all_scores["snapvit"]
    correlation = [
        ["MLP neurons, all blocks", spearman(real_snapvit.mlp, from_procedural.mlp)],
        ["MLP neurons, within block (mean)", within_block_spearman(real_snapvit.mlp, from_procedural.mlp)],
        ["heads, all blocks", spearman(real_snapvit.heads, from_procedural.heads)],
        ["heads, within block (mean)", within_block_spearman(real_snapvit.heads, from_procedural.heads)],
    ]
    report = "\n\n".join(
        [
            "# Scoring methods on the embedded backbone",
            f"kNN top-1 (%, k=20, uniform vote) on the embedded test split (540 images; bank 1257). "
            f"Unpruned: {base:.2f} %. Columns: (MLP sparsity, head sparsity). Gradient methods scored "
            f"{args.samples} training images x 12 crops; CPU, float32, {torch.get_num_threads()} threads.",
            markdown_table(header, rows),
            "## SnapViT scores from procedural images vs real images (Spearman rank correlation)",
            markdown_table(["scores", "rho"], correlation),
        ]
    )
    print(report)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(report + "\n")
    return report


if __name__ == "__main__":
    main()
