"""Compute the shipped accuracy landscapes of the default experience into snapvit_core/assets/landscapes/.

The embedded backbone on the embedded data, as the app opens it (kNN k=20, uniform vote, CPU, fp32,
the 0.05 slider grid), for the shipped searched and raw SnapViT scores and for magnitude::

    python scripts/make_landscapes.py            # resumable: rerun to continue
    python scripts/make_landscapes.py --check 5  # recompute 5 sampled points per file and compare

Values are deterministic for a given torch build and thread count; ``tests/test_shipped_landscapes.py``
recomputes a sample of points and fails when a shipped file no longer matches the code.
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # run from a checkout, no install

from snapvit_core.backbones import load_backbone  # noqa: E402
from snapvit_core.data import load_knn_splits  # noqa: E402
from snapvit_core.data_free import data_free_scores  # noqa: E402
from snapvit_core.evaluation import KnnEvaluator  # noqa: E402
from snapvit_core.explorer import Explorer  # noqa: E402
from snapvit_core.landscape import SHIPPED_DIR, Landscape, LandscapePoint, landscape_key  # noqa: E402
from snapvit_core.scores_io import load_scores  # noqa: E402

MODEL, DATA, DEVICE = "embedded", "embedded", "cpu"
KNN_LIMIT_PER_SPLIT = 2000  # as the app (ui/session.py)
SOURCES = {
    "searched": lambda backbone: load_scores(ROOT / "scores" / "embedded.xnes.safetensors"),
    "raw": lambda backbone: load_scores(ROOT / "scores" / "embedded.snapvit.safetensors"),
    "magnitude": lambda backbone: data_free_scores("magnitude", backbone.model),
}


def default_explorers() -> dict[str, Explorer]:
    """The explorers of the default experience, built as the app builds them."""
    backbone = load_backbone(MODEL, False, DEVICE)
    splits = load_knn_splits(DATA, backbone.data_config, limit_per_split=KNN_LIMIT_PER_SPLIT)
    explorers = {}
    for name, make in SOURCES.items():
        explorer = Explorer(backbone, make(backbone), DEVICE)
        explorer.attach_knn(KnnEvaluator.from_splits(splits, device=DEVICE))
        explorers[name] = explorer
    return explorers


def shipped_landscape(explorer: Explorer) -> Landscape:
    key = landscape_key(explorer, DATA)
    return Landscape(key, SHIPPED_DIR / key.file_name())


def fill(name: str, explorer: Explorer) -> None:
    landscape = shipped_landscape(explorer)
    missing = landscape.missing()
    start = time.perf_counter()
    for done, (mlp, head) in enumerate(missing, 1):
        landscape.add(LandscapePoint.from_result(explorer.evaluate(mlp, head, ("knn", "flops", "params"))))
        if done % 20 == 0 or done == len(missing):
            landscape.save()
            rate = (time.perf_counter() - start) / done
            print(f"{name}: {len(landscape)}/{landscape.size} ({rate:.2f} s/point)", flush=True)
    landscape.save()
    print(f"{name}: {landscape.path.name} complete ({len(landscape)} points)")


def check(name: str, explorer: Explorer, samples: int, seed: int = 0) -> list[str]:
    """Recompute sampled points; return one line per mismatch."""
    landscape = shipped_landscape(explorer)
    if not landscape.complete:
        return [f"{name}: {landscape.path.name} has {len(landscape)} of {landscape.size} points (missing or stale)"]
    problems = []
    for mlp, head in random.Random(seed).sample(list(landscape.configurations()), samples):
        stored = landscape.get(mlp, head)
        result = explorer.evaluate(mlp, head, ("knn", "flops", "params"))
        if stored.knn_top1 != result.knn_top1 or abs(stored.mean_cosine - result.embedding_cosine) > 1e-6:
            problems.append(
                f"{name} ({mlp}, {head}): shipped {stored.knn_top1}/{stored.mean_cosine}, "
                f"computed {result.knn_top1}/{result.embedding_cosine}"
            )
        if (stored.params, stored.flops) != (result.params, result.flops):
            problems.append(f"{name} ({mlp}, {head}): params/FLOPs differ")
    return problems


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", type=int, default=0, help="compare N sampled points per file instead of filling")
    parser.add_argument("--only", choices=tuple(SOURCES), help="one source only")
    args = parser.parse_args()
    explorers = default_explorers()
    if args.only:
        explorers = {args.only: explorers[args.only]}
    if args.check:
        problems = [line for name, e in explorers.items() for line in check(name, e, args.check)]
        print("\n".join(problems) or "shipped landscapes match the code")
        return 1 if problems else 0
    for name, explorer in explorers.items():
        fill(name, explorer)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
