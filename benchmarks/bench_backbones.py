"""Backbones side by side on the embedded data: kNN top-1 of every scoring method.

For each backbone (a model id whose inputs are the embedded images): unpruned kNN top-1 on the full
embedded test split, then every scoring method at the six published (MLP, head) pairs, without and
(``--correct``) with the SparseGPT-style weight correction. Seeded methods (the gradient methods,
the xNES search from each seed's SnapViT scores, random) run once per ``--seeds`` value; cells show
the mean and the min-max over seeds. Methods that need a class head (cross-entropy, snip-magnitude)
are "n/a" on a backbone without one.

Results are merged into a JSON file (one entry per ``--run`` label), so backbones can be measured in
separate invocations; ``--report`` renders all entries as Markdown::

    python benchmarks/bench_backbones.py --run supervised=embedded --correct
    python benchmarks/bench_backbones.py --run variant=/tmp/variant_dir      # a checkpoint directory
    python benchmarks/bench_backbones.py --report --out results/backbones.md

A ``--run`` value is anything ``--model`` takes (a model id or a checkpoint directory).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from snapvit_core.data import load_images, load_knn_splits, preprocess  # noqa: E402
from snapvit_core.engine.backbones import load_backbone  # noqa: E402
from snapvit_core.engine.correction import CorrectionConfig  # noqa: E402
from snapvit_core.evaluation.features import KnnEvaluator  # noqa: E402
from snapvit_core.explorer import Explorer  # noqa: E402
from snapvit_core.files.atomic import write_text_atomic  # noqa: E402
from snapvit_core.presets import PUBLISHED_SPARSITY_PAIRS  # noqa: E402
from snapvit_core.scoring.compute import ScoringConfig, compute_scores  # noqa: E402
from snapvit_core.search.evolution import SearchConfig, run_search  # noqa: E402

PAIRS = PUBLISHED_SPARSITY_PAIRS[1:]  # the six pruned pairs
SEARCHED = "snapvit + xNES"
ROWS = ("snapvit", SEARCHED, "cross-entropy", "snip-magnitude", "snip-magnitude-dino", "lamp", "magnitude", "random")
UNSEEDED = ("lamp", "magnitude")
NEEDS_HEAD = ("cross-entropy", "snip-magnitude")
DEFAULT_JSON = ROOT / "results" / "backbones.json"


def measure(label: str, spec: str, args: argparse.Namespace) -> dict:
    """Every row of the table for one backbone (kNN top-1 in %, per seed and pair)."""
    backbone = load_backbone(spec)
    has_head = getattr(backbone.model, "num_classes", 0) > 0
    evaluator = KnnEvaluator.from_splits(load_knn_splits("embedded", backbone.data_config))
    calibration = preprocess(
        load_images("embedded", "train", limit=args.calibration, seed=2).images, backbone.data_config
    )
    search_images = preprocess(
        load_images("embedded", "train", limit=args.eval_images, seed=1).images, backbone.data_config
    )
    correction = (CorrectionConfig(samples=args.calibration), calibration)

    def knn(scores) -> dict[str, list[float]]:
        explorer = Explorer(backbone, scores)
        explorer.attach_knn(evaluator)
        out = {"plain": [100 * explorer.evaluate(m, h, ("knn",)).knn_top1 for m, h in PAIRS]}
        if args.correct:
            out["corrected"] = [
                100 * explorer.evaluate(m, h, ("knn",), correction=correction).knn_top1 for m, h in PAIRS
            ]
        return out

    def score(method: str, seed: int):
        config = ScoringConfig(method=method, samples=args.samples, seed=seed)
        images = load_images("embedded", "train", limit=args.samples, seed=seed) if config.needs_images else None
        labels = images.labels if config.needs_labels else None
        return compute_scores(backbone.model, images, backbone.data_config, config, labels=labels, model_id=label)

    result = {"spec": spec, "params": sum(p.numel() for p in backbone.model.parameters()), "rows": {}, "seconds": {}}
    shape = backbone.shape
    result["shape"] = f"{shape.num_blocks} blocks x {shape.num_heads} heads, MLP {shape.mlp_hidden_per_block[0]}"
    reference = Explorer(backbone, score("magnitude", 0))
    reference.attach_knn(evaluator)
    result["unpruned"] = 100 * reference.evaluate(0.0, 0.0, ("knn",)).knn_top1
    print(f"[{label}] {spec}: unpruned kNN {result['unpruned']:.2f} %", flush=True)
    rows = [r for r in ROWS if r in args.methods]
    for row in rows:
        if row in NEEDS_HEAD and not has_head:
            result["rows"][row] = None
            continue
        runs, start = [], time.perf_counter()
        for seed in args.seeds[:1] if row in UNSEEDED else args.seeds:
            if row == SEARCHED:
                base = score("snapvit", seed)
                config = SearchConfig(evaluations=args.evaluations, eval_images=args.eval_images, seed=seed)
                scores = run_search(backbone.model, base, search_images, config, model_id=label).scores
            else:
                scores = score(row, seed)
            runs.append(knn(scores))
            print(f"[{label}] {row} seed {seed}: " + " ".join(f"{v:.2f}" for v in runs[-1]["plain"]), flush=True)
        result["seconds"][row] = round(time.perf_counter() - start, 1)
        result["rows"][row] = {kind: [run[kind] for run in runs] for kind in runs[0]}
    return result


def cell(runs: list[list[float]] | None, pair: int) -> str:
    if runs is None:
        return "n/a"
    values = [run[pair] for run in runs]
    mean = statistics.fmean(values)
    return f"{mean:.2f}" if len(values) == 1 else f"{mean:.2f} ({min(values):.2f}-{max(values):.2f})"


def verdict(entry: dict, kind: str) -> tuple[int, list[str]]:
    """Pairs where the searched SnapViT mean beats magnitude by more than the searched seed spread."""
    searched, magnitude = entry["rows"].get(SEARCHED), entry["rows"].get("magnitude")
    if not searched or not magnitude or kind not in searched:
        return 0, []
    marks, wins = [], 0
    for i in range(len(PAIRS)):
        values = [run[i] for run in searched[kind]]
        margin = round(statistics.fmean(values) - magnitude[kind][0][i], 2)  # rounded: 0.00 is a tie
        spread = round(max(values) - min(values), 2)
        win = margin > spread and len(values) > 1  # one seed has no spread to beat
        wins += win
        marks.append(
            f"{margin:+.2f} vs {spread:.2f} {'yes' if win else 'no'}" + ("" if len(values) > 1 else " (1 seed)")
        )
    return wins, marks


def report(results: dict, settings: str) -> str:
    header = ["backbone", "method", *[f"({m:.2f},{h:.2f})" for m, h in PAIRS]]
    sep = "|" + "---|" * len(header)
    parts = ["# The supervised vs the self-supervised (DINO) embedded backbone", settings]
    summary = [
        "| backbone | assets | shape, params | unpruned kNN | searched beats magnitude (plain) | (corrected) |",
        "|---|---|---|---|---|---|",
    ]
    for label, entry in results.items():
        plain, corrected = verdict(entry, "plain")[0], verdict(entry, "corrected")[0]
        has_corr = any(row and "corrected" in row for row in entry["rows"].values())
        summary.append(
            f"| {label} | `{entry['spec']}` | {entry['shape']}, {entry['params']:,} | {entry['unpruned']:.2f} | "
            f"{plain} / {len(PAIRS)} | {f'{corrected} / {len(PAIRS)}' if has_corr else '-'} |"
        )
    parts.append("\n".join(summary))
    for kind, title in (("plain", "without correction"), ("corrected", "with weight correction")):
        lines = ["| " + " | ".join(header) + " |", sep]
        for label, entry in results.items():
            for row, runs in entry["rows"].items():
                if runs is not None and kind not in runs:
                    continue
                lines.append(
                    f"| {label} | {row} | " + " | ".join(cell(runs and runs[kind], i) for i in range(6)) + " |"
                )
        if len(lines) > 2:
            parts += [f"## kNN top-1 (%) {title}", "\n".join(lines)]
    lines = ["| backbone | kind | " + " | ".join(header[2:]) + " |", "|---|---|" + "---|" * len(PAIRS)]
    for label, entry in results.items():
        for kind in ("plain", "corrected"):
            wins, marks = verdict(entry, kind)
            if marks:
                lines.append(f"| {label} | {kind} | " + " | ".join(marks) + " |")
    parts += [
        "## Searched SnapViT minus magnitude vs the searched seed spread (max-min); 'yes' = beats it by more",
        "\n".join(lines),
    ]
    return "\n\n".join(parts) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", action="append", default=[], help="LABEL=MODEL_ID_OR_DIR to measure (repeatable)")
    parser.add_argument("--methods", nargs="+", default=list(ROWS), help=f"rows to measure (default all: {ROWS})")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--samples", type=int, default=256, help="scoring images per gradient method (published 1000)")
    parser.add_argument("--evaluations", type=int, default=50, help="xNES fitness evaluations (published 50)")
    parser.add_argument("--eval-images", type=int, default=256, help="search fitness images (published 1000)")
    parser.add_argument("--calibration", type=int, default=128, help="correction calibration images")
    parser.add_argument("--correct", action="store_true", help="also measure with the weight correction")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--json", type=Path, default=DEFAULT_JSON, help="raw results, merged per label")
    parser.add_argument(
        "--merge",
        type=Path,
        nargs="*",
        default=[],
        help="with --report: also read these raw files (runs merged per label)",
    )
    parser.add_argument("--report", action="store_true", help="print (and with --out write) the Markdown report")
    parser.add_argument("--settings", default="", help="with --report: the settings paragraph")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    results = json.loads(args.json.read_text()) if args.json.is_file() else {}
    for run in args.run:
        label, _, spec = run.partition("=")
        start = time.perf_counter()
        entry = measure(label, spec, args)
        entry["wall_seconds"] = round(time.perf_counter() - start, 1)
        entry["settings"] = {
            k: getattr(args, k)
            for k in ("seeds", "samples", "evaluations", "eval_images", "calibration", "correct", "threads")
        }
        results[label] = entry
        write_text_atomic(args.json, json.dumps(results, indent=1) + "\n")
        print(f"[{label}] done in {entry['wall_seconds']:.0f} s", flush=True)
    if args.report:
        for path in args.merge:
            for label, entry in json.loads(path.read_text()).items():
                if label in results:  # rows measured by another process (other rows, or other seeds: appended)
                    rows = results[label]["rows"]
                    for row, runs in entry["rows"].items():
                        if rows.get(row) and runs:
                            for kind in rows[row]:
                                rows[row][kind] += runs[kind]
                        else:
                            rows[row] = runs
                else:
                    results[label] = entry
        results = {
            label: {**e, "rows": {r: e["rows"][r] for r in ROWS if r in e["rows"]}} for label, e in results.items()
        }
        text = report(results, args.settings)
        print(text)
        if args.out:
            write_text_atomic(args.out, text)


if __name__ == "__main__":
    main()
