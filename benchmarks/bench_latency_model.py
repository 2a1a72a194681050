"""Latency model validation: predicted vs directly measured latency, and its stability under load.

For each backbone (default: the embedded one and random-init ViT-S/16 and ViT-B/16, on CPU):

1. calibrate the latency model (fresh, no cache) on a quiet machine;
2. at the 7 published (MLP, head) pairs, measure the pruned model directly (``--repeats`` rounds at
   batch 1 and batch N, median) and compare with the prediction: median absolute error in %
   (target <= 10 %);
3. start ``--busy`` processes (``python -c "while True: pass"``), calibrate again, stop them, and
   compare the predicted speed-ups with the quiet ones (target: within 10 %).

Writes ``results/latency_model.md``. Run it on an otherwise quiet machine:

    .venv/bin/python benchmarks/bench_latency_model.py
    .venv/bin/python benchmarks/bench_latency_model.py --tiny      # smoke run: seconds, figures meaningless
"""

from __future__ import annotations

import argparse
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from snapvit_core.engine.backbones import load_backbone  # noqa: E402
from snapvit_core.evaluation.metrics import paired_rounds  # noqa: E402
from snapvit_core.explorer import Explorer, data_free_scores  # noqa: E402
from snapvit_core.files.atomic import write_text_atomic  # noqa: E402
from snapvit_core.latency.calibration import calibrate_latency_model  # noqa: E402
from snapvit_core.presets import PUBLISHED_SPARSITY_PAIRS  # noqa: E402
from snapvit_core.scoring.scores_io import load_scores  # noqa: E402

DEFAULT_MODELS = ("embedded", "vit_small_patch16_224", "vit_base_patch16_224")
SHIPPED = {"embedded": ROOT / "scores" / "embedded.xnes.safetensors"}


def start_busy(count: int) -> list[subprocess.Popen]:
    return [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(count)]


def stop_busy(processes: list[subprocess.Popen]) -> None:
    for process in processes:
        process.terminate()
    for process in processes:
        try:
            process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def measured_ms(explorer: Explorer, pair: tuple[float, float], batch: int, repeats: int) -> tuple[float, float]:
    """(fastest, median) of ``repeats`` direct forwards of the pruned model at ``batch`` (after 2 warm-ups)."""
    model, _ = explorer.pruned_model(*pair)
    rounds = paired_rounds([model], explorer.backbone.image_size, str(explorer.device), repeats=repeats, batch=batch)
    return 1e3 * min(rounds[0]), 1e3 * statistics.median(rounds[0])


def bench_model(model_id: str, args: argparse.Namespace, pairs: list[tuple[float, float]]) -> dict:
    random_init = model_id != "embedded"
    backbone = load_backbone(model_id, random_init)
    scores = load_scores(SHIPPED[model_id]) if model_id in SHIPPED else data_free_scores("magnitude", backbone.model)
    explorer = Explorer(backbone, scores)
    batches = (1, args.batch)
    calibration = {"budget_s": args.budget_s, "min_rounds": args.min_rounds}

    start = time.perf_counter()
    quiet = calibrate_latency_model(
        backbone.model, backbone.image_size, "cpu", batches, backbone_id=model_id, **calibration
    )
    quiet_s = time.perf_counter() - start
    rows = []
    for pair in pairs:
        plan = explorer.plan_for(*pair)
        row = {"pair": pair}
        for batch in batches:
            predicted = quiet.predict_plan(plan, batch)
            fastest, direct = measured_ms(explorer, pair, batch, args.repeats)
            row[batch] = (
                predicted.ms,
                direct,
                100.0 * abs(predicted.ms - direct) / direct,  # vs the median forward
                predicted.speedup,
                100.0 * abs(predicted.ms - fastest) / fastest,  # vs the fastest (the model's own estimator)
            )
        rows.append(row)
        print(
            f"  {model_id} {pair[0]:.2f}/{pair[1]:.2f}: "
            + "  ".join(
                f"b{b} predicted {row[b][0]:8.2f} ms measured {row[b][1]:8.2f} ms ({row[b][2]:4.1f} %)" for b in batches
            ),
            flush=True,
        )
    busy = start_busy(args.busy)
    try:
        time.sleep(0.5)  # let the busy processes take their cores
        start = time.perf_counter()
        loaded = calibrate_latency_model(
            backbone.model, backbone.image_size, "cpu", batches, backbone_id=model_id, **calibration
        )
        busy_s = time.perf_counter() - start
    finally:
        stop_busy(busy)
    for row in rows:
        plan = explorer.plan_for(*row["pair"])
        row["busy"] = {b: loaded.predict_plan(plan, b).speedup for b in batches}
    errors = {b: statistics.median(row[b][2] for row in rows) for b in batches}
    errors_fastest = {b: statistics.median(row[b][4] for row in rows) for b in batches}
    drift = {b: max(100.0 * abs(row["busy"][b] / row[b][3] - 1.0) for row in rows) for b in batches}
    return {
        "model": model_id + (" (random init)" if random_init else ""),
        "rows": rows,
        "errors": errors,
        "errors_fastest": errors_fastest,
        "drift": drift,
        "quiet_s": quiet_s,
        "busy_s": busy_s,
        "batches": batches,
    }


def report(results: list[dict], args: argparse.Namespace) -> str:
    batch = args.batch
    lines = [
        "# Latency model validation",
        "",
        f"`python benchmarks/bench_latency_model.py {' '.join(sys.argv[1:])}`".replace(" `", "`"),
        "",
        f"CPU: {platform.processor() or platform.machine()}, torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads; direct measurement: {args.repeats} forwards per configuration "
        "(median and fastest; the latency model's estimate is the fastest of its calibration rounds); "
        f'busy: {args.busy} `python -c "while True: pass"` processes during the second calibration.',
        "",
        "| backbone | batch | median abs. error vs median forward (target <= 10 %) | ... vs fastest forward | "
        "largest speed-up change busy vs quiet (target <= 10 %) | calibration quiet / busy (s) |",
        "|---|---|---|---|---|---|",
    ]
    for result in results:
        for b in result["batches"]:
            lines.append(
                f"| {result['model']} | {b} | {result['errors'][b]:.1f} % | {result['errors_fastest'][b]:.1f} % | "
                f"{result['drift'][b]:.1f} % | "
                f"{result['quiet_s']:.1f} / {result['busy_s']:.1f} |"
            )
    lines += ["", "Per configuration (predicted / measured ms; predicted speed-up quiet -> busy):", ""]
    lines.append(f"| backbone | MLP/head | batch 1 ms | batch {batch} ms | speed-up b1 | speed-up b{batch} |")
    lines.append("|---|---|---|---|---|---|")
    for result in results:
        for row in result["rows"]:
            m, h = row["pair"]
            lines.append(
                f"| {result['model']} | {m:.2f}/{h:.2f} | {row[1][0]:.2f} / {row[1][1]:.2f} | "
                f"{row[batch][0]:.1f} / {row[batch][1]:.1f} | {row[1][3]:.2f} -> {row['busy'][1]:.2f} | "
                f"{row[batch][3]:.2f} -> {row['busy'][batch]:.2f} |"
            )
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=list(DEFAULT_MODELS))
    parser.add_argument("--batch", type=int, default=32, help="the batch-N size (default: 32)")
    parser.add_argument("--repeats", type=int, default=15, help="direct forwards per configuration and batch")
    parser.add_argument("--budget-s", type=float, default=1.5, help="calibration timing budget per batch size")
    parser.add_argument("--min-rounds", type=int, default=3, help="calibration rounds at least")
    parser.add_argument("--busy", type=int, default=2, help="busy processes during the loaded calibration")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    parser.add_argument("--out", default=None, help="markdown report (default: results/latency_model.md)")
    parser.add_argument("--tiny", action="store_true", help="smoke run: embedded only, 2 pairs, batch 4, no file")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    pairs = list(PUBLISHED_SPARSITY_PAIRS)
    if args.tiny:
        args.models, args.batch, args.repeats, args.budget_s, args.min_rounds = ["embedded"], 4, 3, 0.05, 2
        pairs = [pairs[0], pairs[-1]]
    results = [bench_model(model_id, args, pairs) for model_id in args.models]
    text = report(results, args)
    print(text)
    out = args.out or (None if args.tiny else str(ROOT / "results" / "latency_model.md"))
    if out:
        write_text_atomic(out, text)
        print(f"wrote {out}")


if __name__ == "__main__":
    main()
