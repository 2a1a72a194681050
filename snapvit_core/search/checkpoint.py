"""Checkpoints of the multiplier search (``search --checkpoint F [--resume]``): written atomically after
every generation, and read back only after every value has been checked.

A checkpoint is a torch file read with ``weights_only=True`` (no code runs), but its values are still
the file's choice: a 23 KB file can hold a stride-0 view posing as a 30000 x 30000 tensor (7 GB the
moment anything touches it), strings where fitness values belong, or a float32 generator state. So
before anything is used, every field is checked for its type, every tensor for its dtype, exact shape
and for fitting in its own storage, every number for being finite, and the whole for being the
state of *this* search: the same settings, the same backbone (model id and architecture) and the
same base scores, which are recorded when the checkpoint is written.
"""

from __future__ import annotations

import hashlib
import io
import logging
import math
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import torch

from snapvit_core.errors import SnapViTError
from snapvit_core.files.atomic import atomic_path
from snapvit_core.files.guards import read_bounded
from snapvit_core.scoring.scores import ImportanceScores

log = logging.getLogger(__name__)

CHECKPOINT_VERSION = 2  # 2: records the backbone and the base scores
_FIX = "Delete it (or pass another --checkpoint) and start without --resume."
_WHAT = "a search checkpoint (a torch file written by `search --checkpoint`)"
_FLOATS = (torch.float32, torch.float64)


@dataclass(frozen=True)
class SearchIdentity:
    """What a checkpoint must have been written for to be resumed."""

    config: dict  # SearchConfig.to_dict()
    dimension: int  # multipliers: blocks * (1 + heads)
    population_size: int  # candidates per generation
    backbone: str | None  # model id (None: not known to the caller, not checked)
    architecture: str  # ArchitectureShape.describe()
    scores: str  # scores_digest of the base scores

    def record(self) -> dict:
        return {"backbone": self.backbone, "architecture": self.architecture, "scores": self.scores}


def scores_digest(scores: ImportanceScores) -> str:
    """A short fingerprint of the base scores' values (a checkpoint of a search from other scores differs)."""
    digest = hashlib.sha1()
    for tensor in (scores.mlp, scores.heads):
        digest.update(str(tuple(tensor.shape)).encode())
        digest.update(tensor.detach().to(torch.float32).contiguous().cpu().numpy().tobytes())
    return digest.hexdigest()[:16]


def check_checkpoint_writable(path: Path, dimension: int) -> None:
    """Refuse, before the search starts, a checkpoint that could not be written after the first generation."""
    if path.is_dir():
        raise SnapViTError(f"The search checkpoint {path} is a folder.", "Name a file, e.g. search.ckpt.pt.")
    folder = path.parent
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=folder)
        os.close(fd)
        os.unlink(probe)
        free = shutil.disk_usage(folder).free
    except OSError as error:
        raise SnapViTError(
            f"Cannot write the search checkpoint in {folder}: {error.strerror or error}.",
            "Choose a writable folder for --checkpoint.",
        ) from error
    needed = 3 * dimension * dimension * 8 + (1 << 20)  # xNES shape matrix (float64) + history, with slack
    if free < needed:
        raise SnapViTError(
            f"Not enough disk space for the search checkpoint in {folder}: {free >> 20} MB free, "
            f"about {needed >> 20} MB needed.",
            "Free some space or choose another folder for --checkpoint.",
        )


def save_checkpoint(path: Path, identity: SearchIdentity, optimizer: dict, history: dict, cka_seconds: float) -> None:
    """Write the search state atomically (``optimizer``: XNES.state_dict(); ``history``: fitness, best,
    best_multipliers)."""
    state = {
        "version": CHECKPOINT_VERSION,
        "config": identity.config,
        **identity.record(),
        "optimizer": optimizer,
        "history": history,
        "cka_seconds": cka_seconds,
    }
    try:
        with atomic_path(path) as tmp:
            torch.save(state, tmp)
    except OSError as error:  # full disk, folder made read-only during the search
        raise SnapViTError(
            f"Could not write the search checkpoint {path}: {error.strerror or error}.",
            "Free some space or choose a writable --checkpoint; the search stopped.",
        ) from error


def load_checkpoint(path: Path, identity: SearchIdentity) -> dict:
    """The checked state of the checkpoint at ``path`` for the search ``identity`` describes.

    Raises:
        SnapViTError: unreadable, not a checkpoint, damaged (a missing, mistyped, misshapen, oversized or
            non-finite value), or written for other settings, another backbone or other scores.
    """
    evaluations = int(identity.config.get("evaluations", 0))
    largest = 2 * identity.dimension * (identity.dimension + 2) * 8 + 64 * evaluations + (1 << 20)
    # read once, bounded, from a regular file only (a FIFO would block, /dev/zero fill memory): what is
    # checked is what torch loads
    data = read_bounded(path, largest, "the search checkpoint", _FIX)
    if not data:
        raise SnapViTError(
            f"The search checkpoint {path} is empty (0 bytes): the search was probably killed while writing it.", _FIX
        )
    if data[:4] != b"PK\x03\x04":
        raise SnapViTError(f"{path} is not {_WHAT}.", _FIX)
    try:
        state = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - truncated or foreign: torch raises many types, with advice to load unsafely
        raise SnapViTError(f"{path} is not {_WHAT}, or it is truncated ({type(exc).__name__}).", _FIX) from exc
    problem = checkpoint_problem(state, identity)
    if problem:
        raise SnapViTError(f"The search checkpoint {path} is damaged: {problem}.", _FIX)
    saved = {"precision": "auto", **state["config"]}  # checkpoints from before the precision setting ran auto
    if state["version"] not in (1, CHECKPOINT_VERSION) or saved != identity.config:
        raise SnapViTError(
            f"The search checkpoint {path} was made with other settings.",
            "Resume with the same settings, or start without --resume.",
        )
    _check_identity(path, state, identity)
    return state


def _check_identity(path: Path, state: dict, identity: SearchIdentity) -> None:
    if state["version"] == 1:  # written before the backbone was recorded
        log.warning("warning: the search checkpoint %s does not record its backbone; resuming anyway.", path)
        return
    fix = "Resume with the --model and --scores of the interrupted search, or start without --resume."
    saved, current = state["backbone"], identity.backbone
    if saved is not None and current is not None and saved != current:
        raise SnapViTError(f"The search checkpoint {path} is of a search on {saved!r}, not {current!r}.", fix)
    if state["architecture"] != identity.architecture:
        raise SnapViTError(
            f"The search checkpoint {path} is of a search on another architecture ({state['architecture']}).", fix
        )
    if state["scores"] != identity.scores:
        raise SnapViTError(f"The search checkpoint {path} is of a search from other base scores.", fix)


def checkpoint_problem(state: object, identity: SearchIdentity) -> str | None:
    """What is missing, mistyped or out of shape in a loaded checkpoint, or None when it is sound.

    Types and shapes first, values (finite, consistent) only once every tensor is known to be small.
    """
    if not isinstance(state, dict):
        return f"it holds a {type(state).__name__}, not a dict"
    expected = {"version": int, "config": dict, "optimizer": dict, "history": dict, "cka_seconds": (int, float)}
    if state.get("version") != 1:
        expected |= {"backbone": (str, type(None)), "architecture": str, "scores": str}
    optimizer = {"mean": torch.Tensor, "sigma": (int, float), "shape": torch.Tensor, "population_size": int}
    optimizer |= {"generation": int, "generator": torch.Tensor}
    history = {"fitness": list, "best": list, "best_multipliers": torch.Tensor}
    for where, table, value in (("", expected, state), ("optimizer.", optimizer, state.get("optimizer")),
                                ("history.", history, state.get("history"))):  # fmt: skip
        if not isinstance(value, dict):
            return f"'{where[:-1]}' is missing"
        for key, kind in table.items():
            if key not in value:
                return f"key '{where}{key}' is missing"
            if not isinstance(value[key], kind) or isinstance(value[key], bool):
                return f"'{where}{key}' is a {type(value[key]).__name__}"
    return _tensor_problems(state, identity) or _value_problems(state, identity)


def _tensor_problems(state: dict, identity: SearchIdentity) -> str | None:
    d = identity.dimension
    opt, history = state["optimizer"], state["history"]
    mean, shape = opt["mean"], opt["shape"]
    if mean.ndim != 1 or mean.numel() != d:
        return f"its xNES mean has shape {list(mean.shape)[:4]}, not [{d}]"
    if tuple(shape.shape) != (mean.numel(), mean.numel()):
        return f"its xNES shape matrix is {list(shape.shape)[:4]} for a mean of {mean.numel()}"
    tensors = (
        ("optimizer.mean", mean, (d,), _FLOATS),
        ("optimizer.shape", shape, (d, d), _FLOATS),
        ("history.best_multipliers", history["best_multipliers"], (d,), _FLOATS),
        ("optimizer.generator", opt["generator"], tuple(torch.Generator().get_state().shape), (torch.uint8,)),
    )
    for name, tensor, size, dtypes in tensors:
        if tuple(tensor.shape) != size:
            if name == "optimizer.generator":
                return "its random generator state is malformed"
            return f"'{name}' has shape {list(tensor.shape)[:4]}, not {list(size)}"
        if tensor.dtype not in dtypes:
            return f"'{name}' is {str(tensor.dtype).removeprefix('torch.')}, not {_names(dtypes)}"
        if tensor.layout != torch.strided or not _within_storage(tensor):
            return f"'{name}' is larger than its storage (a view repeating its data)"
    return None


def _value_problems(state: dict, identity: SearchIdentity) -> str | None:
    opt, history = state["optimizer"], state["history"]
    for name, tensor in (("optimizer.mean", opt["mean"]), ("optimizer.shape", opt["shape"]),
                         ("history.best_multipliers", history["best_multipliers"])):  # fmt: skip
        if not bool(torch.isfinite(tensor).all()):
            return f"'{name}' holds NaN or infinite values"
    if not (_finite(opt["sigma"]) and opt["sigma"] > 0):
        return "its xNES step size is not a positive number"
    if not (_finite(state["cka_seconds"]) and state["cka_seconds"] >= 0):
        return "'cka_seconds' is not a time"
    if opt["population_size"] != identity.population_size:
        return f"its population size is {opt['population_size']}, this search's {identity.population_size}"
    fitness, best = history["fitness"], history["best"]
    evaluations = int(identity.config.get("evaluations", 0))
    if not 0 < len(fitness) <= evaluations or len(best) != len(fitness):
        return f"its history holds {len(fitness)} fitness and {len(best)} best values for {evaluations} evaluations"
    for name, values in (("history.fitness", fitness), ("history.best", best)):
        for value in values:
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                return f"'{name}' holds a {type(value).__name__}, not a number"
            if not _finite(value):
                return f"'{name}' holds a value that is not a finite number"
    if opt["generation"] < 0 or len(fitness) != 1 + opt["generation"] * opt["population_size"]:
        return f"its history of {len(fitness)} evaluations does not match generation {opt['generation']}"
    return None


def _finite(value: int | float) -> bool:
    try:
        return math.isfinite(value)
    except OverflowError:  # an int beyond float range
        return False


def _within_storage(tensor: torch.Tensor) -> bool:
    """A contiguous view whose elements all lie in its own storage (no stride-0 or overlapping repeats)."""
    if not tensor.is_contiguous():
        return False
    capacity = tensor.untyped_storage().nbytes() // tensor.element_size()
    return tensor.storage_offset() + tensor.numel() <= capacity


def _names(dtypes: tuple[torch.dtype, ...]) -> str:
    return " or ".join(str(dtype).removeprefix("torch.") for dtype in dtypes)
