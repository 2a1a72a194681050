"""The ``folder:PATH`` source: class sub-folders of image files, optional train/test sub-folders."""

from __future__ import annotations

import os
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import SnapViTError
from .convert import _read_files
from .sets import ImageSet
from .spec import _split_indices, _subset

IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm"})


def _class_folders(root: Path) -> list[Path]:
    return sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))


def _readable(folder: Path) -> bool:
    try:
        with os.scandir(folder):
            return True
    except OSError:
        return False


def _list_folder(root: Path, skipped: Counter) -> tuple[list[Path], list[int] | None, tuple[str, ...]]:
    """Image paths under ``root`` with labels from class sub-folders (None when it has none)."""
    classes = _class_folders(root)
    if classes:
        paths, labels = [], []
        for label, folder in enumerate(classes):
            if not _readable(folder):  # rglob silently yields nothing for an unreadable folder: count it
                skipped["unreadable class folders"] += 1
                continue
            for path in sorted(p for p in folder.rglob("*") if p.is_file()):
                if path.suffix.lower() in IMAGE_EXTENSIONS:
                    paths.append(path)
                    labels.append(label)
                elif not path.name.startswith("."):
                    skipped["non-image files"] += 1
        return paths, labels, tuple(folder.name for folder in classes)
    paths = []
    for path in sorted(p for p in root.iterdir() if p.is_file()):
        if path.suffix.lower() in IMAGE_EXTENSIONS:
            paths.append(path)
        elif not path.name.startswith("."):
            skipped["non-image files"] += 1
    return paths, None, ()


@dataclass
class FolderListing:
    """The files of one split of an image folder, in order, with labels (None when unlabelled)."""

    paths: list[Path]
    labels: list[int] | None
    class_names: tuple[str, ...]
    name: str
    base: Path
    skipped: Counter = field(default_factory=Counter)


def list_folder_split(
    location: str, split: str | None, limit: int | None, seed: int, test_fraction: float
) -> FolderListing:
    """Which files of ``location`` make up ``split`` (nothing is decoded: cheap for 50,000+ images)."""
    root = Path(location).expanduser()
    if not root.is_dir():
        raise SnapViTError(
            f"The image folder {root} does not exist or is not a directory.",
            "Give folder:PATH pointing at a directory with one sub-folder of images per class.",
        )
    skipped: Counter = Counter()
    base = root
    presplit = split is not None and (root / "train").is_dir() and (root / "test").is_dir()
    if presplit:
        base = root / split
    paths, labels, class_names = _list_folder(base, skipped)
    if presplit and split == "test":
        train_names = tuple(p.name for p in _class_folders(root / "train"))
        if class_names != train_names:
            raise SnapViTError(
                f"{root}/train and {root}/test have different class folders.",
                "Give both splits the same class sub-folders.",
            )
    if not paths:
        raise SnapViTError(
            f"The folder {base} contains no images ({skipped['non-image files']} other files).",
            f"Add images ({', '.join(sorted(IMAGE_EXTENSIONS))}) in one sub-folder per class.",
        )
    order = np.arange(len(paths))
    if split is not None and not presplit:
        order = _split_indices(labels, len(paths), split, test_fraction, seed)
    order = order[_subset(len(order), limit, seed)]
    name = f"folder {root}" + (f" ({split})" if split else "")
    chosen_labels = None if labels is None else [labels[i] for i in order]
    return FolderListing([paths[i] for i in order], chosen_labels, class_names, name, base, skipped)


def _folder_set(location: str, split: str | None, limit: int | None, seed: int, test_fraction: float) -> ImageSet:
    listing = list_folder_split(location, split, limit, seed, test_fraction)
    skipped = listing.skipped
    images, kept = _read_files(listing.paths, skipped)
    if not images:
        raise SnapViTError(
            f"None of the {len(listing.paths)} files in {listing.base} could be read as an image.", "Check the files."
        )
    label_array = None if listing.labels is None else np.asarray([listing.labels[i] for i in kept], dtype=np.int64)
    return ImageSet(images, label_array, listing.class_names, listing.name, skipped)
