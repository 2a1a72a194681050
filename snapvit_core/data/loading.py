"""Public entry points: load one split as PIL images, preprocess, and load kNN splits (eager or streaming)."""

from __future__ import annotations

import logging
from collections import Counter

import numpy as np
import torch
from PIL import Image

from snapvit_core.data.convert import to_rgb
from snapvit_core.data.embedded_source import _embedded_knn_splits, _embedded_set, _is_embedded_config
from snapvit_core.data.folder import _folder_set, list_folder_split
from snapvit_core.data.hf import _hf_set, decode_row, list_hf_split, readable_listing
from snapvit_core.data.procedural import PROCEDURAL_DEFAULT_COUNT, procedural_images
from snapvit_core.data.sets import ImageSet, KnnSplits
from snapvit_core.data.spec import DEFAULT_TEST_FRACTION, DataSpec, _check_limit, parse_data_spec
from snapvit_core.data.streaming import FolderImageDataset, HFImageDataset, LazyImages, decode_file, readable_paths
from snapvit_core.errors import SnapViTError

log = logging.getLogger(__name__)


def load_images(
    spec: str | DataSpec,
    split: str | None = "train",
    limit: int | None = None,
    seed: int = 0,
    test_fraction: float = DEFAULT_TEST_FRACTION,
    lazy: bool = False,
) -> ImageSet:
    """Images of one split (``"train"``, ``"test"``, or None for everything) of a data source.

    ``limit`` keeps a seeded random subset. Scoring and search use ``split="train"``. ``lazy``: folder
    and hf images are a :class:`LazyImages` sequence decoded on access (scoring holds one at a time);
    unreadable or oversized folder files and hf rows are still found (header check), skipped and counted
    up front, while one whose pixels are damaged behind a valid header is an error when it is reached.
    Embedded and procedural images are small and eager.
    """
    spec = parse_data_spec(spec)
    _check_limit(limit)
    if split not in ("train", "test", None):
        raise SnapViTError(f"Unknown split {split!r}.", "Use 'train' or 'test'.")
    if spec.kind == "embedded":
        return _embedded_set(split or "train", limit, seed)
    if spec.kind == "folder":
        if lazy:
            return _lazy_folder_set(spec.location, split, limit, seed, test_fraction)
        return _folder_set(spec.location, split, limit, seed, test_fraction)
    if spec.kind == "hf":
        if lazy:
            listing, skipped = readable_listing(list_hf_split(spec.location, split, limit, seed, test_fraction))
            images = LazyImages([int(row) for row in listing.order], decode_row, listing.table, listing.image_column)
            labels = None if listing.labels is None else np.asarray(listing.labels, dtype=np.int64)
            return ImageSet(images, labels, listing.class_names, listing.name, skipped)
        return _hf_set(spec.location, split, limit, seed, test_fraction)
    count = limit or PROCEDURAL_DEFAULT_COUNT
    return ImageSet(procedural_images(count, seed + (1 if split == "test" else 0)), None, (), "procedural")


def _lazy_folder_set(location: str, split: str | None, limit: int | None, seed: int, test_fraction: float) -> ImageSet:
    listing = list_folder_split(location, split, limit, seed, test_fraction)
    kept = readable_paths(listing.paths, listing.skipped)  # headers only: skip and count before any decode
    if not kept:
        raise SnapViTError(
            f"None of the {len(listing.paths)} files in {listing.base} could be read as an image.", "Check the files."
        )
    labels = None if listing.labels is None else np.asarray([listing.labels[i] for i in kept], dtype=np.int64)
    images = LazyImages([listing.paths[i] for i in kept], decode_file)
    return ImageSet(images, labels, listing.class_names, listing.name, listing.skipped)


def build_transform(data_config: dict):
    """timm's evaluation transform for a backbone's resolved data config (resize, crop, normalise)."""
    from timm.data import create_transform

    keys = ("input_size", "interpolation", "mean", "std", "crop_pct", "crop_mode")
    return create_transform(**{k: data_config[k] for k in keys if k in data_config}, is_training=False)


def preprocess(images: list[Image.Image], data_config: dict) -> torch.Tensor:
    """RGB PIL images -> (N, 3, H, W) float32 model input, following the backbone's data config."""
    if not images:
        raise SnapViTError("There are no images to preprocess.", "Choose a data source with images.")
    transform = build_transform(data_config)
    return torch.stack([transform(to_rgb(image)) for image in images])


def knn_warnings(train_labels, test_labels) -> list[str]:
    """Why a kNN top-1 on these labels would mean nothing (one class, one bank image per class), if so."""
    train = Counter(np.asarray(train_labels).tolist())
    warnings = []
    if len(set(train) | set(np.asarray(test_labels).tolist())) < 2:
        warnings.append("the data has a single class, so kNN top-1 is 100% or 0% by construction and means nothing")
    elif train and max(train.values()) < 2:
        warnings.append("the kNN bank holds one image per class, so kNN top-1 is mostly chance and means little")
    return warnings


def _warn_if_meaningless(spec: DataSpec, train_labels, test_labels) -> None:
    for warning in knn_warnings(train_labels, test_labels):  # say it, don't just print 100 %
        log.warning("warning: %s: %s.", spec, warning)


def load_knn_splits(
    spec: str | DataSpec,
    data_config: dict,
    limit_per_split: int | None = None,
    test_fraction: float = DEFAULT_TEST_FRACTION,
    seed: int = 0,
    stream: bool = False,
) -> KnnSplits:
    """Labelled train/test images of a source, preprocessed for a backbone, for kNN evaluation.

    With ``stream=True`` the folder and hf sources return datasets that decode images on demand
    (memory independent of the number of images; see ``streaming.py``) instead of tensors; the
    embedded source (a fixed 2,000 small images) is always returned as tensors.
    """
    spec = parse_data_spec(spec)
    _check_limit(limit_per_split)
    if spec.kind == "procedural":
        raise SnapViTError(
            "Procedural images have no labels, so kNN accuracy cannot be measured on them.",
            "Use embedded, folder:PATH (one sub-folder per class) or hf:NAME for evaluation.",
        )
    if spec.kind == "embedded" and _is_embedded_config(data_config):
        return _embedded_knn_splits(data_config, limit_per_split, seed)
    if stream and spec.kind in ("folder", "hf"):
        return _streaming_knn_splits(spec, data_config, limit_per_split, test_fraction, seed)
    sets = {split: load_images(spec, split, limit_per_split, seed, test_fraction) for split in ("train", "test")}
    for split, image_set in sets.items():
        _require_labels(spec, split, image_set.labels is None)
    _warn_if_meaningless(spec, sets["train"].labels, sets["test"].labels)
    return KnnSplits(
        preprocess(sets["train"].images, data_config),
        torch.as_tensor(sets["train"].labels, dtype=torch.int64),
        preprocess(sets["test"].images, data_config),
        torch.as_tensor(sets["test"].labels, dtype=torch.int64),
        sets["train"].class_names,
        str(spec),
        sets["train"].skipped + sets["test"].skipped,
    )


def _require_labels(spec: DataSpec, split: str, missing: bool) -> None:
    if missing:
        raise SnapViTError(
            f"The {split} images of {spec} have no labels, so kNN accuracy cannot be measured.",
            "Put the images in one sub-folder per class (or use a dataset with a label column).",
        )


def _streaming_knn_splits(
    spec: DataSpec, data_config: dict, limit: int | None, test_fraction: float, seed: int
) -> KnnSplits:
    """Train/test as streaming datasets: file lists and labels only are held, never pixels."""
    transform = build_transform(data_config)
    datasets, class_names, skipped = {}, (), Counter()
    for split in ("train", "test"):
        if spec.kind == "folder":
            listing = list_folder_split(spec.location, split, limit, seed, test_fraction)
            _require_labels(spec, split, listing.labels is None)
            kept = readable_paths(listing.paths, listing.skipped)
            if not kept:
                raise SnapViTError(
                    f"None of the {len(listing.paths)} files in {listing.base} could be read as an image.",
                    "Check the files.",
                )
            paths, labels = [listing.paths[i] for i in kept], [listing.labels[i] for i in kept]
            datasets[split] = FolderImageDataset(paths, labels, transform)
            skipped += listing.skipped
        else:
            listing = list_hf_split(spec.location, split, limit, seed, test_fraction)
            _require_labels(spec, split, listing.labels is None)
            listing, unreadable = readable_listing(listing)  # headers only: skip and count before any decode
            datasets[split] = HFImageDataset(
                listing.table, listing.image_column, listing.order, listing.labels, transform
            )
            skipped += unreadable
        class_names = class_names or listing.class_names
    train, test = datasets["train"], datasets["test"]
    _warn_if_meaningless(spec, train.labels, test.labels)
    return KnnSplits(train, train.labels, test, test.labels, class_names, str(spec), skipped)
