"""Feature extraction and kNN evaluation with a per-model-state feature cache.

Moving a slider back to a configuration seen before costs nothing: features of the kNN train and
test sets are cached under a key the caller derives from the model state (the keep plan, plus any
weight correction), so only configurations that changed are re-embedded.

Scale: images come as a tensor, a streaming ``Dataset`` or a ``DataLoader`` (only batches in flight
are held); features stay on the extraction device (the kNN then runs there, chunked, see ``knn.py``),
optionally with the bank in fp16. Under an initialised process group (``torchrun``) each rank embeds a
contiguous shard and the shards are all-gathered in order, so every rank holds all features.
"""

from __future__ import annotations

import contextlib
from collections import OrderedDict
from collections.abc import Callable, Hashable, Iterable

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Dataset, Subset

from snapvit_core.engine.adapter import ViTAdapter
from snapvit_core.errors import CancelledError
from snapvit_core.evaluation.knn import DEFAULT_K, DEFAULT_TEMPERATURE, knn_top1
from snapvit_core.runtime import distributed

Images = torch.Tensor | Dataset | DataLoader  # (N, 3, S, S), a dataset of (image[, label]), or a loader of those
TOKENS_PER_BATCH = 1 << 14  # automatic batch: about this many tokens per forward (a small model gets big batches)
MIN_BATCH, MAX_BATCH = 256, 1024


def auto_batch_size(num_tokens: int) -> int:
    """Images per forward for a model with ``num_tokens`` tokens per image.

    Small models are overhead-bound at 256 images: the embedded ViT (17 tokens) embeds its kNN images
    markedly faster at 1,024 per batch, with bit-identical features (results/code_choices.md).
    Large models keep 256 (ViT-B: 197 tokens), which bounds activation memory.
    """
    return int(min(MAX_BATCH, max(MIN_BATCH, TOKENS_PER_BATCH // max(num_tokens, 1))))


def extract_features(
    model: nn.Module,
    images_or_loader: Images,
    batch_size: int | None = None,
    device: str | torch.device = "cpu",
    dtype: torch.dtype | None = None,
    *,
    progress: Callable[[int, int], None] | None = None,
    cancel: Callable[[], bool] | None = None,
    workers: int = 0,
) -> torch.Tensor:
    """Embeddings (heads disabled) of preprocessed images: N images -> (N, D) float32 on ``device``.

    Args:
        model: the backbone (put in eval mode).
        images_or_loader: (N, 3, S, S) tensor, a ``Dataset`` yielding ``image`` or ``(image, label)``,
            or a ``DataLoader`` of those (used as given: no sharding across processes).
        batch_size: images per forward (tensor and dataset input); None = ``auto_batch_size`` of the model.
        device: where the forward passes run and the features stay.
        dtype: autocast dtype (e.g. ``torch.bfloat16`` on CUDA); None = no autocast.
        progress: called after each batch with (images done, total images).
        cancel: polled before each batch; returning True raises ``CancelledError``.
        workers: decoding processes for dataset input.
    """
    adapter = ViTAdapter(model)
    device = torch.device(device)
    model.eval()
    if batch_size is None:
        batch_size = auto_batch_size(adapter.shape().num_tokens)
    batches, local, total = _batches(images_or_loader, batch_size, device, workers)
    chunks, done = [], 0
    autocast = torch.autocast(device.type, dtype=dtype) if dtype is not None else contextlib.nullcontext()
    # a damaged image in one rank's shard fails every rank alike (not at the gather below)
    with distributed.shared_failures(), torch.inference_mode(), autocast:
        for batch in batches:
            if cancel is not None and cancel():
                raise CancelledError("feature extraction")
            batch = batch[0] if isinstance(batch, (tuple, list)) else batch
            chunks.append(adapter.embed(batch.to(device, non_blocking=True)).float())
            done += batch.shape[0]
            if progress is not None:
                progress(min(total, round(done * total / max(local, 1))), total)  # this rank's share, scaled
    features = torch.cat(chunks) if chunks else torch.empty(0, adapter.embed_dim, device=device)
    if local != total:  # sharded across processes: gather every rank's rows in order
        features = distributed.all_gather_rows(features, total)
    return features


def _batches(images: Images, batch_size: int, device: torch.device, workers: int) -> tuple[Iterable, int, int]:
    """(batches, images this process embeds, images in total), sharding when a process group is active."""
    if isinstance(images, DataLoader):
        return images, len(images.dataset), len(images.dataset)
    total = len(images)
    shard = distributed.shard_range(total)
    if isinstance(images, torch.Tensor):
        part = images[shard.start : shard.stop]
        return part.split(batch_size), len(part), total
    from snapvit_core.data.streaming import make_loader

    part = images if len(shard) == total else Subset(images, list(shard))
    return make_loader(part, batch_size, device, workers), len(shard), total


class KnnEvaluator:
    """kNN top-1 of a model on fixed train (bank) / test splits, with cached features.

    Args:
        train, train_labels, test, test_labels: preprocessed images (N, 3, S, S) or streaming datasets,
            and int64 labels.
        k: neighbours (published: 20, ``knn.DEFAULT_K``).
        weighted: DINO's weighted vote (T = temperature) instead of the published uniform vote.
        device: where feature extraction and the kNN run (features stay there).
        cache_size: model states whose features are kept (least recently used are dropped).
        bank_dtype: storage of the cached train features (e.g. ``torch.float16`` halves the bank).
        batch_size, workers: feature-extraction batch and decoding processes.
    """

    def __init__(
        self,
        train: torch.Tensor | Dataset,
        train_labels: torch.Tensor,
        test: torch.Tensor | Dataset,
        test_labels: torch.Tensor,
        k: int = DEFAULT_K,
        weighted: bool = False,
        temperature: float = DEFAULT_TEMPERATURE,
        device: str | torch.device = "cpu",
        cache_size: int = 64,
        bank_dtype: torch.dtype | None = None,
        batch_size: int | None = None,
        workers: int = 0,
        source_digest: str | None = None,
    ) -> None:
        self.train, self.train_labels = train, train_labels
        self.source_digest = source_digest  # the splits' source hash (data.KnnSplits), for cache keys
        self.test, self.test_labels = test, test_labels
        self.k, self.weighted, self.temperature = k, weighted, temperature
        self.device = device
        self.cache_size = cache_size
        self.bank_dtype, self.batch_size, self.workers = bank_dtype, batch_size, workers
        self._cache: OrderedDict[Hashable, tuple[torch.Tensor, torch.Tensor]] = OrderedDict()

    @classmethod
    def from_splits(
        cls,
        splits,
        k: int = DEFAULT_K,
        weighted: bool = False,
        temperature: float = DEFAULT_TEMPERATURE,
        device: str | torch.device = "cpu",
        **options,
    ) -> KnnEvaluator:
        """An evaluator on a ``data.KnnSplits`` (``options``: cache_size, bank_dtype, batch_size, workers)."""
        return cls(
            splits.train,
            splits.train_labels,
            splits.test,
            splits.test_labels,
            k,
            weighted,
            temperature,
            device,
            **options,
            source_digest=splits.source_digest,
        )

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
        cancel: Callable[[], bool] | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(train, test) embeddings of ``model`` on the device; cached under ``key`` when one is given.

        ``progress`` gets (images done, total) over both splits; ``cancel`` is polled between batches.
        """
        if key is not None and key in self._cache:
            self._cache.move_to_end(key)
            return self._cache[key]
        total = len(self.train) + len(self.test)

        def split_progress(offset: int) -> Callable[[int, int], None] | None:
            return None if progress is None else (lambda done, _: progress(offset + done, total))

        options = {"batch_size": self.batch_size, "device": self.device, "cancel": cancel, "workers": self.workers}
        train = extract_features(model, self.train, progress=split_progress(0), **options)
        test = extract_features(model, self.test, progress=split_progress(len(self.train)), **options)
        if self.bank_dtype is not None:
            train = train.to(self.bank_dtype)
        result = (train, test)
        if key is not None:
            self._cache[key] = result
            while len(self._cache) > self.cache_size:
                self._cache.popitem(last=False)
        return result

    def is_cached(self, key: Hashable) -> bool:
        return key in self._cache

    def top1(self, model: nn.Module, key: Hashable | None = None) -> float:
        """kNN top-1 accuracy (0..1) on the test split."""
        return self.top1_of(self.features(model, key))

    def top1_of(self, features: tuple[torch.Tensor, torch.Tensor]) -> float:
        """kNN top-1 accuracy (0..1) of given (train, test) features, with this evaluator's labels and vote."""
        train_features, test_features = features
        return knn_top1(
            train_features, self.train_labels, test_features, self.test_labels, self.k, self.weighted, self.temperature
        )

    def subset(self, train_indices: torch.Tensor, test_indices: torch.Tensor) -> KnnEvaluator:
        """An evaluator on some of the images (tensors are indexed, streaming datasets wrapped), same settings."""

        def pick(images: torch.Tensor | Dataset, indices: torch.Tensor) -> torch.Tensor | Dataset:
            return images[indices] if isinstance(images, torch.Tensor) else Subset(images, indices.tolist())

        return KnnEvaluator(
            pick(self.train, train_indices),
            self.train_labels[train_indices],
            pick(self.test, test_indices),
            self.test_labels[test_indices],
            self.k,
            self.weighted,
            self.temperature,
            self.device,
            self.cache_size,
            self.bank_dtype,
            self.batch_size,
            self.workers,
        )


def embedding_similarity(reference: torch.Tensor, pruned: torch.Tensor) -> torch.Tensor:
    """Per-image cosine similarity between unpruned and pruned embeddings: (N, D), (N, D) -> (N,) on the CPU."""
    return F.cosine_similarity(reference.float(), pruned.float(), dim=1).cpu()
