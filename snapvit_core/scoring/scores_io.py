"""Scores on disk: the project's ``.safetensors`` format and the import of published SnapViT files.

The project format is one safetensors file with ``mlp_scores`` (B, M) and ``head_scores`` (B, H) in
float32 and a JSON document under the header metadata key ``"snapvit"``. Published SnapViT scores are
torch pickles of the authors' classes; ``_safe_unpickle`` reads them without running their code.
Loading detects the format from the file's first bytes, never from its extension, and every
failure a user can cause becomes a ``SnapViTError`` naming the file and the fix.
"""

from __future__ import annotations

import io
import json
import logging
import math
import os
import pickle
import struct
import zipfile
import zlib
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load as load_safetensors_bytes
from safetensors.torch import save_file

from snapvit_core._version import __version__
from snapvit_core.errors import SnapViTError
from snapvit_core.files.atomic import atomic_path
from snapvit_core.files.guards import check_regular
from snapvit_core.files.safe_unpickle import MAX_BLOCKS, MAX_TENSOR_ELEMENTS, ForeignObject, load_torch_zip
from snapvit_core.scoring.scores import ImportanceScores

logger = logging.getLogger(__name__)

FORMAT_NAME = "snapvit-explorer-scores"
FORMAT_VERSION = 1  # bump when a reader of the old version could misread the new one
METADATA_KEY = "snapvit"  # safetensors header metadata key holding the JSON document
MLP_TENSOR, HEAD_TENSOR = "mlp_scores", "head_scores"
SUFFIX = ".safetensors"
MAX_HEADER_BYTES = 100 << 20  # the safetensors library's own header limit
MAX_SCORES_FILE_BYTES = 256 << 20  # two score tensors (each at most 4 M values) and a header; ViT-B's: 150 KB

# Published model_type (the authors' ModelType enum value) -> timm model id of the same weights.
PUBLISHED_BACKBONES = {
    "deit-3-vit-s-16": "deit3_small_patch16_224.fb_in22k_ft_in1k",
    "dino_vitb16": "vit_base_patch16_224.dino",
    "dinov3_vitb16": "vit_base_patch16_dinov3.lvd1689m",
}
# Published model_type -> (MLP scores shape, head scores shape) of that architecture.
PUBLISHED_SHAPES = {
    "deit-3-vit-s-16": ((12, 1536), (12, 6)),
    "dino_vitb16": ((12, 3072), (12, 12)),
    "dinov3_vitb16": ((12, 3072), (12, 12)),
}

_FLOAT_DTYPES = {"F16", "BF16", "F32", "F64"}  # safetensors dtype names accepted for scores
_NOT_SCORES = "not a scores file: expected a SnapViT Explorer .safetensors scores file or a published SnapViT .pt file"
_RECREATE = "Save the scores again (`save_scores` / `python -m snapvit_core score`) or re-download the file."
# What a malformed file can raise inside zipfile, pickle, struct, json, safetensors or torch.
_PARSE_ERRORS = (
    ValueError,  # includes json.JSONDecodeError and UnicodeDecodeError
    TypeError,
    KeyError,
    IndexError,
    AttributeError,
    EOFError,
    OverflowError,
    RecursionError,
    RuntimeError,
    NotImplementedError,
    struct.error,
    zipfile.BadZipFile,
    zlib.error,
    pickle.UnpicklingError,
    SafetensorError,
)


def save_scores(scores: ImportanceScores, path: str | os.PathLike) -> Path:
    """Write ``scores`` as a ``.safetensors`` file, atomically.

    Adds ``library_version`` and ``saved_at`` (UTC, ISO 8601) to the stored metadata. An existing
    file is replaced only once the new one is complete.

    Returns:
        The path written.
    """
    path = Path(path)
    if path.suffix.lower() != SUFFIX:
        raise SnapViTError(
            f"Cannot save scores to {path}: a scores file name must end in {SUFFIX}.",
            f"Use e.g. {path.with_suffix(SUFFIX)}.",
        )
    if path.is_dir():
        raise SnapViTError(
            f"Cannot save scores to {path}: it is a folder.", f"Name a file, e.g. {path / 'scores'}{SUFFIX}."
        )
    metadata = _json_ready(dict(scores.metadata), "metadata")
    metadata.update(library_version=__version__, saved_at=datetime.now(timezone.utc).isoformat(timespec="seconds"))
    document = {
        "format": FORMAT_NAME,
        "format_version": FORMAT_VERSION,
        "min_mlp_keep_ratio": scores.min_mlp_keep_ratio,
        "min_head_keep_ratio": scores.min_head_keep_ratio,
        "metadata": metadata,
    }
    tensors = {MLP_TENSOR: scores.mlp.contiguous(), HEAD_TENSOR: scores.heads.contiguous()}  # float32, CPU
    try:
        with atomic_path(path) as tmp:
            save_file(tensors, tmp, metadata={METADATA_KEY: json.dumps(document)})
    except (OSError, SafetensorError) as exc:
        raise SnapViTError(
            f"Could not write scores to {path}: {exc}.", "Check that the folder is writable and the disk has space."
        ) from exc
    logger.info("saved scores (%s) to %s", scores.shape_summary, path)
    return path


def load_scores(path: str | os.PathLike) -> ImportanceScores:
    """Read a scores file: the project's ``.safetensors`` format or a published SnapViT ``.pt`` file.

    The format is detected from the file's first bytes, not its extension.
    """
    path = Path(path)
    name = str(path)
    size = _check_file(path)
    try:
        with open(path, "rb") as handle:
            kind = _detect(handle.read(9), name)
            if kind == "safetensors":
                handle.seek(0)
                document = _guard(name, _read_header, handle, size, name)
    except OSError as exc:
        raise SnapViTError(f"Could not read {name}: {exc.strerror or exc}.", "Check the file's permissions.") from exc
    if kind == "zip":
        return _import_published(path, name)
    return _guard(name, _load_safetensors, document, lambda: _tensors_from_path(path), name)


def load_scores_bytes(data: bytes, name: str) -> ImportanceScores:
    """Read a scores file held in memory (an upload); ``name`` is used in messages."""
    if not data:
        raise _empty(name)
    if _detect(data[:9], name) == "zip":
        return _import_published(bytes(data), name)
    document = _guard(name, _read_header, io.BytesIO(data), len(data), name)
    return _guard(name, _load_safetensors, document, lambda: load_safetensors_bytes(bytes(data)), name)


def import_published_scores(path: str | os.PathLike) -> ImportanceScores:
    """Read a published SnapViT scores file (a torch ``.pt`` zip) without running any of its code.

    The authors' enums become plain strings; the published metadata is kept under
    ``metadata["published_metadata"]`` and the matching timm model, where known, under ``"backbone"``.
    """
    path = Path(path)
    _check_file(path)
    with open(path, "rb") as handle:
        head = handle.read(4)
    if not _is_zip(head):
        raise SnapViTError(
            f"{path} is not a published SnapViT .pt file (a torch zip checkpoint).",
            "Use load_scores for SnapViT Explorer .safetensors files.",
        )
    return _import_published(path, str(path))


def _check_file(path: Path) -> int:
    """Size of ``path`` in bytes; refuses a missing path, a folder or an empty file."""
    if not path.exists():
        raise SnapViTError(
            f"Scores file {path} does not exist.",
            "Check the path, or compute scores with `python -m snapvit_core score`.",
        )
    if path.is_dir():
        raise SnapViTError(
            f"{path} is a folder, not a scores file.", f"Pass a {SUFFIX} or published .pt file inside it."
        )
    # a regular file only (a FIFO would block the reader, /dev/zero never end), of a scores file's size
    size = check_regular(path, MAX_SCORES_FILE_BYTES, "the scores file", f"Pass a {SUFFIX} or published .pt file.")
    if size == 0:
        raise _empty(str(path))
    return size


def _empty(name: str) -> SnapViTError:
    return SnapViTError(f"{name} is empty (0 bytes).", "The save or download was probably interrupted. " + _RECREATE)


def _corrupt(name: str, detail: str) -> SnapViTError:
    return SnapViTError(f"{name} is truncated or corrupt: {detail}.", _RECREATE)


def _is_zip(head: bytes) -> bool:
    return head[:4] in (b"PK\x03\x04", b"PK\x05\x06")  # a local file header, or an empty archive


def _detect(head: bytes, name: str) -> str:
    """'zip' or 'safetensors' from the first 9 bytes; anything else is refused."""
    if _is_zip(head):
        return "zip"
    if len(head) >= 9 and head[8:9] == b"{":  # u64 little-endian header length, then the JSON header
        return "safetensors"
    hint = ""
    if head[:1] == b"\x80":
        hint = " (it looks like a raw pickle or a legacy pre-1.6 torch file, which is not supported)"
    raise SnapViTError(f"{name} is {_NOT_SCORES}{hint}.", "Pick the scores file, not the model or another file.")


def _read_header(handle: io.BufferedIOBase, size: int, name: str) -> dict:
    """The parsed 'snapvit' document of a safetensors header, after checking the score tensors' entries."""
    (length,) = struct.unpack("<Q", handle.read(8))
    if length > MAX_HEADER_BYTES or 8 + length > size:
        raise _corrupt(name, f"its header claims {length} bytes but the file has {size}")
    try:
        header = json.loads(handle.read(length).decode("utf-8"))
    except ValueError as exc:
        raise _corrupt(name, f"its safetensors header is not valid JSON ({exc})") from exc
    if not isinstance(header, dict):
        raise _corrupt(name, "its safetensors header is not a JSON object")
    file_metadata = header.pop("__metadata__", None) or {}
    tensors = header
    has_tensors = MLP_TENSOR in tensors and HEAD_TENSOR in tensors
    if not isinstance(file_metadata, dict) or METADATA_KEY not in file_metadata:
        if not has_tensors and tensors:
            example = ", ".join(f"'{key}'" for key in list(tensors)[:2])
            raise SnapViTError(
                f"{name} holds {len(tensors)} tensor(s) such as {example} and no scores: this looks like model "
                "weights, not a scores file.",
                "Pick the scores file; the backbone's weights are chosen separately.",
            )
        what = "no tensors and" if not tensors else "score tensors but"
        raise SnapViTError(
            f"{name} is a safetensors file with {what} no '{METADATA_KEY}' metadata: {_NOT_SCORES}.", _RECREATE
        )
    for key in (MLP_TENSOR, HEAD_TENSOR):
        entry = tensors.get(key)
        if not isinstance(entry, dict):
            raise _corrupt(name, f"it lacks the tensor '{key}'")
        shape, dtype = entry.get("shape"), entry.get("dtype")
        if dtype not in _FLOAT_DTYPES:
            raise SnapViTError(f"{name}: tensor '{key}' has dtype {dtype}, scores must be float32.", _RECREATE)
        if not isinstance(shape, list) or len(shape) != 2 or 0 in shape:
            raise SnapViTError(
                f"{name}: tensor '{key}' has shape {str(shape)[:80]}; scores must be 2-D [blocks, units], non-empty.",
                _RECREATE,
            )
        if not all(type(n) is int for n in shape) or shape[0] > MAX_BLOCKS or shape[0] * shape[1] > MAX_TENSOR_ELEMENTS:
            raise SnapViTError(
                f"{name}: tensor '{key}' has shape {str(shape)[:80]}, larger than any scores tensor "
                f"(at most {MAX_BLOCKS} blocks and {MAX_TENSOR_ELEMENTS} values).",
                _RECREATE,
            )
    try:
        document = json.loads(file_metadata[METADATA_KEY])
    except (TypeError, ValueError) as exc:
        raise _corrupt(name, f"its '{METADATA_KEY}' metadata is not valid JSON ({exc})") from exc
    if not isinstance(document, dict) or document.get("format") != FORMAT_NAME:
        raise SnapViTError(f"{name} is {_NOT_SCORES} (unknown format in its metadata).", _RECREATE)
    version = document.get("format_version")
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise SnapViTError(
            f"{name} has scores format version {version}; this SnapViT Explorer reads up to {FORMAT_VERSION}.",
            "Upgrade snapvit-explorer (`pip install -U snapvit-explorer`).",
        )
    return document


def _load_safetensors(document: dict, read_tensors, name: str) -> ImportanceScores:
    """Build scores from a validated header ``document``; ``read_tensors()`` gives the tensors."""
    ratios = [document.get(key) for key in ("min_mlp_keep_ratio", "min_head_keep_ratio")]
    if not all(isinstance(r, (int, float)) and not isinstance(r, bool) for r in ratios):
        raise _corrupt(name, f"its minimum keep ratios are {ratios}, expected two numbers")
    metadata = document.get("metadata", {})
    if not isinstance(metadata, dict):
        raise _corrupt(name, "its metadata is not a JSON object")
    tensors = read_tensors()
    return ImportanceScores(
        tensors[MLP_TENSOR], tensors[HEAD_TENSOR], float(ratios[0]), float(ratios[1]), metadata=metadata
    )


def _tensors_from_path(path: Path) -> dict[str, torch.Tensor]:
    # safe_open reads only the two score tensors, not any others a file may carry
    with safe_open(path, framework="pt") as handle:
        return {key: handle.get_tensor(key) for key in (MLP_TENSOR, HEAD_TENSOR)}


def _guard(name: str, function, *args) -> Any:
    """Run a parsing step; any parser exception becomes a SnapViTError naming ``name``."""
    try:
        return function(*args)
    except SnapViTError as exc:
        if name in exc.problem:
            raise
        raise SnapViTError(f"{name}: {exc.problem}", exc.fix) from exc  # e.g. ImportanceScores' checks
    except _PARSE_ERRORS as exc:
        raise _corrupt(name, f"{type(exc).__name__}: {str(exc)[:200]}") from exc


def _import_published(source: Path | bytes, name: str) -> ImportanceScores:
    return _guard(name, _convert_published, source, name)


def _convert_published(source: Path | bytes, name: str) -> ImportanceScores:
    """Read the published dict and map it onto ImportanceScores, checking declared dims."""
    payload = load_torch_zip(source, name)
    if not isinstance(payload, dict) or MLP_TENSOR not in payload or HEAD_TENSOR not in payload:
        keys = list(payload)[:3] if isinstance(payload, dict) else type(payload).__name__
        raise SnapViTError(
            f"{name} is a torch file without '{MLP_TENSOR}' / '{HEAD_TENSOR}' (found {keys}): it looks like "
            "model weights or another checkpoint, not a scores file.",
            "Pick a published SnapViT scores .pt file or a SnapViT Explorer .safetensors scores file.",
        )
    mlp, heads = payload[MLP_TENSOR], payload[HEAD_TENSOR]
    for key, tensor in ((MLP_TENSOR, mlp), (HEAD_TENSOR, heads)):
        if not isinstance(tensor, torch.Tensor) or tensor.ndim != 2 or not tensor.is_floating_point():
            described = (
                f"{tensor.dtype} {list(tensor.shape)}" if isinstance(tensor, torch.Tensor) else type(tensor).__name__
            )
            raise SnapViTError(f"{name}: '{key}' is {described}; expected a 2-D float tensor.", _RECREATE)
    declared = {  # declared dimension -> what the tensors say
        "num_blocks": mlp.shape[0],
        "hidden_dim": mlp.shape[1],
        "num_heads": heads.shape[1],
    }
    for key, actual in declared.items():
        if key in payload and payload[key] != actual:
            raise SnapViTError(
                f"{name} declares {key}={payload[key]} but its scores are MLP {list(mlp.shape)} / heads "
                f"{list(heads.shape)}.",
                "The file is inconsistent; re-download it or recompute the scores.",
            )
    model_type = _plain(payload.get("model_type"))
    expected = PUBLISHED_SHAPES.get(model_type) if isinstance(model_type, str) else None
    if expected is not None and (tuple(mlp.shape), tuple(heads.shape)) != expected:
        raise SnapViTError(
            f"{name} names the architecture '{model_type}' (MLP {list(expected[0])} / heads {list(expected[1])}) "
            f"but its scores are MLP {list(mlp.shape)} / heads {list(heads.shape)}.",
            "The file is inconsistent; re-download it or recompute the scores.",
        )
    metadata: dict[str, Any] = {
        "source_format": "snapvit-published-pickle",
        "method": "snapvit",
        "source_file": Path(name).name,
        "published_model_type": model_type,
        "mlp_architecture": _plain(payload.get("mlp_architecture")),
    }
    for key in ("num_blocks", "hidden_dim", "embed_dim", "num_heads", "head_dim"):
        metadata[key] = _plain(payload.get(key))
    metadata["published_metadata"] = _plain(payload.get("metadata", {}))
    if model_type in PUBLISHED_BACKBONES:
        metadata["backbone"] = PUBLISHED_BACKBONES[model_type]
    scores = ImportanceScores(
        mlp,
        heads,
        min_mlp_keep_ratio=float(payload.get("min_hidden_dim_keep_ratio", 0.05)),
        min_head_keep_ratio=float(payload.get("min_head_keep_ratio", 0.2)),
        metadata=metadata,
    )
    logger.info("imported published SnapViT scores %s (%s)", name, scores.shape_summary)
    return scores


def _plain(value: Any, depth: int = 0, budget: list[int] | None = None) -> Any:
    """A JSON-ready copy of unpickled data: enums -> their value, bounded in depth and size.

    The bounds matter: a pickle can share one list many times, which a naive copy expands exponentially.
    """
    budget = [10_000] if budget is None else budget
    budget[0] -= 1
    if budget[0] < 0 or depth > 16:
        raise SnapViTError("The published metadata is too large or too deeply nested.", _RECREATE)
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else str(value)
    if isinstance(value, ForeignObject):
        return value.value if value.value is not None else value.qualname
    if isinstance(value, (list, tuple, set, frozenset)):
        return [_plain(item, depth + 1, budget) for item in value]
    if isinstance(value, dict):
        return {str(key): _plain(item, depth + 1, budget) for key, item in value.items()}
    if isinstance(value, torch.Tensor):
        return value.tolist() if value.numel() <= 64 else f"tensor{list(value.shape)}"
    return repr(value)[:200]


def _json_ready(value: Any, where: str) -> Any:
    """``value`` with tuples as lists; refuses what JSON cannot hold, naming where it sits."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, (list, tuple)):
        return [_json_ready(item, f"{where}[{i}]") for i, item in enumerate(value)]
    if isinstance(value, dict):
        out = {}
        for key, item in value.items():
            if not isinstance(key, str):
                raise SnapViTError(f"Scores {where} has a non-string key {key!r}.", "Use string keys in metadata.")
            out[key] = _json_ready(item, f"{where}[{key!r}]")
        return out
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    if hasattr(value, "item") and getattr(value, "ndim", None) == 0:  # numpy / torch scalars
        return _json_ready(value.item(), where)
    raise SnapViTError(
        f"Scores {where} holds a {type(value).__name__}, which cannot be saved as JSON.",
        "Store plain values (numbers, strings, lists, dicts) in the metadata.",
    )
