"""Importance scores: the in-memory container every method produces and the pruning engine reads.

File I/O (the project's safetensors format and the import of published SnapViT pickles) lives in
``scores_io.py``; this module defines the data, its invariants, and which backbone it belongs to
(:func:`check_scores_backbone`: scores recorded for another backbone are refused unless allowed).
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch

from snapvit_core.errors import SnapViTError
from snapvit_core.presets import EMBEDDED_MODEL_IDS

log = logging.getLogger(__name__)

DEFAULT_MIN_MLP_KEEP_RATIO = 0.05  # published default: keep >= 5% of each block's MLP neurons
DEFAULT_MIN_HEAD_KEEP_RATIO = 0.2  # published default: keep >= 20% of each block's heads


@dataclass(frozen=True)
class ImportanceScores:
    """One score per MLP hidden neuron and per attention head; higher = more important."""

    mlp: torch.Tensor  # (B, M) float32, MLP hidden-neuron scores per block
    heads: torch.Tensor  # (B, H) float32, attention-head scores per block
    min_mlp_keep_ratio: float = DEFAULT_MIN_MLP_KEEP_RATIO  # per-block floor on kept neurons
    min_head_keep_ratio: float = DEFAULT_MIN_HEAD_KEEP_RATIO  # per-block floor on kept heads
    metadata: dict[str, Any] = field(default_factory=dict)  # backbone, method, data, config, version

    def __post_init__(self) -> None:
        for name in ("mlp", "heads"):
            value = getattr(self, name)
            if not isinstance(value, torch.Tensor) or value.ndim != 2 or value.numel() == 0:
                raise SnapViTError(
                    f"Scores field '{name}' must be a non-empty 2-D tensor (blocks x units), got "
                    f"{getattr(value, 'shape', type(value).__name__)}.",
                    "The scores file is malformed; recompute it with `python -m snapvit_core score`.",
                )
            if not torch.isfinite(value).all():
                raise SnapViTError(
                    f"Scores field '{name}' contains NaN or Inf values.",
                    "Recompute the scores; a NaN usually means the scoring pass diverged.",
                )
        if self.mlp.shape[0] != self.heads.shape[0]:
            raise SnapViTError(
                f"Scores disagree on the number of blocks: MLP scores have {self.mlp.shape[0]}, "
                f"head scores {self.heads.shape[0]}.",
                "The scores file is malformed; recompute it.",
            )
        for name in ("min_mlp_keep_ratio", "min_head_keep_ratio"):
            ratio = getattr(self, name)
            if not 0.0 <= ratio <= 1.0:
                raise SnapViTError(f"{name} must be in [0, 1], got {ratio}.")
        object.__setattr__(self, "mlp", self.mlp.detach().to("cpu", torch.float32))
        object.__setattr__(self, "heads", self.heads.detach().to("cpu", torch.float32))

    @property
    def num_blocks(self) -> int:
        return int(self.mlp.shape[0])

    @property
    def shape_summary(self) -> str:
        """e.g. '12 blocks x 1536 MLP neurons, 12 blocks x 6 heads'."""
        return (
            f"{self.mlp.shape[0]} blocks x {self.mlp.shape[1]} MLP neurons, "
            f"{self.heads.shape[0]} blocks x {self.heads.shape[1]} heads"
        )

    def with_metadata(self, **updates: Any) -> ImportanceScores:
        """A copy whose metadata has ``updates`` merged in."""
        return replace(self, metadata={**self.metadata, **updates})


ALLOW_OTHER_FIX = (
    "Load scores made for this backbone, or allow scores of another backbone "
    "(--allow-other-backbone, or the app's checkbox) to use them anyway."
)


def recorded_backbone(scores: ImportanceScores) -> str | None:
    """The backbone id a scores file says it was made for (``backbone`` or ``model_id``), if any."""
    for key in ("backbone", "model_id"):
        value = scores.metadata.get(key)
        if isinstance(value, str) and value.strip():
            return value.strip()
    return None


def canonical_model_id(model_id: str) -> str:
    """An id to compare backbones by: timm names with their pretrained tag (the default one when
    omitted, so 'vit_base_patch16_224' is not 'vit_base_patch16_224.dino'), folders resolved."""
    text = model_id.strip()
    prefix = "hf:" if text.startswith("hf:") else ""
    bare = text[len(prefix) :].strip()
    if bare.startswith((".", "~", os.sep)) or Path(bare).expanduser().is_dir():
        return prefix + str(Path(bare).expanduser().resolve())
    if prefix or text in EMBEDDED_MODEL_IDS:
        return text
    try:
        from timm.models import get_pretrained_cfg

        config = get_pretrained_cfg(text)
    except Exception:  # noqa: BLE001 - not a timm name: compared as written
        config = None
    if config is not None and getattr(config, "architecture", None):
        return f"{config.architecture}.{config.tag}" if config.tag else str(config.architecture)
    return text


def check_scores_backbone(scores: ImportanceScores, model_id: str, allow_other: bool = False) -> str | None:
    """Refuse scores recorded for another backbone than ``model_id`` (same shapes or not).

    Scores that record no backbone cannot be checked and pass. With ``allow_other`` a mismatch is
    returned as a warning text for the caller to show instead of raised.

    Returns:
        None when the scores are for this backbone (or do not say), else the warning.
    """
    recorded = recorded_backbone(scores)
    if recorded is None or canonical_model_id(recorded) == canonical_model_id(model_id):
        return None
    problem = f"These scores were made for '{recorded}', not for the loaded backbone '{model_id}'"
    if not allow_other:
        raise SnapViTError(f"{problem}; another model's importances would prune this one blindly.", ALLOW_OTHER_FIX)
    warning = f"{problem}; using them anyway as asked."
    log.info("%s", warning)  # callers show it: the CLI on stderr, the app in a warning box
    return warning
