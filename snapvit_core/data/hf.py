"""The ``hf:NAME`` source: a Hugging Face dataset from the local cache or a ``save_to_disk`` directory."""

from __future__ import annotations

import os
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import SnapViTError
from .convert import to_rgb
from .sets import ImageSet
from .spec import _split_indices, _subset


def _hf_dataset(location: str):
    """Load a cached or saved Hugging Face dataset without touching the network."""
    try:
        import datasets
    except ImportError:
        raise SnapViTError(
            "hf: data sources need the `datasets` package.", "pip install datasets (it is in requirements.txt)."
        ) from None
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

    table: object  # a datasets.Dataset (rows are decoded lazily by `datasets`)
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


def _hf_set(location: str, split: str | None, limit: int | None, seed: int, test_fraction: float) -> ImageSet:
    listing = list_hf_split(location, split, limit, seed, test_fraction)
    skipped: Counter = Counter()
    images, kept = [], []
    for position, index in enumerate(listing.order):
        try:
            images.append(to_rgb(listing.table[int(index)][listing.image_column]))
            kept.append(position)
        except (OSError, ValueError, AttributeError):
            skipped["not readable images"] += 1
    labels = listing.labels
    label_array = None if labels is None else np.asarray([labels[i] for i in kept], dtype=np.int64)
    return ImageSet(images, label_array, listing.class_names, listing.name, skipped)
