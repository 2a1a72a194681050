"""Importance scores: the in-memory container every method produces and the pruning engine reads.

File I/O (the project's safetensors format and the import of published SnapViT pickles) lives in
``scores_io.py``; this module only defines the data and its invariants.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

import torch

from .errors import SnapViTError

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
