"""Decoding limits for image files: refuse by declared size before a single pixel is decoded.

PIL's own guard (``Image.MAX_IMAGE_PIXELS``) errors only above ~179 megapixels and ignores the
bytes per pixel: a 329 KB 16-bit 13000 x 13000 PNG passes it and costs ~8 GB once decoded and
rescaled. Here the cost is estimated from the header (width x height x bytes per decoded pixel,
counting the float32 working copy in which ``data.to_rgb`` shrinks 16-bit and float images) and
images over ``MAX_DECODE_BYTES`` are refused with ``Image.DecompressionBombError``, which the folder
and Hugging Face readers count as "too large to decode safely". Folder files and ``hf:`` rows (whose
bytes are read undecoded) get the same check.

JPEG is the exception that can be shrunk instead of refused: ``Image.draft`` makes the decoder
produce a 1/2, 1/4 or 1/8 scale image directly, so a large photo costs only its reduced size.
Other formats (PNG, TIFF, WebP ...) have no reduced decode, so they are refused.
"""

from __future__ import annotations

from PIL import Image

MAX_DECODE_BYTES = 512 << 20  # decoded size of one image, working copies included
MAX_PIXELS = 64_000_000  # and at most this many pixels whatever the mode (a 64 MP photo)

# Bytes per pixel of the decoded image plus any working copy to_rgb makes of it.
_WIDE_MODES = {"I;16": 2 + 4 + 4, "I;16B": 2 + 4 + 4, "I;16L": 2 + 4 + 4, "I": 4 + 4 + 4, "F": 4 + 4 + 4}
_DEFAULT_BYTES = 4 + 4  # 8-bit modes: up to RGBA, plus the RGB(A) conversion


def decoded_bytes(image: Image.Image) -> int:
    """Estimated bytes to decode and convert ``image`` to RGB, from its declared size and mode."""
    width, height = image.size
    return width * height * _WIDE_MODES.get(image.mode, _DEFAULT_BYTES)


def check_declared_size(image: Image.Image, max_side: int, where: str = "image") -> None:
    """Shrink a JPEG's decode to about ``max_side``; refuse any image that would still cost too much.

    Call on an image returned by ``Image.open`` before ``load()``: only the header has been read.

    Raises:
        Image.DecompressionBombError: the declared size exceeds ``MAX_PIXELS`` or ``MAX_DECODE_BYTES``.
    """
    if image.format == "JPEG" and max(image.size) > max_side:
        image.draft("RGB", (max_side, max_side))  # decoder-side downscale: the header size shrinks
    width, height = image.size
    cost = decoded_bytes(image)
    if width * height > MAX_PIXELS or cost > MAX_DECODE_BYTES:
        raise Image.DecompressionBombError(
            f"{where} is {width} x {height} {image.mode} ({cost >> 20} MB decoded); the limit is "
            f"{MAX_PIXELS // 1_000_000} MP and {MAX_DECODE_BYTES >> 20} MB"
        )
