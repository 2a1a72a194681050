"""How repeatable the Compare page's speed-ups are: the same sweep run several times.

Runs ``app_state.sweep`` on the published sparsity path (from the unpruned model on) ``--runs`` times
with the same scores and prints each configuration's speed-up per run and its spread (max - min)
across runs. A speed-up that changes from run to run by more than the pruning changes it is noise;
this is the figure to watch when touching the latency estimator.

    .venv/bin/python benchmarks/bench_sweep_latency.py [--model embedded] [--scores FILE] [--runs 3]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from snapvit_core.app_state import SWEEP_LATENCY_BUDGET_S, sweep  # noqa: E402
from snapvit_core.backbones import load_backbone  # noqa: E402
from snapvit_core.explorer import Explorer, data_free_scores  # noqa: E402
from snapvit_core.presets import PUBLISHED_SPARSITY_PAIRS  # noqa: E402
from snapvit_core.scores_io import load_scores  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="embedded")
    parser.add_argument("--random-init", action="store_true")
    parser.add_argument("--scores", default=None, help="scores file (default: magnitude, data-free)")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    backbone = load_backbone(args.model, args.random_init)
    scores = load_scores(args.scores) if args.scores else data_free_scores("magnitude", backbone.model)
    explorer = Explorer(backbone, scores)
    pairs = list(PUBLISHED_SPARSITY_PAIRS)  # starts at the unpruned (0, 0)
    print(
        f"model {backbone.model_id}, {len(pairs)} configurations, batch 1, {torch.get_num_threads()} threads, "
        f"timing budget {SWEEP_LATENCY_BUDGET_S} s per configuration"
    )
    print("configuration  " + "  ".join(f"{m:.2f}/{h:.2f}" for m, h in pairs))
    runs = []
    for run in range(args.runs):
        start = time.perf_counter()
        speedups = sweep({"scores": explorer}, pairs)["speed-up (x)"].tolist()
        runs.append(speedups)
        print(f"run {run} ({time.perf_counter() - start:4.1f} s) " + "  ".join(f"{v:9.2f}" for v in speedups))
    spread = [max(column) - min(column) for column in zip(*runs)]
    print("spread (max-min) " + "  ".join(f"{v:9.2f}" for v in spread))
    print(f"largest spread: {max(spread):.2f}")


if __name__ == "__main__":
    main()
