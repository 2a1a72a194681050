"""Scoring crops: where random resized crops are drawn, and how they are made, one image at a time.

Every image's crops come from its own generator, seeded by (seed, image index) alone
(:func:`crop_generator`), so crops - and so scores - do not depend on batch size, the number of
crop-making worker processes, or how images are split across torchrun processes. :class:`CropDataset`
serves them to a ``DataLoader`` (worker processes, pinned memory on CUDA).
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from snapvit_core.data import to_rgb
from snapvit_core.errors import SnapViTError
from snapvit_core.scoring.config import ScoringConfig

_RESAMPLE = {
    "nearest": Image.Resampling.NEAREST,
    "bilinear": Image.Resampling.BILINEAR,
    "bicubic": Image.Resampling.BICUBIC,
    "lanczos": Image.Resampling.LANCZOS,
    "box": Image.Resampling.BOX,
    "hamming": Image.Resampling.HAMMING,
}
_CROP_RATIO = (3 / 4, 4 / 3)  # aspect-ratio range of RandomResizedCrop (torchvision default)


def sample_crop_box(
    width: int, height: int, scale: tuple[float, float], generator: torch.Generator
) -> tuple[int, int, int, int]:
    """(left, top, crop width, crop height) of a random resized crop, as torchvision samples it, seeded.

    Area fraction uniform in ``scale``, aspect ratio log-uniform in [3/4, 4/3]; after 10 misses, the
    largest centred crop with a clamped aspect ratio.
    """
    area = width * height
    log_low, log_high = math.log(_CROP_RATIO[0]), math.log(_CROP_RATIO[1])
    for _ in range(10):
        target = area * torch.empty(1).uniform_(scale[0], scale[1], generator=generator).item()
        aspect = math.exp(torch.empty(1).uniform_(log_low, log_high, generator=generator).item())
        crop_w, crop_h = round(math.sqrt(target * aspect)), round(math.sqrt(target / aspect))
        if 0 < crop_w <= width and 0 < crop_h <= height:
            top = int(torch.randint(0, height - crop_h + 1, (1,), generator=generator))
            left = int(torch.randint(0, width - crop_w + 1, (1,), generator=generator))
            return left, top, crop_w, crop_h
    aspect = width / height
    if aspect < _CROP_RATIO[0]:
        crop_w, crop_h = width, round(width / _CROP_RATIO[0])
    elif aspect > _CROP_RATIO[1]:
        crop_w, crop_h = round(height * _CROP_RATIO[1]), height
    else:
        crop_w, crop_h = width, height
    return (width - crop_w) // 2, (height - crop_h) // 2, crop_w, crop_h


def make_crops(
    images: Sequence[Image.Image], data_config: dict, config: ScoringConfig, generator: torch.Generator
) -> torch.Tensor:
    """Global then local crops of every image, resized to the model input and normalised.

    Returns:
        (N * V, 3, S, S) float32, image-major: crops ``i * V .. i * V + V - 1`` belong to image ``i``, the
        first ``global_crops`` of them global. No colour augmentation.
    """
    size = int(data_config["input_size"][-1])
    resample = _RESAMPLE.get(str(data_config.get("interpolation", "bicubic")), Image.Resampling.BICUBIC)
    mean = torch.tensor(data_config["mean"], dtype=torch.float32).view(3, 1, 1)
    std = torch.tensor(data_config["std"], dtype=torch.float32).view(3, 1, 1)
    scales = [config.global_scale] * config.global_crops + [config.local_scale] * config.local_crops
    crops = np.empty((len(images) * len(scales), size, size, 3), dtype=np.uint8)  # filled in place: one copy each
    for position, image in enumerate(images):
        image = image if image.mode == "RGB" else to_rgb(image)
        for view, scale in enumerate(scales):
            left, top, crop_w, crop_h = sample_crop_box(image.width, image.height, scale, generator)
            crop = image.resize((size, size), resample, box=(left, top, left + crop_w, top + crop_h))
            crops[position * len(scales) + view] = np.asarray(crop)
    pixels = torch.from_numpy(crops).permute(0, 3, 1, 2).float().div_(255.0)  # (N * V, 3, S, S) in [0, 1]
    return (pixels - mean) / std


class CropDataset(Dataset):
    """Item k: (image index i, its (V, 3, S, S) crops) for the i-th image of ``indices``; deterministic in i,
    so any worker process may make it."""

    def __init__(self, images: Sequence[Image.Image], data_config: dict, config: ScoringConfig, indices: range):
        self.images, self.data_config, self.config, self.indices = images, data_config, config, indices

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, position: int) -> tuple[int, torch.Tensor]:
        index = self.indices[position]
        return index, image_crops(self.images[index], index, self.data_config, self.config)


def crop_workers(workers: int | None, device: torch.device) -> int:
    """Crop-making processes: as given, else none on the CPU (they would compete with the model's
    threads) and up to 8 on CUDA (where one process cannot resize crops as fast as the GPU uses them)."""
    if workers is not None:
        if isinstance(workers, bool) or not isinstance(workers, int) or workers < 0:
            raise SnapViTError(f"workers must be a whole number >= 0, got {workers!r}.", "Use e.g. 4.")
        return workers
    return 0 if device.type != "cuda" else max(0, min(8, (os.cpu_count() or 1) - 1))


def image_crops(image: Image.Image, index: int, data_config: dict, config: ScoringConfig) -> torch.Tensor:
    """(V, 3, S, S) crops of image ``index``, drawn from a generator seeded by (seed, index) alone, so the
    crops do not depend on batching, workers or how images are split across processes."""
    return make_crops([image], data_config, config, crop_generator(config.seed, index))


def crop_generator(seed: int, index: int) -> torch.Generator:
    """The crop generator of image ``index`` under ``seed`` (SeedSequence mixes the pair into 63 bits)."""
    state = np.random.SeedSequence([int(seed) & 0xFFFFFFFF, int(index)]).generate_state(2, np.uint32)
    return torch.Generator().manual_seed(int(state[0]) << 31 | int(state[1]) >> 1)
