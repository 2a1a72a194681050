"""Validate the linear probe on the embedded backbone's features and write ``results/linear.md``.

For the unpruned model and each published (MLP, head) pair (``presets.PUBLISHED_SPARSITY_PAIRS``, plus
(0.75, 0.6) past its end), on the features the explorer's kNN evaluator extracts (the app's set: the
embedded digits, at most 2,000 images per split), it reports:

* the project's kNN top-1 (k = 20, uniform vote);
* ``linear_probe_top1`` (DINOv1's protocol), seed 0 and the mean over ``--seeds`` seeds;
* DINO's ``eval_linear.py`` training loop re-implemented here independently (``TensorDataset`` + a
  ``DistributedSampler(shuffle=True, seed)`` with ``set_epoch`` as DINO's loader, ``LinearClassifier`` init,
  ``torch.optim.SGD`` + ``CosineAnnealingLR(T_max=epochs, eta_min=0)``), with its own random draws (mean
  over the same number of seeds), fed our draws (same init and permutations: isolates the implementation),
  and DINO's reported number (the best test top-1 over the epochs);
* the SnapViT reference repository's loop (``src/utils/classifier``: one fixed batch order, the
  ``ShuffleSplit(random_state=42)`` train+valid permutation, bf16 autocast, seed 42, lr 0.001);
* scikit-learn ``LogisticRegression(solver="lbfgs")`` with C tuned on a stratified 20 % of train, refit on
  all train; and, as a diagnostic outside DINO's protocol, our probe with its lr tuned the same way.

    OMP_NUM_THREADS=1 .venv/bin/python scripts/validate_linear_probe.py [--seeds 5] [--no-bench]

It also runs ``benchmarks/bench_linear_probe.py`` (quiet, then ``--busy 2``) and copies its output into the
report (``--out``, default results/linear.md).
"""

from __future__ import annotations

import argparse
import datetime
import math
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, DistributedSampler, Sampler, TensorDataset

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # run from a checkout, no install

from snapvit_core.data import load_knn_splits  # noqa: E402
from snapvit_core.engine.backbones import load_backbone  # noqa: E402
from snapvit_core.evaluation.features import KnnEvaluator  # noqa: E402
from snapvit_core.evaluation.linear_probe import (  # noqa: E402
    DEFAULT_BATCH_SIZE,
    DEFAULT_EPOCHS,
    LinearProbe,
    linear_probe_predict,
    linear_probe_top1,
)
from snapvit_core.explorer import Explorer  # noqa: E402
from snapvit_core.presets import PUBLISHED_SPARSITY_PAIRS  # noqa: E402
from snapvit_core.scoring.scores_io import load_scores  # noqa: E402

EXTRA_PAIRS = ((0.75, 0.6),)  # named in the task past the project's published list (which ends at (0.65, 0.5))
C_GRID = [10.0**e for e in np.arange(-4.0, 4.01, 0.5)]
LR_GRID = [0.001, 0.003, 0.01, 0.03, 0.1, 0.3, 1.0]


# ---------------------------------------------------------------------------------------------- features
class CapturingEvaluator(KnnEvaluator):
    """The project's kNN evaluator, recording the (train, test) features of every ``features`` call."""

    calls: list[tuple[torch.Tensor, torch.Tensor]]

    def features(self, *args, **kwargs):
        result = super().features(*args, **kwargs)
        self.calls.append(result)
        return result


def configuration_features(pairs) -> tuple[dict, torch.Tensor, torch.Tensor]:
    """{pair: (train features, test features, project kNN top-1)}, train labels, test labels.

    Goes through ``Explorer.evaluate`` (the app's path): its first ``features`` call is the configuration's
    (the second is the unpruned reference for the similarity), checked against its kNN top-1.
    """
    backbone = load_backbone("embedded", False, "cpu")
    splits = load_knn_splits("embedded", backbone.data_config, limit_per_split=2000)
    explorer = Explorer(backbone, load_scores(ROOT / "scores" / "embedded.xnes.safetensors"), "cpu")
    evaluator = CapturingEvaluator.from_splits(splits, device="cpu")
    explorer.attach_knn(evaluator)
    out = {}
    for mlp, head in pairs:
        evaluator.calls = []
        result = explorer.evaluate(mlp, head, metrics=("knn",))
        train, test = evaluator.calls[0]
        if evaluator.top1_of((train, test)) != result.knn_top1:
            raise RuntimeError(f"captured features of {(mlp, head)} do not give the explorer's kNN top-1")
        out[(mlp, head)] = (train.clone(), test.clone(), float(result.knn_top1))
    return out, evaluator.train_labels.clone(), evaluator.test_labels.clone()


# ------------------------------------------------------------------- DINO eval_linear.py, re-implemented
class DinoLinearClassifier(nn.Module):
    """DINO's ``LinearClassifier``: flatten, one ``nn.Linear``; weight ~ N(0, 0.01), bias 0."""

    def __init__(self, dim: int, num_labels: int, generator: torch.Generator | None = None) -> None:
        super().__init__()
        self.linear = nn.Linear(dim, num_labels)
        self.linear.weight.data.normal_(mean=0.0, std=0.01, generator=generator)
        self.linear.bias.data.zero_()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(x.view(x.size(0), -1))


class DrawsFrom(Sampler):
    """One ``randperm`` per epoch from a shared generator: the draws ``linear_probe_top1`` makes."""

    def __init__(self, count: int, generator: torch.Generator) -> None:
        self.count, self.generator = count, generator

    def __iter__(self):
        return iter(torch.randperm(self.count, generator=self.generator).tolist())

    def __len__(self) -> int:
        return self.count


def accuracy(classifier: nn.Module, features: torch.Tensor, labels: torch.Tensor) -> float:
    classifier.eval()
    with torch.no_grad():
        return float((classifier(features).argmax(dim=1) == labels).float().mean())


def dino_eval_linear(train, train_labels, test, test_labels, seed: int, *, our_draws: bool = False) -> dict:
    """DINO's eval_linear training on frozen features: {'last': top-1 after the last epoch, 'best': the
    best per-epoch test top-1 (DINO's printed number)}. ``our_draws``: init and shuffles from
    ``linear_probe_top1``'s generator stream instead of DINO's (global RNG init, DistributedSampler)."""
    epochs, batch = DEFAULT_EPOCHS, DEFAULT_BATCH_SIZE
    classes = int(train_labels.max()) + 1
    dataset = TensorDataset(train, train_labels)
    if our_draws:
        generator = torch.Generator().manual_seed(seed)
        classifier = DinoLinearClassifier(train.shape[1], classes, generator)
        sampler = DrawsFrom(len(dataset), generator)
    else:
        torch.manual_seed(seed)
        classifier = DinoLinearClassifier(train.shape[1], classes)
        sampler = DistributedSampler(dataset, num_replicas=1, rank=0, shuffle=True, seed=seed)
    loader = DataLoader(dataset, sampler=sampler, batch_size=batch, num_workers=0)
    optimizer = torch.optim.SGD(classifier.parameters(), 0.001 * batch / 256.0, momentum=0.9, weight_decay=0)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, epochs, eta_min=0)
    best = 0.0
    for epoch in range(epochs):
        if isinstance(sampler, DistributedSampler):
            sampler.set_epoch(epoch)
        classifier.train()
        for inp, target in loader:
            output = classifier(inp)
            loss = nn.CrossEntropyLoss()(output, target)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        scheduler.step()
        best = max(best, accuracy(classifier, test, test_labels))
    return {"last": accuracy(classifier, test, test_labels), "best": best}


def snapvit_repo_linear(train, train_labels, test, test_labels) -> float:
    """The SnapViT reference repository's probe (evaluate-linear.sh -> LinearClassifier.train_single):
    its 80/20 ShuffleSplit(random_state=42) merged back as train+valid in that order, batches in that one
    order every epoch (DataLoader without shuffle), bf16 autocast, seed 42, lr 0.001 (no scaling; = DINO's
    at batch 256), momentum 0.9, wd 0, CosineAnnealingLR(100); its 'best state' aliases the live weights,
    so the head of the last epoch is tested."""
    from sklearn.model_selection import ShuffleSplit

    torch.manual_seed(42)
    indices = list(range(train.shape[0]))
    fit, valid = next(ShuffleSplit(n_splits=1, train_size=0.8, random_state=42).split(indices, indices))
    order = torch.cat([torch.as_tensor(fit), torch.as_tensor(valid)])
    loader = DataLoader(TensorDataset(train[order], train_labels[order]), batch_size=256, shuffle=False)
    classifier = nn.Linear(train.shape[1], int(torch.unique(train_labels).numel()))
    classifier.weight.data.normal_(mean=0.0, std=0.01)
    classifier.bias.data.zero_()
    optimizer = torch.optim.SGD(classifier.parameters(), lr=0.001, weight_decay=0, momentum=0.9)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, 100, eta_min=0)
    for _ in range(100):
        with torch.autocast("cpu", dtype=torch.bfloat16):
            for features, targets in loader:
                optimizer.zero_grad()
                loss = nn.functional.cross_entropy(classifier(features), targets)
                loss.backward()
                optimizer.step()
        scheduler.step()
    with torch.autocast("cpu", dtype=torch.bfloat16), torch.no_grad():
        return float((classifier(test).argmax(dim=-1) == test_labels).float().mean())


# ---------------------------------------------------------------------------------- tuned baselines
def holdout_split(labels: torch.Tensor, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(fit, held-out) indices: a stratified 20 % of train held out."""
    from sklearn.model_selection import train_test_split

    indices = np.arange(len(labels))
    return train_test_split(indices, test_size=0.2, stratify=labels.numpy(), random_state=seed)


def sklearn_tuned(train, train_labels, test, test_labels, split_seed: int = 0) -> dict:
    """LogisticRegression(lbfgs): C with the best top-1 on a stratified held-out 20 % of train (ties: the
    smaller C), refit on all of train. Returns {'test', 'train' top-1, 'C'}."""
    from sklearn.linear_model import LogisticRegression

    x, y, xt, yt = train.numpy(), train_labels.numpy(), test.numpy(), test_labels.numpy()
    fit, held = holdout_split(train_labels, split_seed)
    scores = [
        LogisticRegression(C=c, solver="lbfgs", max_iter=10_000).fit(x[fit], y[fit]).score(x[held], y[held])
        for c in C_GRID
    ]
    best = C_GRID[int(np.argmax(scores))]
    model = LogisticRegression(C=best, solver="lbfgs", max_iter=10_000).fit(x, y)
    return {"test": float(model.score(xt, yt)), "train": float(model.score(x, y)), "C": best}


def ours_train_top1(train, train_labels) -> float:
    """Top-1 of our seed-0 head on its own train features (how far DINO's budget fits them)."""
    head = LinearProbe().fit(train, train_labels)
    return float((linear_probe_predict(head, train) == train_labels).float().mean())


def ours_lr_tuned(train, train_labels, test, test_labels) -> tuple[float, float]:
    """Diagnostic outside DINO's protocol: our probe with the lr picked like sklearn's C (ties: smaller lr)."""
    fit, held = (torch.as_tensor(part) for part in holdout_split(train_labels))
    scores = [
        linear_probe_top1(train[fit], train_labels[fit], train[held], train_labels[held], lr=lr) for lr in LR_GRID
    ]
    best = LR_GRID[int(np.argmax(scores))]
    return linear_probe_top1(train, train_labels, test, test_labels, lr=best), best


# ------------------------------------------------------------------------------------------------ report
def cpu_model() -> str:
    try:
        for line in subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout.splitlines():
            if line.startswith("Model name:"):
                return line.split(":", 1)[1].strip()
    except (OSError, subprocess.CalledProcessError):
        pass
    return platform.processor() or "unknown CPU"


def pct(value: float) -> str:
    return f"{100 * value:.2f}"


def mean_sd(values: list[float]) -> str:
    if len(values) == 1:
        return pct(values[0])
    return f"{100 * statistics.mean(values):.2f} ± {100 * statistics.stdev(values):.2f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, default=5, help="seeds for our probe and DINO's loop (means)")
    parser.add_argument("--out", type=Path, default=ROOT / "results" / "linear.md")
    parser.add_argument(
        "--no-bench", action="store_true", help="skip benchmarks/bench_linear_probe.py (quiet, --busy 2)"
    )
    args = parser.parse_args()
    torch.set_num_threads(1)
    started = time.perf_counter()
    pairs = [tuple(p) for p in PUBLISHED_SPARSITY_PAIRS] + [p for p in EXTRA_PAIRS if p not in PUBLISHED_SPARSITY_PAIRS]
    features, train_labels, test_labels = configuration_features(pairs)
    seeds = list(range(args.seeds))
    rows = []
    for pair in pairs:
        train, test, knn = features[pair]
        t0 = time.perf_counter()
        ours = [linear_probe_top1(train, train_labels, test, test_labels, seed=s) for s in seeds]
        ours_s = (time.perf_counter() - t0) / len(seeds)
        dino = [dino_eval_linear(train, train_labels, test, test_labels, seed=s) for s in seeds]
        matched = dino_eval_linear(train, train_labels, test, test_labels, seed=0, our_draws=True)
        repo = snapvit_repo_linear(train, train_labels, test, test_labels)
        sklearn = [sklearn_tuned(train, train_labels, test, test_labels, split_seed=s) for s in seeds]
        sk, c = sklearn[0]["test"], sklearn[0]["C"]
        tuned, lr = ours_lr_tuned(train, train_labels, test, test_labels)
        row = {
            "pair": pair,
            "dim": train.shape[1],
            "knn": knn,
            "ours": ours,
            "ours_s": ours_s,
            "dino_last": [d["last"] for d in dino],
            "dino_best": [d["best"] for d in dino],
            "matched": matched,
            "repo": repo,
            "sklearn": sk,
            "C": c,
            "tuned": tuned,
            "lr": lr,
            "sklearn_splits": [r["test"] for r in sklearn],
            "sklearn_train": sklearn[0]["train"],
            "ours_train": ours_train_top1(train, train_labels),
        }
        rows.append(row)
        print(
            f"{pair}: kNN {pct(knn)} ours {pct(ours[0])} (mean {mean_sd(ours)}) DINO {mean_sd(row['dino_last'])} "
            f"our-draws {pct(matched['last'])} repo {pct(repo)} sklearn {pct(sk)} (C={c:g}) "
            f"ours-lr-tuned {pct(tuned)} (lr={lr:g})",
            flush=True,
        )
    bench = [] if args.no_bench else [run_bench([]), run_bench(["--busy", "2"])]
    write_report(args, rows, len(train_labels), len(test_labels), time.perf_counter() - started, bench)


def run_bench(extra: list[str]) -> tuple[str, str]:
    """(command, printed figures) of ``benchmarks/bench_linear_probe.py``, run in a child process."""
    command = [sys.executable, str(ROOT / "benchmarks" / "bench_linear_probe.py"), *extra]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, check=True, timeout=1800)
    shown = " ".join(["OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_linear_probe.py", *extra])
    print(done.stdout, flush=True)
    return shown, done.stdout.strip()


def write_report(args, rows: list[dict], n_train: int, n_test: int, seconds: float, bench: list) -> None:
    seeds, dim, probe = args.seeds, rows[0]["dim"], LinearProbe()
    point = 100 / n_test

    def mean(values: list[float]) -> float:
        return statistics.mean(values)

    for row in rows:
        row["d_dino"] = 100 * (mean(row["ours"]) - mean(row["dino_last"]))
        row["d_sk"] = 100 * (row["ours"][0] - row["sklearn"])
        row["d_sk_means"] = 100 * (mean(row["ours"]) - mean(row["sklearn_splits"]))
    lines = [
        "# Linear-probe top-1 (DINOv1 linear evaluation) on the embedded backbone",
        "",
        f"Command: `OMP_NUM_THREADS=1 .venv/bin/python scripts/validate_linear_probe.py --seeds {seeds}` "
        f"({seconds:.0f} s); CPU: {cpu_model()} ({os.cpu_count()} cores, 1 thread used); torch {torch.__version__}; "
        f"date {datetime.date.today().isoformat()}. Timing and memory of the probe: "
        "`benchmarks/bench_linear_probe.py` (its output is copied at the end).",
        "",
        f"Data: the embedded backbone (shipped weights) on the embedded digits as the app loads them "
        f"(`load_knn_splits(..., limit_per_split=2000)`): {n_train:,} train x {n_test:,} test images, 10 classes, "
        f"{dim}-dim embeddings, taken from the kNN evaluator's features inside `Explorer.evaluate` for the "
        "unpruned model, the project's published (MLP, head) pairs (`presets.PUBLISHED_SPARSITY_PAIRS`) and "
        "(0.75, 0.60), which the task named past the end of that list. Scores: `scores/embedded.xnes.safetensors`. "
        f"One test image is {point:.2f} points.",
        "",
        "## Accuracy (top-1 %, test split)",
        "",
        f"*ours*: `linear_probe_top1` (seed 0; mean ± sd over seeds 0-{seeds - 1}). *DINO loop*: DINO's "
        "`eval_linear.py` training re-implemented independently in the script (its own draws: `torch.manual_seed` "
        "init, `DistributedSampler(shuffle=True)` + `set_epoch`, `SGD`, `CosineAnnealingLR`), last epoch, same "
        'seeds. *sklearn*: `LogisticRegression(solver="lbfgs", max_iter=10000)`, C from 10^-4..10^4 (half '
        f"decades) by top-1 on a stratified 20 % of train, refit on all train; split 0, and mean ± sd over {seeds} "
        "different held-out splits (how much the choice of C alone moves it).",
        "",
        "| (MLP, head) | kNN (project) | ours (seed 0) | ours, mean ± sd | DINO loop, mean ± sd | ours − DINO "
        "(means) | sklearn LR, split 0 (C) | sklearn LR, mean ± sd over splits | ours − sklearn (seed 0, split 0) "
        "| ours − sklearn (means) |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        m, h = row["pair"]
        lines.append(
            f"| ({m:.2f}, {h:.2f}) | {pct(row['knn'])} | {pct(row['ours'][0])} | {mean_sd(row['ours'])} "
            f"| {mean_sd(row['dino_last'])} | {row['d_dino']:+.2f} | {pct(row['sklearn'])} ({row['C']:g}) "
            f"| {mean_sd(row['sklearn_splits'])} | {row['d_sk']:+.2f} | {row['d_sk_means']:+.2f} |"
        )
    count = len(rows)
    dino_ok = [r for r in rows if abs(r["d_dino"]) <= 0.5]
    sk_ok = [r for r in rows if abs(r["d_sk"]) <= 1.0]
    sk_ok_means = [r for r in rows if abs(r["d_sk_means"]) <= 1.0]
    lines += [
        "",
        f"- Target *ours within 0.5 points of DINO's loop*: **{'met' if len(dino_ok) == count else 'not met'}** "
        f"({len(dino_ok)} of {count} configurations; mean |difference| "
        f"{mean([abs(r['d_dino']) for r in rows]):.2f} points, largest {max(abs(r['d_dino']) for r in rows):.2f}).",
        "- Target *ours within 1 point of tuned logistic regression*: "
        f"**{'met' if len(sk_ok) == count else 'not met'}** "
        f"({len(sk_ok)} of {count} with seed 0 / split 0, {len(sk_ok_means)} of {count} comparing the means; mean "
        f"|difference| {mean([abs(r['d_sk']) for r in rows]):.2f} and "
        f"{mean([abs(r['d_sk_means']) for r in rows]):.2f} points). Why, below.",
        "",
        "## Protocol variants (top-1 %, seed 0 unless noted)",
        "",
        "*DINO loop, our draws*: the same independent loop fed `linear_probe_top1`'s init and permutations "
        "(isolates the implementation from the random draws). *DINO's number*: what `eval_linear.py` prints, the "
        "best per-epoch top-1 on its validation set, which for ImageNet (and here) is the test set (mean over the "
        "seeds). *SnapViT repo loop*: the reference repository's `LinearClassifier.train_single` as "
        "`evaluate-linear.sh` runs it (fixed batch order, bf16 autocast, seed 42). *ours, lr tuned*: not DINO's "
        f"protocol, a diagnostic: lr from {LR_GRID} picked on held-out split 0 like sklearn's C. *train top-1*: "
        "of our seed-0 head and of sklearn's split-0 model on the train features.",
        "",
        "| (MLP, head) | ours | DINO loop, our draws | DINO's number (best epoch on test) | SnapViT repo loop "
        "| ours, lr tuned (lr) | sklearn LR | train top-1: ours / sklearn |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        m, h = row["pair"]
        lines.append(
            f"| ({m:.2f}, {h:.2f}) | {pct(row['ours'][0])} | {pct(row['matched']['last'])} "
            f"| {mean_sd(row['dino_best'])} | {pct(row['repo'])} | {pct(row['tuned'])} ({row['lr']:g}) "
            f"| {pct(row['sklearn'])} | {pct(row['ours_train'])} / {pct(row['sklearn_train'])} |"
        )
    matched_gap = max(abs(r["ours"][0] - r["matched"]["last"]) for r in rows)
    best_gap = mean([mean(r["dino_best"]) - mean(r["dino_last"]) for r in rows])
    repo_gap = [100 * (r["repo"] - r["ours"][0]) for r in rows]
    tuned_gap = mean([100 * abs(r["tuned"] - r["sklearn"]) for r in rows])
    per_probe = mean([r["ours_s"] for r in rows])
    steps = math.ceil(n_train / probe.batch_size) * probe.epochs
    lines += [
        "",
        f"- Ours vs DINO's loop on the same draws: largest difference {100 * matched_gap:.2f} points (autograd + "
        "`torch.optim` vs the hand-written step differ by float rounding only; `tests/test_linear_probe.py` "
        "compares the weights).",
        f"- Deviation (1), last epoch instead of DINO's best epoch picked on the test set: DINO's number is "
        f"{100 * best_gap:+.2f} points above the last epoch on average.",
        f"- The SnapViT repo loop (one fixed order, bf16) minus ours: {mean(repo_gap):+.2f} points on average "
        f"(range {min(repo_gap):+.2f} to {max(repo_gap):+.2f}).",
        f"- With its lr tuned like sklearn's C, our probe is {tuned_gap:.2f} points from sklearn on average.",
        f"- Our probe took {1000 * per_probe:.0f} ms per run here (mean, 1 thread).",
        "",
        "Reading the sklearn comparison: DINO's lr 0.001 is set for ImageNet (1,250 steps an epoch at batch 1,024); "
        f"on this {n_train:,}-image set 100 epochs are only {steps} SGD steps at lr <= {probe.base_lr:g}, which "
        "acts like strong regularisation, and tuned logistic regression is a different estimator (L2 penalty, "
        "solved to convergence, C chosen on ~250 held-out images, where one image is 0.4 points). ",
    ]
    missed = [r for r in rows if abs(r["d_sk_means"]) > 1.0]
    if missed:
        parts = []
        for r in missed:
            m, h = r["pair"]
            parts.append(
                f"({m:.2f}, {h:.2f}): ours {r['d_sk_means']:+.2f} points, train top-1 {pct(r['ours_train'])} vs "
                f"{pct(r['sklearn_train'])}, lr-tuned {pct(r['tuned'])} vs sklearn {pct(r['sklearn'])}"
            )
        lines[-1] += "Outside 1 point (means): " + "; ".join(parts) + ". "
    lines[-1] += (
        "Below sklearn with a lower train top-1 means DINO's budget under-fits; above it means sklearn's "
        "held-out C over-fits. Neither is the implementation, which the our-draws column pins down."
    )
    lines += [
        "",
        "## Protocol (what `snapvit_core.evaluation.linear_probe` does)",
        "",
        "The SnapViT paper's second accuracy metric trains a linear classifier on frozen embeddings \"with the same "
        "initialization and parameters as the DINOv1 linear evaluation\" (the reference repository's "
        "`jobs/eval/evaluate-linear.sh`, after facebookresearch/dino `eval_linear.py`). "
        "`linear_probe_top1(train_features, train_labels, test_features, test_labels)`:",
        "",
        "- head `nn.Linear(D, C)` with weight ~ N(0, 0.01) and bias 0 (`make_linear_head`), on the embedding as "
        "extracted (the final CLS token; no BatchNorm, no normalisation); C = largest train label + 1;",
        "- cross-entropy, mean over each mini-batch; SGD with momentum 0.9, weight decay 0;",
        f"- lr {probe.base_lr:g} = 0.001 x batch / 256 (DINO's default and its linear scaling rule), cosine-annealed "
        "per epoch to 0 over all epochs (`CosineAnnealingLR(T_max=epochs, eta_min=0)`);",
        f"- {probe.epochs} epochs of batches of {probe.batch_size} rows, reshuffled each epoch (the last, partial "
        "batch kept); the top-1 of the head after the last epoch is reported;",
        "- one seeded CPU `torch.Generator` draws the init and every epoch's permutation: same seed, same value, bit "
        "for bit, in one process; everything else runs on the features' device, gathering one batch of rows at "
        "a time (the train features are never copied); under torchrun every rank holds all features and trains the "
        "same head, so each rank returns the single-process value, with no collective.",
        "",
        "Batch size: 256 is the SnapViT reference's own setting (with lr 0.001, which DINO's rule also gives at 256); "
        "DINO's script defaults to 128 per GPU on 8 GPUs (1,024, lr 0.004). At 256 one probe on this set meets the "
        "0.3 s target on one CPU thread (`benchmarks/bench_linear_probe.py`), so there is no batch-size deviation.",
        "",
        "Deviations from DINO's script, measured above where they can be: (1) the last epoch is reported, not the "
        "best epoch picked on the test set (the SnapViT repository's code also ends up testing the last epoch: "
        "its saved 'best state' is a `state_dict()` that aliases the live weights); (2) DINO's ViT-S/16 probe reads "
        "the CLS tokens of the last 4 blocks concatenated (ViT-B: last CLS + average-pooled patch tokens); the "
        "project's features are its embedding, as the SnapViT reference uses (not measured: another feature "
        "extractor); (3) the SnapViT repository feeds one fixed batch order under bf16 autocast, ours reshuffles "
        "in fp32 as DINO does (its column above).",
        "",
    ]
    if bench:
        lines += [
            "## Speed and memory (`benchmarks/bench_linear_probe.py`, run by this script)",
            "",
            "Time per probe with the defaults on 1 CPU thread (target <= 0.3 s), quiet and beside two busy-loop "
            "processes that the benchmark starts and kills (`--busy 2`), on a 2-core machine another session also "
            "used (its load average is printed); peak extra resident memory of one probe on 100,000 x 768 random "
            "float32 features, 1,000 classes, in a fresh process (target: features + probe <= 2x the features).",
            "",
        ]
        for command, output in bench:
            lines += [f"`{command}`:", "", "```", output, "```", ""]
    args.out.write_text("\n".join(lines))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
