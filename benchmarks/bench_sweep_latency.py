"""How repeatable the Compare page's speed-ups are: the sweep's latency model calibrated several times.

The Compare sweep takes latency and speed-up from the latency model (``snapvit_core.landscape.sweep``), so its
repeatability is that of the calibration. This recalibrates the model ``--runs`` times (fresh, no
cache) and prints each published configuration's predicted speed-up per run and its spread
(max - min) across runs. A speed-up that changes from run to run by more than the pruning changes it
is noise; this is the figure to watch when touching the latency estimator.

    .venv/bin/python benchmarks/bench_sweep_latency.py [--model embedded] [--scores FILE] [--runs 3] [--batch 1]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from snapvit_core.engine.backbones import load_backbone  # noqa: E402
from snapvit_core.explorer import Explorer, data_free_scores  # noqa: E402
from snapvit_core.landscape.sweep import sweep  # noqa: E402
from snapvit_core.presets import PUBLISHED_SPARSITY_PAIRS  # noqa: E402
from snapvit_core.scoring.scores_io import load_scores  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="embedded")
    parser.add_argument("--random-init", action="store_true")
    parser.add_argument("--scores", default=None, help="scores file (default: magnitude, data-free)")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--batch", type=int, default=1, help="batch of the predicted latency (1 or 32)")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    backbone = load_backbone(args.model, args.random_init)
    scores = load_scores(args.scores) if args.scores else data_free_scores("magnitude", backbone.model)
    pairs = list(PUBLISHED_SPARSITY_PAIRS)  # starts at the unpruned (0, 0)
    print(f"model {backbone.model_id}, {len(pairs)} configurations, batch {args.batch}, {args.threads} threads")
    print("configuration      " + "  ".join(f"{m:.2f}/{h:.2f}" for m, h in pairs))
    runs = []
    for run in range(args.runs):
        explorer = Explorer(backbone, scores)  # no kNN data: the sweep only predicts costs
        with tempfile.TemporaryDirectory() as cache:
            start = time.perf_counter()
            explorer.ensure_latency_model(cache_dir=cache, batches=tuple(sorted({1, 32, args.batch})))
            seconds = time.perf_counter() - start
            speedups = sweep({"scores": explorer}, pairs, batch=args.batch)["speed-up (x)"].tolist()
        runs.append(speedups)
        print(f"run {run} (calibrated in {seconds:4.1f} s) " + "  ".join(f"{v:9.2f}" for v in speedups))
    spread = [max(column) - min(column) for column in zip(*runs)]
    print("spread (max-min)           " + "  ".join(f"{v:9.2f}" for v in spread))
    print(f"largest spread: {max(spread):.2f}")


if __name__ == "__main__":
    main()
