"""What the multiplier search costs and buys: speed, and kNN top-1 of base vs searched scores.

Prints fitness evaluations per second, total search time and CKA time for a search with identity
and with CKA covariance, then kNN top-1 at the six published (MLP, head) sparsity pairs for the
base scores alone and for both searched scores.

    .venv/bin/python benchmarks/bench_search.py [--model embedded] [--scores FILE | --method magnitude]
    .venv/bin/python benchmarks/bench_search.py --fitness-only --model vit_small_patch16_224 --random-init

First, seconds per fitness evaluation (the 4 published pairs on ``eval_images`` images) of the reference
commit's ``CandidateFitness`` (``search.py`` at REFERENCE_COMMIT) and of today's at fp32 and, on a CPU
with native bf16, at ``precision="bf16"``, interleaved, with each one's fitness value.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from dataclasses import replace
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


from devtools.reference_code import REFERENCE_COMMIT, load_reference  # noqa: E402
from snapvit_core.data import load_images, load_knn_splits, preprocess  # noqa: E402
from snapvit_core.engine.adapter import ViTAdapter  # noqa: E402
from snapvit_core.engine.backbones import load_backbone  # noqa: E402
from snapvit_core.engine.precision import native_bf16  # noqa: E402
from snapvit_core.evaluation.features import KnnEvaluator  # noqa: E402
from snapvit_core.explorer import Explorer  # noqa: E402
from snapvit_core.files.atomic import write_text_atomic  # noqa: E402
from snapvit_core.scoring.scores import ImportanceScores  # noqa: E402
from snapvit_core.search.evolution import CandidateFitness, SearchConfig, initial_mean, run_search  # noqa: E402

EVALUATED_PAIRS = ((0.15, 0.0), (0.25, 0.1), (0.35, 0.2), (0.45, 0.3), (0.55, 0.4), (0.65, 0.5))


def base_scores(args: argparse.Namespace, backbone) -> ImportanceScores:
    """The scores the search starts from: a file, or a method computed here."""
    if args.scores:
        from snapvit_core.scoring.scores_io import load_scores

        return load_scores(args.scores)
    if args.method == "magnitude":
        from snapvit_core.scoring.data_free import magnitude_scores

        return magnitude_scores(backbone.model)
    from snapvit_core.scoring.compute import ScoringConfig, compute_scores

    images = load_images(args.data, "train", limit=1000, seed=0)
    return compute_scores(backbone.model, images, backbone.data_config, ScoringConfig(method=args.method))


def knn_row(backbone, scores: ImportanceScores, evaluator: KnnEvaluator) -> list[float]:
    explorer = Explorer(backbone, scores)
    explorer.attach_knn(evaluator)
    return [explorer.evaluate(mlp, head, ("knn",)).knn_top1 for mlp, head in EVALUATED_PAIRS]


def compare_fitness(backbone, scores: ImportanceScores, images: torch.Tensor, args: argparse.Namespace) -> list:
    """Seconds per fitness evaluation of the reference commit's code and of today's at each precision,
    interleaved rounds; prints them with the fitness values and returns the table rows."""
    reference = load_reference("search")
    shape = ViTAdapter(backbone.model).shape()
    config = SearchConfig(eval_images=images.shape[0])
    mean = initial_mean(shape.num_blocks, shape.num_heads, config.mean_ramp)
    cpu = torch.device("cpu")
    fitness = {"old": reference.CandidateFitness(backbone.model, scores, images, reference.SearchConfig(), cpu)}
    for name in ["fp32"] + (["bf16"] if native_bf16(cpu) else []):
        fitness[f"new {name}"] = CandidateFitness(backbone.model, scores, images, replace(config, precision=name), cpu)
    values = {name: function(mean) for name, function in fitness.items()}  # also the warm-up
    times = {name: [] for name in fitness}
    for _ in range(args.rounds):
        for name, function in fitness.items():
            start = time.perf_counter()
            function(mean)
            times[name].append(time.perf_counter() - start)
    rows = []
    pairs = len(config.pairs)
    print(f"fitness evaluation ({images.shape[0]} images, {pairs} pairs), old = search.py@{REFERENCE_COMMIT}")
    for name, seconds in times.items():
        ratios = [old / new for old, new in zip(times["old"], seconds)]
        row = (name, seconds, ratios, values[name], values[name] - values["old"])
        print(
            f"  {name:<9} {statistics.median(seconds):.3f} s ({min(seconds):.3f}-{max(seconds):.3f})  speed-up "
            f"{statistics.median(ratios):.2f}x ({min(ratios):.2f}-{max(ratios):.2f})  fitness {row[3]:.6f} "
            f"(old {row[4]:+.1e})"
        )
        rows.append(row)
    return rows


def write_fitness_table(path: Path, rows: list, args: argparse.Namespace, images: int) -> None:
    lines = [
        "# Fitness evaluation: today's code vs search.py before issue 17",
        "",
        f"Command: `python benchmarks/bench_search.py --fitness-only --model {args.model}"
        + (" --random-init" if args.random_init else "")
        + f" --eval-images {args.eval_images} --rounds {args.rounds} --threads {args.threads} --out {args.out}`; "
        f"CPU, {images} images, the 4 search pairs, the initial-mean candidate of {args.method} scores; old = "
        f"`search.py@{REFERENCE_COMMIT}` in the same process, interleaved rounds. Median (min-max) over rounds.",
        "",
        "| code | s / evaluation | speed-up vs old | fitness | minus old |",
        "|---|---|---|---|---|",
    ]
    for name, seconds, ratios, value, difference in rows:
        lines.append(
            f"| {name} | {statistics.median(seconds):.3f} ({min(seconds):.3f}-{max(seconds):.3f}) | "
            f"{statistics.median(ratios):.2f}x ({min(ratios):.2f}-{max(ratios):.2f}) | {value:.6f} | "
            f"{difference:+.1e} |"
        )
    write_text_atomic(path, "\n".join(lines) + "\n")
    print(f"wrote {path}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="embedded")
    parser.add_argument("--random-init", action="store_true")
    parser.add_argument("--data", default="embedded", help="search images and kNN data")
    parser.add_argument("--scores", default=None, help="base scores file (default: computed with --method)")
    parser.add_argument("--method", default="magnitude", help="base scores method when no --scores is given")
    parser.add_argument("--evaluations", type=int, default=50)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=3, help="interleaved fitness rounds (default: 3)")
    parser.add_argument("--fitness-only", action="store_true", help="only the side-by-side fitness timing")
    parser.add_argument("--eval-images", type=int, default=1000, help="fitness images (default: 1000, published)")
    parser.add_argument("--out", default=None, help="with --fitness-only: also write the table as Markdown here")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    backbone = load_backbone(args.model, args.random_init)
    t0 = time.perf_counter()
    scores = base_scores(args, backbone)
    print(f"base scores: {args.scores or args.method} ({time.perf_counter() - t0:.1f} s)")
    config = SearchConfig(evaluations=args.evaluations, eval_images=args.eval_images)
    images = preprocess(load_images(args.data, "train", limit=config.eval_images, seed=0).images, backbone.data_config)
    rows = compare_fitness(backbone, scores, images, args)
    if args.fitness_only:
        if args.out:
            write_fitness_table(Path(args.out), rows, args, images.shape[0])
        return
    splits = load_knn_splits(args.data, backbone.data_config)
    evaluator = KnnEvaluator.from_splits(splits)
    print(
        f"model {args.model}, {images.shape[0]} search images, kNN {splits.describe()}, "
        f"cpu, {torch.get_num_threads()} threads"
    )

    rows = {"base": knn_row(backbone, scores, evaluator)}
    for covariance in ("identity", "cka"):
        result = run_search(
            backbone.model, scores, images, SearchConfig(evaluations=args.evaluations, covariance=covariance)
        )
        search_seconds = result.seconds - result.cka_seconds
        print(
            f"search {covariance:8s}: {result.evaluations} evaluations in {result.seconds:.1f} s "
            f"({result.evaluations / search_seconds:.2f} evaluations/s, CKA {result.cka_seconds:.1f} s); "
            f"fitness {result.initial_fitness:.4f} (initial mean) -> {result.best_fitness:.4f}"
        )
        rows[f"search {covariance}"] = knn_row(backbone, result.scores, evaluator)

    print("kNN top-1 (%)  " + "  ".join(f"{m:.2f}/{h:.2f}" for m, h in EVALUATED_PAIRS))
    for name, values in rows.items():
        print(f"{name:15s}" + "  ".join(f"{100 * v:9.2f}" for v in values))


if __name__ == "__main__":
    main()
