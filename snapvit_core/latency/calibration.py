"""Calibration of the latency model: time a backbone's anchors and pieces once (see ``latency_model``).

Per batch size, every round times back to back (interleaved) four whole forwards in situ (unpruned,
every block at one head, every block at the narrowest MLP, both) and, in isolation, block 0's
attention at every kept head count and its MLP at a grid of kept widths. The pieces are separate
module copies made with the elastic engine, so the caller's model is only read.
"""

from __future__ import annotations

import logging
import math
import os
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
from torch import nn

from snapvit_core.engine.adapter import EmbeddingModule, ViTAdapter
from snapvit_core.engine.elastic import ElasticViT, PruningPlan, standalone_copy
from snapvit_core.errors import SnapViTError, optional_import
from snapvit_core.latency.model import (
    BatchTable,
    LatencyModel,
    LatencyModelKey,
    _warn_once,
    cache_path,
    latency_model_key,
    load_cached_latency_model,
    save_latency_model,
)
from snapvit_core.runtime.cancel import Cancel, Progress, check_cancel, report
from snapvit_core.scoring.scores import ImportanceScores

log = logging.getLogger(__name__)

MLP_GRID_POINTS = 9  # kept-width grid of the MLP piece (linear interpolation between points)
# Estimate = the fastest round (load on a shared machine only ever slows a forward down); the spread
# reported with it runs from that minimum to the median round.
POINT_QUANTILE, HIGH_QUANTILE = 0.0, 0.5
MIN_PIECE_S = 1e-3  # a piece's timing repeats its call until it lasts about this long
RUNTIMES = ("torch", "onnxruntime")  # what executes the timed forwards
MAX_ROUNDS = 100  # interleaved rounds per batch size (the default grows to 21 within its budget)
MAX_BUDGET_S = 3600.0  # timing seconds per batch size


class _Runners:
    """Callables running one forward of a module on fixed inputs, with torch or onnxruntime.

    onnxruntime: each module is exported once to ONNX (opset 18, in a private temporary folder) and
    run by an InferenceSession on the CPU (or CUDA) execution provider, so the table times what an
    onnxruntime deployment runs.
    """

    def __init__(self, runtime: str, device: torch.device) -> None:
        if runtime not in RUNTIMES:
            raise SnapViTError(f"Unknown runtime '{runtime}'.", f"Use one of {', '.join(RUNTIMES)}.")
        self.runtime, self.device = runtime, device
        self.folder = None
        if runtime == "onnxruntime":
            import tempfile

            onnxruntime = optional_import(
                "onnxruntime", "The onnxruntime runtime needs onnxruntime.", "pip install onnx onnxruntime"
            )
            self.ort = onnxruntime
            provider = "CUDAExecutionProvider" if device.type == "cuda" else "CPUExecutionProvider"
            if provider not in onnxruntime.get_available_providers():
                raise SnapViTError(
                    f"onnxruntime has no {provider} here.",
                    "Calibrate onnxruntime on the CPU, or install onnxruntime-gpu.",
                )
            self.providers = [provider]
            self.folder = tempfile.TemporaryDirectory(prefix="snapvit-calibrate-")

    def whole(self, model: nn.Module, images: torch.Tensor) -> Callable[[], object]:
        if self.runtime == "torch":
            adapter = ViTAdapter(model)
            return lambda: adapter.embed(images)
        return self._session(EmbeddingModule(model), images)

    def piece(self, module: nn.Module, tokens: torch.Tensor) -> Callable[[], object]:
        if self.runtime == "torch":
            return lambda: module(tokens)
        return self._session(module, tokens)

    def _session(self, module: nn.Module, example: torch.Tensor) -> Callable[[], object]:
        path = Path(self.folder.name) / f"m{len(list(Path(self.folder.name).iterdir()))}.onnx"
        with torch.no_grad():
            torch.onnx.export(module.eval(), (example,), str(path), input_names=["x"], opset_version=18, dynamo=False)
        session = self.ort.InferenceSession(str(path), providers=self.providers)
        feed = {"x": example.detach().cpu().numpy()}
        return lambda: session.run(None, feed)

    def close(self) -> None:
        if self.folder is not None:
            self.folder.cleanup()


def _spans(full, one_head, narrow, minimal) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """What removing heads / neurons saves at most, per statistic, from the in-situ anchors.

    Each span is at least 0, and together they never save more than going from the unpruned to the
    minimal model does (under load the anchors are noisy; scaling both keeps every prediction at or
    above the measured minimal model).
    """
    attention, mlp = [], []
    for f, o, n, m in zip(full, one_head, narrow, minimal):
        a, b, most = max(0.0, f - o), max(0.0, f - n), max(0.0, f - m)
        if a + b > most:
            scale = most / (a + b)
            a, b = a * scale, b * scale
        attention.append(a)
        mlp.append(b)
    return tuple(attention), tuple(mlp)


def _shape(values: Sequence[float], positions: Sequence[float]) -> tuple[float, ...]:
    """Piece times -> a monotone 0..1 profile (first point 0, last 1); linear in ``positions`` if flat."""
    if len(values) == 1:  # a single point is the unpruned one
        return (1.0,)
    values = np.maximum.accumulate(np.asarray(values, float))
    span = values[-1] - values[0]
    if not span > 0:  # the pieces did not resolve a difference: assume cost proportional to width
        positions = np.asarray(positions, float)
        return tuple(float(v) for v in (positions - positions[0]) / max(positions[-1] - positions[0], 1e-12))
    return tuple(float(v) for v in (values - values[0]) / span)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _timer(fn: Callable[[], object], device: torch.device) -> Callable[[], float]:
    """A callable timing ``fn`` once (seconds per call), repeating tiny calls to about MIN_PIECE_S."""
    with torch.inference_mode():
        fn()  # warm-up: allocator, kernels
        _sync(device)
        start = time.perf_counter()
        fn()
        _sync(device)
        once = time.perf_counter() - start
    number = max(1, min(1000, math.ceil(MIN_PIECE_S / max(once, 1e-9))))

    def timed() -> float:
        with torch.inference_mode():
            _sync(device)
            start = time.perf_counter()
            for _ in range(number):
                fn()
            _sync(device)
        return (time.perf_counter() - start) / number

    return timed


def _stats(samples: Sequence[float]) -> tuple[float, float, float]:
    values = np.asarray(samples, float) * 1e3
    return (
        float(np.quantile(values, POINT_QUANTILE)),
        float(values.min()),
        float(np.quantile(values, HIGH_QUANTILE)),
    )


def mlp_grid(hidden: int, points: int = MLP_GRID_POINTS) -> tuple[int, ...]:
    """Ascending kept widths at which the MLP piece is timed: 1 .. hidden."""
    return tuple(sorted({max(1, round(hidden * f)) for f in np.linspace(0.0, 1.0, points)}))


class _Pieces:
    """One block's attention at every head count and MLP at every grid width, as separate modules."""

    def __init__(self, model: nn.Module) -> None:
        shape = ViTAdapter(model).shape()
        self.shape = shape
        scores = ImportanceScores(
            torch.zeros(shape.num_blocks, shape.mlp_hidden),
            torch.zeros(shape.num_blocks, shape.num_heads),
            min_mlp_keep_ratio=0.0,
            min_head_keep_ratio=0.0,
        )
        self.elastic = ElasticViT(model, scores)
        self.widths = mlp_grid(shape.mlp_hidden)
        self.attention = {h: self._copy(h, shape.mlp_hidden, "attention") for h in range(1, shape.num_heads + 1)}
        self.mlp = {m: self._copy(shape.num_heads, m, "mlp") for m in self.widths}
        # Whole models at the anchors: every block at one head, every block at the narrowest MLP.
        self.one_head = self._whole(1, shape.mlp_hidden)
        self.narrow_mlp = self._whole(shape.num_heads, self.widths[0])
        self.minimal = self._whole(1, self.widths[0])  # both: the floor of every prediction

    def _whole(self, heads: int, neurons: int) -> nn.Module:
        return self.elastic.pruned(self._uniform(heads, neurons)).eval()

    def _uniform(self, heads: int, neurons: int) -> PruningPlan:
        blocks = self.shape.num_blocks
        return PruningPlan(0.0, 0.0, (neurons,) * blocks, (heads,) * blocks)

    def _copy(self, heads: int, neurons: int, part: str) -> nn.Module:
        def first_block_part(model: nn.Module) -> nn.Module:
            block = ViTAdapter(model).blocks[0]
            return standalone_copy(block.attention if part == "attention" else block.mlp)

        return self.elastic.run(self._uniform(heads, neurons), first_block_part).eval()


def check_rounds(min_rounds: int, max_rounds: int, budget_s: float) -> None:
    """Refuse round counts and budgets outside their bounds (they size the timing loops)."""
    for name, value, example in (("minimum", min_rounds, "--min-rounds 3"), ("maximum", max_rounds, "--max-rounds 21")):
        if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_ROUNDS:
            raise SnapViTError(
                f"The calibration's {name} rounds must be a whole number in 1..{MAX_ROUNDS}, got {str(value)[:40]}.",
                f"Use e.g. {example}.",
            )
    if not (isinstance(budget_s, (int, float)) and math.isfinite(budget_s) and 0 < budget_s <= MAX_BUDGET_S):
        raise SnapViTError(
            f"The calibration budget must be in (0, {MAX_BUDGET_S:.0f}] seconds per batch size, got {budget_s!r}.",
            "Use e.g. --budget-s 1.5.",
        )


def calibrate_latency_model(
    model: nn.Module,
    image_size: int,
    device: str | torch.device = "cpu",
    batches: Sequence[int] = (1, 32),
    *,
    backbone_id: str = "model",
    budget_s: float = 1.5,
    min_rounds: int = 3,
    max_rounds: int = 21,
    progress: Progress | None = None,
    cancel: Cancel | None = None,
    runtime: str = "torch",
) -> LatencyModel:
    """Time the pieces of ``model`` (unpruned) at each batch size and return the latency model.

    Args:
        runtime: "torch" (the model's own forward) or "onnxruntime" (each timed module exported to
            ONNX and run by onnxruntime); recorded in ``extra["runtime"]``.
        budget_s: timing time per batch size: rounds grow from ``min_rounds`` up to ``max_rounds``
            while they fit (a small backbone gets many rounds, ViT-B on a CPU ``min_rounds``).
        progress: called with (done, total) timed rounds over all batch sizes.
        cancel: checked between timings; returning True (or raising) raises CancelledError.
    """
    check_rounds(min_rounds, max_rounds, budget_s)
    started = time.perf_counter()
    device = torch.device(device)
    dtype = next(model.parameters()).dtype
    adapter = ViTAdapter(model)
    pieces = _Pieces(model)
    shape = pieces.shape
    blocks, heads, hidden = shape.num_blocks, shape.num_heads, shape.mlp_hidden
    tables: dict[int, BatchTable] = {}
    runners = _Runners(runtime, device)
    try:
        _calibrate_batches(
            adapter, pieces, runners, batches, image_size, device, dtype, tables, budget_s, min_rounds, max_rounds,
            progress, cancel,
        )  # fmt: skip
    finally:
        runners.close()
    key = LatencyModelKey(
        backbone=backbone_id,
        device=str(device),
        dtype=str(dtype).removeprefix("torch."),
        threads=torch.get_num_threads(),
        image_size=int(image_size),
        architecture=shape.describe(),
    )
    seconds = time.perf_counter() - started
    log.info("latency model of %s calibrated in %.1f s (batches %s)", backbone_id, seconds, list(batches))
    created = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    extra = {} if runtime == "torch" else {"runtime": runtime}  # torch models keep today's cache files
    return LatencyModel(key, blocks, heads, hidden, tables, seconds, created, extra)


def _calibrate_batches(
    adapter, pieces, runners, batches, image_size, device, dtype, tables, budget_s, min_rounds, max_rounds,
    progress, cancel,
) -> None:  # fmt: skip
    """The timing rounds of ``calibrate_latency_model``, per batch size (fills ``tables``)."""
    shape = pieces.shape
    blocks, heads = shape.num_blocks, shape.num_heads
    total, done = len(batches) * min_rounds, 0
    for batch_index, batch in enumerate(batches):
        check_cancel(cancel, "latency calibration")
        images = torch.randn(batch, 3, image_size, image_size, device=device, dtype=dtype)
        tokens = torch.randn(batch, shape.num_tokens, shape.embed_dim, device=device, dtype=dtype)
        timers = {
            "full": _timer(runners.whole(adapter.model, images), device),
            "one_head": _timer(runners.whole(pieces.one_head, images), device),
            "narrow_mlp": _timer(runners.whole(pieces.narrow_mlp, images), device),
            "minimal": _timer(runners.whole(pieces.minimal, images), device),
        }
        timers.update({("attention", h): _timer(runners.piece(m, tokens), device) for h, m in pieces.attention.items()})
        timers.update({("mlp", w): _timer(runners.piece(m, tokens), device) for w, m in pieces.mlp.items()})
        samples: dict = {name: [] for name in timers}
        rounds, index = min_rounds, 0
        while index < rounds:
            round_start = time.perf_counter()
            for name, timer in timers.items():
                check_cancel(cancel, "latency calibration")
                samples[name].append(timer())
            index += 1
            if index == 1:  # one round tells the cost: more rounds while they fit in the budget
                per_round = time.perf_counter() - round_start
                rounds = max(min_rounds, min(max_rounds, int(budget_s / max(per_round, 1e-9))))
                total = done + rounds + (len(batches) - batch_index - 1) * rounds
            done += 1
            report(progress, done, total)
        attention = [_stats(samples[("attention", h)]) for h in range(1, heads + 1)]
        mlp = [_stats(samples[("mlp", w)]) for w in pieces.widths]
        full = _stats(samples["full"])
        attention_span, mlp_span = _spans(full, *(_stats(samples[n]) for n in ("one_head", "narrow_mlp", "minimal")))
        attention_shape = _shape([a[0] for a in attention], range(1, heads + 1))
        tables[batch] = BatchTable(
            full_ms=full,
            attention_span_ms=attention_span,
            mlp_span_ms=mlp_span,
            attention_shape=(0.0, *attention_shape),  # no heads: counted as one (a slight overestimate)
            mlp_widths=pieces.widths,
            mlp_shape=_shape([m[0] for m in mlp], pieces.widths),
            blocks=blocks,
            rounds=rounds,
            attention_ms=tuple(attention),
            mlp_ms=tuple(mlp),
        )


def calibrate_backbone(backbone, device: str | torch.device, batches: Sequence[int], **options: object) -> LatencyModel:
    """``calibrate_latency_model`` of a ``backbones.Backbone`` (its model, image size and id)."""
    return calibrate_latency_model(
        backbone.model, backbone.image_size, device, batches, backbone_id=backbone.model_id, **options
    )


def load_or_calibrate_latency_model(
    backbone,
    device: str | torch.device = "cpu",
    batches: Sequence[int] = (1, 32),
    *,
    cache_dir: str | os.PathLike | None = None,
    progress: Progress | None = None,
    cancel: Cancel | None = None,
    **calibration: object,
) -> LatencyModel:
    """The cached latency model of ``backbone`` (a backbones.Backbone) on ``device``, calibrating on a miss.

    The cache file is keyed by backbone id, device, dtype, threads, image size and architecture;
    it is written atomically. ``calibration`` goes to ``calibrate_latency_model`` (budget_s ...).
    """
    key = latency_model_key(backbone, device)
    cached = load_cached_latency_model(key, cache_dir, batches)
    if cached is not None:
        report(progress, 1, 1)
        return cached
    model = calibrate_backbone(backbone, device, batches, progress=progress, cancel=cancel, **calibration)
    if model.key != key:  # the threads changed during calibration: store it under what it measured
        log.info("latency model key changed during calibration: %s -> %s", key, model.key)
    try:
        save_latency_model(model, cache_dir)
    except OSError as error:  # a read-only cache folder, a file where the folder should be, a full disk
        path = cache_path(model.key, cache_dir)
        _warn_once(path, f"could not cache the latency model at {path} ({error.strerror or error}); it is "
                   "recalibrated next time. Set SNAPVIT_CACHE_DIR to a writable folder to keep it.")  # fmt: skip
    return model
