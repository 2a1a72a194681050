"""How long a slider move takes on the explorer page: everything the page computes per move.

Per move the page re-prunes (slice of the reordered copy), embeds the kNN data (kNN top-1 and
embedding similarity), counts FLOPs and parameters, and times batch-1 latency of the pruned and the
unpruned model (15 forwards each). Prints the median and max wall time per move over a sequence of
moves to configurations not seen before (no feature-cache hits), and a move back to a cached one.

    .venv/bin/python benchmarks/bench_slider.py [--model embedded] [--no-latency]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from snapvit_core.app_state import measure, per_image_similarity  # noqa: E402
from snapvit_core.backbones import load_backbone  # noqa: E402
from snapvit_core.data import load_knn_splits  # noqa: E402
from snapvit_core.evaluation import KnnEvaluator  # noqa: E402
from snapvit_core.explorer import Explorer, data_free_scores  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="embedded")
    parser.add_argument("--random-init", action="store_true")
    parser.add_argument("--no-latency", action="store_true", help="skip the latency probes (as --metrics without it)")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    start = time.perf_counter()
    backbone = load_backbone(args.model, args.random_init)
    splits = load_knn_splits("embedded", backbone.data_config)
    explorer = Explorer(backbone, data_free_scores("magnitude", backbone.model))
    explorer.attach_knn(KnnEvaluator.from_splits(splits))
    setup = time.perf_counter() - start
    latency = not args.no_latency

    def page_move(mlp: float, head: float) -> None:  # what pages/3_explorer.py computes per move
        with explorer.lock:
            measure(explorer, mlp, head, latency=latency, with_unpruned=True)
            explorer.elastic.kept_masks()
            per_image_similarity(explorer)

    page_move(0.0, 0.0)  # what the page shows on first load
    moves = [(round(0.05 * i, 2), round(0.05 * (i // 2), 2)) for i in range(1, 15)]
    times = []
    for mlp, head in moves:
        t0 = time.perf_counter()
        page_move(mlp, head)
        times.append(time.perf_counter() - t0)
    t0 = time.perf_counter()
    page_move(*moves[3])
    cached = time.perf_counter() - t0
    metrics = ("knn", "similarity", "flops", "params") + (("latency pruned+unpruned interleaved",) if latency else ())

    print(
        f"model {args.model}: {len(splits.train)} train + {len(splits.test)} test images, "
        f"device cpu, float32, {torch.get_num_threads()} threads, metrics {','.join(metrics)}"
    )
    print(f"set-up (load, scores, reorder, data): {setup:.2f} s")
    print(
        f"slider move, new configuration: median {1e3 * statistics.median(times):.0f} ms, "
        f"max {1e3 * max(times):.0f} ms over {len(times)} moves"
    )
    print(f"slider move back to a cached configuration: {1e3 * cached:.0f} ms")


if __name__ == "__main__":
    main()
