"""Latency tables: a latency model calibrated on a target device, saved to a portable JSON file.

``python -m snapvit_core calibrate`` runs on the target device (only the project installed, no data:
random inputs) and writes a table: the calibrated pieces of ``latency_model`` plus what they are
valid for (the architecture's identity, device name, runtime, dtype, batch sizes, threads,
versions). Any machine can then predict a plan's latency *on that device* from the table
(``LatencyTable.predict`` / ``latency_report``), labelled with the device and runtime it was made on.

A table is untrusted input: it is read with a size cap, no NaN/Infinity, a nesting-depth cap, and
every field checked for type, shape and range before use; another architecture's table is refused.
"""

from __future__ import annotations

import json
import math
import platform
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from snapvit_core.engine.adapter import ArchitectureShape
from snapvit_core.engine.elastic import PruningPlan
from snapvit_core.errors import SnapViTError, printable
from snapvit_core.files.atomic import write_text_atomic
from snapvit_core.files.guards import read_bounded
from snapvit_core.latency.model import BatchTable, LatencyModel, LatencyModelKey, LatencyPrediction, latency_report

TABLE_FORMAT = "snapvit-latency-table"
TABLE_VERSION = 1
MAX_TABLE_BYTES = 4 << 20  # a ViT-L table is ~20 KB
MAX_DEPTH = 8  # the format nests 5 deep
MAX_BATCHES = 16
MAX_MS = 1e9  # no forward takes eleven days
ARCHITECTURE_FIELDS = ("num_blocks", "embed_dim", "head_dim", "num_heads", "mlp_hidden", "mlp_kind", "num_tokens")


def architecture_identity(shape: ArchitectureShape) -> dict:
    """What makes two backbones interchangeable for a latency table (widths, depth, tokens, MLP kind)."""
    return {
        "num_blocks": shape.num_blocks,
        "embed_dim": shape.embed_dim,
        "head_dim": shape.head_dim,
        "num_heads": shape.num_heads,
        "mlp_hidden": shape.mlp_hidden,
        "mlp_kind": shape.mlp_kind,
        "num_tokens": shape.num_tokens,
        "patch_size": shape.patch_size,
        "image_size": shape.image_size,
    }


def device_name(device: str | torch.device) -> str:
    """A human name of the device: the GPU's name, or the CPU's model where the OS tells it."""
    device = torch.device(device)
    if device.type == "cuda":
        return f"{device} ({torch.cuda.get_device_name(device)})"
    model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace").splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"cpu ({model or platform.processor() or platform.machine()})"


@dataclass(frozen=True)
class LatencyTable:
    """A latency model made on some device, with what it was made for."""

    model: LatencyModel
    model_id: str  # the backbone id it was calibrated on
    architecture: dict  # architecture_identity of that backbone
    device: str  # device_name() where it was calibrated
    runtime: str  # "torch" or "onnxruntime"
    dtype: str  # "float32" or "bfloat16"
    threads: int
    created: str
    versions: dict  # torch / timm / onnxruntime versions

    @property
    def batches(self) -> tuple[int, ...]:
        return self.model.batches

    @property
    def label(self) -> str:
        return f"{self.device}, {self.runtime}, {self.dtype}, {self.threads} threads"

    def check_fits(self, shape: ArchitectureShape, model_name: str = "this model") -> None:
        """Refuse a table made for another architecture, naming the first difference."""
        mine = architecture_identity(shape)
        for name in (*ARCHITECTURE_FIELDS, "image_size"):
            if self.architecture.get(name) != mine[name]:
                raise SnapViTError(
                    f"The latency table was made for another architecture ({self.model_id}: {name} "
                    f"{self.architecture.get(name)!r}, {model_name} has {mine[name]!r}).",
                    "Calibrate a table for this model: python -m snapvit_core calibrate --model ... --out TABLE.json",
                )

    def predict(self, kept_heads: Sequence[int], kept_neurons: Sequence[int], batch: int) -> LatencyPrediction:
        if batch not in self.model.tables:
            raise SnapViTError(
                f"The latency table was calibrated at batches {list(self.batches)}, not {batch}.",
                f"Ask for one of those batches (--latency-batch), or calibrate with --batch {batch}.",
            )
        return self.model.predict(kept_heads, kept_neurons, batch)

    def predict_plan(self, plan: PruningPlan, batch: int = 1) -> LatencyPrediction:
        return self.predict(plan.kept_heads, plan.kept_neurons, batch)

    def latency_report(self, plan: PruningPlan, batch: int) -> dict:
        """The latency a plan is predicted to have on the table's device (the CLI's ``latency`` dict)."""
        labels = {"device": self.device, "runtime": self.runtime, "dtype": self.dtype, "threads": self.threads}
        return latency_report(self.model, plan, batch, **labels, source="latency table")

    def to_dict(self) -> dict:
        return {
            "format": TABLE_FORMAT,
            "version": TABLE_VERSION,
            "model_id": self.model_id,
            "architecture": self.architecture,
            "device": self.device,
            "runtime": self.runtime,
            "dtype": self.dtype,
            "batches": list(self.batches),
            "threads": self.threads,
            "created": self.created,
            "versions": self.versions,
            "latency_model": self.model.to_dict(),
        }


def make_table(model: LatencyModel, model_id: str, shape: ArchitectureShape, device, runtime: str) -> LatencyTable:
    """Wrap a freshly calibrated latency model with what it is valid for."""
    versions = {"torch": torch.__version__}
    for name in ("timm", "onnxruntime"):
        try:
            versions[name] = __import__(name).__version__
        except ImportError:
            pass
    return LatencyTable(
        model=model,
        model_id=model_id,
        architecture=architecture_identity(shape),
        device=device_name(device),
        runtime=runtime,
        dtype=model.key.dtype,
        threads=model.key.threads,
        created=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        versions=versions,
    )


def save_table(table: LatencyTable, path: str | Path) -> Path:
    """Write ``table`` atomically: on any failure (a full disk) the file already at ``path`` is left as it was."""
    path = Path(path)
    try:
        write_text_atomic(path, json.dumps(table.to_dict(), indent=1) + "\n")
    except OSError as error:
        raise SnapViTError(
            f"Could not write the latency table {path}: {error.strerror or error}; nothing was replaced.",
            "Free some space or choose a writable --out, then calibrate again.",
        ) from None
    return path


def is_latency_table(data: bytes) -> bool:
    """Whether ``data`` (a file's bytes) is a latency table this project wrote (its format marker), for the
    write guard of ``calibrate --out``."""
    try:
        document = json.loads(data.decode("utf-8"), parse_constant=_reject_constant)
    except (UnicodeDecodeError, ValueError, RecursionError):
        return False
    return isinstance(document, dict) and document.get("format") == TABLE_FORMAT


def _refuse(path: Path, problem: str) -> SnapViTError:
    return SnapViTError(
        f"{path} is not a usable latency table: {problem}.",
        "Use a file written by `python -m snapvit_core calibrate`, or calibrate again.",
    )


def _reject_constant(name: str) -> float:
    raise ValueError(f"{name} is not a number")


def _depth(value: object, limit: int) -> int:
    """Nesting depth of parsed JSON, stopping once past ``limit``."""
    if limit < 0:
        return 1
    if isinstance(value, dict):
        return 1 + max((_depth(v, limit - 1) for v in value.values()), default=0)
    if isinstance(value, list):
        return 1 + max((_depth(v, limit - 1) for v in value), default=0)
    return 0


def load_table(path: str | Path) -> LatencyTable:
    """Read and check a latency table; any problem is one SnapViTError naming it."""
    path = Path(path).expanduser()
    fix = "Check the path: a table is a .json file (a few KB) written by `python -m snapvit_core calibrate`."
    raw = read_bounded(path, MAX_TABLE_BYTES, "the latency table", fix)  # never a FIFO, device or /proc entry
    try:
        data = json.loads(raw.decode("utf-8"), parse_constant=_reject_constant)
    except RecursionError:
        raise _refuse(path, "nested too deeply") from None
    except (UnicodeDecodeError, ValueError) as error:
        raise _refuse(path, f"not valid JSON ({str(error)[:120]})") from None
    if _depth(data, MAX_DEPTH) > MAX_DEPTH:
        raise _refuse(path, "nested too deeply")
    if not isinstance(data, dict) or data.get("format") != TABLE_FORMAT:
        raise _refuse(path, f"no '{TABLE_FORMAT}' format marker")
    if data.get("version") != TABLE_VERSION:
        raise _refuse(path, f"format version {str(data.get('version'))[:20]!r}, this library reads {TABLE_VERSION}")
    try:
        return _parse(data)
    except (KeyError, TypeError, ValueError, SnapViTError) as error:
        detail = error.args[0] if isinstance(error, KeyError) and error.args else error
        raise _refuse(path, f"{type(error).__name__}: {str(detail)[:160]}") from None


def _int(value: object, low: int, high: int, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise ValueError(f"{name} must be an integer in {low}..{high}, got {str(value)[:40]}")
    return value


def _number(value: object, low: float, high: float, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number, got {str(value)[:40]}")
    if not low <= value <= high:
        raise ValueError(f"{name} must be in {low}..{high}, got {value}")
    return float(value)


def _text(value: object, name: str, limit: int = 200) -> str:
    """A string field, its control characters escaped (a device name is printed to terminals and cards)."""
    if not isinstance(value, str) or len(value) > limit:
        raise ValueError(f"{name} must be a string of at most {limit} characters")
    return printable(value)


def _triple(value: object, name: str) -> tuple[float, float, float]:
    if not isinstance(value, list) or len(value) != 3:
        raise ValueError(f"{name} must be a list of 3 times")
    return tuple(_number(v, 0.0, MAX_MS, name) for v in value)  # type: ignore[return-value]


def _batch_table(data: object, heads: int, hidden: int, blocks: int, name: str) -> BatchTable:
    if not isinstance(data, dict):
        raise ValueError(f"{name} must be an object")
    shape = data["attention_shape"]
    if not isinstance(shape, list) or len(shape) != heads + 1:
        raise ValueError(f"{name}.attention_shape must have {heads + 1} entries (0..{heads} heads)")
    widths, mlp_shape = data["mlp_widths"], data["mlp_shape"]
    if not isinstance(widths, list) or not isinstance(mlp_shape, list) or not 1 <= len(widths) <= hidden:
        raise ValueError(f"{name}.mlp_widths must be a list of 1..{hidden} widths")
    if len(mlp_shape) != len(widths):
        raise ValueError(f"{name}.mlp_shape must have one entry per width ({len(widths)})")
    widths = [_int(w, 1, hidden, f"{name}.mlp_widths") for w in widths]
    if widths != sorted(set(widths)):
        raise ValueError(f"{name}.mlp_widths must be strictly ascending")
    return BatchTable(
        full_ms=_triple(data["full_ms"], f"{name}.full_ms"),
        attention_span_ms=_triple(data["attention_span_ms"], f"{name}.attention_span_ms"),
        mlp_span_ms=_triple(data["mlp_span_ms"], f"{name}.mlp_span_ms"),
        attention_shape=tuple(_number(v, 0.0, 1.0, f"{name}.attention_shape") for v in shape),
        mlp_widths=tuple(widths),
        mlp_shape=tuple(_number(v, 0.0, 1.0, f"{name}.mlp_shape") for v in mlp_shape),
        blocks=_int(data["blocks"], blocks, blocks, f"{name}.blocks"),
        rounds=_int(data["rounds"], 1, 10_000, f"{name}.rounds"),
    )


def _parse(data: dict) -> LatencyTable:
    architecture = data["architecture"]
    if not isinstance(architecture, dict):
        raise ValueError("architecture must be an object")
    blocks = _int(architecture["num_blocks"], 1, 1000, "architecture.num_blocks")
    heads = _int(architecture["num_heads"], 1, 1000, "architecture.num_heads")
    hidden = _int(architecture["mlp_hidden"], 1, 1 << 20, "architecture.mlp_hidden")
    identity = {
        "num_blocks": blocks,
        "embed_dim": _int(architecture["embed_dim"], 1, 1 << 20, "architecture.embed_dim"),
        "head_dim": _int(architecture["head_dim"], 1, 1 << 16, "architecture.head_dim"),
        "num_heads": heads,
        "mlp_hidden": hidden,
        "mlp_kind": _text(architecture["mlp_kind"], "architecture.mlp_kind", 40),
        "num_tokens": _int(architecture["num_tokens"], 1, 1 << 20, "architecture.num_tokens"),
        "patch_size": _int(architecture["patch_size"], 1, 1 << 16, "architecture.patch_size"),
        "image_size": _int(architecture["image_size"], 1, 1 << 16, "architecture.image_size"),
    }
    raw = data["latency_model"]
    if not isinstance(raw, dict) or not isinstance(raw.get("tables"), dict) or not isinstance(raw.get("key"), dict):
        raise ValueError("latency_model must hold 'key' and 'tables' objects")
    if not 1 <= len(raw["tables"]) <= MAX_BATCHES:
        raise ValueError(f"latency_model.tables must hold 1..{MAX_BATCHES} batch sizes")
    tables = {}
    for batch, table in raw["tables"].items():
        if not (isinstance(batch, str) and batch.isdigit() and len(batch) <= 5 and int(batch) >= 1):
            raise ValueError(f"batch size {batch[:20]!r} is not a positive integer")
        tables[int(batch)] = _batch_table(table, heads, hidden, blocks, f"tables[{batch}]")
    key = raw["key"]
    model = LatencyModel(
        key=LatencyModelKey(
            backbone=_text(key["backbone"], "key.backbone"),
            device=_text(key["device"], "key.device", 40),
            dtype=_text(key["dtype"], "key.dtype", 40),
            threads=_int(key["threads"], 1, 4096, "key.threads"),
            image_size=_int(key["image_size"], 1, 1 << 16, "key.image_size"),
            architecture=_text(key.get("architecture", ""), "key.architecture"),
        ),
        num_blocks=_int(raw["num_blocks"], blocks, blocks, "latency_model.num_blocks"),
        num_heads=_int(raw["num_heads"], heads, heads, "latency_model.num_heads"),
        mlp_hidden=_int(raw["mlp_hidden"], hidden, hidden, "latency_model.mlp_hidden"),
        tables=tables,
    )
    versions = data.get("versions", {})
    if not isinstance(versions, dict):
        raise ValueError("versions must be an object")
    runtime = _text(data["runtime"], "runtime", 20)
    if runtime not in ("torch", "onnxruntime"):
        raise ValueError(f"runtime {runtime!r} is not torch or onnxruntime")
    return LatencyTable(
        model=model,
        model_id=_text(data["model_id"], "model_id"),
        architecture=identity,
        device=_text(data["device"], "device"),
        runtime=runtime,
        dtype=_text(data["dtype"], "dtype", 20),
        threads=_int(data["threads"], 1, 4096, "threads"),
        created=_text(data.get("created", ""), "created", 40),
        versions={_text(k, "versions key", 40): _text(v, "versions value", 80) for k, v in versions.items()},
    )


def use_table(explorer, table: LatencyTable) -> None:
    """Make ``explorer`` (an ``Explorer``) predict latency from ``table``: ``cost``, budget finders and the
    landscape then answer for the table's device. Refuses a table made for another architecture."""
    table.check_fits(explorer.elastic.shape, explorer.backbone.model_id)
    missing = sorted({1, 32} - set(table.batches))
    if missing:  # the explorer would recalibrate on *this* machine to get them
        raise SnapViTError(
            f"The latency table has no batch {missing}; the budget finder and cost view ask for batches 1 and 32.",
            "Calibrate the table again (python -m snapvit_core calibrate always includes batches 1 and 32).",
        )
    explorer.latency_model = table.model
