"""The accuracy landscape: every configuration of the (MLP, head) sparsity grid, evaluated once.

Every number the explorer shows is a fixed function of (backbone weights, scores, data, kNN settings,
correction, device, dtype, width alignment) and the configuration, and the sliders move on a
0.05 grid (20 x 20 = 400 configurations). A ``Landscape`` holds, for one ``LandscapeKey``, the
points computed so far: kNN top-1 on the key's test split, the mean embedding cosine to the unpruned
model, parameters, FLOPs, the realised sparsities and, where it was computed, the linear-probe top-1
(with the key's probe settings), each exactly what ``Explorer.evaluate`` gives.
Latency is not stored: it is derived from the device's latency model at read time
(``Explorer.cost``), so a landscape made on one machine stays valid on another.

Persistence is a small JSON file named by the key's content hash, rewritten atomically (merged with
what another process wrote meanwhile) as points arrive, so a restart or a second process continues
where the first stopped. A file that is corrupt, truncated, too large, foreign (another key) or holds
a value out of range is refused with a warning and recomputed: it is parsed as plain JSON data,
never executed. ``landscape_fill.py`` owns the background worker that fills a landscape.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import threading
import weakref
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from snapvit_core.errors import SnapViTError
from snapvit_core.files.atomic import write_text_atomic
from snapvit_core.files.guards import guard_destination, read_bounded
from snapvit_core.landscape.grid import GRID_STEP, grid_axis, neighbours, on_grid, published_points

log = logging.getLogger(__name__)

FORMAT = "snapvit-landscape"
VERSION = 2  # 2: points carry linear_top1, keys the linear-probe settings
MAX_FILE_BYTES = 4 << 20  # a full 0.05 grid is ~60 KB; anything much larger is not a landscape
CSV_COLUMNS = (
    "mlp_sparsity",
    "head_sparsity",
    "knn_top1",
    "mean_cosine",
    "params",
    "flops",
    "latency_ms",
    "latency_batch_ms",
    "realised_mlp_sparsity",
    "realised_head_sparsity",
    "linear_top1",
)


def tensor_digest(tensors: Iterable[torch.Tensor]) -> str:
    """A content hash of tensors (dtype, shape and bytes), for cache keys."""
    digest = hashlib.blake2b(digest_size=16)
    for tensor in tensors:
        value = tensor.detach().cpu().contiguous()
        digest.update(f"{value.dtype}{tuple(value.shape)}".encode())
        digest.update(value.view(torch.uint8).numpy().tobytes() if value.numel() else b"")
    return digest.hexdigest()


def model_digest(model: torch.nn.Module) -> str:
    """Content hash of a model's weights (names, shapes, values); seconds for ViT-B, cached by callers."""
    state = model.state_dict()
    digest = hashlib.blake2b(digest_size=16)
    for name in sorted(state):
        digest.update(name.encode())
        digest.update(tensor_digest([state[name]]).encode())
    return digest.hexdigest()


def scores_digest(scores) -> str:
    """Content hash of what decides a plan: the score tensors and the per-block keep floors."""
    floors = torch.tensor([scores.min_mlp_keep_ratio, scores.min_head_keep_ratio], dtype=torch.float64)
    return tensor_digest([scores.mlp, scores.heads, floors])


def data_digest(splits) -> str:
    """Content hash of the kNN data: labels and, for in-memory splits, the preprocessed images.

    Streaming splits are identified by their labels, sizes and name (the images are not read here).
    Splits whose loader hashed the source images (``source_digest``) are identified by that: the
    preprocessed floats round differently on different CPUs (AMD and Intel gave two hashes).
    """
    source = getattr(splits, "source_digest", None)
    if source is not None:
        digest = hashlib.blake2b(source.encode(), digest_size=16)
        digest.update(f"{splits.name}|{len(splits.train_labels)}|{len(splits.test_labels)}".encode())
        return digest.hexdigest()
    parts = [splits.train_labels, splits.test_labels]
    for images in (splits.train, splits.test):
        if isinstance(images, torch.Tensor):
            parts.append(images)
    digest = hashlib.blake2b(tensor_digest(parts).encode(), digest_size=16)
    digest.update(f"{splits.name}|{len(splits.train_labels)}|{len(splits.test_labels)}".encode())
    return digest.hexdigest()


@dataclass(frozen=True)
class LandscapeKey:
    """Everything a landscape's values depend on (besides the configuration)."""

    backbone: str  # model id, e.g. "embedded"
    weights: str  # content hash of the backbone weights (model_digest)
    scores: str  # content hash of the scores (scores_digest)
    data: str  # data spec, e.g. "embedded"
    data_hash: str  # content hash of the kNN splits (data_digest)
    knn_images: int | None = None  # kNN set size (train + test, stratified); None = the whole split
    k: int = 20  # kNN neighbours (published: 20)
    vote: str = "uniform"  # kNN vote (published: uniform)
    correction: str | None = None  # JSON of the correction settings and calibration hash; None = off
    device: str = "cpu"
    dtype: str = "float32"
    align: int = 1  # kept MLP widths rounded to a multiple of this (1 = as the scores give)
    grid: float = GRID_STEP
    linear: str | None = None  # JSON of the linear probe's settings (LinearProbe.describe) its values were made with

    @property
    def digest(self) -> str:
        text = json.dumps(asdict(self), sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:20]

    def file_name(self) -> str:
        safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in self.backbone)[:40]
        return f"{safe}.{self.digest}.landscape.json"


@dataclass(frozen=True)
class LandscapePoint:
    """One evaluated configuration."""

    mlp_sparsity: float  # requested fraction of MLP neurons removed (a grid value)
    head_sparsity: float  # requested fraction of heads removed (a grid value)
    knn_top1: float | None  # 0..1 on the key's test split; None without labelled data
    mean_cosine: float | None  # mean cosine of pruned vs unpruned test embeddings
    params: int  # embedding-path parameters
    flops: int  # analytic FLOPs per image
    realised_mlp_sparsity: float  # fraction actually removed
    realised_head_sparsity: float
    linear_top1: float | None = None  # 0..1 linear-probe top-1 on the key's test split; None where not computed

    @classmethod
    def from_result(cls, result) -> LandscapePoint:
        """From an ``explorer.EvaluationResult`` with knn, params and flops."""
        return cls(
            float(result.mlp_sparsity),
            float(result.head_sparsity),
            None if result.knn_top1 is None else float(result.knn_top1),
            None if result.embedding_cosine is None else float(result.embedding_cosine),
            int(result.params),
            int(result.flops),
            float(result.realised_mlp_sparsity),
            float(result.realised_head_sparsity),
            None if result.linear_top1 is None else float(result.linear_top1),
        )

    def row(self) -> list:
        return [getattr(self, f.name) for f in fields(self)]


_POINT_FIELDS = tuple(f.name for f in fields(LandscapePoint))


def _check_row(row: object, step: float) -> LandscapePoint:
    """A stored row as a point, or ValueError naming what is wrong (types, ranges, grid)."""
    if not isinstance(row, list) or len(row) != len(_POINT_FIELDS):
        raise ValueError(f"a point must be a list of {len(_POINT_FIELDS)} values")
    values = dict(zip(_POINT_FIELDS, row))
    for name, value in values.items():
        optional = name in ("knn_top1", "mean_cosine", "linear_top1")
        if value is None and optional:
            continue
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise ValueError(f"{name} is not a finite number")
    for name in ("mlp_sparsity", "head_sparsity"):
        if on_grid(values[name], step) is None:
            raise ValueError(f"{name} {values[name]!r} is not on the {step} grid")
    for name in ("knn_top1", "linear_top1", "realised_mlp_sparsity", "realised_head_sparsity"):
        if values[name] is not None and not 0.0 <= values[name] <= 1.0:
            raise ValueError(f"{name} {values[name]!r} is outside 0..1")
    if values["mean_cosine"] is not None and not -1.0 - 1e-6 <= values["mean_cosine"] <= 1.0 + 1e-6:
        raise ValueError("mean_cosine is outside -1..1")
    for name in ("params", "flops"):
        if not isinstance(values[name], int) or values[name] <= 0:
            raise ValueError(f"{name} must be a positive whole number")
    return LandscapePoint(**values)


class Landscape:
    """The evaluated points of one key; thread-safe; optionally backed by a cache file.

    Args:
        key: what the values depend on.
        path: the cache file (read now when it exists, rewritten by ``save``); None = memory only.
        read_only_paths: further files to read points from (e.g. the shipped landscapes); never written.
    """

    def __init__(self, key: LandscapeKey, path: Path | None = None, read_only_paths: Iterable[Path] = ()) -> None:
        self.key = key
        self.path = None if path is None else Path(path)
        self.axis = grid_axis(key.grid)
        self._points: dict[tuple[float, float], LandscapePoint] = {}
        self._lock = threading.Lock()
        self._unsaved = 0
        self.warnings: list[str] = []  # files refused, one line each
        for source in (*read_only_paths, *([self.path] if self.path is not None else [])):
            if source.exists():
                self._merge(self._read(source))

    # ---- reading ------------------------------------------------------------------------------
    def _read(self, source: Path) -> list[LandscapePoint]:
        """Points of a cache file for this key; [] (with a logged warning) when it is not usable."""
        try:
            return read_points(source, self.key)
        except SnapViTError as error:
            message = f"{error.problem} {error.fix}"
            log.warning("%s", message)
            self.warnings.append(message)
            return []

    def _merge(self, points: Iterable[LandscapePoint]) -> None:
        """Add points not known yet; a point that brings a linear value the known one lacks replaces it."""
        with self._lock:
            for point in points:
                configuration = (point.mlp_sparsity, point.head_sparsity)
                known = self._points.get(configuration)
                if known is None or (known.linear_top1 is None and point.linear_top1 is not None):
                    self._points[configuration] = point

    # ---- queries ------------------------------------------------------------------------------
    def get(self, mlp_sparsity: float, head_sparsity: float) -> LandscapePoint | None:
        """The point at a configuration, or None when it is not computed (or not on the grid)."""
        mlp, head = on_grid(mlp_sparsity, self.key.grid), on_grid(head_sparsity, self.key.grid)
        if mlp is None or head is None:
            return None
        with self._lock:
            return self._points.get((mlp, head))

    def __contains__(self, configuration: tuple[float, float]) -> bool:
        return self.get(*configuration) is not None

    def __len__(self) -> int:
        with self._lock:
            return len(self._points)

    @property
    def size(self) -> int:
        """Configurations in the full grid."""
        return len(self.axis) ** 2

    @property
    def complete(self) -> bool:
        return len(self) >= self.size

    def configurations(self) -> Iterator[tuple[float, float]]:
        """Every grid configuration, MLP-major."""
        return ((m, h) for m in self.axis for h in self.axis)

    def missing(self, field: str | None = None) -> list[tuple[float, float]]:
        """Configurations without a point, or (``field``, e.g. "linear_top1") whose point lacks that value."""
        with self._lock:
            return [
                c
                for c in self.configurations()
                if c not in self._points or (field is not None and getattr(self._points[c], field) is None)
            ]

    def count(self, field: str) -> int:
        """Points that carry ``field`` (e.g. "linear_top1")."""
        with self._lock:
            return sum(getattr(p, field) is not None for p in self._points.values())

    def points(self) -> list[LandscapePoint]:
        with self._lock:
            return sorted(self._points.values(), key=lambda p: (p.mlp_sparsity, p.head_sparsity))

    def frame(self) -> pd.DataFrame:
        """The computed points as a table (LandscapePoint fields as columns, MLP-major)."""
        return pd.DataFrame([p.row() for p in self.points()], columns=list(_POINT_FIELDS))

    def matrix(self, field: str = "knn_top1") -> np.ndarray:
        """(MLP, head) grid of one field; NaN where not computed. Rows: MLP sparsity, columns: head."""
        index = {value: i for i, value in enumerate(self.axis)}
        grid = np.full((len(self.axis), len(self.axis)), np.nan)
        for point in self.points():
            value = getattr(point, field)
            if value is not None:
                grid[index[point.mlp_sparsity], index[point.head_sparsity]] = value
        return grid

    # ---- writing ------------------------------------------------------------------------------
    def add(self, point: LandscapePoint) -> None:
        mlp, head = on_grid(point.mlp_sparsity, self.key.grid), on_grid(point.head_sparsity, self.key.grid)
        if mlp is None or head is None:
            raise SnapViTError(
                f"({point.mlp_sparsity}, {point.head_sparsity}) is not on the landscape's {self.key.grid} grid.",
                "Only grid configurations are stored.",
            )
        with self._lock:
            self._points[(mlp, head)] = point
            self._unsaved += 1

    def save(self) -> bool:
        """Write the cache file atomically (merged with what is on disk now); False when it cannot be written."""
        if self.path is None:
            return False
        with self._lock:
            if self._unsaved == 0:  # nothing new (shipped points are never copied into the cache)
                return True
        on_disk = self._read(self.path) if self.path.exists() else []
        self._merge(on_disk)
        with self._lock:
            text = dump_points(self.key, self._points.values())
            self._unsaved = 0
        try:
            guard_destination(self.path, "the landscape cache", overwrite=True)  # never over a FIFO or device
            write_text_atomic(self.path, text)
        except SnapViTError as error:
            log.warning("landscape cache %s not written: %s", self.path, error.problem)
            return False
        except OSError as error:
            log.warning("landscape cache %s not written: %s", self.path, error.strerror or error)
            return False
        return True


def dump_points(key: LandscapeKey, points: Iterable[LandscapePoint]) -> str:
    rows = sorted((p.row() for p in points), key=lambda row: (row[0], row[1]))
    document = {"format": FORMAT, "version": VERSION, "digest": key.digest, "key": asdict(key), "fields": _POINT_FIELDS}
    body = json.dumps(document, sort_keys=True)[:-1]
    lines = ",\n".join(json.dumps(row) for row in rows)  # one point per line: readable diffs of shipped files
    return f'{body}, "points": [\n{lines}\n]}}\n'


def read_points(source: Path, key: LandscapeKey) -> list[LandscapePoint]:
    """The points of a cache file made for ``key``; SnapViTError when it is not such a file."""
    fix = "It is ignored and the landscape recomputed; delete the file to silence this."
    raw = read_bounded(source, MAX_FILE_BYTES, "the landscape cache", fix)  # never a FIFO, device or /proc entry
    try:
        document = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as error:
        reason = "truncated or not JSON" if isinstance(error, ValueError) else type(error).__name__
        raise SnapViTError(f"Landscape cache {source} cannot be read ({reason}).", fix) from None
    if not isinstance(document, dict) or document.get("format") != FORMAT or document.get("version") != VERSION:
        raise SnapViTError(f"{source} is not a landscape cache file of this version.", fix)
    if document.get("key") != asdict(key) or document.get("digest") != key.digest:
        raise SnapViTError(f"Landscape cache {source} was made for another backbone, scores, data or setting.", fix)
    if tuple(document.get("fields") or ()) != _POINT_FIELDS or not isinstance(document.get("points"), list):
        raise SnapViTError(f"Landscape cache {source} has unexpected fields.", fix)
    points = []
    for number, row in enumerate(document["points"]):
        try:
            points.append(_check_row(row, key.grid))
        except (ValueError, TypeError, OverflowError) as error:  # OverflowError: a 400-digit number
            raise SnapViTError(f"Landscape cache {source}: point {number} is invalid ({error}).", fix) from None
    return points


def default_cache_dir() -> Path:
    """Where computed landscapes are kept: the cache root's landscapes/ folder ($SNAPVIT_CACHE_DIR)."""
    from snapvit_core.latency.model import cache_root

    return cache_root() / "landscapes"


# ---- fill order -------------------------------------------------------------------------------------
def fill_order(
    axis: tuple[float, ...],
    done: Iterable[tuple[float, float]],
    requested: Iterable[tuple[float, float]] = (),
    step: float = GRID_STEP,
) -> list[tuple[float, float]]:
    """Configurations still to compute, most wanted first.

    Order: the configurations sessions asked for (``requested``, latest first), their neighbours,
    the published path, then the rest from the least sparse outwards (what demos reach first).
    """
    done = set(done)
    requested = [c for c in requested if c[0] in axis and c[1] in axis]
    order: dict[tuple[float, float], None] = {}
    for configuration in requested:
        order.setdefault(configuration)
    for configuration in requested:
        for neighbour in neighbours(configuration, axis):
            order.setdefault(neighbour)
    for configuration in published_points(step):
        order.setdefault(configuration)
    for configuration in sorted(((m, h) for m in axis for h in axis), key=lambda c: (c[0] + c[1], c[0])):
        order.setdefault(configuration)
    return [c for c in order if c not in done]


# ---- keys and files for an explorer ----------------------------------------------------------------
_WEIGHT_DIGESTS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # model -> digest (hashing a ViT-B is slow)
SHIPPED_DIR = Path(__file__).resolve().parents[1] / "assets" / "landscapes"  # precomputed for the default experience


def landscape_key(
    explorer,
    data: str,
    *,
    correction: tuple | None = None,
    knn_images: int | None = None,
    grid: float = GRID_STEP,
) -> LandscapeKey:
    """The key of ``explorer``'s landscape (an ``Explorer`` with kNN data attached) on data spec ``data``."""
    knn = explorer.knn
    if knn is None:
        raise SnapViTError("A landscape needs labelled data for kNN.", "Choose labelled data (--data).")
    model = explorer.backbone.model
    if model not in _WEIGHT_DIGESTS:
        _WEIGHT_DIGESTS[model] = model_digest(model)
    corrected = None
    if correction is not None:
        config, calibration = correction
        corrected = json.dumps({"config": asdict(config), "calibration": tensor_digest([calibration])}, sort_keys=True)
    splits = type("Splits", (), {})()
    splits.train, splits.test = knn.train, knn.test
    splits.train_labels, splits.test_labels, splits.name = knn.train_labels, knn.test_labels, data
    splits.source_digest = knn.source_digest
    total = len(knn.train_labels) + len(knn.test_labels)
    return LandscapeKey(
        backbone=explorer.backbone.model_id,
        weights=_WEIGHT_DIGESTS[model],
        scores=scores_digest(explorer.scores),
        data=data,
        data_hash=data_digest(splits),
        knn_images=None if knn_images is None or knn_images >= total else int(knn_images),
        k=int(knn.k),
        vote=knn.vote,
        correction=corrected,
        device=str(explorer.device),
        dtype="float32",
        align=int(explorer.elastic.align),
        grid=float(grid),
        linear=json.dumps(explorer.linear_probe.describe(), sort_keys=True),
    )


def open_landscape(
    key: LandscapeKey, cache_dir: Path | None = None, shipped_dir: Path | None | str = "shipped"
) -> Landscape:
    """The landscape of ``key``: the shipped file's points (read-only) plus the cache file's (written).

    ``shipped_dir``: "shipped" = ``SHIPPED_DIR``; None = no shipped points.
    """
    cache_dir = default_cache_dir() if cache_dir is None else Path(cache_dir)
    shipped_dir = SHIPPED_DIR if shipped_dir == "shipped" else shipped_dir
    shipped = [] if shipped_dir is None else [Path(shipped_dir) / key.file_name()]
    return Landscape(key, cache_dir / key.file_name(), read_only_paths=shipped)
