"""The latency model: time the pieces a configuration is made of once, predict any plan's latency.

A pruned ViT's forward is the unpruned one's fixed parts (patch embedding, norms, residuals, final
norm, any attention pool) plus, per block, an attention with ``h`` kept heads and an MLP with ``m``
kept neurons. Calibration (``latency_calibration.py``) times, per batch size:

- four whole forwards in situ: the unpruned model, every block at one head, every block at the
  narrowest MLP width, and both; their differences are what removing heads / neurons can save at
  most (together never more than the unpruned minus the minimal model);
- in isolation, one block's attention at every kept head count and its MLP at a grid of kept widths
  (every supported family has identical blocks, so block 0 stands for all); these give the *shape*
  of the saving between none and all (monotone, 0..1).

A plan's latency is the unpruned forward minus, per block, its share of each saving. The isolated
pieces never set the scale (a piece timed alone can be slower or faster than inside the model),
so a prediction stays between the anchors; the unpruned plan's prediction *is* the measured
unpruned forward and the speed-up is exactly 1.0 at (0, 0) by construction.

Robust on a shared machine: every round times all anchors and pieces back to back (interleaved),
and each estimate is the fastest of its rounds (load only ever slows a forward down), so a load
spike in some rounds does not move it; the median round gives the upper end of the spread.
Calibrated models are cached on disk (JSON, atomic) per backbone / device / dtype / threads /
image size / architecture. A cache file is checked on load (structure, sizes that fit the model,
finite times and 0..1 profiles); an invalid, unreadable or unwritable cache is treated as absent: the
model is recalibrated and a warning is logged once per file, never an error.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import numpy as np
import torch

from snapvit_core.engine.elastic import PruningPlan
from snapvit_core.errors import SnapViTError, printable
from snapvit_core.files.atomic import write_text_atomic

log = logging.getLogger(__name__)

FORMAT_VERSION = 2
MAX_CACHE_BYTES = 1 << 20  # a calibration is a few KB of JSON
_MAX_UNITS = 1 << 20  # bound on blocks, heads, widths and batch sizes read from a cache file
_warned: set[str] = set()  # cache files already warned about (once per file and process)


@dataclass(frozen=True)
class LatencyPrediction:
    """Latency of one forward of ``batch`` images for one plan."""

    batch: int
    ms: float  # predicted (or measured) latency of one forward of `batch` images
    low_ms: float  # spread (minimum-based prediction, or the measured fastest round)
    high_ms: float  # spread (median-based prediction, or the measured median round)
    speedup: float  # unpruned / pruned, exactly 1.0 at the unpruned plan
    source: str = "predicted"  # "predicted" or "measured"

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class LatencyModelKey:
    """What a calibration is valid for: another value here means another cache file."""

    backbone: str  # model id
    device: str
    dtype: str
    threads: int
    image_size: int
    architecture: str = ""  # ArchitectureShape.describe(): a changed checkpoint directory is recalibrated

    def slug(self) -> str:
        digest = hashlib.sha1(json.dumps(asdict(self), sort_keys=True).encode()).hexdigest()[:16]
        name = "".join(c if c.isalnum() or c in "-_." else "_" for c in self.backbone)[-40:]
        return f"{name}-{digest}"


@dataclass(frozen=True)
class BatchTable:
    """Calibrated latency at one batch size; every time is (estimate, low, high) in ms.

    Whole-model forwards anchor the scale in situ: the unpruned model (``full_ms``), every block at
    one head (``attention_span_ms`` = what removing all other heads saves), every block at the
    narrowest MLP (``mlp_span_ms``) and both (the spans never add up to more than that saves).
    The isolated pieces only give the *shape* between those anchors: ``attention_shape[h]`` and
    ``mlp_shape`` rise from 0 (one head / narrowest width) to 1 (unpruned), made monotone. A plan's
    latency is ``full`` minus, per block, its share of each span.
    """

    full_ms: tuple[float, float, float]
    attention_span_ms: tuple[float, float, float]
    mlp_span_ms: tuple[float, float, float]
    attention_shape: tuple[float, ...]  # index = kept heads, 0..H
    mlp_widths: tuple[int, ...]  # ascending kept widths of the MLP grid
    mlp_shape: tuple[float, ...]  # one per width
    blocks: int
    rounds: int  # interleaved rounds behind the estimates
    attention_ms: tuple[tuple[float, float, float], ...] = ()  # raw isolated pieces, 1..H heads (report only)
    mlp_ms: tuple[tuple[float, float, float], ...] = ()  # raw isolated pieces per width (report only)

    @property
    def fixed_ms(self) -> tuple[float, float, float]:
        """The part every plan starts from: the unpruned forward."""
        return self.full_ms

    def block_ms(self, heads: int, neurons: int, stat: int) -> float:
        """One block's contribution relative to the unpruned forward (<= 0: the time its pruning saves)."""
        attention = self.attention_shape[min(max(heads, 0), len(self.attention_shape) - 1)]
        mlp = float(np.clip(np.interp(neurons, self.mlp_widths, self.mlp_shape), 0.0, 1.0))
        saved = self.attention_span_ms[stat] * (1.0 - attention) + self.mlp_span_ms[stat] * (1.0 - mlp)
        return -saved / self.blocks

    def predict(self, kept_heads: Sequence[int], kept_neurons: Sequence[int], stat: int) -> float:
        total = self.fixed_ms[stat] + sum(self.block_ms(h, m, stat) for h, m in zip(kept_heads, kept_neurons))
        return max(total, 1e-6)

    @classmethod
    def from_dict(cls, data: dict, blocks: int | None = None, heads: int | None = None, hidden: int | None = None):
        """A table from its JSON form, checked: with ``blocks``/``heads``/``hidden`` (the model's shape) the
        profiles must cover it. Raises SnapViTError for anything a prediction could not use."""
        if not isinstance(data, dict):
            raise _invalid(f"a batch table is a {type(data).__name__}")
        widths = tuple(_integer(w, "mlp_widths", 1) for w in _sequence(data.get("mlp_widths"), "mlp_widths"))
        table = cls(
            full_ms=_times(data.get("full_ms"), "full_ms", positive=True),
            attention_span_ms=_times(data.get("attention_span_ms"), "attention_span_ms"),
            mlp_span_ms=_times(data.get("mlp_span_ms"), "mlp_span_ms"),
            attention_shape=_profile(data.get("attention_shape"), "attention_shape"),
            mlp_widths=widths,
            mlp_shape=_profile(data.get("mlp_shape"), "mlp_shape"),
            blocks=_integer(data.get("blocks"), "blocks", 1),
            rounds=_integer(data.get("rounds"), "rounds", 1),
            attention_ms=tuple(_times(row, "attention_ms") for row in _sequence(data.get("attention_ms", ()), "", 0)),
            mlp_ms=tuple(_times(row, "mlp_ms") for row in _sequence(data.get("mlp_ms", ()), "", 0)),
        )
        if list(widths) != sorted(set(widths)) or len(table.mlp_shape) != len(widths):
            raise _invalid("mlp_widths are not ascending or do not match mlp_shape")
        if blocks is not None and table.blocks != blocks:
            raise _invalid(f"a table for {table.blocks} blocks in a model of {blocks}")
        if heads is not None and len(table.attention_shape) != heads + 1:
            raise _invalid(f"attention_shape has {len(table.attention_shape)} points for {heads} heads")
        if hidden is not None and widths[-1] != hidden:
            raise _invalid(f"mlp_widths end at {widths[-1]}, not the MLP width {hidden}")
        return table


def _invalid(problem: str) -> SnapViTError:
    return SnapViTError(f"invalid latency model: {problem}.", "Recalibrate.")


def _sequence(value: object, name: str, least: int = 1) -> list:
    if not isinstance(value, (list, tuple)) or not least <= len(value) <= _MAX_UNITS:
        raise _invalid(f"{name or 'a row'} is not a list of {least} or more values")
    return list(value)


def _number(value: object, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise _invalid(f"{name} holds a {type(value).__name__}, not a number")
    try:
        number = float(value)
    except OverflowError:
        number = float("inf")
    if not np.isfinite(number):
        raise _invalid(f"{name} holds {value!r:.40}, not a finite number")
    return number


def _integer(value: object, name: str, low: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= _MAX_UNITS:
        raise _invalid(f"{name} is {value!r:.40}, not a whole number in [{low}, {_MAX_UNITS}]")
    return int(value)


def _times(value: object, name: str, positive: bool = False) -> tuple[float, float, float]:
    """(estimate, low, high) in ms: three finite numbers >= 0 (> 0 for a whole forward)."""
    if not isinstance(value, (list, tuple)) or len(value) != 3:
        raise _invalid(f"{name} is not three times")
    times = tuple(_number(v, name) for v in value)
    if min(times) < 0 or (positive and min(times) <= 0):
        raise _invalid(f"{name} holds a time that is not {'positive' if positive else '>= 0'}")
    return times  # type: ignore[return-value]


def _profile(value: object, name: str) -> tuple[float, ...]:
    """A 0..1 profile: at least one finite number, each in [0, 1]."""
    points = tuple(_number(v, name) for v in _sequence(value, name))
    if min(points) < 0.0 or max(points) > 1.0:
        raise _invalid(f"{name} leaves 0..1")
    return points


@dataclass
class LatencyModel:
    """Calibrated latency pieces of one backbone on one device; ``predict`` any plan."""

    key: LatencyModelKey
    num_blocks: int
    num_heads: int
    mlp_hidden: int
    tables: dict[int, BatchTable]  # batch -> pieces
    seconds: float = 0.0  # calibration time
    created: str = ""
    extra: dict = field(default_factory=dict)

    @property
    def batches(self) -> tuple[int, ...]:
        return tuple(sorted(self.tables))

    def predict(self, kept_heads: Sequence[int], kept_neurons: Sequence[int], batch: int = 1) -> LatencyPrediction:
        """Predicted latency of one forward of ``batch`` images of the plan keeping these counts per block."""
        if batch not in self.tables:
            raise SnapViTError(
                f"The latency model was calibrated for batches {list(self.batches)}, not {batch}.",
                "Ask for one of those batches, or recalibrate with that batch.",
            )
        if len(kept_heads) != self.num_blocks or len(kept_neurons) != self.num_blocks:
            raise SnapViTError(
                f"The plan has {len(kept_heads)} blocks, the latency model {self.num_blocks}.",
                "Use the latency model of this backbone.",
            )
        table = self.tables[batch]
        full_heads, full_neurons = [self.num_heads] * self.num_blocks, [self.mlp_hidden] * self.num_blocks
        ms, low, high = (table.predict(kept_heads, kept_neurons, stat) for stat in range(3))
        unpruned = table.predict(full_heads, full_neurons, 0)
        return LatencyPrediction(batch, ms, min(low, ms), max(high, ms), unpruned / ms, "predicted")

    def predict_plan(self, plan: PruningPlan, batch: int = 1) -> LatencyPrediction:
        return self.predict(plan.kept_heads, plan.kept_neurons, batch)

    def to_dict(self) -> dict:
        return {
            "format": FORMAT_VERSION,
            "key": asdict(self.key),
            "num_blocks": self.num_blocks,
            "num_heads": self.num_heads,
            "mlp_hidden": self.mlp_hidden,
            "tables": {str(batch): asdict(table) for batch, table in self.tables.items()},
            "seconds": self.seconds,
            "created": self.created,
            "extra": self.extra,
        }

    @classmethod
    def from_dict(cls, data: dict) -> LatencyModel:
        """A latency model from its JSON form, checked (SnapViTError for anything a prediction could not use)."""
        if not isinstance(data, dict):
            raise _invalid(f"it is a JSON {type(data).__name__}, not an object")
        if data.get("format") != FORMAT_VERSION:
            raise SnapViTError(
                f"Latency model format {data.get('format')!r:.40} is not {FORMAT_VERSION}.", "Recalibrate."
            )
        key = data.get("key")
        if not isinstance(key, dict) or set(key) != {f.name for f in fields(LatencyModelKey)}:
            raise _invalid("its key is malformed")
        if not all(isinstance(key[name], int if name in ("threads", "image_size") else str) for name in key):
            raise _invalid("its key is malformed")
        key = LatencyModelKey(**key)
        blocks = _integer(data.get("num_blocks"), "num_blocks", 1)
        heads = _integer(data.get("num_heads"), "num_heads", 1)
        hidden = _integer(data.get("mlp_hidden"), "mlp_hidden", 1)
        raw = data.get("tables")
        if not isinstance(raw, dict) or not raw:
            raise _invalid("it holds no batch tables")
        tables = {}
        for batch, table in raw.items():
            if not (isinstance(batch, str) and batch.isdigit() and 0 < int(batch) <= _MAX_UNITS):
                raise _invalid(f"batch size {batch!r:.20}")
            tables[int(batch)] = BatchTable.from_dict(table, blocks, heads, hidden)
        extra = data.get("extra", {})
        return cls(
            key=key,
            num_blocks=blocks,
            num_heads=heads,
            mlp_hidden=hidden,
            tables=tables,
            seconds=_number(data.get("seconds", 0.0), "seconds"),
            created=str(data.get("created", ""))[:100],
            extra=dict(extra) if isinstance(extra, dict) else {},
        )


def cache_root() -> Path:
    """The project's cache folder: $SNAPVIT_CACHE_DIR, else ~/.cache/snapvit-explorer."""
    return Path(os.environ.get("SNAPVIT_CACHE_DIR") or Path.home() / ".cache" / "snapvit-explorer")


def default_cache_dir() -> Path:
    """Latency models go to the cache root's latency/ folder."""
    return cache_root() / "latency"


def latency_model_key(backbone, device: str | torch.device, threads: int | None = None) -> LatencyModelKey:
    """The cache key of ``backbone`` (a backbones.Backbone) on ``device`` with the current threads."""
    dtype = next(backbone.model.parameters()).dtype
    return LatencyModelKey(
        backbone=backbone.model_id,
        device=str(torch.device(device)),
        dtype=str(dtype).removeprefix("torch."),
        threads=int(threads or torch.get_num_threads()),
        image_size=int(backbone.image_size),
        architecture=backbone.shape.describe(),
    )


def cache_path(key: LatencyModelKey, cache_dir: str | os.PathLike | None = None) -> Path:
    return Path(cache_dir) / f"{key.slug()}.json" if cache_dir else default_cache_dir() / f"{key.slug()}.json"


def _warn_once(path: Path, message: str) -> None:
    if str(path) not in _warned:
        _warned.add(str(path))
        log.warning("warning: %s", printable(message))


def load_cached_latency_model(key: LatencyModelKey, cache_dir=None, batches: Sequence[int] = ()) -> LatencyModel | None:
    """The cached model for ``key`` covering ``batches``, or None (missing, stale, unreadable or invalid:
    an invalid file is warned about once and left to be replaced by the next calibration)."""
    path = cache_path(key, cache_dir)
    try:
        if not path.is_file():
            return None
        from snapvit_core.files.guards import read_bounded

        model = LatencyModel.from_dict(json.loads(read_bounded(path, MAX_CACHE_BYTES, "the cache").decode("utf-8")))
    except (OSError, ValueError, KeyError, TypeError, RecursionError, SnapViTError) as error:
        reason = str(error) if isinstance(error, (SnapViTError, ValueError)) else type(error).__name__
        _warn_once(path, f"ignoring the latency model cache {path} ({reason[:200]}); recalibrating.")
        return None
    if model.key != key or not set(batches) <= set(model.batches):
        return None
    return model


def save_latency_model(model: LatencyModel, cache_dir=None) -> Path:
    path = cache_path(model.key, cache_dir)
    write_text_atomic(path, json.dumps(model.to_dict(), indent=1))
    return path


def latency_report(model: LatencyModel, plan: PruningPlan, batch: int, **labels: object) -> dict:
    """A plan's predicted latency as the CLI's ``latency`` dict: batch 1 (or ``batch`` when the model has no
    batch-1 table), throughput at ``batch``, and ``labels`` (device, dtype, threads, source ...) after them."""
    single = model.predict_plan(plan, 1 if 1 in model.tables else batch)
    many = model.predict_plan(plan, batch)
    return {
        "median_ms": single.ms,
        "low_ms": single.low_ms,
        "high_ms": single.high_ms,
        "speedup": single.speedup,
        "throughput_per_s": 1e3 * batch / many.ms,
        "batch_ms": many.ms,
        "batch_speedup": many.speedup,
        "batch_size": batch,
        **labels,
    }
