"""Data source spellings and split bookkeeping shared by every source.

Owns :class:`DataSpec` (``embedded``, ``folder:PATH``, ``hf:NAME``, ``procedural``), the seeded
subset and the deterministic (stratified when possible) train/test split.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

import numpy as np

from snapvit_core.errors import SnapViTError

DATA_KINDS = ("embedded", "folder", "hf", "procedural")
DATA_SPEC_HELP = "embedded | folder:PATH | hf:NAME_OR_SAVED_DIR | procedural"
DEFAULT_TEST_FRACTION = 0.2  # held-out share of each class when a folder has no train/test split


@dataclass(frozen=True)
class DataSpec:
    """A parsed data source: ``kind`` is one of DATA_KINDS, ``location`` the path or name (or '')."""

    kind: str
    location: str = ""

    def __str__(self) -> str:
        return f"{self.kind}:{self.location}" if self.location else self.kind


def parse_data_spec(text: str | DataSpec) -> DataSpec:
    """Parse ``embedded``, ``folder:PATH``, ``hf:NAME`` or ``procedural``."""
    if isinstance(text, DataSpec):
        return text
    raw = str(text).strip()
    kind, sep, location = raw.partition(":")
    kind = kind.strip().lower()
    if kind in ("embedded", "procedural") and not location.strip():
        return DataSpec(kind)
    if kind in ("folder", "hf") and sep and location.strip():
        return DataSpec(kind, location.strip())
    raise SnapViTError(
        f"Could not parse the data source {raw!r}.",
        f"Use one of: {DATA_SPEC_HELP} (e.g. folder:/data/pets or hf:cifar10).",
    )


def _subset(count: int, limit: int | None, seed: int) -> np.ndarray:
    """Indices of a seeded random subset of ``limit`` items (all, in order, when no limit)."""
    if limit is None or limit >= count:
        return np.arange(count)
    return np.sort(np.random.default_rng(seed).permutation(count)[:limit])


def _check_limit(limit: int | None) -> None:
    if limit is not None and (not isinstance(limit, (int, np.integer)) or limit <= 0):
        raise SnapViTError(f"The number of images must be a positive integer, got {limit!r}.", "Use e.g. 1000.")


def _split_indices(labels: list[int] | None, count: int, split: str, test_fraction: float, seed: int) -> np.ndarray:
    """Deterministic (stratified when possible) train/test split of ``count`` items."""
    from sklearn.model_selection import train_test_split

    if not 0.0 < test_fraction < 1.0:
        raise SnapViTError(f"The test fraction must be in (0, 1), got {test_fraction}.", "Use e.g. 0.2.")
    indices = np.arange(count)
    stratify = None
    if labels is not None and min(Counter(labels).values()) >= 2:
        stratify = labels
    try:
        train, test = train_test_split(indices, test_size=test_fraction, stratify=stratify, random_state=seed)
    except ValueError:  # too few images per class for a stratified split of this size
        train, test = train_test_split(indices, test_size=test_fraction, random_state=seed)
    return np.sort(train if split == "train" else test)
