"""Compute the shipped accuracy landscapes of the default experience into snapvit_core/assets/landscapes/.

The embedded backbone on the embedded data, as the app opens it (kNN k=20, uniform vote, CPU, fp32,
the 0.05 slider grid), for the shipped searched and raw SnapViT scores and for magnitude::

    python scripts/make_landscapes.py            # resumable: rerun to continue
    python scripts/make_landscapes.py --check 5  # recompute 5 sampled points per file and compare

The points are computed from the shipped dataset bytes (``assets/embedded_digits.safetensors``), so
their key is the same on every machine. Their values are floats, which another CPU, thread count or
batch size rounds differently in the last bits; ``--check`` (and ``tests/test_shipped_landscapes.py``)
compares them within the tolerances below, measured with ``--check 40 --threads 1 --batch-size 37``
(another summation order than the one that made them; results/cross_cpu.md).
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # run from a checkout, no install

from snapvit_core.data import load_knn_splits  # noqa: E402
from snapvit_core.engine.backbones import load_backbone  # noqa: E402
from snapvit_core.evaluation.features import KnnEvaluator  # noqa: E402
from snapvit_core.explorer import Explorer  # noqa: E402
from snapvit_core.landscape.store import SHIPPED_DIR, Landscape, LandscapePoint, landscape_key  # noqa: E402
from snapvit_core.scoring.data_free import data_free_scores  # noqa: E402
from snapvit_core.scoring.scores_io import load_scores  # noqa: E402

MODEL, DATA, DEVICE = "embedded", "embedded", "cpu"
KNN_LIMIT_PER_SPLIT = 2000  # as the app (ui/session.py)
# A recomputed point may differ from the shipped one by round-off only: kNN top-1 by at most one test
# image (a vote at a near-tie may flip), the mean cosine by 1e-5. Measured: see the module docstring.
KNN_TOLERANCE_IMAGES = 1
COSINE_TOLERANCE = 1e-5
# The linear probe trains 500 SGD steps on the features, so round-off in them can move a few borderline
# test images; measured like the kNN tolerance (results/cross_cpu.md).
LINEAR_TOLERANCE_IMAGES = 3
METRICS = ("knn", "linear", "flops", "params")  # every shipped point carries both accuracy metrics
SOURCES = {
    "searched": lambda backbone: load_scores(ROOT / "scores" / "embedded.xnes.safetensors"),
    "raw": lambda backbone: load_scores(ROOT / "scores" / "embedded.snapvit.safetensors"),
    "magnitude": lambda backbone: data_free_scores("magnitude", backbone.model),
}


def default_explorers(batch_size: int | None = None) -> dict[str, Explorer]:
    """The explorers of the default experience, built as the app builds them (``batch_size``: another one)."""
    backbone = load_backbone(MODEL, False, DEVICE)
    splits = load_knn_splits(DATA, backbone.data_config, limit_per_split=KNN_LIMIT_PER_SPLIT)
    explorers = {}
    for name, make in SOURCES.items():
        explorer = Explorer(backbone, make(backbone), DEVICE)
        explorer.attach_knn(KnnEvaluator.from_splits(splits, device=DEVICE, batch_size=batch_size))
        explorers[name] = explorer
    return explorers


def shipped_landscape(explorer: Explorer) -> Landscape:
    key = landscape_key(explorer, DATA)
    return Landscape(key, SHIPPED_DIR / key.file_name())


def fill(name: str, explorer: Explorer) -> None:
    landscape = shipped_landscape(explorer)
    missing = landscape.missing("linear_top1")
    start = time.perf_counter()
    for done, (mlp, head) in enumerate(missing, 1):
        landscape.add(LandscapePoint.from_result(explorer.evaluate(mlp, head, METRICS)))
        if done % 20 == 0 or done == len(missing):
            landscape.save()
            rate = (time.perf_counter() - start) / done
            print(f"{name}: {len(landscape)}/{landscape.size} ({rate:.2f} s/point)", flush=True)
    landscape.save()
    print(f"{name}: {landscape.path.name} complete ({len(landscape)} points)")


def check(name: str, explorer: Explorer, samples: int, seed: int = 0, report: dict | None = None) -> list[str]:
    """Recompute sampled points; return one line per mismatch beyond the tolerances (``report`` gets the
    largest differences seen: kNN in test images, cosine)."""
    landscape = shipped_landscape(explorer)
    if not landscape.complete or landscape.count("linear_top1") < landscape.size:
        return [f"{name}: {landscape.path.name} has {len(landscape)} of {landscape.size} points (missing or stale)"]
    problems = []
    for mlp, head in random.Random(seed).sample(list(landscape.configurations()), samples):
        stored = landscape.get(mlp, head)
        result = explorer.evaluate(mlp, head, METRICS)
        images = abs(stored.knn_top1 - result.knn_top1) * len(explorer.knn.test_labels)
        linear_images = abs(stored.linear_top1 - result.linear_top1) * len(explorer.knn.test_labels)
        cosine = abs(stored.mean_cosine - result.embedding_cosine)
        if report is not None:
            report["knn_images"] = max(report.get("knn_images", 0.0), images)
            report["cosine"] = max(report.get("cosine", 0.0), cosine)
            report["linear_images"] = max(report.get("linear_images", 0.0), linear_images)
            report["points"] = report.get("points", 0) + 1
        too_far = linear_images > LINEAR_TOLERANCE_IMAGES + 1e-6
        if images > KNN_TOLERANCE_IMAGES + 1e-6 or cosine > COSINE_TOLERANCE or too_far:
            problems.append(
                f"{name} ({mlp}, {head}): shipped {stored.knn_top1}/{stored.mean_cosine}/{stored.linear_top1}, "
                f"computed {result.knn_top1}/{result.embedding_cosine}/{result.linear_top1}"
            )
        if (stored.params, stored.flops) != (result.params, result.flops):
            problems.append(f"{name} ({mlp}, {head}): params/FLOPs differ")
    return problems


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", type=int, default=0, help="compare N sampled points per file instead of filling")
    parser.add_argument("--only", choices=tuple(SOURCES), help="one source only")
    parser.add_argument("--threads", type=int, default=None, help="--check with this many torch threads")
    parser.add_argument("--batch-size", type=int, default=None, help="--check with this embedding batch size")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    explorers = default_explorers(args.batch_size if args.check else None)
    if args.only:
        explorers = {args.only: explorers[args.only]}
    if args.check:
        report: dict = {}
        problems = [line for name, e in explorers.items() for line in check(name, e, args.check, report=report)]
        print("\n".join(problems) or "shipped landscapes match the code")
        print(
            f"{report.get('points', 0)} points on {torch.get_num_threads()} threads, "
            f"batch {args.batch_size or 'auto'}: "
            f"largest kNN difference {report.get('knn_images', 0):.0f} test images, "
            f"largest cosine difference {report.get('cosine', 0):.1e}, "
            f"largest linear-probe difference {report.get('linear_images', 0):.0f} test images"
        )
        return 1 if problems else 0
    for name, explorer in explorers.items():
        fill(name, explorer)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
