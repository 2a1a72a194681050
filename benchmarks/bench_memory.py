"""Peak memory (VmHWM) of ``evaluate --data folder:...`` against the number of images on disk.

Generates a labelled folder of 224 px JPEGs (10 classes) once for the largest size, hard-links subsets
for the smaller sizes, and runs ``python -m snapvit_core evaluate ... --metrics knn`` in a fresh process
per size, reading the child's peak resident set size (``ru_maxrss`` = VmHWM). With ``--ref-commit`` the
same runs use that commit's code (extracted with ``git archive``), side by side, so the streaming data
path (flat) can be compared with the old in-memory one (linear).

    python benchmarks/bench_memory.py --sizes 2000,8000,32000                 # the issue's figures
    python benchmarks/bench_memory.py --sizes 40,80 --ref-commit none         # smoke run
    python benchmarks/bench_memory.py --command score --sizes 1000,4000       # scoring every image
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
CLASSES = 10
MEASURE = (
    "import resource, subprocess, sys; code = subprocess.run(sys.argv[1:]).returncode; "
    "print('MAXRSS', resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, code)"
)


def generate(folder: Path, count: int, size: int = 224) -> list[Path]:
    """``count`` JPEGs in ``folder/class_k/`` (smooth random colour fields, so they compress like photos)."""
    rng = np.random.default_rng(0)
    paths = []
    for index in range(count):
        target = folder / f"class_{index % CLASSES}" / f"{index:06d}.jpg"
        target.parent.mkdir(parents=True, exist_ok=True)
        if not target.exists():
            low = (rng.random((4, 4, 3)) * 255).astype(np.uint8)
            Image.fromarray(low).resize((size, size), Image.Resampling.BICUBIC).save(target, quality=90)
        paths.append(target)
    return paths


def subset(pool: list[Path], source: Path, folder: Path, count: int) -> Path:
    """Hard links to the first ``count`` generated images (no extra disk, no regeneration)."""
    for path in pool[:count]:
        target = folder / path.relative_to(source)
        target.parent.mkdir(parents=True, exist_ok=True)
        if not target.exists():
            os.link(path, target)
    return folder


def peak_rss_mb(code_root: Path, data: Path, model: list[str], threads: int, task: str, count: int) -> float:
    """VmHWM (MB) of one ``evaluate`` (or ``score`` of all ``count`` images) run of the code at ``code_root``."""
    command = [sys.executable, "-m", "snapvit_core", task, *model, "--data", f"folder:{data}"]
    if task == "evaluate":
        command += ["--mlp-sparsity", "0.35", "--head-sparsity", "0.2", "--metrics", "knn", "--json"]
    else:
        command += ["--samples", str(count), "--out", str(data / "scores.safetensors"), "--json"]
    env = {**os.environ, "PYTHONPATH": str(code_root), "OMP_NUM_THREADS": str(threads)}
    done = subprocess.run(
        [sys.executable, "-c", MEASURE, *command], cwd=code_root, env=env, capture_output=True, text=True
    )
    line = next((row for row in done.stdout.splitlines() if row.startswith("MAXRSS")), None)
    if line is None or line.split()[2] != "0":
        raise SystemExit(f"evaluate failed:\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}")
    return int(line.split()[1]) / 1024  # Linux reports kB


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="2000,8000,32000", help="images on disk per run (default: 2000,8000,32000)")
    parser.add_argument("--model", default="embedded", help="model id (default: embedded)")
    parser.add_argument("--random-init", action="store_true", help="random-init weights (e.g. vit_tiny_patch16_224)")
    parser.add_argument("--ref-commit", default="6f085b9", help="code to compare with, or 'none' (default: 6f085b9)")
    parser.add_argument("--workdir", default=None, help="where images are generated (default: a temp dir)")
    parser.add_argument("--threads", type=int, default=2, help="OMP threads of each run (default: 2)")
    parser.add_argument(
        "--command", choices=("evaluate", "score"), default="evaluate", help="what runs (score: all images)"
    )
    args = parser.parse_args()
    sizes = sorted(int(s) for s in args.sizes.split(","))
    model = ["--model", args.model] + (["--random-init"] if args.random_init else [])
    with tempfile.TemporaryDirectory() as scratch:
        work = Path(args.workdir or scratch)
        pool = generate(work / "pool", sizes[-1])
        roots = {"this branch": ROOT}
        if args.ref_commit != "none":
            reference = work / f"code_{args.ref_commit}"
            if not reference.exists():
                reference.mkdir(parents=True)
                archive = subprocess.run(["git", "archive", args.ref_commit], cwd=ROOT, capture_output=True, check=True)
                subprocess.run(["tar", "-x", "-C", str(reference)], input=archive.stdout, check=True)
            roots[f"commit {args.ref_commit}"] = reference
        what = "evaluate --metrics knn" if args.command == "evaluate" else "score --samples <images>"
        print(f"{what}, {' '.join(model)}, 224 px JPEGs in {CLASSES} classes, {args.threads} threads")
        print(f"{'images':>8} " + " ".join(f"{name + ' VmHWM (MB)':>28}" for name in roots))
        for count in sizes:
            data = subset(pool, work / "pool", work / f"n{count}", count)
            peaks = [peak_rss_mb(root, data, model, args.threads, args.command, count) for root in roots.values()]
            print(f"{count:>8} " + " ".join(f"{peak:>28.0f}" for peak in peaks), flush=True)


if __name__ == "__main__":
    main()
