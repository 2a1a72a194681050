"""A prepared GPU check: CUDA tests, then the whole pipeline at real scale, in one command (< 8 min on one GPU).

    python benchmarks/gpu_check.py                 # on a CUDA machine; writes results/gpu.md
    python benchmarks/gpu_check.py --dry-run       # tiny sizes on the CPU (run by the test suite)

Stages, each timed, with the peak device memory it reached:
  1. ``pytest -m cuda`` (tests/test_cuda.py: scoring, search, correction, kNN, explorer on CUDA, bf16 and fp32);
  2. scoring 1000 generated images on a random-init ViT-B/16 at 224 px (label-free, published 12 crops, bf16);
  3. a 50-evaluation multiplier search (published pairs) on 1000 images;
  4. weight correction at (0.35, 0.2) on 1000 calibration images;
  5. kNN: features of 10,000 bank + 2,000 query generated images, fp16 bank, chunked top-1;
  6. speed-up vs FLOPs at the published sparsity pairs, batch 1 and batch 256 (bf16);
  7. width alignment (issue 24): speed-up / FLOPs cut at the published pairs with the kept MLP widths
     rounded to N = 1, 8, 16, 32, 64 (bf16, batch 256), the measurement behind ``ALIGN_AUTO["cuda"]``.
Any error stops the run with a traceback and a non-zero exit status (nothing is caught); a skipped CUDA
test counts as a failure on a GPU machine.
"""

from __future__ import annotations

import argparse
import copy
import os
import subprocess
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from snapvit_core.data import procedural_images  # noqa: E402
from snapvit_core.engine.backbones import load_backbone  # noqa: E402
from snapvit_core.engine.correction import (  # noqa: E402
    CorrectionConfig,
    correct_elastic,
)
from snapvit_core.engine.elastic import ALIGN_AUTO, ElasticViT  # noqa: E402
from snapvit_core.evaluation.features import extract_features  # noqa: E402
from snapvit_core.evaluation.knn import knn_top1, prepare_bank  # noqa: E402
from snapvit_core.evaluation.metrics import analytic_flops, measure_latency  # noqa: E402
from snapvit_core.files.atomic import atomic_path  # noqa: E402
from snapvit_core.presets import PUBLISHED_SPARSITY_PAIRS  # noqa: E402
from snapvit_core.scoring.compute import ScoringConfig, compute_scores  # noqa: E402
from snapvit_core.scoring.data_free import magnitude_scores  # noqa: E402
from snapvit_core.search.evolution import SearchConfig, run_search  # noqa: E402

FULL = {"model": "vit_base_patch16_224", "score": 1000, "search": 50, "search_images": 1000, "correct": 1000}
FULL |= {"bank": 10_000, "queries": 2_000, "latency_batch": 256, "population": None, "timing_s": 0.3}
DRY = {"model": "embedded", "score": 4, "search": 6, "search_images": 16, "correct": 16}
DRY |= {"bank": 64, "queries": 16, "latency_batch": 8, "population": 5, "timing_s": 0.01}


class Stages:
    """Runs stages in order, recording wall time and peak device memory of each."""

    def __init__(self, device: torch.device) -> None:
        self.device, self.rows = device, []

    def run(self, name: str, function, *args, **kwargs):
        if self.device.type == "cuda":
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        start = time.perf_counter()
        result = function(*args, **kwargs)
        if self.device.type == "cuda":
            torch.cuda.synchronize()
        seconds = time.perf_counter() - start
        peak = torch.cuda.max_memory_allocated() / 2**30 if self.device.type == "cuda" else float("nan")
        self.rows.append((name, seconds, peak))
        print(f"[gpu_check] {name}: {seconds:.1f} s, peak device memory {peak:.2f} GiB", flush=True)
        return result


def cuda_tests(dry_run: bool) -> str:
    """``pytest -m cuda``; on a GPU every test must pass (a skip is a failure: the check would prove nothing)."""
    if dry_run:
        return "not run (dry run: no CUDA)"
    command = [
        sys.executable,
        "-m",
        "pytest",
        "-m",
        "cuda",
        "-q",
        "-rs",
        "tests/test_cuda.py",
        "-p",
        "no:cacheprovider",
    ]
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True)
    print(done.stdout[-4000:], done.stderr[-2000:], sep="\n")
    summary = done.stdout.strip().splitlines()[-1] if done.stdout.strip() else "no output"
    if done.returncode != 0 or "skipped" in summary:
        raise SystemExit(f"[gpu_check] CUDA tests failed or were skipped: {summary}")
    return summary


def generated_tensors(count: int, size: int, device: torch.device, seed: int) -> torch.Tensor:
    """(count, 3, size, size) normalised-looking inputs made on the device (no host memory, no decode)."""
    generator = torch.Generator(device=device).manual_seed(seed)
    return torch.randn(count, 3, size, size, generator=generator, device=device)


def knn_stage(model, sizes: dict, image_size: int, device: torch.device, dtype) -> float:
    bank_images = generated_tensors(sizes["bank"], image_size, device, 1)
    query_images = generated_tensors(sizes["queries"], image_size, device, 2)
    bank = extract_features(model, bank_images, batch_size=256, device=device, dtype=dtype)
    queries = extract_features(model, query_images, batch_size=256, device=device, dtype=dtype)
    del bank_images, query_images
    labels = torch.arange(sizes["bank"], device=device) % 100
    query_labels = torch.arange(sizes["queries"], device=device) % 100
    assert bank.device.type == device.type, "features left the device"
    prepared = prepare_bank(bank, torch.float16)
    top1 = knn_top1(prepared, labels, queries, query_labels, normalized=True, bank_chunk_size=4096)
    assert 0.0 <= top1 <= 1.0
    return top1


def speed_stage(backbone, scores, sizes: dict, device: torch.device, dtype) -> list[tuple]:
    """(pair, FLOPs ratio, batch-1 speed-up, batch-N speed-up) at every published pair."""
    elastic = ElasticViT(backbone.model, scores, backbone.model_id)
    rows, base = [], None
    for mlp, heads in PUBLISHED_SPARSITY_PAIRS:
        model = elastic.prune_to(mlp, heads)  # a standalone copy: measure_latency casts the model it times
        report = measure_latency(
            model, backbone.image_size, sizes["latency_batch"], device, dtype, min_run_time=sizes["timing_s"]
        )
        flops = analytic_flops(model)
        if base is None:
            base = (flops, report.median_ms, report.throughput_per_s)
        rows.append(((mlp, heads), base[0] / flops, base[1] / report.median_ms, report.throughput_per_s / base[2]))
    return rows


ALIGNS = (1, 8, 16, 32, 64)


def alignment_stage(backbone, scores, sizes: dict, device: torch.device, dtype) -> list[tuple]:
    """(pair, N, FLOPs cut, batch-N speed-up) per published pair and MLP width alignment N."""
    elastic = ElasticViT(backbone.model, scores, backbone.model_id)
    batch, seconds = sizes["latency_batch"], sizes["timing_s"]
    unpruned = elastic.prune_to(0.0, 0.0)
    base_flops = analytic_flops(unpruned)
    measure_latency(copy.deepcopy(unpruned), backbone.image_size, batch, device, dtype, min_run_time=seconds)  # warm
    rows = []
    for pair in PUBLISHED_SPARSITY_PAIRS[1:]:
        # the unpruned reference is timed again beside every pair: drift between pairs does not bias a ratio
        reference = measure_latency(
            copy.deepcopy(unpruned), backbone.image_size, batch, device, dtype, min_run_time=seconds
        ).throughput_per_s
        for n in ALIGNS:
            model = elastic.pruned(elastic.plan_for(*pair, align=n))
            report = measure_latency(model, backbone.image_size, batch, device, dtype, min_run_time=seconds)
            rows.append((pair, n, base_flops / analytic_flops(model), report.throughput_per_s / reference))
    return rows


def write_report(
    path: Path, device_name: str, sizes: dict, stages: Stages, tests: str, top1: float, speed, alignment=()
) -> None:
    lines = [
        "# GPU check",
        "",
        f"Device: {device_name}; torch {torch.__version__}; model {sizes['model']} (random init); "
        f"generated images. Command: `python benchmarks/gpu_check.py`.",
        "",
        f"CUDA tests (`pytest -m cuda`): {tests}",
        "",
        "| stage | seconds | peak device memory (GiB) |",
        "|---|---:|---:|",
        *(
            f"| {name} | {seconds:.1f} | {'n/a' if peak != peak else f'{peak:.2f}'} |"
            for name, seconds, peak in stages.rows
        ),
        "",
        f"kNN top-1 on random labels (a smoke value, ~1 %): {100 * top1:.2f} %",
        "",
        f"| (MLP, head) sparsity | FLOPs ratio | speed-up batch 1 | speed-up batch {sizes['latency_batch']} |",
        "|---|---:|---:|---:|",
        *(f"| {pair} | {ratio:.2f}x | {b1:.2f}x | {bn:.2f}x |" for pair, ratio, b1, bn in speed),
        "",
        f"Width alignment (kept MLP neurons per block rounded to multiples of N; batch {sizes['latency_batch']}; "
        f"the current CUDA default is N = {ALIGN_AUTO['cuda']}):",
        "",
        "| (MLP, head) sparsity | N | FLOPs cut | speed-up | of FLOPs cut |",
        "|---|---:|---:|---:|---:|",
        *(f"| {pair} | {n} | {cut:.2f}x | {up:.2f}x | {100 * up / cut:.0f} % |" for pair, n, cut, up in alignment),
        "",
    ]
    with atomic_path(path) as temp:
        Path(temp).write_text("\n".join(lines))
    print(f"[gpu_check] wrote {path}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dry-run", action="store_true", help="tiny sizes on the CPU (no CUDA needed)")
    parser.add_argument(
        "--out", default=None, help="report path (default: results/gpu.md, dry run: results/gpu_dry_run.md)"
    )
    args = parser.parse_args(argv)
    if not args.dry_run and not torch.cuda.is_available():
        raise SystemExit("[gpu_check] no CUDA device: run on a GPU machine, or use --dry-run")
    sizes = DRY if args.dry_run else FULL
    device = torch.device("cpu" if args.dry_run else "cuda")
    dtype = torch.bfloat16 if device.type == "cuda" else None
    out = Path(args.out) if args.out else ROOT / "results" / ("gpu_dry_run.md" if args.dry_run else "gpu.md")
    device_name = torch.cuda.get_device_name() if device.type == "cuda" else "CPU (dry run)"
    start = time.perf_counter()
    stages = Stages(device)

    tests = stages.run("CUDA tests (pytest -m cuda)", cuda_tests, args.dry_run)
    backbone = load_backbone(sizes["model"], random_init=True, device=device)
    size = backbone.image_size
    images = procedural_images(sizes["score"], seed=0)
    config = ScoringConfig(samples=sizes["score"])
    scores = stages.run(
        f"scoring {sizes['score']} images",
        compute_scores,
        backbone.model,
        images,
        backbone.data_config,
        config,
        device=device,
    )
    search_images = generated_tensors(sizes["search_images"], size, device, 3)
    pairs = {"pairs": ((0.35, 0.2),)} if args.dry_run else {}  # published pairs on the GPU
    search = SearchConfig(
        evaluations=sizes["search"], population_size=sizes["population"], covariance="identity", **pairs
    )
    result = stages.run(
        f"search, {sizes['search']} evaluations", run_search, backbone.model, scores, search_images, search, device
    )
    assert result.evaluations == sizes["search"] and result.best_fitness <= result.initial_fitness
    del search_images
    calibration = generated_tensors(sizes["correct"], size, device, 4)
    elastic = ElasticViT(backbone.model, result.scores, backbone.model_id)
    _, report = stages.run(
        f"correction on {sizes['correct']} images",
        correct_elastic,
        elastic,
        0.35,
        0.2,
        calibration,
        CorrectionConfig(samples=sizes["correct"]),
    )
    del calibration
    top1 = stages.run(
        f"kNN {sizes['bank']} / {sizes['queries']} features", knn_stage, backbone.model, sizes, size, device, dtype
    )
    speed = stages.run(
        "speed-up vs FLOPs",
        speed_stage,
        backbone,
        magnitude_scores(backbone.model),
        sizes,
        device,
        dtype or torch.float32,
    )
    alignment = stages.run(
        "width alignment",
        alignment_stage,
        backbone,
        magnitude_scores(backbone.model),
        sizes,
        device,
        dtype or torch.float32,
    )
    total = time.perf_counter() - start
    stages.rows.append(("total", total, float("nan")))
    write_report(out, device_name, sizes, stages, tests, top1, speed, alignment)
    if not args.dry_run and total > 8 * 60:
        raise SystemExit(f"[gpu_check] took {total:.0f} s, over the 8-minute budget")
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
