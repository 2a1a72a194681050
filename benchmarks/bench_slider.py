"""How long a slider move takes: re-prune + kNN + FLOPs + params (+ latency) on one backbone.

Prints the median and max wall time per configuration change over a sequence of slider moves, as
the explorer page does them (each move is a configuration not seen before, so no feature-cache
hits), plus the time of a move back to a cached configuration.

    .venv/bin/python benchmarks/bench_slider.py [--model embedded] [--with-latency]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from snapvit_core.backbones import load_backbone  # noqa: E402
from snapvit_core.data import load_knn_splits  # noqa: E402
from snapvit_core.evaluation import KnnEvaluator  # noqa: E402
from snapvit_core.explorer import Explorer, data_free_scores  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="embedded")
    parser.add_argument("--random-init", action="store_true")
    parser.add_argument("--with-latency", action="store_true", help="also measure latency on every move")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    start = time.perf_counter()
    backbone = load_backbone(args.model, args.random_init)
    splits = load_knn_splits("embedded", backbone.data_config)
    explorer = Explorer(backbone, data_free_scores("magnitude", backbone.model))
    explorer.attach_knn(KnnEvaluator(splits.train, splits.train_labels, splits.test, splits.test_labels))
    setup = time.perf_counter() - start
    metrics = ("knn", "flops", "params") + (("latency",) if args.with_latency else ())
    explorer.evaluate(0.0, 0.0, metrics)  # what the page shows on first load

    moves = [(0.05 * i, 0.05 * (i // 2)) for i in range(1, 15)]
    times = []
    for mlp, head in moves:
        t0 = time.perf_counter()
        explorer.evaluate(mlp, head, metrics)
        times.append(time.perf_counter() - t0)
    t0 = time.perf_counter()
    explorer.evaluate(*moves[3], metrics)
    cached = time.perf_counter() - t0

    print(f"model {args.model}: {len(splits.train)} train + {len(splits.test)} test images, "
          f"device cpu, float32, {torch.get_num_threads()} threads, metrics {','.join(metrics)}")
    print(f"set-up (load, scores, reorder, data): {setup:.2f} s")
    print(f"slider move, new configuration: median {1e3 * statistics.median(times):.0f} ms, "
          f"max {1e3 * max(times):.0f} ms over {len(times)} moves")
    print(f"slider move back to a cached configuration: {1e3 * cached:.0f} ms")


if __name__ == "__main__":
    main()
