"""kNN top-1 of every scoring method at the published (MLP, head) pairs on the embedded backbone.

Each seeded method (the gradient methods and ``random``) is scored once per ``--seeds`` value (the
seed picks the scoring images and their crops); the table shows the mean over seeds and, with more
than one seed, the range, so a difference between methods can be told from scoring noise. A last
row evaluates the shipped searched scores (``scores/embedded.xnes.safetensors``: SnapViT scores
after the xNES search) for comparison with the scores alone.

Also compares SnapViT scores computed from procedural (label-free, generated) images with scores
from the real training images: Spearman rank correlation of the scores and kNN at the same pairs.

    .venv/bin/python benchmarks/bench_methods.py [--samples 1000] [--seeds 0 1 2] [--threads 2]
        [--out results/methods.md]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from snapvit_core.data import load_images, load_knn_splits  # noqa: E402
from snapvit_core.engine.backbones import load_backbone  # noqa: E402
from snapvit_core.evaluation.features import KnnEvaluator  # noqa: E402
from snapvit_core.explorer import Explorer  # noqa: E402
from snapvit_core.files.atomic import write_text_atomic  # noqa: E402
from snapvit_core.presets import PUBLISHED_SPARSITY_PAIRS  # noqa: E402
from snapvit_core.scoring.compute import METHODS, ScoringConfig, compute_scores  # noqa: E402
from snapvit_core.scoring.scores import ImportanceScores  # noqa: E402
from snapvit_core.scoring.scores_io import load_scores  # noqa: E402

PAIRS = PUBLISHED_SPARSITY_PAIRS[1:]  # the six pruned pairs
SEARCHED_SCORES = ROOT / "scores" / "embedded.xnes.safetensors"
UNSEEDED = ("lamp", "magnitude")  # deterministic: scored once whatever the seeds


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


def summarise(runs: list[float]) -> str:
    """'mean' for one run, 'mean (min-max)' for several."""
    mean = statistics.fmean(runs)
    return f"{mean:.2f}" if len(runs) == 1 else f"{mean:.2f} ({min(runs):.2f}-{max(runs):.2f})"


def summary_row(name: str, seconds: list[float], runs: list[list[float]]) -> list[str]:
    """One table row: method, mean scoring time, then each pair's kNN over the runs (one list per seed)."""
    return [name, f"{statistics.fmean(seconds):.1f}", *(summarise(list(pair)) for pair in zip(*runs))]


def markdown_table(header: list[str], rows: list[list]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in rows:
        lines.append("| " + " | ".join(f"{v:.2f}" if isinstance(v, float) else str(v) for v in row) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> str:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=1000, help="scoring images per gradient method")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0], help="scoring seeds (one run each)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, default=None, help="also write the report (markdown) here")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)

    backbone = load_backbone("embedded")
    splits = load_knn_splits("embedded", backbone.data_config)
    evaluator = KnnEvaluator.from_splits(splits)

    def score(
        method: str, seed: int, source: str = "embedded", squared: str = "accumulated"
    ) -> tuple[ImportanceScores, float]:
        config = ScoringConfig(method=method, samples=args.samples, seed=seed, squared_gradients=squared)
        images = load_images(source, "train", limit=args.samples, seed=seed) if config.needs_images else None
        start = time.perf_counter()
        scores = compute_scores(
            backbone.model,
            images,
            backbone.data_config,
            config,
            labels=images.labels if config.needs_labels else None,
            model_id="embedded",
        )
        return scores, time.perf_counter() - start

    rows, first_seed = [], {}
    for name, method, source, squared in [
        *((m, m, "embedded", "accumulated") for m in METHODS),
        ("snapvit, per-image squared gradients", "snapvit", "embedded", "per-image"),
        ("snapvit (procedural images)", "snapvit", "procedural", "accumulated"),
    ]:
        seconds, runs = [], []
        for seed in args.seeds[:1] if method in UNSEEDED else args.seeds:
            scores, elapsed = score(method, seed, source, squared)
            first_seed.setdefault(name, scores)
            seconds.append(elapsed)
            runs.append(knn_row(backbone, evaluator, scores))
            print(name, f"seed {seed}", f"{elapsed:.1f} s", " ".join(f"{v:.2f}" for v in runs[-1]), flush=True)
        rows.append(summary_row(name, seconds, runs))
    searched = load_scores(SEARCHED_SCORES)
    rows.append(
        summary_row(
            f"snapvit + xNES search (shipped {SEARCHED_SCORES.name})", [0.0], [knn_row(backbone, evaluator, searched)]
        )
    )

    explorer = Explorer(backbone, first_seed["magnitude"])
    explorer.attach_knn(evaluator)
    base = 100 * explorer.evaluate(0.0, 0.0, ("knn",)).knn_top1
    header = ["method", "scoring s", *[f"({m:.2f},{h:.2f})" for m, h in PAIRS]]
    real, procedural = first_seed["snapvit"], first_seed["snapvit (procedural images)"]
    correlation = [
        ["MLP neurons, all blocks", spearman(real.mlp, procedural.mlp)],
        ["MLP neurons, within block (mean)", within_block_spearman(real.mlp, procedural.mlp)],
        ["heads, all blocks", spearman(real.heads, procedural.heads)],
        ["heads, within block (mean)", within_block_spearman(real.heads, procedural.heads)],
    ]
    seeds = ", ".join(map(str, args.seeds))
    spread = " Cells: mean over the seeds (min-max)." if len(args.seeds) > 1 else ""
    report = "\n\n".join(
        [
            "# Scoring methods on the embedded backbone",
            f"kNN top-1 (%, k=20, uniform vote) on the embedded test split (540 images; bank 1257; one "
            f"image = 0.19 points). Unpruned: {base:.2f} %. Columns: (MLP sparsity, head sparsity). "
            f"Gradient methods scored {args.samples} training images x 12 crops; scoring seeds {seeds} "
            f"(lamp and magnitude need no seed).{spread} Squared gradients accumulated over the pass (DESIGN) "
            f"unless the row says per-image (the paper's equation). CPU, float32, {torch.get_num_threads()} threads.",
            markdown_table(header, rows),
            f"## SnapViT scores from procedural vs real images (Spearman rank correlation, seed {args.seeds[0]})",
            markdown_table(["scores", "rho"], correlation),
        ]
    )
    print(report)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        write_text_atomic(args.out, report + "\n")
    return report


if __name__ == "__main__":
    main()
