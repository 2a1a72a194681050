"""All benchmarks in one run; writes results/*.md and figures (Plotly HTML + PNG).

    .venv/bin/python benchmarks/run_all.py --quick     # about 10 minutes on 2 CPU cores
    .venv/bin/python benchmarks/run_all.py             # published budgets (1000 images, 50 evaluations)

Sections (each states device, dtype, threads, batch size and repetitions; timings are medians):

* accuracy.md - kNN top-1 at the published (MLP, head) pairs on the embedded backbone for every
  scoring method, with and without the xNES search, with and without weight correction.
* speed.md - measured speed-up vs FLOPs reduction at batch 1 and a large batch, for the embedded
  backbone and random-init ViT-S/16 and ViT-B/16 architectures (CPU here; CUDA when available).
* stages.md - time of scoring, CKA, search, correction and of a slider move (re-slice) for the
  embedded backbone and a ViT-B/16-shaped model; peak memory (RSS) of scoring and search, each
  measured in a fresh process.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from snapvit_core.data import load_images, load_knn_splits, preprocess  # noqa: E402
from snapvit_core.engine.backbones import load_backbone  # noqa: E402
from snapvit_core.engine.correction import CorrectionConfig  # noqa: E402
from snapvit_core.engine.elastic import ElasticViT  # noqa: E402
from snapvit_core.evaluation.features import KnnEvaluator  # noqa: E402
from snapvit_core.evaluation.metrics import analytic_flops, count_parameters, measure_latency  # noqa: E402
from snapvit_core.explorer import Explorer, data_free_scores  # noqa: E402
from snapvit_core.files.atomic import write_text_atomic  # noqa: E402
from snapvit_core.presets import PUBLISHED_SPARSITY_PAIRS  # noqa: E402
from snapvit_core.scoring.compute import METHODS, ScoringConfig, compute_scores  # noqa: E402
from snapvit_core.search.evolution import SearchConfig, run_search  # noqa: E402
from ui.labels import format_flops  # noqa: E402

RESULTS = ROOT / "results"
SPEED_MODELS = {
    "embedded": ("embedded", False),
    "ViT-S/16": ("vit_small_patch16_224", True),
    "ViT-B/16": ("vit_base_patch16_224", True),
}


def environment() -> str:
    device = torch.cuda.get_device_name(0) if torch.cuda.is_available() else platform.processor() or "CPU"
    return (
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, device: {device}, "
        f"python {platform.python_version()}, date {time.strftime('%Y-%m-%d')}"
    )


def table(header: list[str], rows: list[list]) -> str:
    def cell(value) -> str:
        return f"{value:.2f}" if isinstance(value, float) else str(value)

    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def save_figure(figure, name: str) -> list[str]:
    """Write ``name``.html always and ``name``.png when kaleido can drive a chromium."""
    RESULTS.mkdir(exist_ok=True)
    figure.write_html(RESULTS / f"{name}.html", include_plotlyjs="cdn")
    written = [f"{name}.html"]
    if Path("/usr/bin/chromium").exists():
        os.environ.setdefault("BROWSER_PATH", "/usr/bin/chromium")
    try:
        figure.write_image(RESULTS / f"{name}.png", width=900, height=520, scale=1.5)
        written.append(f"{name}.png")
    except Exception as error:  # noqa: BLE001 - PNG export is optional (needs kaleido + chromium)
        print(f"(no PNG for {name}: {type(error).__name__}: {error})", file=sys.stderr)
    return written


# ------------------------------------------------------------------------------------------------
# Accuracy


def accuracy(quick: bool) -> tuple[str, dict]:
    samples, evaluations, search_size = (128, 50, 256) if quick else (1000, 50, 1000)
    backbone = load_backbone("embedded")
    splits = load_knn_splits("embedded", backbone.data_config)
    evaluator = KnnEvaluator.from_splits(splits)
    real = load_images("embedded", "train", limit=samples, seed=0)
    search_images = preprocess(load_images("embedded", "train", limit=search_size, seed=1).images, backbone.data_config)
    calibration = preprocess(load_images("embedded", "train", limit=samples, seed=2).images, backbone.data_config)
    correction = (CorrectionConfig(samples=samples), calibration)
    searched_methods = ("snapvit", "magnitude") if quick else METHODS

    def knn_row(scores, corrected: bool) -> list[float]:
        explorer = Explorer(backbone, scores)
        explorer.attach_knn(evaluator)
        return [
            100 * explorer.evaluate(m, h, ("knn",), correction=correction if corrected else None).knn_top1
            for m, h in PUBLISHED_SPARSITY_PAIRS
        ]

    unpruned = Explorer(backbone, data_free_scores("magnitude", backbone.model))
    unpruned.attach_knn(evaluator)
    base = 100 * unpruned.evaluate(0.0, 0.0, ("knn",)).knn_top1
    rows, timings, curves = [], {}, {}
    for method in METHODS:
        config = ScoringConfig(method=method, samples=samples)
        start = time.perf_counter()
        scores = compute_scores(
            backbone.model,
            real if config.needs_images else None,
            backbone.data_config,
            config,
            labels=real.labels if config.needs_labels else None,
            model_id="embedded",
        )
        timings[f"scoring {method}"] = time.perf_counter() - start
        if method == "snapvit":
            scores_for_sizes = scores
        variants = [("-", scores)]
        if method in searched_methods:
            start = time.perf_counter()
            config = SearchConfig(evaluations=evaluations, eval_images=search_size)
            result = run_search(backbone.model, scores, search_images, config)
            timings[f"search ({method})"] = time.perf_counter() - start
            timings[f"CKA ({method})"] = result.cka_seconds
            variants.append(("xNES", result.scores))
        for search_label, variant in variants:
            for corrected in (False, True):
                row = knn_row(variant, corrected)
                rows.append([method, search_label, "yes" if corrected else "-", *row])
                curves[f"{method}{' + xNES' if search_label != '-' else ''}{' + corr.' if corrected else ''}"] = row
                print(rows[-1], flush=True)
    header = ["scores", "search", "correction", *[f"({m:.2f}, {h:.2f})" for m, h in PUBLISHED_SPARSITY_PAIRS]]
    sizes = size_rows(backbone, scores_for_sizes)
    text = "\n\n".join(
        [
            "# Accuracy: kNN top-1 (%) on the embedded backbone",
            f"k = 20, uniform vote; bank = 1257 train images, queries = 540 test images; unpruned {base:.2f} %. "
            f"Scoring used {samples} images x 12 crops, the search {evaluations} fitness evaluations on "
            f"{search_size} images (CKA covariance, published pairs), the correction {samples} calibration images "
            "(mean damping 0.01). "
            f"Columns: (MLP sparsity, head sparsity). {environment()}, float32.",
            table(header, rows),
            "Size and measured throughput of the pruned model at each pair (the SnapViT plan; every method "
            "keeps the same number of neurons and heads, so parameters and FLOPs do not depend on the method). "
            "Throughput: median images/s at batch 256 over at least 0.3 s of repeats; CPU, float32.",
            table(["(MLP, head)", "parameters", "FLOPs", "images/s", "speed-up"], sizes),
        ]
    )
    import plotly.graph_objects as go

    figure = go.Figure()
    flops_axis = [f"({m:.2f},{h:.2f})" for m, h in PUBLISHED_SPARSITY_PAIRS]
    from plotly.colors import qualitative

    # One colour per method (the default palette repeats after 10 traces);
    # search dashed, correction dotted, both dash-dot.
    colours = dict(zip(METHODS, qualitative.Dark24))
    for label, values in curves.items():
        if "corr." in label and not label.startswith("snapvit"):
            continue
        method = label.split(" + ")[0]
        dash = {(False, False): "solid", (True, False): "dash", (False, True): "dot", (True, True): "dashdot"}[
            ("xNES" in label, "corr." in label)
        ]
        width = 3 if method == "snapvit" else 2
        line = {"color": colours[method], "dash": dash, "width": width}
        figure.add_trace(go.Scatter(x=flops_axis, y=values, mode="lines+markers", name=label, line=line))
    figure.update_layout(
        title=(
            "Embedded backbone: kNN top-1 at the published sparsity pairs<br><sup>k = 20, 540 test images; "
            f"cpu, float32, {torch.get_num_threads()} threads; deterministic, one evaluation per point</sup>"
        ),
        xaxis_title="(MLP sparsity, head sparsity)",
        yaxis_title="kNN top-1 (%)",
    )
    files = save_figure(figure, "accuracy")
    return text + "\n\nFigure: " + ", ".join(f"[{f}]({f})" for f in files) + "\n", timings


def size_rows(backbone, scores) -> list[list]:
    """Parameters, FLOPs and measured batch-256 throughput of the pruned model at every published pair."""
    elastic = ElasticViT(backbone.model, scores)
    measure_latency(elastic.prune_to(0.0, 0.0), backbone.image_size, 256, min_run_time=0.2)  # warm-up, discarded
    rows, reference = [], None
    for mlp, head in PUBLISHED_SPARSITY_PAIRS:
        model = elastic.prune_to(mlp, head)
        throughput = measure_latency(model, backbone.image_size, 256).throughput_per_s
        reference = reference or throughput
        rows.append(
            [
                f"({mlp:.2f}, {head:.2f})",
                f"{count_parameters(model):,}",
                format_flops(analytic_flops(model)),
                f"{throughput:.0f}",
                f"{throughput / reference:.2f}x",
            ]
        )
    return rows


# ------------------------------------------------------------------------------------------------
# Speed


def speed(quick: bool) -> str:
    device = "cuda" if torch.cuda.is_available() else "cpu"
    large = {"embedded": 256, "ViT-S/16": 16 if quick else 64, "ViT-B/16": 8 if quick else 64}
    min_run_time = 0.3 if quick else 1.0
    rounds = 3  # interleaved rounds over all pairs; the median per pair damps drift on a shared machine
    rows = []
    import statistics

    import plotly.graph_objects as go

    figure = go.Figure()
    for label, (model_id, random_init) in SPEED_MODELS.items():
        backbone = load_backbone(model_id, random_init, device)
        elastic = ElasticViT(backbone.model, data_free_scores("magnitude", backbone.model))
        full_flops = analytic_flops(backbone.model)
        pairs = PUBLISHED_SPARSITY_PAIRS
        if quick and label != "embedded":  # ViT-B/16 takes ~10 s per measurement on 2 cores: every other pair
            pairs = PUBLISHED_SPARSITY_PAIRS[::2]
        models = {pair: elastic.prune_to(*pair) for pair in pairs}  # standalone copies
        # The embedded model runs in milliseconds, so short measurements of it drift most on a shared
        # machine; a second of repeats costs it little (ViT-B/16 needs ~2 s per batch-8 run anyway).
        seconds = 1.0 if label == "embedded" else min_run_time
        # A throwaway first measurement: the first timed model of a process pays one-off costs (kernel
        # selection, allocator growth) that inflated the unpruned reference several-fold.
        measure_latency(models[(0.0, 0.0)], backbone.image_size, large[label], device, min_run_time=0.2)
        timings = {pair: ([], []) for pair in models}  # per-image ms at batch 1 and at the large batch
        for _ in range(rounds):
            for pair, model in models.items():
                # One call times batch 1 (median latency) and the large batch (median throughput).
                report = measure_latency(model, backbone.image_size, large[label], device, min_run_time=seconds)
                timings[pair][0].append(report.median_ms)
                timings[pair][1].append(1e3 / report.throughput_per_s)
        reference = {}
        points = []
        for (mlp, head), model in models.items():
            flops = analytic_flops(model)
            single, many = (statistics.median(values) for values in timings[(mlp, head)])
            for batch, per_image_ms in ((1, single), (large[label], many)):
                reference.setdefault(batch, per_image_ms)
                speedup = reference[batch] / per_image_ms
                rows.append(
                    [
                        label,
                        f"({mlp:.2f}, {head:.2f})",
                        batch,
                        f"{full_flops / flops:.2f}x",
                        f"{speedup:.2f}x",
                        f"{per_image_ms * batch:.2f}",
                        f"{speedup / (full_flops / flops):.0%}",
                    ]
                )
                if batch != 1:
                    points.append((full_flops / flops, speedup))
        del models
        figure.add_trace(
            go.Scatter(
                x=[p[0] for p in points],
                y=[p[1] for p in points],
                mode="lines+markers",
                name=f"{label}, batch {large[label]}",
            )
        )
        print(rows[-1], flush=True)
    figure.add_trace(
        go.Scatter(
            x=[1, 3],
            y=[1, 3],
            mode="lines",
            name="ideal (speed-up = FLOPs reduction)",
            line={"dash": "dot", "color": "grey"},
        )
    )
    figure.update_layout(
        title=(
            f"Measured speed-up vs FLOPs reduction<br><sup>{device}, float32, {torch.get_num_threads()} threads; "
            f"median of {rounds} interleaved rounds of torch.utils.benchmark medians; batch size in the legend</sup>"
        ),
        xaxis_title="FLOPs reduction (unpruned / pruned)",
        yaxis_title="measured speed-up (x)",
    )
    files = save_figure(figure, "speedup")
    header = ["model", "(MLP, head)", "batch", "FLOPs reduction", "speed-up", "median ms / batch", "of ideal"]
    return (
        "\n\n".join(
            [
                "# Speed: measured speed-up vs FLOPs reduction",
                "Magnitude scores (the plan's shape, not its accuracy, matters here); random-init ViT-S/16 and "
                "ViT-B/16 at 224 px; median of torch.utils.benchmark blocked_autorange "
                f"(at least {min_run_time} s of repeats per measurement; 1 s for the embedded backbone), "
                f"median of {rounds} interleaved rounds over "
                "the pairs; 'of ideal' = speed-up / FLOPs reduction; "
                + ("quick mode: ViT-S/16 and ViT-B/16 at every other pair; " if quick else "")
                + f"{device}, float32; {environment()}.",
                table(header, rows),
                "Figure: " + ", ".join(f"[{f}]({f})" for f in files),
            ]
        )
        + "\n"
    )


# ------------------------------------------------------------------------------------------------
# Stages and memory


def peak_rss_mb() -> float:
    """Peak resident memory of this process in MB.

    /proc's VmHWM restarts at exec; ru_maxrss does not (a child started by a large parent reports the
    parent's size), so it is only the fallback where /proc is missing.
    """
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def stage_worker(stage: str, model_id: str, random_init: bool, quick: bool) -> dict:
    """Run one stage in this (fresh) process; report seconds and peak RSS."""
    backbone = load_backbone(model_id, random_init)
    baseline_mb = peak_rss_mb()
    data = "embedded" if model_id == "embedded" else "procedural"
    if quick:  # ViT-B on 2 CPU cores: ~1 crop/s scoring, ~3.5 s per search evaluation of 4 images
        samples = 64 if model_id == "embedded" else {"scoring": 2}.get(stage, 4)
    else:
        samples = 1000
    images = load_images(data, "train", limit=samples, seed=0)
    scores = data_free_scores("magnitude", backbone.model)
    start = time.perf_counter()
    extra = {}
    if stage == "scoring":
        compute_scores(backbone.model, images, backbone.data_config, ScoringConfig(samples=samples))
    elif stage == "search":
        tensor = preprocess(images.images, backbone.data_config)
        evaluations = 20 if quick and model_id != "embedded" else 50
        config = SearchConfig(evaluations=evaluations, eval_images=len(tensor))
        result = run_search(backbone.model, scores, tensor, config)
        extra = {"cka_seconds": result.cka_seconds, "evaluations": evaluations}
    elif stage == "correction":
        from snapvit_core.engine.correction import correct_elastic

        tensor = preprocess(images.images, backbone.data_config)
        correct_elastic(ElasticViT(backbone.model, scores), 0.55, 0.4, tensor, CorrectionConfig(samples=samples))
    elif stage == "reprune":
        elastic = ElasticViT(backbone.model, scores)
        extra["reorder_seconds"] = time.perf_counter() - start
        times = []
        for mlp, head in PUBLISHED_SPARSITY_PAIRS * 3:
            t0 = time.perf_counter()
            elastic.run(elastic.plan_for(mlp, head), lambda model: None)  # the re-slice alone, no copy
            times.append(time.perf_counter() - t0)
        extra["reslice_ms_median"] = 1e3 * sorted(times)[len(times) // 2]
    return {
        "stage": stage,
        "model": model_id,
        "samples": samples,
        "seconds": time.perf_counter() - start,
        "peak_rss_mb": peak_rss_mb(),
        "baseline_rss_mb": baseline_mb,
        "threads": torch.get_num_threads(),
        **extra,
    }


def stages(quick: bool) -> str:
    rows = []
    for model_id, random_init, label in (("embedded", False, "embedded"), ("vit_base_patch16_224", True, "ViT-B/16")):
        for stage in ("scoring", "search", "correction", "reprune"):
            command = [sys.executable, __file__, "--stage", stage, "--model", model_id]
            command += ["--random-init"] if random_init else []
            command += ["--quick"] if quick else []
            result = subprocess.run(command, capture_output=True, text=True, cwd=ROOT, timeout=3600)
            if result.returncode != 0:
                rows.append([label, stage, "failed", result.stderr.strip().splitlines()[-1][:80], "", "", ""])
                continue
            info = json.loads(result.stdout.strip().splitlines()[-1])
            detail = ""
            if stage == "search":
                detail = f"CKA {info['cka_seconds']:.1f} s, {info['evaluations']} evaluations"
            if stage == "reprune":
                detail = (
                    f"reorder once {1e3 * info['reorder_seconds']:.0f} ms, re-slice {info['reslice_ms_median']:.1f} ms"
                )
            rows.append(
                [
                    label,
                    stage,
                    info["samples"],
                    f"{info['seconds']:.2f}",
                    detail,
                    f"{info['peak_rss_mb']:.0f}",
                    f"{info['peak_rss_mb'] - info['baseline_rss_mb']:.0f}",
                ]
            )
            print(rows[-1], flush=True)
    header = ["model", "stage", "images", "seconds", "detail", "peak RSS MB"]
    header.append("RSS above loaded model MB (incl. images)")
    return (
        "\n\n".join(
            [
                "# Stage timings and peak memory",
                "Each stage runs in a fresh process (peak RSS = VmHWM of /proc/self/status). "
                "Scoring = SnapViT gradients with 12 crops per image; search = xNES with CKA covariance; "
                "correction at (0.55, 0.4); "
                "re-prune = a slider move (slice of the once-reordered copy), median over 21 moves. "
                f"CPU, float32; {environment()}.",
                table(header, rows),
            ]
        )
        + "\n"
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--quick", action="store_true", help="fewer images, pairs and repetitions (about 10 minutes on 2 cores)"
    )
    parser.add_argument("--only", choices=("accuracy", "speed", "stages"), action="append", help="run some sections")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--stage", help=argparse.SUPPRESS)
    parser.add_argument("--model", default="embedded", help=argparse.SUPPRESS)
    parser.add_argument("--random-init", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.stage:
        print(json.dumps(stage_worker(args.stage, args.model, args.random_init, args.quick)))
        return
    RESULTS.mkdir(exist_ok=True)
    sections = args.only or ["accuracy", "speed", "stages"]
    for section in sections:
        start = time.perf_counter()
        if section == "accuracy":
            text, timings = accuracy(args.quick)
            text += "\n" + table(["stage", "seconds"], [[k, f"{v:.1f}"] for k, v in timings.items()]) + "\n"
        elif section == "speed":
            text = speed(args.quick)
        else:
            text = stages(args.quick)
        write_text_atomic(RESULTS / f"{section}.md", text)
        print(text)
        print(f"[{section}: {time.perf_counter() - start:.0f} s]", flush=True)


if __name__ == "__main__":
    main()
