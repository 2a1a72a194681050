"""Scoring throughput, side by side with the scoring code of main before issue 17 (REFERENCE_COMMIT).

For each backbone (the embedded one, a random-init ViT-S/16 at 224 px) and gradient method, runs
``compute_scores`` of today's code and of the reference commit's ``scoring.py`` in interleaved rounds on
the same images and settings (published 2 + 10 crops), and prints crops/s of each and the median of
the per-round speed ratios (new / old). Data-free methods report milliseconds (today's code only).

    python benchmarks/bench_scoring.py --images 256 --rounds 3 --threads 2      # the issue's figures
    python benchmarks/bench_scoring.py --quick                                  # smoke run
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from reference_code import REFERENCE_COMMIT, load_reference  # noqa: E402

from snapvit_core.backbones import Backbone, load_backbone  # noqa: E402
from snapvit_core.data import procedural_images  # noqa: E402
from snapvit_core.errors import SnapViTError  # noqa: E402
from snapvit_core.scoring import DATA_FREE_METHODS, GRADIENT_METHODS, ScoringConfig, compute_scores  # noqa: E402


def load_embedded() -> Backbone:
    """The embedded backbone; its random-init architecture while the asset files are missing."""
    try:
        return load_backbone("embedded")
    except SnapViTError as error:
        print(f"(embedded weights unavailable: {error}; timing the random-init architecture)")
        return load_backbone("embedded", random_init=True)


def timed(function, *args, device: str, **kwargs) -> float:
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    start = time.perf_counter()
    function(*args, **kwargs)
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    return time.perf_counter() - start


def compare(backbone: Backbone, method: str, count: int, rounds: int, device: str, reference) -> tuple:
    """(new crops/s, old crops/s, median per-round ratio), after one warm-up of each on one image."""
    images = procedural_images(count, seed=0)
    classes = int(getattr(backbone.model, "num_classes", 0) or 0)
    labels = [i % max(classes, 1) for i in range(count)]
    new_config = ScoringConfig(method=method, samples=count)
    old_config = reference.ScoringConfig(method=method, samples=count)
    model = backbone.model.to(device)
    args = (backbone.data_config,)
    compute_scores(model, images[:1], *args, new_config, labels[:1], device)
    reference.compute_scores(model, images[:1], *args, old_config, labels[:1], device)
    new_times, old_times = [], []
    for _ in range(rounds):  # interleaved: load changes hit both alike
        old_times.append(
            timed(reference.compute_scores, model, images, *args, old_config, labels, device, device=device)
        )
        new_times.append(timed(compute_scores, model, images, *args, new_config, labels, device, device=device))
    crops = count * new_config.crops_per_image
    ratio = statistics.median(old / new for old, new in zip(old_times, new_times))
    return crops / statistics.median(new_times), crops / statistics.median(old_times), ratio


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=256, help="images per run (default: 256, as in the issue)")
    parser.add_argument("--vit-images", type=int, default=32, help="images per ViT-S/16 run on the CPU (default: 32)")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds (default: 3)")
    parser.add_argument("--threads", type=int, default=2, help="CPU threads (default: 2)")
    parser.add_argument("--methods", default="snapvit", help="gradient methods, comma-separated (default: snapvit)")
    parser.add_argument("--quick", action="store_true", help="4 images, 1 round (smoke run)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.quick:
        args.images, args.vit_images, args.rounds = 4, 1, 1
    reference = load_reference("scoring")
    setups = [
        ("embedded", load_embedded(), args.images),
        (
            "vit_small_patch16_224 (random init)",
            load_backbone("vit_small_patch16_224", random_init=True),
            args.vit_images,
        ),
    ]
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    methods = [m for m in args.methods.split(",") if m in GRADIENT_METHODS]
    for device in devices:
        name = torch.cuda.get_device_name() if device == "cuda" else "CPU"
        print(f"device {device} ({name}), {torch.get_num_threads()} threads; old = scoring.py@{REFERENCE_COMMIT}")
        for label, backbone, count in setups:
            count = args.images if device == "cuda" else count
            size = backbone.data_config["input_size"][-1]
            print(f"  {label} at {size} px: {count} images x 12 crops, {args.rounds} interleaved round(s)")
            for method in methods:
                new, old, ratio = compare(backbone, method, count, args.rounds, device, reference)
                print(f"    {method:<20} new {new:9.1f} crops/s   old {old:9.1f} crops/s   speed-up {ratio:.2f}x")
            for method in DATA_FREE_METHODS:
                seconds = timed(
                    compute_scores,
                    backbone.model,
                    None,
                    backbone.data_config,
                    ScoringConfig(method=method),
                    device=device,
                )
                print(f"    {method:<20} {1e3 * seconds:9.1f} ms (data-free)")
            backbone.model.to("cpu")


if __name__ == "__main__":
    main()
