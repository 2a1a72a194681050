"""Scoring throughput: crops per second of every scoring method, on the embedded backbone and a ViT-S/16.

Prints, per backbone and device, the median wall time of ``compute_scores`` over a few repeats (after one
warm-up run) and, for the gradient methods, crops per second (images x 12 crops / time). Data-free methods
report milliseconds. ViT-S/16 is built with random weights at 224 px (no download).

    .venv/bin/python benchmarks/bench_scoring.py [--quick] [--threads 1]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from snapvit_core.backbones import Backbone, load_backbone  # noqa: E402
from snapvit_core.data import procedural_images  # noqa: E402
from snapvit_core.errors import SnapViTError  # noqa: E402
from snapvit_core.scoring import GRADIENT_METHODS, METHODS, ScoringConfig, compute_scores  # noqa: E402


def load_embedded() -> Backbone:
    """The embedded backbone; its random-init architecture while the asset files are missing."""
    try:
        return load_backbone("embedded")
    except SnapViTError as error:
        print(f"(embedded weights unavailable: {error}; timing the random-init architecture)")
        return load_backbone("embedded", random_init=True)


def time_method(backbone: Backbone, method: str, count: int, repeats: int, device: str) -> list[float]:
    """Wall seconds of ``repeats`` runs of ``compute_scores`` on ``count`` images, after one warm-up run."""
    images = procedural_images(count, seed=0)
    classes = int(getattr(backbone.model, "num_classes", 0) or 0)
    labels = [i % max(classes, 1) for i in range(count)]
    config = ScoringConfig(method=method, samples=count, batch_size=min(count, 16))
    model = backbone.model.to(device)
    times = []
    for run in range(repeats + 1):
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        start = time.perf_counter()
        compute_scores(model, images if run else images[:1], backbone.data_config, config, labels, device)
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        if run:  # run 0 is the warm-up, on one image
            times.append(time.perf_counter() - start)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer images and repeats (about a minute on one thread)")
    parser.add_argument("--threads", type=int, default=1, help="CPU threads (default: 1)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    # (label, backbone, images, repeats); ViT-S is ~100x the embedded model's cost per crop
    setups = [
        ("embedded", load_embedded(), 8, 2 if args.quick else 5),
        ("vit_small_patch16_224 (random init)", load_backbone("vit_small_patch16_224", random_init=True), 2, 1),
    ]
    if not args.quick:
        setups[1] = (setups[1][0], setups[1][1], 8, 3)
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    crops = ScoringConfig().crops_per_image
    for device in devices:
        dtype = "bfloat16 autocast" if device == "cuda" else "float32"
        print(
            f"device {device} ({torch.cuda.get_device_name() if device == 'cuda' else 'CPU'}), {dtype}, "
            f"{torch.get_num_threads()} threads, {crops} crops per image"
        )
        for label, backbone, count, repeats in setups:
            if device == "cuda":
                count, repeats = 32, 3
            size = backbone.data_config["input_size"][-1]
            print(f"  {label} at {size} px: {count} images, median of {repeats} repeat(s) after a warm-up")
            for method in METHODS:
                median = statistics.median(time_method(backbone, method, count, repeats, device))
                if method in GRADIENT_METHODS:
                    print(f"    {method:<20} {count * crops / median:9.1f} crops/s   ({median:.2f} s)")
                else:
                    print(f"    {method:<20} {1e3 * median:9.1f} ms (data-free)")
            backbone.model.to("cpu")


if __name__ == "__main__":
    main()
