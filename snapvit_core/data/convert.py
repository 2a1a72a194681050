"""Image conversion: any PIL image or file -> bounded 8-bit RGB, with failures skipped and counted."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import BinaryIO

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from snapvit_core.files.image_limits import check_declared_size

MAX_SIDE = 1024  # images are downscaled on load so their longer side is at most this many pixels
WIDE_MODES = ("I;16", "I;16B", "I;16L", "I", "F")  # more than 8 bits per sample: rescaled by their range


def to_rgb(image: Image.Image, max_side: int = MAX_SIDE) -> Image.Image:
    """Any PIL image -> 8-bit RGB, EXIF-upright, longer side at most ``max_side``.

    Alpha is composited onto white; palette images go through RGBA so transparency is honoured;
    16-bit and float greyscale are rescaled by their actual range instead of being clipped.
    """
    image = ImageOps.exif_transpose(image)
    if max(image.size) > max_side:
        image.draft("RGB", (max_side, max_side))  # JPEG: decode at reduced size (cheap)
    mode = image.mode
    if mode in WIDE_MODES:
        if max(image.size) > max_side:  # shrink in float32 first: never a float64 copy of the full image
            image = image.convert("F")
            image.thumbnail((max_side, max_side), Image.Resampling.BICUBIC)
        array = np.asarray(image, dtype=np.float64)  # at most max_side x max_side
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


def open_image(source: Path | BinaryIO, max_side: int = MAX_SIDE, where: str | None = None) -> Image.Image:
    """Read one image file (a path, or a binary file object such as a dataset row's bytes) as RGB.

    The declared size is checked from the header before a pixel is decoded (``where`` names the image
    in that refusal). Raises ``Image.DecompressionBombError`` for images too large to decode safely and
    OSError/ValueError subclasses for data that is not an image.
    """
    with Image.open(source) as image:
        check_declared_size(image, max_side, where or str(source))  # refuse/draft before decoding
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
