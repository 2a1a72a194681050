"""Linear probe (``snapvit_core.evaluation.linear_probe``): time per probe on the embedded features, and peak memory.

1. Time: ``linear_probe_top1`` with its defaults (DINOv1 protocol: 100 epochs, batch 256) on the embedded
   backbone's unpruned features as the app's kNN evaluator extracts them (1,257 train x 540 test, 96-dim,
   10 classes), on 1 CPU thread: median and min-max of ``--runs`` probes after one warm-up; then the same on
   random features of that size but ``--synthetic-dim`` wide (default 192). Target: <= 0.3 s per probe.
2. Memory: in a fresh child process, ``--memory-rows`` x ``--memory-dim`` random float32 features (default
   100,000 x 768, 307 MB) with ``--memory-classes`` classes; the peak resident memory (``VmHWM``, reset via
   ``/proc/self/clear_refs`` once the features exist) of one probe (train, then score the same rows as the
   test set) minus the resident memory before it. Target: features + the probe's extra <= 2x the features'
   size. (tracemalloc does not see torch's allocations, so the kernel's count of resident pages is used.)

``--busy N`` starts N ``python -c "while True: pass"`` processes for the whole run (killed at the end) to
time the probe on a loaded machine. The figures are printed, nothing is written
(``scripts/validate_linear_probe.py`` copies them into results/linear.md).

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_linear_probe.py [--runs 15] [--busy 2]
"""

from __future__ import annotations

import argparse
import os
import platform
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

TIME_TARGET_S = 0.3
MEMORY_TARGET = 2.0  # x the features' size, features included


def verdict(met: bool) -> str:
    return "target met" if met else "not met"


def embedded_features():
    """(train, train labels, test, test labels): the unpruned embedded backbone's kNN features, as the app."""
    from snapvit_core.data import load_knn_splits
    from snapvit_core.engine.backbones import load_backbone
    from snapvit_core.evaluation.features import KnnEvaluator

    backbone = load_backbone("embedded", False, "cpu")
    splits = load_knn_splits("embedded", backbone.data_config, limit_per_split=2000)
    evaluator = KnnEvaluator.from_splits(splits, device="cpu")
    train, test = evaluator.features(backbone.model)
    return train, evaluator.train_labels, test, evaluator.test_labels


def time_probe(runs: int, synthetic_dim: int | None = None) -> None:
    """Time probes on the embedded features, or on random features of their size with ``synthetic_dim``."""
    import torch

    from snapvit_core.evaluation.linear_probe import LinearProbe, linear_probe_top1

    torch.set_num_threads(1)
    train, train_labels, test, test_labels = embedded_features()
    kind = "embedded features"
    if synthetic_dim is not None:
        generator = torch.Generator().manual_seed(0)
        train = torch.randn(train.shape[0], synthetic_dim, generator=generator)
        test = torch.randn(test.shape[0], synthetic_dim, generator=generator)
        kind = "random features (top-1 at chance)"
    probe = LinearProbe()
    print(
        f"{kind}: {train.shape[0]:,} train x {test.shape[0]:,} test, {train.shape[1]}-dim {train.dtype}, "
        f"{int(train_labels.max()) + 1} classes; probe: {probe.epochs} epochs, batch {probe.batch_size}, "
        f"lr {probe.base_lr:g}; torch threads {torch.get_num_threads()}"
    )
    top1 = linear_probe_top1(train, train_labels, test, test_labels)  # warm-up
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        value = linear_probe_top1(train, train_labels, test, test_labels)
        times.append(time.perf_counter() - start)
        assert value == top1, "same seed, different value"
    median = statistics.median(times)
    print(
        f"  time per probe: median {1000 * median:.0f} ms (min-max {1000 * min(times):.0f}-{1000 * max(times):.0f} ms, "
        f"{runs} runs), top-1 {100 * top1:.2f} %, target <= {1000 * TIME_TARGET_S:.0f} ms: "
        f"{verdict(median <= TIME_TARGET_S)}"
    )


def status_kb(field: str) -> int:
    return int(re.search(rf"^{field}:\s+(\d+) kB", Path("/proc/self/status").read_text(), re.M).group(1))


def memory_child(rows: int, dim: int, classes: int, epochs: int) -> None:
    """Runs in a fresh process: prints the features' size and the probe's peak extra resident memory."""
    import torch

    from snapvit_core.evaluation.linear_probe import LinearProbe, linear_probe_predict

    torch.set_num_threads(1)
    generator = torch.Generator().manual_seed(0)
    features = torch.randn(rows, dim, generator=generator)  # written: every page resident
    labels = torch.randint(0, classes, (rows,), generator=generator)
    LinearProbe(epochs=1).fit(features[:512], labels[:512] % 2)  # load the kernels before the baseline
    size = features.numel() * features.element_size()
    baseline = status_kb("VmRSS")
    Path("/proc/self/clear_refs").write_text("5")  # peak := current
    start = time.perf_counter()
    head = LinearProbe(epochs=epochs).fit(features, labels, num_classes=classes)
    top1 = float((linear_probe_predict(head, features) == labels).float().mean())
    seconds = time.perf_counter() - start
    peak = status_kb("VmHWM")
    print(f"MEMORY {size} {1024 * baseline} {1024 * (peak - baseline)} {seconds:.2f} {top1:.4f}")


def measure_memory(rows: int, dim: int, classes: int, epochs: int) -> None:
    command = [sys.executable, __file__, "--memory-child", str(rows), str(dim), str(classes), str(epochs)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(command, capture_output=True, text=True, env=env, check=True, timeout=1800)
    line = next(line for line in done.stdout.splitlines() if line.startswith("MEMORY "))
    size, baseline, extra, seconds, top1 = line.split()[1:]
    size, baseline, extra = int(size), int(baseline), int(extra)
    total = (size + extra) / size
    mb = 1 / 1e6
    print(
        f"memory, {rows:,} x {dim} float32 random features ({size * mb:.0f} MB), {classes} classes, {epochs} "
        f"epoch(s) + scoring all rows ({float(seconds):.1f} s): peak extra resident {extra * mb:.1f} MB "
        f"({extra / size:.3f}x the features; process baseline with features {baseline * mb:.0f} MB); "
        f"features + probe = {total:.3f}x the features, target <= {MEMORY_TARGET:.0f}x: "
        f"{verdict(total <= MEMORY_TARGET)}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=15)
    parser.add_argument(
        "--synthetic-dim", type=int, default=192, help="also time random features of this width (0: skip)"
    )
    parser.add_argument("--busy", type=int, default=0, help="busy-loop processes to run beside the benchmark")
    parser.add_argument("--memory-rows", type=int, default=100_000)
    parser.add_argument("--memory-dim", type=int, default=768)
    parser.add_argument("--memory-classes", type=int, default=1000)
    parser.add_argument("--memory-epochs", type=int, default=1, help="memory does not grow with epochs")
    parser.add_argument("--skip-memory", action="store_true")
    parser.add_argument("--memory-child", nargs=4, type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.memory_child:
        memory_child(*args.memory_child)
        return
    busy = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(args.busy)]
    try:
        load = os.getloadavg()[0]
        print(
            f"bench_linear_probe: {platform.machine()}, {os.cpu_count()} CPU cores, busy processes {args.busy}, "
            f"load average at the start {load:.2f}, OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')}"
        )
        time_probe(args.runs)
        if args.synthetic_dim:
            time_probe(args.runs, args.synthetic_dim)
        if not args.skip_memory:
            measure_memory(args.memory_rows, args.memory_dim, args.memory_classes, args.memory_epochs)
        print(f"load average at the end: {os.getloadavg()[0]:.2f} (1 min)")
    finally:
        for process in busy:
            process.kill()
        for process in busy:
            process.wait()


if __name__ == "__main__":
    main()
