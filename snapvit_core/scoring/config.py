"""How scores are computed: the methods and ``ScoringConfig``, with the published defaults.

Its own module so that the crop maker (``crops.py``) and the scoring pass (``compute.py``) both read it
without importing each other.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from snapvit_core.engine.precision import check_precision
from snapvit_core.errors import SnapViTError
from snapvit_core.scoring.data_free import DATA_FREE_METHODS
from snapvit_core.scoring.scores import DEFAULT_MIN_HEAD_KEEP_RATIO, DEFAULT_MIN_MLP_KEEP_RATIO

LABEL_FREE, CROSS_ENTROPY = "label-free", "cross-entropy"  # the two objectives that give gradients
FISHER, SNIP = "fisher", "snip"  # the two ways of reducing gradients to unit scores

# Gradient method -> (objective, reduction).
GRADIENT_METHODS: dict[str, tuple[str, str]] = {
    "snapvit": (LABEL_FREE, FISHER),
    "cross-entropy": (CROSS_ENTROPY, FISHER),
    "snip-magnitude": (CROSS_ENTROPY, SNIP),
    "snip-magnitude-dino": (LABEL_FREE, SNIP),
}
METHODS = tuple(GRADIENT_METHODS) + tuple(sorted(DATA_FREE_METHODS))  # data-free ones alphabetically, as listed

# How the Fisher-type methods square gradients (DESIGN section 3 step 4 vs the paper's equation):
# "accumulated": square of the gradient accumulated over the whole pass (DESIGN, the published code, the
#   published score files); "per-image": mean over images of each image's squared gradient,
#   H ~ 1/N sum_i (grad L_i)^2, the diagonal empirical Fisher as the paper writes it.
SQUARED_GRADIENTS = ("accumulated", "per-image")

# Tokens per scoring forward when crop_micro_batch is None: a small model's forward is cheap, so it runs
# faster with more crops per forward (results/scoring_speed.md has the crops/s by micro-batch); large ones keep
# the published 64 crops (a ViT-B/16 at 224 px: 64 x 197 tokens).
AUTO_TOKENS_PER_FORWARD = 384 * 17


@dataclass(frozen=True)
class ScoringConfig:
    """How scores are computed. Defaults are the published SnapViT settings."""

    method: str = "snapvit"  # one of METHODS
    samples: int = 1000  # images used (published: 1000, one epoch)
    global_crops: int = 2  # teacher and student views per image (published: 2)
    local_crops: int = 10  # student-only views per image (published: 10)
    global_scale: tuple[float, float] = (0.25, 1.0)  # area fraction of global crops (published: 0.25-1.0)
    local_scale: tuple[float, float] = (0.05, 0.25)  # area fraction of local crops (published: 0.05-0.25)
    batch_size: int = 16  # images per optimisation step (one loss mean, one backward per micro-batch)
    crop_micro_batch: int | None = None  # crops per forward, bounds memory; None = auto; never changes the scores
    seed: int = 0  # seeds the crop generator (and the random method)
    snip_alpha: float = 0.001  # weight of w^2 in the SNIP-magnitude score (published: 0.001)
    min_mlp_keep_ratio: float = DEFAULT_MIN_MLP_KEEP_RATIO  # stored with the scores (published: 0.05)
    min_head_keep_ratio: float = DEFAULT_MIN_HEAD_KEEP_RATIO  # stored with the scores (published: 0.2)
    precision: str = "auto"  # one of precision.PRECISIONS: auto = bf16 autocast on CUDA, fp32 on the CPU
    squared_gradients: str = "accumulated"  # one of SQUARED_GRADIENTS (published: accumulated)

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise SnapViTError(f"Unknown scoring method {self.method!r}.", f"Choose one of: {', '.join(METHODS)}.")
        for name in ("samples", "batch_size", "global_crops"):
            _check_int(name, getattr(self, name), minimum=1)
        if self.crop_micro_batch is not None:
            _check_int("crop_micro_batch", self.crop_micro_batch, minimum=1)
        _check_int("local_crops", self.local_crops, minimum=0)
        _check_int("seed", self.seed, minimum=None)
        if self.global_crops + self.local_crops < 2:
            raise SnapViTError(
                "The label-free loss compares different views: it needs at least 2 crops per image, got "
                f"{self.global_crops} global + {self.local_crops} local.",
                "Use the published 2 global + 10 local crops.",
            )
        for name in ("global_scale", "local_scale"):
            low, high = getattr(self, name)
            if not 0.0 < low <= high <= 1.0:
                raise SnapViTError(f"{name} must satisfy 0 < low <= high <= 1, got ({low}, {high}).")
        check_precision(self.precision)
        if self.squared_gradients not in SQUARED_GRADIENTS:
            raise SnapViTError(
                f"Unknown squared_gradients {self.squared_gradients!r}.",
                f"Choose one of: {', '.join(SQUARED_GRADIENTS)}.",
            )
        if self.squared_gradients == "per-image" and GRADIENT_METHODS.get(self.method, (None, None))[1] != FISHER:
            raise SnapViTError(
                f"squared_gradients='per-image' applies to the squared-gradient methods, not to {self.method!r}.",
                f"Use it with {' or '.join(m for m, (_, r) in GRADIENT_METHODS.items() if r == FISHER)}, "
                "or keep 'accumulated'.",
            )
        if not (math.isfinite(self.snip_alpha) and self.snip_alpha >= 0):
            raise SnapViTError(f"snip_alpha must be a finite number >= 0, got {self.snip_alpha}.")
        for name in ("min_mlp_keep_ratio", "min_head_keep_ratio"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise SnapViTError(f"{name} must be in [0, 1], got {getattr(self, name)}.")

    @property
    def needs_images(self) -> bool:
        return self.method in GRADIENT_METHODS

    @property
    def needs_labels(self) -> bool:
        return self.needs_images and GRADIENT_METHODS[self.method][0] == CROSS_ENTROPY

    @property
    def crops_per_image(self) -> int:
        return self.global_crops + self.local_crops

    def micro_batch(self, tokens: int) -> int:
        """Crops per forward for a model of ``tokens`` tokens: ``crop_micro_batch``, or when None at least 64
        and as many as hold AUTO_TOKENS_PER_FORWARD tokens."""
        return self.crop_micro_batch or max(64, AUTO_TOKENS_PER_FORWARD // tokens)


def _check_int(name: str, value: object, minimum: int | None) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise SnapViTError(f"{name} must be a whole number, got {value!r}.")
    if minimum is not None and value < minimum:
        raise SnapViTError(f"{name} must be at least {minimum}, got {value}.", f"Use {name} >= {minimum}.")
