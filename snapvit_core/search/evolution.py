"""The evolutionary correction of cross-block structure (DESIGN section 4): xNES over per-block multipliers.

A candidate is w = [w_mlp (B,), w_heads (B*H,)]; the scaled scores are ``mlp * w_mlp[:, None]`` and
``heads * w_heads.reshape(B, H)`` (w clipped to the bounds, so never negative). Its fitness is the
mean over sparsity pairs of 1 - cosine similarity between PCA-projected embeddings of the pruned
and the unpruned model on a fixed image set; no labels. The result bakes the best w into the scores.

Budget: the initial mean is evaluated first, then whole xNES generations while they fit, then the
final mean if an evaluation is left. The returned candidate is the best evaluated one, so the search
never returns anything worse than its starting point.

Candidates are evaluated by truncation: one module-level copy of the model per search shares every
tensor with the caller's model, and each (candidate, pair) swaps in index-gathered weights of the
kept neurons and heads. ``ElasticViT`` cannot be reused here: it reorders once by fixed scores, while
a candidate's per-head multipliers re-rank heads within a block (per-block MLP multipliers keep the
neuron order, but not which blocks keep how many). Unit masks on the unpruned model (forward hooks)
would compute the same function without any gather, but pay for the full width, so they are slower
(timings in results/code_choices.md).
"""

from __future__ import annotations

import copy
import itertools
import logging
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from torch import nn

from snapvit_core.engine.adapter import BlockLayers, ViTAdapter, prepare_private_copy
from snapvit_core.engine.elastic import check_scores_fit, check_sparsity, plan_keep_counts
from snapvit_core.engine.precision import autocast_context, autocast_dtype, check_precision
from snapvit_core.engine.surgery import select_units
from snapvit_core.errors import CancelledError, SnapViTError
from snapvit_core.presets import SEARCH_FITNESS_PAIRS
from snapvit_core.runtime import distributed
from snapvit_core.scoring.scores import ImportanceScores
from snapvit_core.search.checkpoint import (
    CHECKPOINT_VERSION,  # noqa: F401 - importable from here as before
    SearchIdentity,
    check_checkpoint_writable,
    load_checkpoint,
    save_checkpoint,
    scores_digest,
)
from snapvit_core.search.cka import component_cka
from snapvit_core.search.xnes import XNES, default_population_size

log = logging.getLogger(__name__)

PUBLISHED_PAIRS = SEARCH_FITNESS_PAIRS  # the earlier name, kept importable
COVARIANCES = ("cka", "identity")


@dataclass(frozen=True)
class SearchConfig:
    """Settings of the multiplier search; defaults are the published ones unless noted."""

    evaluations: int = 50  # fitness evaluations in total (published: 50)
    pairs: tuple[tuple[float, float], ...] = SEARCH_FITNESS_PAIRS  # (MLP, head) sparsities the fitness averages
    pca_components: int = 192  # teacher-PCA dimensions compared (published: 192); capped by width and images
    eval_images: int = 1000  # images embedded per fitness evaluation (published: 1000); capped by those given
    covariance: str = "cka"  # initial covariance shape: "cka" (published) or "identity"
    # Initial std of every multiplier: covariance = sigma^2 * CKA (not published). Chosen by the label-free
    # fitness on the embedded backbone: the best of the sigmas tried; a larger one mostly lands on the bounds
    # (the fitness per sigma is in results/code_choices.md).
    initial_sigma: float = 0.6
    bounds: tuple[float, float] = (0.0, 2.0)  # candidates are clipped to this box for evaluation (published)
    mean_ramp: tuple[float, float] = (1.2, 0.8)  # initial mean: linear over blocks, first -> last (published)
    seed: int = 0  # seed of the xNES sampler
    population_size: int | None = None  # candidates per generation; None = 4 + floor(3 ln d)
    batch_size: int = 256  # images per forward pass (memory only; not a search setting)
    precision: str = "auto"  # one of precision.PRECISIONS: auto = bf16 autocast on CUDA, fp32 on the CPU

    def to_dict(self) -> dict:
        return {**asdict(self), "pairs": [list(p) for p in self.pairs], "bounds": list(self.bounds)}


@dataclass
class SearchResult:
    """What a search found; ``scores`` alone make the model elastic."""

    scores: ImportanceScores  # base scores with the best multipliers baked in
    multipliers: torch.Tensor  # (B + B*H,) best candidate, clipped to the bounds
    best_fitness: float
    initial_fitness: float  # fitness of the initial mean (the first evaluation)
    fitness_history: list[float] = field(default_factory=list)  # every evaluation, in order
    best_history: list[float] = field(default_factory=list)  # best so far after each evaluation
    cka_seconds: float = 0.0
    seconds: float = 0.0  # wall time of the whole search

    @property
    def evaluations(self) -> int:
        return len(self.fitness_history)


def check_config(config: SearchConfig, dimension: int) -> int:
    """Validate ``config`` for a search over ``dimension`` multipliers; return the population size."""
    if not config.pairs:
        raise SnapViTError("The search needs at least one (MLP, head) sparsity pair.", "E.g. --pairs 0.35,0.2 0.55,0.4")
    for mlp, head in config.pairs:
        check_sparsity(mlp, "MLP sparsity of a search pair")
        check_sparsity(head, "head sparsity of a search pair")
    if config.covariance not in COVARIANCES:
        raise SnapViTError(f"Unknown covariance '{config.covariance}'.", f"Use one of {', '.join(COVARIANCES)}.")
    low, high = config.bounds
    if not 0.0 <= low < high or not math.isfinite(high):
        raise SnapViTError(f"Search bounds must satisfy 0 <= low < high, got {config.bounds}.")
    check_precision(config.precision)
    if not config.initial_sigma > 0 or config.pca_components < 1 or config.eval_images < 1 or config.batch_size < 1:
        raise SnapViTError("initial_sigma, pca_components, eval_images and batch_size must be positive.")
    population = config.population_size or default_population_size(dimension)
    if population < 2:
        raise SnapViTError(f"The population size must be at least 2, got {population}.")
    if config.evaluations < population + 1:
        raise SnapViTError(
            f"{config.evaluations} evaluations do not fit the initial mean plus one generation of {population}.",
            f"Use at least {population + 1} evaluations (published: 50), or a smaller population.",
        )
    return population


def initial_mean(num_blocks: int, num_heads: int, ramp: tuple[float, float]) -> torch.Tensor:
    """(B + B*H,) linear ramp over blocks, the same value for a block's MLP and each of its heads."""
    per_block = torch.linspace(ramp[0], ramp[1], num_blocks, dtype=torch.float64)
    return torch.cat([per_block, per_block.repeat_interleave(num_heads)])


def scale_scores(scores: ImportanceScores, multipliers: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Scaled (B, M) neuron and (B, H) head scores for multipliers ``[w_mlp (B,), w_heads (B*H,)]``."""
    weights = multipliers.detach().abs().to(torch.float32).cpu()
    blocks = scores.num_blocks
    return scores.mlp * weights[:blocks, None], scores.heads * weights[blocks:].reshape(scores.heads.shape)


def keep_masks(scores: torch.Tensor, sparsity: float, min_keep_ratio: float) -> torch.Tensor:
    """(B, U) boolean mask of the units a global-threshold plan keeps: each block's top-k by score."""
    keep = torch.tensor(plan_keep_counts(scores, sparsity, min_keep_ratio))  # (B,)
    order = torch.argsort(scores, dim=1, descending=True, stable=True)  # the order ElasticViT uses
    ranks = torch.argsort(order, dim=1)  # rank of each unit within its block
    return ranks < keep[:, None]


def gather_units(source: BlockLayers, target: BlockLayers, neurons: torch.Tensor, heads: torch.Tensor) -> None:
    """Make ``target`` the block ``source`` restricted to the given neuron and head indices (any order)."""
    select_units(source, target, neurons, heads)


class CandidateFitness:
    """Fitness of candidate multipliers, measured by truncating a working copy (see module docstring).

    Args:
        model: the unpruned backbone, on ``device``; never modified.
        scores: base importance scores for it.
        images: (N, 3, S, S) preprocessed evaluation images.
        config: pairs, PCA width, batch size.
        device: where the forward passes run (autocast as ``config.precision`` says).
    """

    def __init__(
        self,
        model: nn.Module,
        scores: ImportanceScores,
        images: torch.Tensor,
        config: SearchConfig,
        device: torch.device,
    ) -> None:
        self.scores, self.config, self.device = scores, config, device
        self.images = images.to(device)
        self.source = ViTAdapter(model.eval())
        # One module-level copy per search that shares every tensor with `model`; candidates swap in gathers.
        memo = {id(t): t for t in itertools.chain(model.parameters(), model.buffers())}
        self.working = ViTAdapter(copy.deepcopy(model, memo))
        prepare_private_copy(self.working.model)  # the working copy's own modules: the caller's stay as they are
        self.dtype = autocast_dtype(config.precision, device)
        teacher = self._embed(self.working)  # before any candidate's gather the working copy is the model
        self.centre = teacher.mean(dim=0, keepdim=True)
        width = min(config.pca_components, teacher.shape[1], max(1, teacher.shape[0] - 1))
        _, _, vh = torch.linalg.svd(teacher - self.centre, full_matrices=False)
        self.components = vh[:width].T  # (D, k): the same projection for teacher and pruned
        self.teacher = self._project(teacher)

    @torch.inference_mode()
    def _embed(self, adapter: ViTAdapter) -> torch.Tensor:
        parts = []
        with autocast_context(self.dtype, self.device):
            for start in range(0, self.images.shape[0], self.config.batch_size):
                parts.append(adapter.embed(self.images[start : start + self.config.batch_size]).float())
        return torch.cat(parts)  # (N, D)

    def _project(self, embeddings: torch.Tensor) -> torch.Tensor:
        return (embeddings - self.centre) @ self.components  # (N, k)

    def pair_fitness(self, mlp_scores: torch.Tensor, head_scores: torch.Tensor, pair: tuple[float, float]) -> float:
        """1 - mean cosine similarity to the teacher when pruning by these (scaled) scores."""
        neurons = keep_masks(mlp_scores, pair[0], self.scores.min_mlp_keep_ratio)  # (B, M)
        heads = keep_masks(head_scores, pair[1], self.scores.min_head_keep_ratio)  # (B, H)
        with torch.no_grad():
            for source, target, keep_neurons, keep_heads in zip(
                self.source.blocks, self.working.blocks, neurons, heads
            ):
                gather_units(
                    source,
                    target,
                    keep_neurons.nonzero()[:, 0].to(self.device),
                    keep_heads.nonzero()[:, 0].to(self.device),
                )
        cosine = torch.nn.functional.cosine_similarity(self._project(self._embed(self.working)), self.teacher, dim=1)
        return float(1.0 - cosine.mean())

    def __call__(self, multipliers: torch.Tensor) -> float:
        """Mean over the configured pairs of the pair fitness for clipped ``multipliers``."""
        mlp_scores, head_scores = scale_scores(self.scores, multipliers)
        return sum(self.pair_fitness(mlp_scores, head_scores, p) for p in self.config.pairs) / len(self.config.pairs)


class _History:
    """Evaluations so far and the best candidate among them."""

    def __init__(self) -> None:
        self.fitness: list[float] = []
        self.best: list[float] = []
        self.best_multipliers: torch.Tensor | None = None

    def record(self, multipliers: torch.Tensor, fitness: float) -> None:
        if not self.best or fitness < self.best[-1]:
            self.best_multipliers = multipliers.clone()
        self.fitness.append(fitness)
        self.best.append(min(fitness, self.best[-1]) if self.best else fitness)

    def state(self) -> dict:
        return {"fitness": list(self.fitness), "best": list(self.best), "best_multipliers": self.best_multipliers}

    def load(self, state: dict) -> None:
        self.fitness, self.best = list(state["fitness"]), list(state["best"])
        self.best_multipliers = state["best_multipliers"]


def _build_result(
    base: ImportanceScores,
    history: _History,
    config: SearchConfig,
    cka_seconds: float,
    start: float,
    model_id: str | None,
) -> SearchResult:
    multipliers = history.best_multipliers.to(torch.float32)
    mlp, heads = scale_scores(base, multipliers)
    seconds = time.perf_counter() - start
    search = {
        "fitness": history.fitness,
        "best_so_far": history.best,
        "multipliers": multipliers.tolist(),
        "config": config.to_dict(),
        "cka_seconds": cka_seconds,
        "seconds": seconds,
    }
    metadata = {**base.metadata, "method": "xnes", "base_method": base.metadata.get("method"), "search": search}
    if model_id:
        metadata["backbone"] = model_id
    scores = ImportanceScores(mlp, heads, base.min_mlp_keep_ratio, base.min_head_keep_ratio, metadata)
    return SearchResult(
        scores, multipliers, history.best[-1], history.fitness[0], history.fitness, history.best, cka_seconds, seconds
    )


def run_search(
    model: nn.Module,
    scores: ImportanceScores,
    images: torch.Tensor,
    config: SearchConfig = SearchConfig(),
    device: str | torch.device = "cpu",
    progress: Callable[[int, int, float], None] | None = None,
    cancel: Callable[[], bool] | None = None,
    checkpoint_path: str | Path | None = None,
    resume: bool = False,
    model_id: str | None = None,
) -> SearchResult:
    """Search per-block MLP and per-head multipliers for ``scores`` with xNES (label-free).

    Args:
        model: the unpruned backbone, already on ``device``; never modified (a working copy shares its tensors).
        scores: base importance scores (any method) for it.
        images: (N, 3, S, S) preprocessed images; the first ``config.eval_images`` are used for the
            fitness and for the CKA covariance.
        config: search settings (published defaults).
        device: where forward passes run.
        progress: called as ``progress(done, total, best_fitness)`` after every evaluation.
        cancel: polled between evaluations; when it returns True a ``CancelledError`` is raised whose
            ``partial_result`` holds the best-so-far result (None before the first evaluation).
        checkpoint_path: written atomically after every generation (optimizer state + history).
        resume: continue from ``checkpoint_path`` when it exists (same settings required); the result
            equals that of an uninterrupted run.
        model_id: recorded in the result's metadata.

    Returns:
        The best evaluated candidate and its baked-in scores.
    """
    start = time.perf_counter()
    device = torch.device(device)
    adapter = ViTAdapter(model)
    shape = adapter.shape()
    check_scores_fit(scores, shape, model_id or "the model")
    dimension = shape.num_blocks * (1 + shape.num_heads)
    population = check_config(config, dimension)
    if images.ndim != 4 or images.shape[0] == 0:
        raise SnapViTError(f"The search needs a (N, 3, S, S) image batch, got {tuple(images.shape)}.")
    if next(model.parameters()).device.type != device.type:
        raise SnapViTError(f"The model is not on the search device {device}.", "Load the backbone on that device.")
    images = images[: config.eval_images]
    low, high = config.bounds
    history = _History()
    checkpoint = Path(checkpoint_path) if checkpoint_path else None
    if checkpoint is not None:
        check_checkpoint_writable(checkpoint, dimension)  # issue 16: fail now, not after the first generation
        identity = SearchIdentity(
            config.to_dict(), dimension, population, model_id, shape.describe(), scores_digest(scores)
        )
    state = load_checkpoint(checkpoint, identity) if resume and checkpoint and checkpoint.exists() else None
    if resume and state is None:
        log.warning("no search checkpoint at %s; starting a new search", checkpoint)

    mean = initial_mean(shape.num_blocks, shape.num_heads, config.mean_ramp)
    cka_seconds = 0.0
    if state is not None:
        cka_seconds = float(state["cka_seconds"])
        shape_matrix = torch.eye(dimension, dtype=torch.float64)  # replaced by the checkpoint's state
    elif config.covariance == "cka":
        t0 = time.perf_counter()
        with autocast_context(autocast_dtype(config.precision, device), device):
            shape_matrix = component_cka(model, images.to(device)).cpu()
        cka_seconds = time.perf_counter() - t0
        log.info("CKA covariance of %d components in %.1f s", dimension, cka_seconds)
    else:
        shape_matrix = torch.eye(dimension, dtype=torch.float64)
    optimizer = XNES(mean, config.initial_sigma**2 * shape_matrix, population, config.seed)
    if state is not None:
        optimizer.load_state_dict(state["optimizer"])
        history.load(state["history"])

    def evaluate(candidate: torch.Tensor) -> float:
        if cancel is not None and cancel():
            error = CancelledError("multiplier search")
            error.partial_result = (
                _build_result(scores, history, config, cka_seconds, start, model_id) if history.fitness else None
            )
            raise error
        clipped = candidate.clamp(low, high)
        value = fitness(clipped)
        history.record(clipped, value)
        if progress is not None:
            progress(len(history.fitness), config.evaluations, history.best[-1])
        return value

    def evaluate_generation(candidates: list[torch.Tensor]) -> list[float]:
        """Fitness of a generation; under torchrun each rank evaluates a contiguous share, then all gather."""
        if not distributed.is_distributed():
            return [evaluate(candidate) for candidate in candidates]
        if cancel is not None and cancel():
            evaluate(candidates[0])  # raises CancelledError with the partial result
        shard = distributed.shard_range(len(candidates))
        with distributed.shared_failures():  # one rank's failure fails every rank alike
            local = [fitness(candidates[i].clamp(low, high)) for i in shard]
        values = distributed.all_gather_floats(local, len(candidates))
        for candidate, value in zip(candidates, values):
            history.record(candidate.clamp(low, high), value)
            if progress is not None:
                progress(len(history.fitness), config.evaluations, history.best[-1])
        return values

    fitness = CandidateFitness(model, scores, images, config, device)
    if not history.fitness:
        evaluate(mean)
    while len(history.fitness) + population <= config.evaluations:
        candidates = optimizer.ask()
        optimizer.tell(evaluate_generation(list(candidates)))
        if checkpoint is not None and distributed.is_main():
            save_checkpoint(checkpoint, identity, optimizer.state_dict(), history.state(), cka_seconds)
    if len(history.fitness) < config.evaluations:
        evaluate(optimizer.mean)
    result = _build_result(scores, history, config, cka_seconds, start, model_id)
    log.info(
        "search: best fitness %.5f after %d evaluations, %.1f s",
        result.best_fitness,
        result.evaluations,
        result.seconds,
    )
    return result
