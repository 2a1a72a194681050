"""The ``folder:PATH`` source: class sub-folders of image files, optional train/test sub-folders.

A class folder that is a link is followed only when it leads to a folder inside the data folder that
is not the data folder itself nor one of its parents: a link back up the tree (a "class" that is the
whole data set again) or out of it is skipped, counted and warned about. Links to folders below a
class folder are never followed (``Path.rglob`` does not follow them).
"""

from __future__ import annotations

import logging
import os
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from snapvit_core.data.convert import _read_files
from snapvit_core.data.sets import ImageSet
from snapvit_core.data.spec import _split_indices, _subset
from snapvit_core.errors import SnapViTError, printable

log = logging.getLogger(__name__)

IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm"})


LINK_SKIPPED = "folder links leaving the data folder or looping back up"  # the skipped-count reason


def _class_folders(root: Path, tree: Path, skipped: Counter | None = None) -> list[Path]:
    """Sub-folders of ``root`` (not hidden); links leading out of the data folder ``tree`` or back up
    the tree are left out (counted in ``skipped``)."""
    folders = []
    for path in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        if path.is_symlink() and not _link_stays_inside(path, tree):
            if skipped is not None:
                skipped[LINK_SKIPPED] += 1
                where = printable(f"{path} -> {_target(path)}")
                log.warning("warning: skipping the folder link %s: it leads out of the data folder or up it.", where)
            continue
        folders.append(path)
    return folders


def _target(path: Path) -> Path | str:
    try:
        return path.resolve(strict=True)
    except (OSError, RuntimeError):  # a dangling link or a link loop
        return "an unresolvable target"


def _link_stays_inside(link: Path, tree: Path) -> bool:
    """True when ``link`` leads to a folder strictly inside ``tree`` that is not an ancestor of the link."""
    target = _target(link)
    if not isinstance(target, Path):
        return False
    base = tree.resolve()
    return target != base and target.is_relative_to(base) and not link.parent.resolve().is_relative_to(target)


def _split_folder(path: Path, tree: Path) -> bool:
    """``path`` is a train/ or test/ folder of the data folder (a link only when it stays inside it)."""
    return path.is_dir() and (not path.is_symlink() or _link_stays_inside(path, tree))


def _readable(folder: Path) -> bool:
    try:
        with os.scandir(folder):
            return True
    except OSError:
        return False


def _list_folder(root: Path, tree: Path, skipped: Counter) -> tuple[list[Path], list[int] | None, tuple[str, ...]]:
    """Image paths under ``root`` (in the data folder ``tree``) with labels from class sub-folders (None when
    it has none)."""
    classes = _class_folders(root, tree, skipped)
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
    presplit = split is not None and all(_split_folder(root / name, root) for name in ("train", "test"))
    if presplit:
        base = root / split
    paths, labels, class_names = _list_folder(base, root, skipped)
    if presplit and split == "test":
        train_names = tuple(p.name for p in _class_folders(root / "train", root))
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
