"""The embedded default backbone: a small timm ViT trained on cluttered digits, fully offline.

This module owns the embedded model id "embedded" (the offline default, trained with labels), its
asset files (``EMBEDDED_ASSET_STEMS``), its architecture, and its dataset.

Dataset ("cluttered digits"). The source glyphs are scikit-learn's bundled handwritten digits
(``sklearn.datasets.load_digits``: 1797 grey 8x8 images, 10 classes, no download). The split is
``train_test_split(range(1797), test_size=0.3, stratify=labels, random_state=0)``, giving
1257 train digits (the kNN bank) and 540 test digits (the kNN queries), every class in both.
Each digit is rendered by :func:`render_digits` into a ``RENDER.image_size`` px RGB image:
upscaled with a random size, position and tilt, painted in a random colour onto a cluttered
background (smooth random gradient, low-frequency blobs, distractor strokes and rings, pixel
noise) with muted colours (``saturation`` 0.25); the ink is darker than the scene. A ViT trained
from scratch on 1257 digits learns this within the 20-minute budget, and the clutter makes the task
tight enough that pruning visibly costs accuracy (magnitude pruning at (0.65, 0.5) loses ~7 points).

* :func:`load_embedded_split` returns ONE fixed rendering per digit, read from the shipped file
  ``assets/embedded_digits.safetensors`` (uint8 images and int64 labels of both splits, 3 MB). The
  rendering is float code whose last-bit rounding differs between CPUs (AMD and Intel render a few
  pixels differently), so the dataset ships as bytes: every machine reads the images the shipped
  model was measured on and the shipped landscapes were computed from, and the data key that names
  those landscapes (a hash of these bytes) is the same everywhere. The file was rendered with
  ``torch.Generator().manual_seed(SPLIT_RENDER_SEEDS[split])`` (train 1001, test 2002) by
  ``python scripts/make_embedded_data.py``, which also checks it (``--check``).
* The training script (``scripts/train_embedded.py``) draws a fresh rendering of every train digit
  each epoch from its own seed (:func:`render_digits`); the test digits are never used for training.

Model. ``assets/embedded_vit.json`` holds the ``VisionTransformer`` kwargs, the input mean/std, the
dataset and training settings and the measured metrics; ``assets/embedded_vit.safetensors`` holds
the weights (backbone plus the 10-way training head). Both are written by
``python scripts/train_embedded.py``. The kNN embedding is the pre-logits CLS feature:
``model.forward_head(model.forward_features(x), pre_logits=True)``.
"""

from __future__ import annotations

import functools
import json
import logging
import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from timm.models.vision_transformer import VisionTransformer

from snapvit_core.errors import SnapViTError
from snapvit_core.presets import EMBEDDED_MODEL_ID

log = logging.getLogger(__name__)

# The repository keeps the assets at the top level (assets/); snapvit_core/assets is a symlink to them so
# that they are also package data, copied into a wheel. Not resolved: the path must stay inside the package.
ASSETS_DIR: Path = Path(__file__).parents[1] / "assets"
DATA_FILENAME = "embedded_digits.safetensors"  # the rendered splits as bytes (load_embedded_split)
MAX_DATA_BYTES = 16 << 20  # the shipped file is about 3 MB
WEIGHTS_FILENAME = "embedded_vit.safetensors"  # the default (supervised) embedded model
CONFIG_FILENAME = "embedded_vit.json"
# Model id -> asset file stem in ASSETS_DIR ({stem}.safetensors + {stem}.json), written by scripts/train_embedded.py.
EMBEDDED_ASSET_STEMS: dict[str, str] = {EMBEDDED_MODEL_ID: "embedded_vit"}
EMBEDDED_CLASS_NAMES: tuple[str, ...] = tuple(str(d) for d in range(10))
SPLITS = ("train", "test")
SPLIT_TEST_SIZE = 0.3  # fraction of the 1797 sklearn digits held out as kNN queries
SPLIT_RANDOM_STATE = 0  # sklearn train_test_split seed (stratified by class)
SPLIT_RENDER_SEEDS = {"train": 1001, "test": 2002}  # torch seeds of the fixed renderings
RETRAIN_FIX = "Recreate it with `python scripts/train_embedded.py` (about 10 min on 2 CPU cores)."
DATA_FIX = (
    "Restore it from the repository (`git checkout -- assets/embedded_digits.safetensors`); "
    "`python scripts/make_embedded_data.py` renders it anew, with this CPU's rounding."
)


@dataclass(frozen=True)
class RenderConfig:
    """How a digit glyph becomes a cluttered colour image (sizes in pixels unless noted)."""

    image_size: int = 24  # output is (3, image_size, image_size)
    min_scale: float = 0.75  # smallest digit height as a fraction of the image side
    max_scale: float = 0.9  # largest digit height as a fraction of the image side
    max_rotation_deg: float = 10.0  # uniform tilt in [-max, +max] degrees
    blob_grid: int = 3  # colour blobs: a (grid x grid) random colour field, bilinearly upsampled
    blob_amplitude: float = 0.2  # blob field range in [-amp, +amp] added to the gradient
    num_strokes: int = 3  # distractor line segments per image
    num_rings: int = 1  # distractor circles (arcs of loops like 0, 6, 8, 9) per image
    max_stroke_width: float = 1.2  # stroke half-width drawn uniformly in [0.4, max]
    max_noise_std: float = 0.08  # per-pixel Gaussian noise std drawn uniformly in [0.02, max]
    dark_range: tuple[float, float] = (0.0, 0.45)  # channel range of the dark colours
    light_range: tuple[float, float] = (0.55, 1.0)  # channel range of the light colours
    clutter: float = 0.6  # scales blobs, distractors and noise: 0 = plain gradient (curriculum start)
    dark_scene_fraction: float = 0.0  # share of scenes with light ink on a dark background
    saturation: float = 0.25  # colour saturation: 0 = grey scenes, 1 = fully random channel values


RENDER = RenderConfig()  # the one rendering used for training and for the fixed splits


def _uniform(generator: torch.Generator, shape: tuple[int, ...], low: float, high: float) -> torch.Tensor:
    return low + (high - low) * torch.rand(shape, generator=generator)


def _torch_generator(generator: np.random.Generator | torch.Generator) -> torch.Generator:
    """A torch generator; a numpy one seeds a fresh torch generator (advancing the numpy one)."""
    if isinstance(generator, torch.Generator):
        return generator
    return torch.Generator().manual_seed(int(generator.integers(0, 2**63 - 1)))


def _place_glyphs(glyphs: torch.Tensor, g: torch.Generator, cfg: RenderConfig) -> torch.Tensor:
    """(N, 1, 8, 8) ink in [0, 1] -> (N, 1, S, S) ink scaled, tilted and shifted onto the canvas."""
    n, size = glyphs.shape[0], cfg.image_size
    scale = _uniform(g, (n,), cfg.min_scale, cfg.max_scale)  # digit side / image side
    angle = _uniform(g, (n,), -1.0, 1.0) * math.radians(cfg.max_rotation_deg)
    # Centre offset in normalised [-1, 1] canvas coordinates, keeping the glyph box inside.
    shift = _uniform(g, (n, 2), -1.0, 1.0) * (1.0 - scale)[:, None]
    cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
    # affine_grid maps output coords to input coords: in = A @ (out - shift), A = R(-angle) / scale.
    a = torch.stack([torch.stack([cos, sin], 1), torch.stack([-sin, cos], 1)], 1)  # (N, 2, 2)
    theta = torch.cat([a, -(a @ shift[:, :, None])], dim=2)  # (N, 2, 3)
    grid = F.affine_grid(theta, [n, 1, size, size], align_corners=False)
    ink = F.grid_sample(glyphs, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    # Bilinear upscaling of 8x8 glyphs gives soft blobs; a contrast stretch sharpens the strokes.
    return ((ink - 0.15) * 1.8).clamp(0.0, 1.0)


def _shape_alphas(g: torch.Generator, n: int, cfg: RenderConfig) -> torch.Tensor:
    """(N, K, S, S) anti-aliased alpha of K distractor shapes: line segments, then rings."""
    size = cfg.image_size
    coords = torch.arange(size, dtype=torch.float32) + 0.5
    py, px = torch.meshgrid(coords, coords, indexing="ij")  # (S, S) pixel centres
    alphas = []
    if cfg.num_strokes:
        p0 = _uniform(g, (n, cfg.num_strokes, 2, 1, 1), 0.0, size)
        p1 = _uniform(g, (n, cfg.num_strokes, 2, 1, 1), 0.0, size)
        dx, dy = px - p0[:, :, 0], py - p0[:, :, 1]  # (N, K, S, S)
        vx, vy = p1[:, :, 0] - p0[:, :, 0], p1[:, :, 1] - p0[:, :, 1]  # (N, K, 1, 1)
        t = ((dx * vx + dy * vy) / (vx * vx + vy * vy).clamp_min(1e-6)).clamp(0.0, 1.0)
        alphas.append(torch.hypot(dx - t * vx, dy - t * vy))  # distance to the segment
    if cfg.num_rings:
        centre = _uniform(g, (n, cfg.num_rings, 2, 1, 1), 0.0, size)
        radius = _uniform(g, (n, cfg.num_rings, 1, 1), 0.12 * size, 0.3 * size)
        alphas.append((torch.hypot(px - centre[:, :, 0], py - centre[:, :, 1]) - radius).abs())
    distance = torch.cat(alphas, dim=1)  # (N, K, S, S)
    width = _uniform(g, (n, distance.shape[1], 1, 1), 0.4, cfg.max_stroke_width)
    return (width + 0.5 - distance).clamp(0.0, 1.0)


def render_digits(
    digit_images: np.ndarray | torch.Tensor,
    generator: np.random.Generator | torch.Generator,
    config: RenderConfig = RENDER,
) -> torch.Tensor:
    """Render 8x8 digit glyphs as cluttered colour images (one fresh random scene per glyph).

    Everything random comes from ``generator``, so a given generator state always yields the same
    bytes. Batches are rendered in one vectorised pass (no Python loop per image).

    Args:
        digit_images: (N, 8, 8) glyphs on sklearn's ``load_digits().images`` scale (0 = paper,
            16 = full ink); any numeric dtype.
        generator: the random source; a ``torch.Generator`` is used (and advanced) directly, a
            numpy ``Generator`` seeds a torch one (and advances by one draw).
        config: the rendering settings; the shipped model was trained on the default ``RENDER``.

    Returns:
        (N, 3, S, S) uint8 RGB images, S = ``config.image_size``.
    """
    g = _torch_generator(generator)
    glyphs = torch.as_tensor(np.asarray(digit_images), dtype=torch.float32)
    if glyphs.ndim != 3 or tuple(glyphs.shape[1:]) != (8, 8):
        raise SnapViTError(f"render_digits expects (N, 8, 8) glyphs, got {tuple(glyphs.shape)}.")
    n, size = glyphs.shape[0], config.image_size
    ink = _place_glyphs((glyphs / 16.0).clamp(0.0, 1.0)[:, None], g, config)  # (N, 1, S, S)

    # Half the scenes are dark with light ink, half light with dark ink; the flip keeps contrast.
    light_scene = (torch.rand(n, generator=g) >= config.dark_scene_fraction)[:, None, None, None]  # (N, 1, 1, 1)
    dark, light = config.dark_range, config.light_range

    def scene_colours(shape: tuple[int, ...], ink_like: bool) -> torch.Tensor:
        low, high = light if ink_like else dark
        colour = _uniform(g, shape, low, high)
        grey = colour.mean(dim=-3, keepdim=True)  # the channel axis is third from the end
        colour = grey + config.saturation * (colour - grey)
        return torch.where(light_scene.reshape((n,) + (1,) * (len(shape) - 1)), 1.0 - colour, colour)

    # Background: linear gradient between two colours along a random direction, plus blobs.
    c0, c1 = scene_colours((n, 3, 1, 1), False), scene_colours((n, 3, 1, 1), False)
    direction = _uniform(g, (n, 1, 1), 0.0, 2 * math.pi)
    ramp = torch.linspace(-0.5, 0.5, size)
    along = torch.cos(direction) * ramp[None, None, :] + torch.sin(direction) * ramp[None, :, None]
    t = (along / math.sqrt(0.5) + 0.5)[:, None]  # (N, 1, S, S) in [0, 1]
    image = c0 + (c1 - c0) * t  # (N, 3, S, S)
    blobs = _uniform(g, (n, 3, config.blob_grid, config.blob_grid), -1.0, 1.0)
    blobs = blobs * (config.blob_amplitude * config.clutter)
    image = image + F.interpolate(blobs, size=(size, size), mode="bilinear", align_corners=True)

    # Distractors in either ink-like or background-like colours, under the digit.
    shapes = _shape_alphas(g, n, config) * config.clutter  # (N, K, S, S)
    k = shapes.shape[1]
    ink_like = torch.rand((n, k, 1, 1, 1), generator=g) < 0.5
    shape_colours = torch.where(ink_like, scene_colours((n, k, 3, 1, 1), True), scene_colours((n, k, 3, 1, 1), False))
    for i in range(k):
        alpha = shapes[:, i : i + 1]  # (N, 1, S, S)
        image = image * (1 - alpha) + shape_colours[:, i] * alpha

    digit_colour = scene_colours((n, 3, 1, 1), True)
    image = image * (1 - ink) + digit_colour * ink
    noise_std = _uniform(g, (n, 1, 1, 1), 0.02, config.max_noise_std) * config.clutter
    image = image + noise_std * torch.randn(image.shape, generator=g)
    return (image.clamp(0.0, 1.0) * 255.0).round().to(torch.uint8)


@functools.lru_cache(maxsize=1)
def _digit_splits() -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Split name -> (glyphs (N, 8, 8) float64 on the 0..16 scale, labels (N,) int64)."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()  # bundled with scikit-learn: no network
    index = np.arange(len(digits.target))
    train_idx, test_idx = train_test_split(
        index, test_size=SPLIT_TEST_SIZE, stratify=digits.target, random_state=SPLIT_RANDOM_STATE
    )
    return {
        name: (digits.images[idx], digits.target[idx].astype(np.int64))
        for name, idx in (("train", train_idx), ("test", test_idx))
    }


def _check_split(split: str) -> str:
    if split not in SPLITS:
        raise SnapViTError(
            f"Unknown split '{split}' for the embedded digits dataset.",
            f"Use one of: {', '.join(SPLITS)}.",
        )
    return split


def load_digit_glyphs(split: str) -> tuple[np.ndarray, np.ndarray]:
    """The raw sklearn glyphs of a split: ((N, 8, 8) float64 on 0..16, (N,) int64 labels)."""
    glyphs, labels = _digit_splits()[_check_split(split)]
    return glyphs.copy(), labels.copy()


def render_split(split: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Render a split's fixed images anew, as the shipped data file was made (this CPU's rounding)."""
    glyphs, labels = _digit_splits()[_check_split(split)]
    generator = torch.Generator().manual_seed(SPLIT_RENDER_SEEDS[split])
    return render_digits(glyphs, generator), torch.from_numpy(labels)


def data_path() -> Path:
    return ASSETS_DIR / DATA_FILENAME


@functools.lru_cache(maxsize=1)
def _shipped_splits() -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """Split -> (uint8 images, int64 labels) from the shipped file, checked for shape, type and range."""
    from safetensors import SafetensorError
    from safetensors.torch import load

    from snapvit_core.files.guards import read_bounded

    path = data_path()
    data = read_bounded(path, MAX_DATA_BYTES, "the embedded dataset", DATA_FIX)  # a regular file, bounded
    try:
        tensors = load(data)
    except (SafetensorError, ValueError) as error:
        reason = str(error).splitlines()[0][:200] if str(error) else type(error).__name__
        raise SnapViTError(f"The embedded dataset {path} is corrupt ({reason}).", DATA_FIX) from None
    glyph_counts = {split: len(_digit_splits()[split][1]) for split in SPLITS}
    size = RENDER.image_size
    splits = {}
    for split in SPLITS:
        images, labels = tensors.get(f"{split}_images"), tensors.get(f"{split}_labels")
        count = glyph_counts[split]
        if (
            images is None
            or labels is None
            or images.dtype != torch.uint8
            or tuple(images.shape) != (count, 3, size, size)
            or labels.dtype != torch.int64
            or tuple(labels.shape) != (count,)
            or not torch.equal(labels, torch.from_numpy(_digit_splits()[split][1]))
        ):
            raise SnapViTError(
                f"The embedded dataset {path} does not hold the {split} split as expected "
                f"({count} uint8 images of 3x{size}x{size} and the digits' labels in split order).",
                DATA_FIX,
            )
        splits[split] = (images, labels)
    return splits


def load_embedded_split(split: str) -> tuple[torch.Tensor, torch.Tensor]:
    """The fixed rendering of a split of the embedded dataset, as shipped (the same bytes on every machine).

    Args:
        split: "train" (1257 images, the kNN bank) or "test" (540 images, the kNN queries).

    Returns:
        (images (N, 3, S, S) uint8, labels (N,) int64). Fresh copies of an in-process cache, so
        callers may modify them.
    """
    images, labels = _shipped_splits()[_check_split(split)]
    return images.clone(), labels.clone()


def normalize_images(images: torch.Tensor, config: dict[str, Any] | None = None) -> torch.Tensor:
    """uint8 (N, 3, S, S) -> float32 model input: ``(x / 255 - mean) / std`` from the config."""
    preprocessing = (config or read_embedded_config())["preprocessing"]
    mean = torch.tensor(preprocessing["mean"], dtype=torch.float32).view(1, 3, 1, 1)
    std = torch.tensor(preprocessing["std"], dtype=torch.float32).view(1, 3, 1, 1)
    return (images.float() / 255.0 - mean) / std


def asset_paths(model_id: str = EMBEDDED_MODEL_ID) -> tuple[Path, Path]:
    """(weights, config) paths of an embedded model id (see ``EMBEDDED_ASSET_STEMS``)."""
    stem = EMBEDDED_ASSET_STEMS.get(model_id)
    if stem is None:
        raise SnapViTError(
            f"'{model_id}' is not an embedded model id.", f"Use one of: {', '.join(EMBEDDED_ASSET_STEMS)}."
        )
    return ASSETS_DIR / f"{stem}.safetensors", ASSETS_DIR / f"{stem}.json"


def read_embedded_config(model_id: str = EMBEDDED_MODEL_ID) -> dict[str, Any]:
    """The JSON config of a shipped embedded model (architecture, preprocessing, provenance, metrics)."""
    _, path = asset_paths(model_id)
    fix = RETRAIN_FIX
    if not path.is_file():
        raise SnapViTError(f"The embedded model config {path} is missing.", fix)
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
        config["architecture"], config["preprocessing"]  # noqa: B018 - required sections
    except (ValueError, KeyError, TypeError) as error:
        raise SnapViTError(f"The embedded model config {path} is corrupt ({error}).", fix) from None
    return config


def pretrained_cfg_from(config: dict[str, Any]) -> dict[str, Any]:
    """The timm ``pretrained_cfg`` so ``resolve_data_config({}, model=model)`` sees our inputs."""
    size = int(config["architecture"]["img_size"])
    preprocessing = config["preprocessing"]
    return {
        "input_size": (3, size, size),
        "mean": tuple(preprocessing["mean"]),
        "std": tuple(preprocessing["std"]),
        "interpolation": preprocessing.get("interpolation", "bilinear"),
        "crop_pct": 1.0,
        "crop_mode": "center",
        "num_classes": int(config["architecture"].get("num_classes", 10)),
        "first_conv": "patch_embed.proj",
        "classifier": "head",
        "architecture": config.get("model_id", EMBEDDED_MODEL_ID),
    }


def build_embedded_architecture(
    config: dict[str, Any] | None = None, model_id: str = EMBEDDED_MODEL_ID
) -> VisionTransformer:
    """An embedded ViT with random weights, built from ``config`` (default: ``model_id``'s shipped JSON)."""
    config = config or read_embedded_config(model_id)
    try:
        model = VisionTransformer(**config["architecture"])
    except (TypeError, ValueError, KeyError) as error:
        raise SnapViTError(f"The embedded model architecture is invalid ({error}).", RETRAIN_FIX) from None
    model.pretrained_cfg = pretrained_cfg_from(config)
    model.default_cfg = model.pretrained_cfg  # older timm helpers read default_cfg
    return model


def load_embedded_model(model_id: str = EMBEDDED_MODEL_ID) -> VisionTransformer:
    """A trained embedded ViT on CPU in eval mode (weights loaded strictly from safetensors)."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    model = build_embedded_architecture(model_id=model_id)
    path, _ = asset_paths(model_id)
    fix = RETRAIN_FIX
    if not path.is_file():
        raise SnapViTError(f"The embedded model weights {path} are missing.", fix)
    try:
        state = load_file(str(path), device="cpu")
        model.load_state_dict(state, strict=True)
    except (SafetensorError, RuntimeError, OSError, ValueError) as error:
        reason = str(error).splitlines()[0][:200]
        raise SnapViTError(f"The embedded model weights {path} are corrupt ({reason}).", fix) from None
    return model.eval()


def render_config_dict(config: RenderConfig = RENDER) -> dict[str, Any]:
    """The rendering settings as JSON-ready values (recorded in the asset config)."""
    return {key: list(v) if isinstance(v, tuple) else v for key, v in asdict(config).items()}
