"""What the Streamlit pages compute, as plain functions: no streamlit import, unit-testable.

Owns the explorer's interactive measurements (a fast batch-1 latency probe, per-image embedding
similarity), method sweeps and the budget finder (Pareto front, best configuration under a cost
limit). The slider grid, budget labels and number formats moved to the app (``ui/``).
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch

from .adapter import ViTAdapter
from .errors import SnapViTError
from .evaluation import embedding_similarity
from .explorer import Explorer


def resolve_device(choice: str) -> str:
    """'auto' -> 'cuda' when available else 'cpu'; 'cuda' without a GPU is refused."""
    if choice == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if choice == "cuda" and not torch.cuda.is_available():
        raise SnapViTError("CUDA was requested but no GPU is visible to PyTorch.", "Choose 'cpu' or 'auto'.")
    return choice


def paired_rounds(
    models: list[torch.nn.Module],
    image_size: int,
    device: str,
    repeats: int = 15,
    budget_s: float | None = None,
    max_repeats: int = 50,
) -> list[list[float]]:
    """Per-round wall times (s) of a batch-1 embedding forward of each model, one forward of each per round.

    Cheap enough for every slider move: 2 warm-up rounds, then ``repeats`` rounds. Interleaving means a
    load spike on this (shared) machine slows every model alike, so per-round ratios - the speed-up -
    stay meaningful. ``measure_latency`` (torch.utils.benchmark, adaptive repeats) is the reference
    measurement but takes about a second. With ``budget_s``, the number of rounds grows from ``repeats``
    up to ``max_repeats`` while the timed rounds fit in about that many seconds (small models get more
    rounds, large ones fewer).
    """
    adapters = [ViTAdapter(model) for model in models]
    images = torch.randn(1, 3, image_size, image_size, device=device)
    times: list[list[float]] = [[] for _ in models]
    warm_up, rounds, round_index = 2, repeats, 0
    with torch.inference_mode():
        while round_index < warm_up + rounds:
            for adapter, samples in zip(adapters, times):
                if device.startswith("cuda"):
                    torch.cuda.synchronize()
                start = time.perf_counter()
                adapter.embed(images)
                if device.startswith("cuda"):
                    torch.cuda.synchronize()
                if round_index >= warm_up:  # the first rounds warm the allocator and kernels
                    samples.append(time.perf_counter() - start)
            round_index += 1
            if budget_s is not None and round_index == warm_up + 1:  # one timed round tells the cost
                per_round = sum(samples[0] for samples in times)
                rounds = max(repeats, min(max_repeats, int(budget_s / max(per_round, 1e-9))))
    return times


def median_speedup(pruned_s: list[float], unpruned_s: list[float]) -> float:
    """Median over rounds of unpruned / pruned time: each ratio compares two forwards run back to back."""
    return statistics.median(u / p for u, p in zip(unpruned_s, pruned_s))


@dataclass
class Measurement:
    """One configuration's numbers as the pages show them."""

    mlp_sparsity: float  # requested
    head_sparsity: float  # requested
    knn_top1_pct: float | None  # kNN top-1 (%) on the test split; None without labelled data
    params: int  # embedding-path parameters
    flops: int  # analytic FLOPs per image
    latency_ms: float  # batch-1 median, quick probe
    kept_heads: list[int]  # per block
    kept_neurons: list[int]  # per block
    embedding_cosine: float | None  # mean cosine similarity to the unpruned embeddings
    unpruned_latency_ms: float | None = None  # timed interleaved with ``latency_ms`` when asked for
    speedup: float | None = None  # median over rounds of unpruned / pruned time, with ``unpruned_latency_ms``

    def as_row(self) -> dict:
        return {
            "MLP sparsity": self.mlp_sparsity,
            "head sparsity": self.head_sparsity,
            "kNN top-1 (%)": self.knn_top1_pct,
            "params": self.params,
            "params_m": self.params / 1e6,
            "GFLOPs": self.flops / 1e9,
            "latency_ms": self.latency_ms,
        }


def measure(
    explorer: Explorer,
    mlp_sparsity: float,
    head_sparsity: float,
    latency: bool = True,
    with_unpruned: bool = False,
    latency_budget_s: float | None = None,
) -> Measurement:
    """Prune the session's explorer to the sparsity and measure everything the explorer page shows.

    ``with_unpruned`` also times the unpruned model, interleaved with the pruned one (for a speed-up).
    ``latency_budget_s`` lets the timing take more rounds (up to 50) while they fit in that time.
    """
    metrics = ("knn", "flops", "params") if explorer.knn is not None else ("flops", "params")
    unpruned_latency_ms, speedup = None, None
    with explorer.lock:  # the latency probe must time the model this call pruned, not another thread's
        result = explorer.evaluate(mlp_sparsity, head_sparsity, metrics)
        latency_ms = float("nan")
        if latency:
            models = [explorer.model] + ([explorer.backbone.model] if with_unpruned else [])
            rounds = paired_rounds(
                models, explorer.backbone.image_size, str(explorer.device), budget_s=latency_budget_s
            )
            latency_ms = statistics.median(rounds[0]) * 1e3
            if with_unpruned:
                unpruned_latency_ms = statistics.median(rounds[1]) * 1e3
                speedup = median_speedup(rounds[0], rounds[1])
    return Measurement(
        mlp_sparsity=mlp_sparsity,
        head_sparsity=head_sparsity,
        knn_top1_pct=None if result.knn_top1 is None else 100.0 * result.knn_top1,
        params=int(result.params),
        flops=int(result.flops),
        latency_ms=latency_ms,
        kept_heads=result.kept_heads,
        kept_neurons=result.kept_neurons,
        embedding_cosine=result.embedding_cosine,
        unpruned_latency_ms=unpruned_latency_ms,
        speedup=speedup,
    )


def per_image_similarity(explorer: Explorer) -> np.ndarray | None:
    """Cosine similarity (N,) of each test image's embedding, current pruned vs unpruned model."""
    if explorer.knn is None:
        return None
    with explorer.lock:
        reference = explorer.unpruned_features()
        pruned = explorer.knn.features(explorer.model, explorer.state_key())[1]
    return embedding_similarity(reference, pruned).numpy()


SWEEP_LATENCY_BUDGET_S = 0.5  # timing time per swept configuration (more rounds for small models)


def sweep(
    explorers: dict[str, Explorer],
    pairs: Iterable[tuple[float, float]],
    on_step: Callable[[int, int], None] | None = None,
) -> pd.DataFrame:
    """Measure every (MLP, head) pair for every scores source; one table row per configuration.

    Latency: each pruned model is timed interleaved with the unpruned model (``paired_rounds``, up to
    50 rounds within about half a second), and its speed-up is the median over rounds of the two
    back-to-back times' ratio, so load on the machine cancels out. Configurations timed
    seconds apart on a shared machine see different loads, so the table's ``latency_ms`` is that
    paired speed-up applied to the sweep's median unpruned latency; ``latency_measured_ms`` keeps the
    raw pruned median.

    Args:
        explorers: scores-source label -> that source's explorer (same backbone and data).
        pairs: (MLP sparsity, head sparsity) configurations.
        on_step: called with (done, total) after each configuration, for a progress bar.
    """
    pairs = list(pairs)
    total = len(pairs) * len(explorers)
    rows, unpruned_ms, done = [], [], 0
    for label, explorer in explorers.items():
        for mlp_sparsity, head_sparsity in pairs:
            measurement = measure(
                explorer, mlp_sparsity, head_sparsity, with_unpruned=True, latency_budget_s=SWEEP_LATENCY_BUDGET_S
            )
            row = measurement.as_row()
            row["latency_measured_ms"] = measurement.latency_ms
            row["speed-up (x)"] = measurement.speedup
            rows.append({"scores": label, **row})
            unpruned_ms.append(measurement.unpruned_latency_ms)
            done += 1
            if on_step:
                on_step(done, total)
    table = pd.DataFrame(rows)
    table["latency_ms"] = statistics.median(unpruned_ms) / table["speed-up (x)"]
    table["flops_pct"] = 100.0 * table["GFLOPs"] / table["GFLOPs"].max()  # the largest FLOPs are the unpruned
    return table


def pareto_mask(cost: Iterable[float], accuracy: Iterable[float]) -> np.ndarray:
    """True for configurations no other beats on both axes (lower cost AND higher accuracy)."""
    cost, accuracy = np.asarray(list(cost), float), np.asarray(list(accuracy), float)
    mask = np.ones(len(cost), bool)
    for i in range(len(cost)):
        better = (cost <= cost[i]) & (accuracy >= accuracy[i]) & ((cost < cost[i]) | (accuracy > accuracy[i]))
        mask[i] = not better.any()
    return mask


def best_under_budget(table: pd.DataFrame, column: str, limit: float) -> pd.Series | None:
    """The most accurate row whose ``column`` is at most ``limit`` (ties: the cheaper one); None if none fits."""
    fitting = table[table[column] <= limit]
    if fitting.empty or fitting["kNN top-1 (%)"].isna().all():
        return None
    ranked = fitting.sort_values(["kNN top-1 (%)", column], ascending=[False, True])
    return ranked.iloc[0]
