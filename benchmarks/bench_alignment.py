"""Width alignment (issue 24): speed-up / FLOPs cut and kNN cost of rounding kept MLP widths to N.

    python benchmarks/bench_alignment.py                 # writes results/alignment.md (~30 min on 2 shared cores)
    python benchmarks/bench_alignment.py --full          # + ViT-B/16 at batch 64, more rounds (a quiet machine)
    python benchmarks/bench_alignment.py --quick         # fewer rounds, ViT-S/16 and the embedded backbone only

For every published (MLP, head) pair and N in ALIGNS, the plan's kept MLP neurons per block are
rounded to multiples of N (``plan_pruning(..., align=N)``). Speed: the embedded backbone, random-init
ViT-S/16 and ViT-B/16 (timm, 224 px, fp32, magnitude scores: the plan's shape matters here, not its
accuracy) at batch 1 and 64; per pair, the unpruned model and the five aligned models are timed back
to back in each round (``torch.utils.benchmark``, fixed repeats), so load on a shared machine slows
them alike; the speed-up is the median over rounds of unpruned / pruned. Accuracy: kNN top-1 of the
embedded backbone with its shipped scores (scores/embedded.xnes.safetensors) on the embedded data.
The chosen CPU default is printed with the rule that picked it (see ``choose``).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from snapvit_core.data import load_knn_splits  # noqa: E402
from snapvit_core.engine.adapter import ViTAdapter  # noqa: E402
from snapvit_core.engine.backbones import load_backbone  # noqa: E402
from snapvit_core.engine.elastic import ALIGN_AUTO, ElasticViT  # noqa: E402
from snapvit_core.evaluation.features import KnnEvaluator  # noqa: E402
from snapvit_core.evaluation.metrics import analytic_flops  # noqa: E402
from snapvit_core.explorer import Explorer  # noqa: E402
from snapvit_core.files.atomic import write_text_atomic  # noqa: E402
from snapvit_core.presets import PUBLISHED_SPARSITY_PAIRS  # noqa: E402
from snapvit_core.scoring.data_free import magnitude_scores  # noqa: E402
from snapvit_core.scoring.scores_io import load_scores  # noqa: E402

ALIGNS = (1, 8, 16, 32, 64)
# model id -> (random init, {batch: rounds}); ViT-B/16 at batch 64 takes ~15 s per forward on 2 cores
# What fits ~30 min on a 2-core machine shared by four jobs with this job niced (load ~13): a ViT-S/16
# forward at batch 64 took minutes there, so the big models run at batch 1 and batch 64 only with --full.
SPEED_MODELS = {
    "embedded": ("embedded", False, {1: 5, 64: 5}),
    "ViT-S/16": ("vit_small_patch16_224", True, {1: 3}),
    "ViT-B/16": ("vit_base_patch16_224", True, {1: 2}),
}
FULL_MODELS = {
    "ViT-S/16": ("vit_small_patch16_224", True, {1: 7, 64: 3}),
    "ViT-B/16": ("vit_base_patch16_224", True, {1: 5, 64: 2}),
    "embedded": ("embedded", False, {1: 15, 64: 9}),
}
QUICK_MODELS = {
    "embedded": ("embedded", False, {1: 7, 64: 3}),
    "ViT-S/16": ("vit_small_patch16_224", True, {1: 3, 64: 1}),
}
SHIPPED_SCORES = ROOT / "scores" / "embedded.xnes.safetensors"
NEAR_BEST = 0.02  # an N within 2 % of the best median efficiency is "as fast" (the noise on a shared machine)


def timer_for(model: torch.nn.Module, images: torch.Tensor, threads: int):
    """A torch.utils.benchmark Timer of one embedding forward of ``images``."""
    logging.getLogger("torch.utils.cpp_extension").setLevel(logging.ERROR)
    from torch.utils import benchmark

    adapter = ViTAdapter(model)
    with torch.inference_mode():
        adapter.embed(images)  # warm-up (allocator, kernels)
    return benchmark.Timer(
        stmt="with torch.inference_mode(): adapter.embed(images)",
        globals={"adapter": adapter, "images": images, "torch": torch},
        num_threads=threads,
    )


def speed_rows(
    label: str, model_id: str, random_init: bool, batches: dict[int, int], done: Callable[[list[dict]], None]
) -> list[dict]:
    """One row per (pair, batch, N): FLOPs cut, median speed-up (with min-max over rounds); ``done`` gets
    the rows so far after every pair (partial results survive an interrupted run)."""
    backbone = load_backbone(model_id, random_init)
    elastic = ElasticViT(backbone.model, magnitude_scores(backbone.model), model_id)
    unpruned = elastic.prune_to(0.0, 0.0)  # the same attention kernel as the pruned copies
    full_flops = analytic_flops(unpruned)
    threads = torch.get_num_threads()
    size = backbone.image_size
    rows = []
    for pair in PUBLISHED_SPARSITY_PAIRS[1:]:
        models = {n: elastic.pruned(elastic.plan_for(*pair, align=n)) for n in ALIGNS}
        flops = {n: analytic_flops(m) for n, m in models.items()}
        for batch, rounds in batches.items():
            images = torch.randn(batch, 3, size, size, generator=torch.Generator().manual_seed(0))
            # about 0.1 s of repeats per timing at batch 1; one forward per timing for the big models at 64
            once = timer_for(unpruned, images, threads).timeit(1).mean
            number = max(1, int(0.1 / max(once, 1e-6)))
            timers = {"unpruned": timer_for(unpruned, images, threads)}
            timers.update({n: timer_for(m, images, threads) for n, m in models.items()})
            times: dict = {name: [] for name in timers}
            for _ in range(rounds):
                for name, timer in timers.items():
                    times[name].append(timer.timeit(number).mean)
            for n in ALIGNS:
                ratios = [u / p for u, p in zip(times["unpruned"], times[n])]
                cut = full_flops / flops[n]
                speedup = statistics.median(ratios)
                rows.append(
                    {
                        "model": label,
                        "pair": pair,
                        "batch": batch,
                        "align": n,
                        "flops_cut": cut,
                        "speedup": speedup,
                        "low": min(ratios),
                        "high": max(ratios),
                        "efficiency": speedup / cut,
                        "ms": 1e3 * statistics.median(times[n]),
                        "unpruned_ms": 1e3 * statistics.median(times["unpruned"]),
                        "rounds": rounds,
                    }
                )
            print(
                f"[alignment] {label} {pair} batch {batch}: "
                + ", ".join(f"N={r['align']} {r['speedup']:.2f}x/{r['flops_cut']:.2f}x" for r in rows[-len(ALIGNS) :]),
                flush=True,
            )
            done(rows)
        del models
    return rows


def knn_rows() -> list[dict]:
    """kNN top-1 of the embedded backbone with its shipped scores, per pair and N."""
    backbone = load_backbone("embedded")
    scores = load_scores(SHIPPED_SCORES)
    evaluator = KnnEvaluator.from_splits(load_knn_splits("embedded", backbone.data_config))
    rows = []
    for n in ALIGNS:
        explorer = Explorer(backbone, scores, align=n)
        explorer.attach_knn(evaluator)
        for pair in PUBLISHED_SPARSITY_PAIRS:
            result = explorer.evaluate(*pair, ("knn",))
            rows.append(
                {
                    "pair": pair,
                    "align": n,
                    "top1": 100 * result.knn_top1,
                    "realised_mlp": result.realised_mlp_sparsity,
                    "kept_neurons": result.kept_neurons,
                }
            )
    return rows


def choose(speed: list[dict], knn: list[dict], models: tuple[str, ...]) -> tuple[int, str]:
    """The default N for this device: 1 unless a larger N is *measurably* faster, i.e. in most of the
    (model, pair, batch) rows of ``models`` its slowest round still beats N = 1's fastest round (on a
    shared machine a median alone moves by more than alignment can change); among such N, the one with
    the best median speed-up / FLOPs cut. A larger N costs plan resolution (and kNN), so noise must not pick it."""
    rows = [r for r in speed if r["model"] in models]
    base = {(r["model"], r["pair"], r["batch"]): r for r in rows if r["align"] == 1}
    medians = {n: statistics.median(r["efficiency"] for r in rows if r["align"] == n) for n in ALIGNS}
    wins = {
        n: sum(r["low"] > base[(r["model"], r["pair"], r["batch"])]["high"] for r in rows if r["align"] == n)
        for n in ALIGNS[1:]
    }
    total = len(base)
    faster = [n for n in ALIGNS[1:] if wins[n] > total / 2]
    chosen = max(faster, key=lambda n: (medians[n], -n)) if faster else 1
    costs = {n: statistics.mean(r["top1"] for r in knn if r["align"] == n) for n in ALIGNS}
    why = (
        f"median speed-up / FLOPs cut on {' and '.join(models)} over the published pairs and batches: "
        + ", ".join(f"N={n} {100 * v:.1f} %" for n, v in medians.items())
        + f"; rows where N beats N=1 beyond the round-to-round spread (of {total}): "
        + ", ".join(f"N={n} {w}" for n, w in wins.items())
        + "; mean kNN top-1 over the pairs: "
        + ", ".join(f"N={n} {v:.2f} %" for n, v in costs.items())
        + f"; chosen: {chosen}"
    )
    return chosen, why


def table(header: list[str], rows: list[list]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return "\n".join([*lines, *("| " + " | ".join(str(c) for c in row) + " |" for row in rows)])


def report(speed: list[dict], knn: list[dict], chosen: int, why: str, seconds: float, command: str = "") -> str:
    speed_table = table(
        ["model", "(MLP, head)", "batch", "N", "FLOPs cut", "speed-up (min-max)", "of FLOPs cut", "ms / batch"],
        [
            [
                r["model"],
                f"({r['pair'][0]:.2f}, {r['pair'][1]:.2f})",
                r["batch"],
                r["align"],
                f"{r['flops_cut']:.2f}x",
                f"{r['speedup']:.2f}x ({r['low']:.2f}-{r['high']:.2f})",
                f"{100 * r['efficiency']:.0f} %",
                f"{r['ms']:.1f}",
            ]
            for r in speed
        ],
    )
    by_pair = {}
    for r in knn:
        by_pair.setdefault(r["pair"], {})[r["align"]] = r
    knn_table = table(
        ["(MLP, head)", *(f"N={n} top-1 (realised MLP sparsity)" for n in ALIGNS)],
        [
            [f"({p[0]:.2f}, {p[1]:.2f})", *(f"{v[n]['top1']:.2f} % ({v[n]['realised_mlp']:.3f})" for n in ALIGNS)]
            for p, v in by_pair.items()
        ],
    )
    slower = [r for r in speed if r["batch"] >= 64 and r["align"] == chosen and r["speedup"] < 1.0]
    vit_b = [r for r in speed if r["model"] == "ViT-B/16" and r["align"] == chosen]
    checked = sorted({(r["model"], r["pair"]) for r in speed if r["batch"] >= 64 and r["align"] == chosen})
    targets = [
        f"- no published pair slower than unpruned at batch >= 64 with N={chosen}: "
        + (
            "met"
            if not slower
            else "NOT met: " + ", ".join(f"{r['model']} {r['pair']} {r['speedup']:.2f}x" for r in slower)
        )
        + f", checked on the {len(checked)} (model, pair) rows measured at batch >= 64: "
        + (", ".join(f"{m} {p}" for m, p in checked) or "none"),
    ]
    if vit_b:
        below = [r for r in vit_b if r["efficiency"] < 0.9]
        targets.append(
            f"- speed-up >= 90 % of the FLOPs cut on ViT-B/16 with N={chosen}: "
            + (
                "met"
                if not below
                else "NOT met at "
                + ", ".join(f"{r['pair']} batch {r['batch']} ({100 * r['efficiency']:.0f} %)" for r in below)
            )
        )
    return "\n\n".join(
        [
            "# Width alignment: speed-up and kNN cost of rounding kept MLP widths to N",
            f"Command: `python benchmarks/bench_alignment.py{command}`; torch {torch.__version__}, "
            f"{torch.get_num_threads()} threads, CPU, fp32, date {time.strftime('%Y-%m-%d')}, process niceness "
            f"{os.nice(0)}, load average {os.getloadavg()[0]:.1f} when the report was written. "
            "Every figure is the median over interleaved rounds (unpruned and the five N timed back to back "
            "per round, so load on a shared machine slows them alike), min-max over rounds in brackets. "
            "Random-init ViT-S/16 and ViT-B/16 with magnitude scores; the embedded backbone with magnitude "
            "scores for speed and its shipped scores for kNN.",
            "## Speed-up vs FLOPs cut",
            f"{len(speed)} rows measured of the {len(ALIGNS) * 6 * 6} planned (3 models x 6 pruned pairs x 2 batches "
            "x 5 N); a run stopped early keeps the rows it finished (results/alignment.json).",
            speed_table,
            "## kNN top-1, embedded backbone, shipped scores (embedded.xnes)",
            knn_table,
            "## Chosen default",
            f"CPU: N = {chosen}. {why}.",
            "CUDA: N = "
            + str(ALIGN_AUTO["cuda"])
            + " (not measured here: no GPU; `benchmarks/gpu_check.py` measures it).",
            "Targets:\n" + "\n".join(targets),
            "",
        ]
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="embedded + ViT-S/16, fewer rounds")
    parser.add_argument("--full", action="store_true", help="more rounds, and ViT-B/16 at batch 64 (a quiet machine)")
    parser.add_argument("--skip-speed", action="store_true", help="kNN only")
    parser.add_argument("--reuse-knn", default=None, help="take the kNN rows from an earlier run's .json")
    parser.add_argument("--report-only", default=None, help="write the report from an earlier (partial) run's .json")
    parser.add_argument("--out", default=str(ROOT / "results" / "alignment.md"))
    args = parser.parse_args(argv)
    start = time.perf_counter()
    earlier = (
        json.loads(Path(args.report_only or args.reuse_knn).read_text())
        if (args.report_only or args.reuse_knn)
        else None
    )
    for row in (earlier or {}).get("knn", []) + (earlier or {}).get("speed", []):
        row["pair"] = tuple(row["pair"])
    knn = earlier["knn"] if earlier else knn_rows()
    for r in knn:
        print(f"[alignment] kNN {r['pair']} N={r['align']}: {r['top1']:.2f} % kept {r['kept_neurons']}", flush=True)
    speed = list(earlier["speed"]) if args.report_only else []
    raw = Path(args.out).with_suffix(".json")  # every row so far, rewritten after each pair

    def save(rows: list[dict]) -> None:
        write_text_atomic(raw, json.dumps({"knn": knn, "speed": speed + rows}, indent=1))

    if not args.skip_speed and not args.report_only:
        for label, (model_id, random_init, batches) in (
            QUICK_MODELS if args.quick else FULL_MODELS if args.full else SPEED_MODELS
        ).items():
            speed += speed_rows(label, model_id, random_init, batches, save)
            save([])
    measured = {r["model"] for r in speed}
    models = tuple(m for m in ("ViT-B/16", "ViT-S/16") if m in measured) or tuple(sorted(measured))
    chosen, why = choose(speed, knn, models) if models else (1, "no speed measured")
    command = " --full" if args.full else " --quick" if args.quick else ""
    text = report(speed, knn, chosen, why, time.perf_counter() - start, command)
    print(text)
    write_text_atomic(args.out, text)
    print(f"[alignment] chosen CPU default: align={chosen}; wrote {args.out}")


if __name__ == "__main__":
    main()
