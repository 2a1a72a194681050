"""Label-free procedural images (colour fields, gradients, stripes, shapes, blur) for data-free scoring."""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

PROCEDURAL_SIZE = 256  # side of generated procedural images (preprocessing resizes them)
PROCEDURAL_DEFAULT_COUNT = 1000  # images generated when no limit is given (published sample count)


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
