"""Data sources shared by scoring, search, correction and kNN evaluation.

One spelling everywhere (command line, app, library):

* ``embedded`` - the embedded backbone's cluttered-digits dataset (fixed train/test split, offline).
* ``folder:PATH`` - an image folder. ``PATH/<class>/*`` gives labelled images; images directly in
  ``PATH`` are unlabelled (fine for scoring, not for kNN). For kNN, ``PATH/train/<class>`` and
  ``PATH/test/<class>`` are used when present; otherwise a stratified split holds out
  ``test_fraction`` (default 0.2, seed 0) of every class.
* ``hf:NAME`` - a Hugging Face dataset already in the local cache (``datasets.load_dataset(NAME)``
  with the hub offline), or a directory written by ``Dataset.save_to_disk``.
* ``procedural`` - label-free images generated on the fly (smooth colour fields, gradients, shapes,
  stripes), for scoring a backbone with no dataset at all.

Images are converted to RGB by :func:`to_rgb` (greyscale, alpha, palette, 16-bit and float modes,
EXIF rotation) and bounded in size on load; files that are not readable images are skipped and
counted. :func:`preprocess` applies the backbone's own timm data config.
"""

from __future__ import annotations

import logging
import os
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFilter, ImageOps, UnidentifiedImageError

from .errors import SnapViTError
from .image_limits import check_declared_size

log = logging.getLogger(__name__)

DATA_KINDS = ("embedded", "folder", "hf", "procedural")
DATA_SPEC_HELP = "embedded | folder:PATH | hf:NAME_OR_SAVED_DIR | procedural"
IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm"})
MAX_SIDE = 1024  # images are downscaled on load so their longer side is at most this many pixels
PROCEDURAL_SIZE = 256  # side of generated procedural images (preprocessing resizes them)
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


@dataclass
class ImageSet:
    """Images of one split as RGB PIL images, with int labels when the source has them."""

    images: list[Image.Image]
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


# ---------------------------------------------------------------------------------------------
# Image conversion


def to_rgb(image: Image.Image, max_side: int = MAX_SIDE) -> Image.Image:
    """Any PIL image -> 8-bit RGB, EXIF-upright, longer side at most ``max_side``.

    Alpha is composited onto white; palette images go through RGBA so transparency is honoured;
    16-bit and float greyscale are rescaled by their actual range instead of being clipped.
    """
    image = ImageOps.exif_transpose(image)
    if max(image.size) > max_side:
        image.draft("RGB", (max_side, max_side))  # JPEG: decode at reduced size (cheap)
    mode = image.mode
    if mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        array = np.asarray(image, dtype=np.float64)
        finite = array[np.isfinite(array)]
        low, high = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 1.0)
        scaled = np.nan_to_num((array - low) / max(high - low, 1e-12), nan=0.0, posinf=1.0, neginf=0.0)
        image = Image.fromarray((np.clip(scaled, 0, 1) * 255).round().astype(np.uint8), mode="L")
    elif mode == "P":
        image = image.convert("RGBA")
    if image.mode in ("RGBA", "LA", "PA", "La", "RGBa"):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        image = Image.alpha_composite(background, rgba)
    image = image.convert("RGB")
    if max(image.size) > max_side:
        image.thumbnail((max_side, max_side), Image.Resampling.BICUBIC)
    return image


def open_image(path: Path, max_side: int = MAX_SIDE) -> Image.Image:
    """Read one file as RGB; raises OSError/ValueError subclasses for files that are not images."""
    with Image.open(path) as image:
        check_declared_size(image, max_side, str(path))  # issue 16: refuse/draft by declared size before decoding
        image.load()
        return to_rgb(image, max_side)


def _read_files(paths: list[Path], skipped: Counter) -> tuple[list[Image.Image], list[int]]:
    """Read ``paths``; returns the images and the indices that succeeded, counting failures."""
    images, kept = [], []
    for index, path in enumerate(paths):
        try:
            images.append(open_image(path))
            kept.append(index)
        except Image.DecompressionBombError:
            skipped["too large to decode safely"] += 1
        except (UnidentifiedImageError, OSError, ValueError, SyntaxError):
            skipped["not readable images"] += 1
    return images, kept


# ---------------------------------------------------------------------------------------------
# Sources


def _subset(count: int, limit: int | None, seed: int) -> np.ndarray:
    """Indices of a seeded random subset of ``limit`` items (all, in order, when no limit)."""
    if limit is None or limit >= count:
        return np.arange(count)
    return np.sort(np.random.default_rng(seed).permutation(count)[:limit])


def _check_limit(limit: int | None) -> None:
    if limit is not None and (not isinstance(limit, (int, np.integer)) or limit <= 0):
        raise SnapViTError(f"The number of images must be a positive integer, got {limit!r}.", "Use e.g. 1000.")


def _embedded_set(split: str, limit: int | None, seed: int) -> ImageSet:
    from . import embedded

    images, labels = embedded.load_embedded_split(split)
    keep = _subset(len(labels), limit, seed)
    pil = [Image.fromarray(images[i].permute(1, 2, 0).numpy()) for i in keep]
    return ImageSet(pil, np.asarray(labels)[keep], embedded.EMBEDDED_CLASS_NAMES, f"embedded ({split})")


def _class_folders(root: Path) -> list[Path]:
    return sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))


def _readable(folder: Path) -> bool:
    try:
        with os.scandir(folder):
            return True
    except OSError:
        return False


def knn_warnings(train_labels, test_labels) -> list[str]:
    """Why a kNN top-1 on these labels would mean nothing (one class, one bank image per class), if so."""
    train = Counter(np.asarray(train_labels).tolist())
    warnings = []
    if len(set(train) | set(np.asarray(test_labels).tolist())) < 2:
        warnings.append("the data has a single class, so kNN top-1 is 100% or 0% by construction and means nothing")
    elif train and max(train.values()) < 2:
        warnings.append("the kNN bank holds one image per class, so kNN top-1 is mostly chance and means little")
    return warnings


def _list_folder(root: Path, skipped: Counter) -> tuple[list[Path], list[int] | None, tuple[str, ...]]:
    """Image paths under ``root`` with labels from class sub-folders (None when it has none)."""
    classes = _class_folders(root)
    if classes:
        paths, labels = [], []
        for label, folder in enumerate(classes):
            if not _readable(folder):  # issue 16: rglob silently yields nothing for an unreadable folder
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


def _folder_set(location: str, split: str | None, limit: int | None, seed: int, test_fraction: float) -> ImageSet:
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
    images, kept = _read_files([paths[i] for i in order], skipped)
    if not images:
        raise SnapViTError(f"None of the {len(order)} files in {base} could be read as an image.", "Check the files.")
    label_array = None if labels is None else np.asarray([labels[order[i]] for i in kept], dtype=np.int64)
    name = f"folder {root}" + (f" ({split})" if split else "")
    return ImageSet(images, label_array, class_names, name, skipped)


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


def _hf_set(location: str, split: str | None, limit: int | None, seed: int, test_fraction: float) -> ImageSet:
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
    skipped: Counter = Counter()
    images, kept = [], []
    for position, index in enumerate(order):
        try:
            images.append(to_rgb(table[int(index)][image_column]))
            kept.append(position)
        except (OSError, ValueError, AttributeError):
            skipped["not readable images"] += 1
    class_names = tuple(features[label_column].names) if label_column else ()
    label_array = None if labels is None else np.asarray([labels[order[i]] for i in kept], dtype=np.int64)
    return ImageSet(images, label_array, class_names, f"hf {location}" + (f" ({split})" if split else ""), skipped)


# ---------------------------------------------------------------------------------------------
# Procedural images


def _smooth_field(rng: np.random.Generator, size: int) -> np.ndarray:
    grid = int(rng.integers(2, 7))
    low = (rng.random((grid, grid, 3)) * 255).astype(np.uint8)
    return np.asarray(Image.fromarray(low).resize((size, size), Image.Resampling.BICUBIC), dtype=np.float32)


def _gradient(rng: np.random.Generator, size: int) -> np.ndarray:
    angle = rng.uniform(0, 2 * np.pi)
    ramp = np.linspace(-0.5, 0.5, size, dtype=np.float32)
    t = (np.cos(angle) * ramp[None, :] + np.sin(angle) * ramp[:, None]) / np.sqrt(0.5) + 0.5
    c0, c1 = rng.random(3) * 255, rng.random(3) * 255
    return (c0 + (c1 - c0) * t[..., None]).astype(np.float32)


def _stripes(rng: np.random.Generator, size: int) -> np.ndarray:
    angle, frequency = rng.uniform(0, np.pi), rng.uniform(2, 24)
    y, x = np.mgrid[0:size, 0:size].astype(np.float32) / size
    wave = 0.5 + 0.5 * np.sin(2 * np.pi * frequency * (np.cos(angle) * x + np.sin(angle) * y) + rng.uniform(0, 6.3))
    if rng.random() < 0.5:
        wave = (wave > 0.5).astype(np.float32)
    c0, c1 = rng.random(3) * 255, rng.random(3) * 255
    return (c0 + (c1 - c0) * wave[..., None]).astype(np.float32)


def _draw_shapes(rng: np.random.Generator, image: Image.Image) -> Image.Image:
    draw = ImageDraw.Draw(image)
    size = image.size[0]
    for _ in range(int(rng.integers(1, 9))):
        colour = tuple(int(c) for c in rng.integers(0, 256, 3))
        x0, y0 = rng.integers(-size // 4, size, 2)
        w, h = rng.integers(size // 12, size // 2, 2)
        kind = rng.integers(0, 4)
        box = [int(x0), int(y0), int(x0 + w), int(y0 + h)]
        if kind == 0:
            draw.rectangle(box, fill=colour)
        elif kind == 1:
            draw.ellipse(box, fill=colour)
        elif kind == 2:
            points = [tuple(int(v) for v in rng.integers(0, size, 2)) for _ in range(int(rng.integers(3, 7)))]
            draw.polygon(points, fill=colour)
        else:
            draw.line(box, fill=colour, width=int(rng.integers(2, max(3, size // 16))))
    return image


def procedural_images(count: int, seed: int = 0, size: int = PROCEDURAL_SIZE) -> list[Image.Image]:
    """``count`` label-free RGB images: colour fields, gradients, stripes, with shapes and blur.

    The same ``seed`` always gives the same images.
    """
    rng = np.random.default_rng(seed)
    backgrounds = (_smooth_field, _gradient, _stripes)
    images = []
    for _ in range(count):
        first, second = rng.choice(len(backgrounds), 2)
        mix = rng.uniform(0, 1)
        array = mix * backgrounds[first](rng, size) + (1 - mix) * backgrounds[second](rng, size)
        image = Image.fromarray(np.clip(array, 0, 255).astype(np.uint8))
        if rng.random() < 0.7:
            image = _draw_shapes(rng, image)
        if rng.random() < 0.3:
            image = image.filter(ImageFilter.GaussianBlur(float(rng.uniform(0.5, 3.0))))
        images.append(image)
    return images


# ---------------------------------------------------------------------------------------------
# Public entry points

PROCEDURAL_DEFAULT_COUNT = 1000  # images generated when no limit is given (published sample count)


def load_images(
    spec: str | DataSpec,
    split: str | None = "train",
    limit: int | None = None,
    seed: int = 0,
    test_fraction: float = DEFAULT_TEST_FRACTION,
) -> ImageSet:
    """Images of one split (``"train"``, ``"test"``, or None for everything) of a data source.

    ``limit`` keeps a seeded random subset. Scoring and search use ``split="train"``.
    """
    spec = parse_data_spec(spec)
    _check_limit(limit)
    if split not in ("train", "test", None):
        raise SnapViTError(f"Unknown split {split!r}.", "Use 'train' or 'test'.")
    if spec.kind == "embedded":
        return _embedded_set(split or "train", limit, seed)
    if spec.kind == "folder":
        return _folder_set(spec.location, split, limit, seed, test_fraction)
    if spec.kind == "hf":
        return _hf_set(spec.location, split, limit, seed, test_fraction)
    count = limit or PROCEDURAL_DEFAULT_COUNT
    return ImageSet(procedural_images(count, seed + (1 if split == "test" else 0)), None, (), "procedural")


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


@dataclass
class KnnSplits:
    """Preprocessed kNN bank (train) and queries (test) with int64 labels."""

    train: torch.Tensor
    train_labels: torch.Tensor
    test: torch.Tensor
    test_labels: torch.Tensor
    class_names: tuple[str, ...]
    name: str
    skipped: Counter = field(default_factory=Counter)

    def describe(self) -> str:
        text = f"{self.name}: {len(self.train_labels)} train / {len(self.test_labels)} test images"
        text += f", {len(self.class_names)} classes"
        if self.skipped:
            text += f"; skipped {sum(self.skipped.values())} files"
        return text


def _is_embedded_config(data_config: dict) -> bool:
    from . import embedded

    try:
        reference = embedded.read_embedded_config()["preprocessing"]
    except SnapViTError:
        return False
    size = reference["input_size"]
    return (
        tuple(data_config.get("input_size", ())) == tuple(size)
        and np.allclose(data_config.get("mean", ()), reference["mean"])
        and np.allclose(data_config.get("std", ()), reference["std"])
    )


def load_knn_splits(
    spec: str | DataSpec,
    data_config: dict,
    limit_per_split: int | None = None,
    test_fraction: float = DEFAULT_TEST_FRACTION,
    seed: int = 0,
) -> KnnSplits:
    """Labelled train/test images of a source, preprocessed for a backbone, for kNN evaluation."""
    spec = parse_data_spec(spec)
    _check_limit(limit_per_split)
    if spec.kind == "procedural":
        raise SnapViTError(
            "Procedural images have no labels, so kNN accuracy cannot be measured on them.",
            "Use embedded, folder:PATH (one sub-folder per class) or hf:NAME for evaluation.",
        )
    if spec.kind == "embedded" and _is_embedded_config(data_config):
        return _embedded_knn_splits(data_config, limit_per_split, seed)
    sets = {split: load_images(spec, split, limit_per_split, seed, test_fraction) for split in ("train", "test")}
    for split, image_set in sets.items():
        if image_set.labels is None:
            raise SnapViTError(
                f"The {split} images of {spec} have no labels, so kNN accuracy cannot be measured.",
                "Put the images in one sub-folder per class (or use a dataset with a label column).",
            )
    for warning in knn_warnings(sets["train"].labels, sets["test"].labels):  # issue 16: say it, don't just print 100 %
        log.warning("warning: %s: %s.", spec, warning)
    return KnnSplits(
        preprocess(sets["train"].images, data_config),
        torch.as_tensor(sets["train"].labels, dtype=torch.int64),
        preprocess(sets["test"].images, data_config),
        torch.as_tensor(sets["test"].labels, dtype=torch.int64),
        sets["train"].class_names,
        str(spec),
        sets["train"].skipped + sets["test"].skipped,
    )


def _embedded_knn_splits(data_config: dict, limit: int | None, seed: int) -> KnnSplits:
    """Fast path: the embedded images are already at the model's size; normalise the uint8 tensors."""
    from . import embedded

    tensors = {}
    for split in ("train", "test"):
        images, labels = embedded.load_embedded_split(split)
        keep = torch.as_tensor(_subset(len(labels), limit, seed))
        tensors[split] = (embedded.normalize_images(images[keep]), torch.as_tensor(labels)[keep].long())
    return KnnSplits(*tensors["train"], *tensors["test"], embedded.EMBEDDED_CLASS_NAMES, "embedded", Counter())
