"""Streaming image datasets: decode one image at a time, so memory does not grow with the split.

Each dataset yields ``(image, label)`` with ``image`` a (3, S, S) float32 model input (the backbone's
timm evaluation transform) and ``label`` an int64 (-1 when the source is unlabelled). They feed a
``torch.utils.data.DataLoader`` (:func:`make_loader`: worker processes, pinned memory on CUDA), so
only the batches in flight and the features computed from them are ever held.

The conversion rules are the eager path's (:func:`~snapvit_core.data.convert.to_rgb`: greyscale,
alpha, palette, 16-bit, huge images). Files that are not images are found before streaming by a
header-only check (no decode), skipped and counted, so labels stay aligned with what is streamed
(Hugging Face rows likewise, ``hf.readable_listing``); a file or row whose header is valid but whose
pixels cannot be decoded is a loud error naming it.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path

import torch
from PIL import Image, UnidentifiedImageError
from torch.utils.data import DataLoader, Dataset

from snapvit_core.data.convert import MAX_SIDE, open_image
from snapvit_core.data.hf import decode_row
from snapvit_core.errors import SnapViTError
from snapvit_core.files.image_limits import check_declared_size

Transform = Callable[[Image.Image], torch.Tensor]


def readable_paths(paths: list[Path], skipped: Counter) -> list[int]:
    """Indices of ``paths`` whose header PIL recognises (size-checked against decompression bombs)."""
    kept = []
    for index, path in enumerate(paths):
        try:
            with Image.open(path) as image:  # reads the header only
                check_declared_size(image, MAX_SIDE, str(path))  # skip now what could not be decoded later
                kept.append(index)
        except Image.DecompressionBombError:
            skipped["too large to decode safely"] += 1
        except (UnidentifiedImageError, OSError, ValueError, SyntaxError):
            skipped["not readable images"] += 1
    return kept


def decode_file(path: Path) -> Image.Image:
    """The RGB image in ``path`` (conversion rules of ``to_rgb``); a file whose header was readable but
    whose pixels are not is a loud error naming it."""
    try:
        return open_image(path)
    except Image.DecompressionBombError as error:  # replaced by a larger image since it was listed
        raise SnapViTError(f"{path} is too large to decode safely ({error}).", "Remove or shrink the file.") from None
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as error:
        raise SnapViTError(
            f"{path} has a valid image header but could not be decoded ({type(error).__name__}).",
            "Remove or replace the damaged file.",
        ) from None


class LazyImages(Sequence):
    """RGB PIL images decoded one at a time on access, never kept: what ``load_images(lazy=True)`` returns
    for folder and hf sources, so scoring over N images holds one image per crop-maker, not N. Slicing
    gives another lazy sequence; it pickles (for crop-making worker processes).

    ``decode(key, *context)`` makes the image of one key: ``decode_file(path)``, ``decode_row(row, table,
    column)``."""

    def __init__(self, keys: Sequence, decode: Callable[..., Image.Image], *context) -> None:
        self.keys, self.decode, self.context = list(keys), decode, context

    def __len__(self) -> int:
        return len(self.keys)

    def __getitem__(self, index):
        if isinstance(index, slice):
            return LazyImages(self.keys[index], self.decode, *self.context)
        return self.decode(self.keys[index], *self.context)


class FolderImageDataset(Dataset):
    """Image files decoded on demand. ``labels`` (one per path) may be None for unlabelled folders."""

    def __init__(self, paths: list[Path], labels: list[int] | None, transform: Transform) -> None:
        self.paths, self.transform = list(paths), transform
        self.labels = torch.as_tensor(labels if labels is not None else [-1] * len(self.paths), dtype=torch.int64)

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.transform(decode_file(self.paths[index])), self.labels[index]


class HFImageDataset(Dataset):
    """Rows of a Hugging Face dataset decoded on demand (``datasets`` keeps the table memory-mapped)."""

    def __init__(self, table, image_column: str, order, labels: list[int] | None, transform: Transform) -> None:
        self.table, self.image_column, self.transform = table, image_column, transform
        self.order = [int(i) for i in order]
        self.labels = torch.as_tensor(labels if labels is not None else [-1] * len(self.order), dtype=torch.int64)

    def __len__(self) -> int:
        return len(self.order)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        image = decode_row(self.order[index], self.table, self.image_column)
        return self.transform(image), self.labels[index]


class TensorImageDataset(Dataset):
    """Already-preprocessed images (N, 3, S, S) with optional labels, as a dataset."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor | None = None) -> None:
        self.images = images
        self.labels = labels if labels is not None else torch.full((images.shape[0],), -1, dtype=torch.int64)

    def __len__(self) -> int:
        return self.images.shape[0]

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.images[index], self.labels[index]


def make_loader(dataset: Dataset, batch_size: int, device: str | torch.device = "cpu", workers: int = 0) -> DataLoader:
    """An in-order loader over ``dataset``: ``workers`` decoding processes, pinned memory on CUDA.

    Order is kept (no shuffling): features and labels line up by index, and results do not depend on
    the worker count.
    """
    if not isinstance(workers, int) or workers < 0:
        raise SnapViTError(f"The number of data workers must be a whole number >= 0, got {workers!r}.", "Use e.g. 4.")
    pin = torch.device(device).type == "cuda"
    return DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=False,
        num_workers=workers,
        pin_memory=pin,
        persistent_workers=False,
    )
