"""Feature extraction and kNN evaluation with a per-model-state feature cache.

Moving a slider back to a configuration seen before costs nothing: features of the kNN train and
test sets are cached under a key the caller derives from the model state (the keep plan, plus any
weight correction), so only configurations that changed are re-embedded.
"""

from __future__ import annotations

import contextlib
from collections import OrderedDict
from collections.abc import Callable, Hashable

import torch
import torch.nn.functional as F
from torch import nn

from .adapter import ViTAdapter
from .knn import knn_top1


def extract_features(
    model: nn.Module,
    images: torch.Tensor,
    batch_size: int = 256,
    device: str | torch.device = "cpu",
    dtype: torch.dtype | None = None,
    *,
    progress: Callable[[int, int], None] | None = None,
    cancel: Callable[[], object] | None = None,
) -> torch.Tensor:
    """Embeddings (heads disabled) of preprocessed images: (N, 3, S, S) -> (N, D) float32 on CPU.

    ``progress(done, total)`` is called after each batch (images done); ``cancel()`` is called before
    each batch and stops the extraction by raising ``errors.CancelledError``.
    """
    adapter = ViTAdapter(model)
    device = torch.device(device)
    model.eval()
    chunks = []
    autocast = torch.autocast(device.type, dtype=dtype) if dtype is not None else contextlib.nullcontext()
    with torch.inference_mode(), autocast:
        for start in range(0, images.shape[0], batch_size):
            if cancel is not None:
                cancel()
            batch = images[start : start + batch_size].to(device, non_blocking=True)
            chunks.append(adapter.embed(batch).float().cpu())
            if progress is not None:
                progress(min(start + batch_size, images.shape[0]), images.shape[0])
    return torch.cat(chunks) if chunks else torch.empty(0, adapter.embed_dim)


class KnnEvaluator:
    """kNN top-1 of a model on fixed train (bank) / test splits, with cached features.

    Args:
        train, train_labels, test, test_labels: preprocessed images (N, 3, S, S) and int64 labels.
        k: neighbours (published: 20).
        weighted: DINO's weighted vote (T = temperature) instead of the published uniform vote.
        device: where feature extraction runs.
        cache_size: model states whose features are kept (least recently used are dropped).
    """

    def __init__(
        self,
        train: torch.Tensor,
        train_labels: torch.Tensor,
        test: torch.Tensor,
        test_labels: torch.Tensor,
        k: int = 20,
        weighted: bool = False,
        temperature: float = 0.07,
        device: str | torch.device = "cpu",
        cache_size: int = 64,
    ) -> None:
        self.train, self.train_labels = train, train_labels
        self.test, self.test_labels = test, test_labels
        self.k, self.weighted, self.temperature = k, weighted, temperature
        self.device = device
        self.cache_size = cache_size
        self._cache: OrderedDict[Hashable, tuple[torch.Tensor, torch.Tensor]] = OrderedDict()

    @property
    def vote(self) -> str:
        """How the neighbours vote, for reports."""
        return f"weighted (T={self.temperature})" if self.weighted else "uniform"

    def features(
        self,
        model: nn.Module,
        key: Hashable | None = None,
        *,
        progress: Callable[[int, int], None] | None = None,
        cancel: Callable[[], object] | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(train, test) embeddings of ``model``; cached under ``key`` when one is given (see extract_features)."""
        if key is not None and key in self._cache:
            self._cache.move_to_end(key)
            return self._cache[key]
        both = torch.cat([self.train, self.test])
        features = extract_features(model, both, device=self.device, progress=progress, cancel=cancel)
        result = (features[: len(self.train)], features[len(self.train) :])
        if key is not None:
            self._cache[key] = result
            while len(self._cache) > self.cache_size:
                self._cache.popitem(last=False)
        return result

    def is_cached(self, key: Hashable) -> bool:
        return key in self._cache

    def top1(self, model: nn.Module, key: Hashable | None = None) -> float:
        """kNN top-1 accuracy (0..1) on the test split."""
        train_features, test_features = self.features(model, key)
        return knn_top1(
            train_features, self.train_labels, test_features, self.test_labels, self.k, self.weighted, self.temperature
        )


def embedding_similarity(reference: torch.Tensor, pruned: torch.Tensor) -> torch.Tensor:
    """Per-image cosine similarity between unpruned and pruned embeddings: (N, D), (N, D) -> (N,)."""
    return F.cosine_similarity(reference.float(), pruned.float(), dim=1)
