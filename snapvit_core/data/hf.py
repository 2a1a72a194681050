"""The ``hf:NAME`` source: a Hugging Face dataset from the local cache or a ``save_to_disk`` directory.

Rows are read with the image column's decoding turned off (``datasets.Image(decode=False)``), so a
row is its encoded bytes: the declared size is checked from the header (``image_limits``) before a
pixel is decoded, exactly as for folder files, and a row that is not a readable image is skipped and
counted before any pass over the images.
"""

from __future__ import annotations

import io
import os
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from snapvit_core.data.convert import MAX_SIDE, open_image
from snapvit_core.data.sets import ImageSet
from snapvit_core.data.spec import _split_indices, _subset
from snapvit_core.errors import SnapViTError, optional_import
from snapvit_core.files.image_limits import check_declared_size


def _hf_dataset(location: str):
    """Load a cached or saved Hugging Face dataset without touching the network."""
    datasets = optional_import(
        "datasets", "hf: data sources need the `datasets` package.", "pip install datasets (it is in requirements.txt)."
    )
    path = Path(location).expanduser()
    if path.is_dir():
        try:
            return datasets.load_from_disk(str(path))
        except Exception as error:  # noqa: BLE001 - any failure means "not a saved dataset"
            raise SnapViTError(
                f"{path} is not a dataset saved with Dataset.save_to_disk ({type(error).__name__}).",
                "Point hf: at a save_to_disk directory or give a dataset name that is in the local cache.",
            ) from None
    previous = os.environ.get("HF_DATASETS_OFFLINE"), datasets.config.HF_HUB_OFFLINE
    os.environ["HF_DATASETS_OFFLINE"] = "1"
    datasets.config.HF_HUB_OFFLINE = True
    try:
        return datasets.load_dataset(location)
    except Exception as error:  # noqa: BLE001 - datasets raises many types for a cache miss
        raise SnapViTError(
            f"The Hugging Face dataset {location!r} is not in the local cache ({type(error).__name__}).",
            f"On a machine with network run: python -c \"import datasets; datasets.load_dataset('{location}')\" "
            "and copy ~/.cache/huggingface here, or save it with save_to_disk and use hf:DIRECTORY.",
        ) from None
    finally:
        if previous[0] is None:
            os.environ.pop("HF_DATASETS_OFFLINE", None)
        else:
            os.environ["HF_DATASETS_OFFLINE"] = previous[0]
        datasets.config.HF_HUB_OFFLINE = previous[1]


@dataclass
class HFListing:
    """The rows of one split of a Hugging Face dataset, in order, and where images and labels live."""

    table: object  # a datasets.Dataset whose image column is not decoded (rows hold the encoded bytes)
    image_column: str
    order: np.ndarray  # (n,) row indices
    labels: list[int] | None  # one per row of `order`
    class_names: tuple[str, ...]
    name: str


def list_hf_split(location: str, split: str | None, limit: int | None, seed: int, test_fraction: float) -> HFListing:
    """Which rows of the dataset make up ``split`` (labels are read, images are not decoded)."""
    import datasets

    loaded = _hf_dataset(location)
    if isinstance(loaded, datasets.DatasetDict):
        names = list(loaded)
        wanted = {"train": ("train",), "test": ("test", "validation", "val"), None: ("train",)}[split]
        available = [name for name in wanted if name in loaded]
        if available:
            table, presplit = loaded[available[0]], True
        else:
            table, presplit = loaded[names[0]], False
    else:
        table, presplit = loaded, False
    features = table.features
    image_column = next((k for k, v in features.items() if isinstance(v, datasets.Image)), None)
    if image_column is None:
        raise SnapViTError(f"The dataset {location!r} has no image column.", "Choose an image dataset.")
    table = table.cast_column(image_column, datasets.Image(decode=False))  # rows are bytes: checked, then decoded
    label_column = next((k for k, v in features.items() if isinstance(v, datasets.ClassLabel)), None)
    labels = None if label_column is None else [int(v) for v in table[label_column]]
    order = np.arange(len(table))
    if split is not None and not presplit:
        order = _split_indices(labels, len(table), split, test_fraction, seed)
    order = order[_subset(len(order), limit, seed)]
    class_names = tuple(features[label_column].names) if label_column else ()
    chosen = None if labels is None else [labels[i] for i in order]
    name = f"hf {location}" + (f" ({split})" if split else "")
    return HFListing(table, image_column, order, chosen, class_names, name)


_UNREADABLE = (UnidentifiedImageError, OSError, ValueError, SyntaxError, TypeError, AttributeError, KeyError)


def _row_file(table, row: int, image_column: str) -> io.BytesIO | Path:
    """The encoded image of one row: its bytes, or the file it names (rows written without their bytes)."""
    value = table[int(row)][image_column]  # {"bytes": ..., "path": ...}: the column is not decoded
    data, path = (value.get("bytes"), value.get("path")) if isinstance(value, dict) else (None, None)
    if isinstance(data, (bytes, bytearray)):
        return io.BytesIO(data)
    if isinstance(path, str) and Path(path).is_file():
        return Path(path)
    raise ValueError("the row holds no image bytes")


def _row_readable(table, row: int, image_column: str) -> str | None:
    """None when the row's header is a readable image of an acceptable size, else the reason to skip it."""
    try:
        with Image.open(_row_file(table, row, image_column)) as image:  # reads the header only
            check_declared_size(image, MAX_SIDE, f"row {row}")
        return None
    except Image.DecompressionBombError:
        return "too large to decode safely"
    except _UNREADABLE:
        return "not readable images"


def readable_rows(listing: HFListing, skipped: Counter) -> list[int]:
    """Positions in ``listing.order`` whose row header is a readable image of an acceptable size (no decode);
    the others are counted in ``skipped``."""
    kept = []
    for position, row in enumerate(listing.order):
        reason = _row_readable(listing.table, int(row), listing.image_column)
        if reason is None:
            kept.append(position)
        else:
            skipped[reason] += 1
    return kept


def readable_listing(listing: HFListing) -> tuple[HFListing, Counter]:
    """``listing`` without its unreadable or oversized rows (header checks only), and what was skipped."""
    skipped: Counter = Counter()
    kept = readable_rows(listing, skipped)
    if not kept:
        raise SnapViTError(
            f"None of the {len(listing.order)} rows of {listing.name} could be read as an image "
            f"({', '.join(f'{n} {reason}' for reason, n in sorted(skipped.items()))}).",
            "Check the dataset's image column.",
        )
    labels = None if listing.labels is None else [listing.labels[i] for i in kept]
    order = np.asarray(listing.order)[kept]
    return HFListing(listing.table, listing.image_column, order, labels, listing.class_names, listing.name), skipped


def decode_row(row: int, table, image_column: str) -> Image.Image:
    """The RGB image of one row (conversion rules of ``to_rgb``); a row that cannot be decoded, or is too
    large to decode safely, is a loud error naming it."""
    try:
        return open_image(_row_file(table, row, image_column), MAX_SIDE, f"row {row}")
    except Image.DecompressionBombError as error:
        raise SnapViTError(
            f"Row {row} of the Hugging Face dataset is too large to decode safely ({error}).",
            "Remove the row (datasets.Dataset.filter) and save the dataset again.",
        ) from None
    except _UNREADABLE as error:
        raise SnapViTError(
            f"Row {row} of the Hugging Face dataset could not be decoded ({type(error).__name__}).",
            "Remove the damaged row (datasets.Dataset.filter) and save the dataset again.",
        ) from None


def _hf_set(location: str, split: str | None, limit: int | None, seed: int, test_fraction: float) -> ImageSet:
    listing = list_hf_split(location, split, limit, seed, test_fraction)
    skipped: Counter = Counter()
    images, kept = [], []
    for position, row in enumerate(listing.order):
        try:
            images.append(open_image(_row_file(listing.table, row, listing.image_column), MAX_SIDE, f"row {row}"))
            kept.append(position)
        except Image.DecompressionBombError:
            skipped["too large to decode safely"] += 1
        except _UNREADABLE:
            skipped["not readable images"] += 1
    labels = listing.labels
    label_array = None if labels is None else np.asarray([labels[i] for i in kept], dtype=np.int64)
    return ImageSet(images, label_array, listing.class_names, listing.name, skipped)
