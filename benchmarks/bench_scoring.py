"""Scoring throughput, side by side with the scoring code of main before issue 17 (REFERENCE_COMMIT).

For each backbone (the embedded one, a random-init ViT-S/16 at 224 px) and gradient method, runs
``compute_scores`` of today's code and of the reference commit's ``scoring.py`` in interleaved rounds on
the same images and settings (published 2 + 10 crops), today's at fp32 and, where the device computes
bf16 natively, at ``--precision bf16``; prints crops/s of each and the per-round speed ratios
(old time / new time), median (min-max). Data-free methods report milliseconds (today's code only).

    python benchmarks/bench_scoring.py --images 256 --rounds 3 --threads 2 --out results/scoring_speed.md
    python benchmarks/bench_scoring.py --quick                                  # smoke run
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
from snapvit_core.data import procedural_images  # noqa: E402
from snapvit_core.engine.backbones import Backbone, load_backbone  # noqa: E402
from snapvit_core.engine.precision import native_bf16  # noqa: E402
from snapvit_core.errors import SnapViTError  # noqa: E402
from snapvit_core.files.atomic import write_text_atomic  # noqa: E402
from snapvit_core.scoring.compute import DATA_FREE_METHODS, GRADIENT_METHODS, ScoringConfig, compute_scores  # noqa: E402


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


def compare(backbone: Backbone, method: str, count: int, rounds: int, device: str, reference, precisions) -> dict:
    """Seconds per run of the old code and of today's at each precision, interleaved rounds, after one
    warm-up of each on one image: {name: [seconds per round]}."""
    images = procedural_images(count, seed=0)
    classes = int(getattr(backbone.model, "num_classes", 0) or 0)
    labels = [i % max(classes, 1) for i in range(count)]
    model = backbone.model.to(device)
    args = (backbone.data_config,)
    runs = {"old": (reference.compute_scores, reference.ScoringConfig(method=method, samples=count))}
    for name in precisions:
        runs[f"new {name}"] = (compute_scores, ScoringConfig(method=method, samples=count, precision=name))
    for function, config in runs.values():
        function(model, images[:1], *args, replace(config, samples=1), labels[:1], device)
    times = {name: [] for name in runs}
    for _ in range(rounds):  # interleaved: load changes hit every variant alike
        for name, (function, config) in runs.items():
            times[name].append(timed(function, model, images, *args, config, labels, device, device=device))
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=256, help="images per run (default: 256, as in the issue)")
    parser.add_argument("--vit-images", type=int, default=32, help="images per ViT-S/16 run on the CPU (default: 32)")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds (default: 3)")
    parser.add_argument("--threads", type=int, default=2, help="CPU threads (default: 2)")
    parser.add_argument("--methods", default="snapvit", help="gradient methods, comma-separated (default: snapvit)")
    parser.add_argument("--out", default=None, help="also write the table as Markdown to this file")
    parser.add_argument("--quick", action="store_true", help="4 images, 1 round (smoke run)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.quick:
        args.images, args.vit_images, args.rounds = 4, 1, 1
    reference = load_reference("scoring")
    setups = [
        ("embedded", load_embedded(), args.images),
        (
            "ViT-S/16 (random init)",
            load_backbone("vit_small_patch16_224", random_init=True),
            args.vit_images,
        ),
    ]
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    methods = [m for m in args.methods.split(",") if m in GRADIENT_METHODS]
    rows = []
    for device in devices:
        name = torch.cuda.get_device_name() if device == "cuda" else "CPU"
        precisions = ["fp32"] + (["bf16"] if native_bf16(device) else [])
        print(f"device {device} ({name}), {torch.get_num_threads()} threads; old = scoring.py@{REFERENCE_COMMIT}")
        for label, backbone, count in setups:
            count = args.images if device == "cuda" else count
            size = backbone.data_config["input_size"][-1]
            print(f"  {label} at {size} px: {count} images x 12 crops, {args.rounds} interleaved round(s)")
            for method in methods:
                times = compare(backbone, method, count, args.rounds, device, reference, precisions)
                crops = count * ScoringConfig().crops_per_image
                old = times["old"]
                for variant, seconds in times.items():
                    rate = [crops / t for t in seconds]
                    ratios = [o / t for o, t in zip(old, seconds)]
                    print(
                        f"    {method:<12} {variant:<9} {statistics.median(rate):9.1f} crops/s "
                        f"({min(rate):.1f}-{max(rate):.1f})   speed-up {statistics.median(ratios):.2f}x "
                        f"({min(ratios):.2f}-{max(ratios):.2f})"
                    )
                    rows.append((device, label, count, method, variant, rate, ratios))
            for method in DATA_FREE_METHODS:
                seconds = timed(
                    compute_scores,
                    backbone.model,
                    None,
                    backbone.data_config,
                    ScoringConfig(method=method),
                    device=device,
                )
                print(f"    {method:<22} {1e3 * seconds:9.1f} ms (data-free)")
            backbone.model.to("cpu")
    if args.out:
        write_table(Path(args.out), rows, args)


def write_table(path: Path, rows: list, args: argparse.Namespace) -> None:
    """The figures as a Markdown table (median and min-max over the interleaved rounds), written atomically."""
    lines = [
        "# Scoring throughput: today's code vs scoring.py before issue 17",
        "",
        f"Command: `python benchmarks/bench_scoring.py --images {args.images} --vit-images {args.vit_images} "
        f"--rounds {args.rounds} --threads {args.threads} --out {args.out}`; old = `scoring.py@{REFERENCE_COMMIT}` "
        "in the same process, interleaved rounds, published 2 + 10 crops per image. Median (min-max) over rounds.",
        "",
        "| device | backbone | images | method | code | crops/s | speed-up vs old |",
        "|---|---|---|---|---|---|---|",
    ]
    for device, label, count, method, variant, rate, ratios in rows:
        lines.append(
            f"| {device} | {label} | {count} | {method} | {variant} | {statistics.median(rate):.1f} "
            f"({min(rate):.1f}-{max(rate):.1f}) | {statistics.median(ratios):.2f}x "
            f"({min(ratios):.2f}-{max(ratios):.2f}) |"
        )
    write_text_atomic(path, "\n".join(lines) + "\n")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
