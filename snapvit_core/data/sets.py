"""The two containers data loading returns: :class:`ImageSet` (PIL images of one split) and
:class:`KnnSplits` (a kNN bank and queries, as preprocessed tensors or streaming datasets)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset


@dataclass
class ImageSet:
    """Images of one split as RGB PIL images (a list, or a ``LazyImages`` sequence decoded on access),
    with int labels when the source has them."""

    images: Sequence[Image.Image]
    labels: np.ndarray | None
    class_names: tuple[str, ...]
    name: str
    skipped: Counter = field(default_factory=Counter)  # reason -> count of files not used

    def __len__(self) -> int:
        return len(self.images)

    @property
    def skipped_total(self) -> int:
        return int(sum(self.skipped.values()))

    def describe(self) -> str:
        labels = f"{len(self.class_names)} classes" if self.labels is not None else "unlabelled"
        text = f"{len(self)} images from {self.name} ({labels})"
        if self.skipped:
            reasons = ", ".join(f"{count} {reason}" for reason, count in sorted(self.skipped.items()))
            text += f"; skipped {self.skipped_total} ({reasons})"
        return text


@dataclass
class KnnSplits:
    """kNN bank (train) and queries (test) with int64 labels.

    ``train``/``test`` are (N, 3, S, S) preprocessed tensors, or streaming datasets of
    ``(image, label)`` (``load_knn_splits(..., stream=True)``) that decode on demand.
    """

    train: torch.Tensor | Dataset  # (N, 3, S, S) or a streaming dataset
    train_labels: torch.Tensor  # (N,) int64
    test: torch.Tensor | Dataset  # (Q, 3, S, S) or a streaming dataset
    test_labels: torch.Tensor
    class_names: tuple[str, ...]
    name: str
    skipped: Counter = field(default_factory=Counter)
    # A content hash of the source images (before preprocessing), where the loader has one: float
    # preprocessing rounds differently on different CPUs, so cache keys must not hash its output.
    source_digest: str | None = None

    def describe(self) -> str:
        text = f"{self.name}: {len(self.train_labels)} train / {len(self.test_labels)} test images"
        text += f", {len(self.class_names)} classes"
        if self.skipped:
            text += f"; skipped {sum(self.skipped.values())} files"
        return text
