"""kNN classification on frozen embeddings (DESIGN section 7), as pure tensor functions.

The published numbers use k = 20 (:data:`DEFAULT_K`) and an unweighted majority vote; DINO's
weighted vote (weights exp(sim / T), T = 0.07) is offered as ``weighted=True``.

Scale: everything runs on the features' device (the vote tally too). Queries are processed in
chunks of a fixed *size* (DINO's fixed chunk *count* fails below 100 test images), and the bank is
scanned in chunks of a fixed size with a running top-k merge, so the largest temporary is
(query_chunk x bank_chunk) similarities plus one bank chunk in float32, whatever the bank size. A bank of
1.28 M x 768 held in fp16 (``bank_dtype=torch.float16``, 1.97 GB) thus needs ~2.5 GB of device memory
with the default chunks (similarities 1024 x 65536 x 4 B = 0.27 GB, bank chunk 0.2 GB).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from snapvit_core.errors import SnapViTError

DEFAULT_K = 20  # neighbours (published: 20)
DEFAULT_TEMPERATURE = 0.07  # temperature of DINO's weighted vote
QUERY_CHUNK = 1024  # queries per similarity block
BANK_CHUNK = 65536  # bank rows per similarity block


def prepare_bank(features: torch.Tensor, dtype: torch.dtype | None = None) -> torch.Tensor:
    """L2-normalised bank rows, stored in ``dtype`` (e.g. fp16 to halve its memory); chunked so the
    float32 temporary stays one chunk, not a copy of the whole bank."""
    dtype = dtype or torch.float32
    out = torch.empty(features.shape, dtype=dtype, device=features.device)
    for start in range(0, features.shape[0], BANK_CHUNK):
        out[start : start + BANK_CHUNK] = F.normalize(features[start : start + BANK_CHUNK].float(), dim=1)
    return out


def knn_predict(
    train_features: torch.Tensor,
    train_labels: torch.Tensor,
    test_features: torch.Tensor,
    k: int = DEFAULT_K,
    weighted: bool = False,
    temperature: float = DEFAULT_TEMPERATURE,
    chunk_size: int = QUERY_CHUNK,
    bank_chunk_size: int = BANK_CHUNK,
    normalized: bool = False,
) -> torch.Tensor:
    """Predicted class of each test embedding, computed on ``train_features``' device.

    Args:
        train_features: (N, D) bank embeddings, any float dtype (L2-normalised here unless ``normalized``).
        train_labels: (N,) int64 labels.
        test_features: (Q, D) query embeddings.
        k: neighbours, capped at N.
        weighted: DINO's exp(sim / temperature) vote instead of one vote per neighbour.
        temperature: the weighted vote's temperature.
        chunk_size: queries per similarity block.
        bank_chunk_size: bank rows per similarity block (bounds memory at chunk_size x bank_chunk_size).
        normalized: the bank rows are already L2-normalised (:func:`prepare_bank`).

    Returns:
        (Q,) int64 predictions on the bank's device; ties go to the smaller class index.
    """
    if train_features.shape[0] == 0 or train_features.shape[0] != train_labels.shape[0]:
        raise SnapViTError(
            f"kNN needs a non-empty bank with one label per feature, got {train_features.shape[0]} "
            f"features and {train_labels.shape[0]} labels.",
            "Check the data source: the train split is empty or unlabeled.",
        )
    if chunk_size < 1 or bank_chunk_size < 1:
        raise SnapViTError(f"kNN chunk sizes must be >= 1, got {chunk_size} and {bank_chunk_size}.")
    device = train_features.device
    k = min(k, train_features.shape[0])
    labels = train_labels.to(device).long()
    num_classes = int(labels.max()) + 1
    queries = F.normalize(test_features.to(device).float(), dim=1)
    predictions = []
    for start in range(0, queries.shape[0], chunk_size):
        top_sim, top_idx = _chunked_topk(
            train_features, queries[start : start + chunk_size], k, bank_chunk_size, normalized
        )
        votes = torch.ones_like(top_sim) if not weighted else (top_sim / temperature).exp()
        tally = torch.zeros(top_sim.shape[0], num_classes, dtype=votes.dtype, device=device)  # (q, C)
        tally.scatter_add_(1, labels[top_idx], votes)
        predictions.append(tally.argmax(dim=1))
    return torch.cat(predictions) if predictions else torch.empty(0, dtype=torch.long, device=device)


def _chunked_topk(
    bank: torch.Tensor, queries: torch.Tensor, k: int, bank_chunk_size: int, normalized: bool
) -> tuple[torch.Tensor, torch.Tensor]:
    """(q, k) largest cosine similarities of ``queries`` against ``bank`` and their bank indices.

    Scans the bank in chunks and merges each chunk's top-k into the running top-k (top-k of a union
    is the top-k of the per-part top-ks), so the (q, N) similarity matrix never exists.
    """
    best_sim = best_idx = None
    for start in range(0, bank.shape[0], bank_chunk_size):
        chunk = bank[start : start + bank_chunk_size].float()  # (b, D)
        if not normalized:
            chunk = F.normalize(chunk, dim=1)
        similarity = queries @ chunk.T  # (q, b)
        sim, idx = similarity.topk(min(k, chunk.shape[0]), dim=1)  # (q, <=k)
        idx += start
        if best_sim is not None:
            merged = torch.cat([best_sim, sim], dim=1)
            sim, order = merged.topk(min(k, merged.shape[1]), dim=1)
            idx = torch.cat([best_idx, idx], dim=1).gather(1, order)
        best_sim, best_idx = sim, idx
    return best_sim, best_idx


def knn_top1(
    train_features: torch.Tensor,
    train_labels: torch.Tensor,
    test_features: torch.Tensor,
    test_labels: torch.Tensor,
    k: int = DEFAULT_K,
    weighted: bool = False,
    temperature: float = DEFAULT_TEMPERATURE,
    **chunks: int | bool,
) -> float:
    """Top-1 accuracy (0..1) of the kNN classifier on the test set (``chunks``: see :func:`knn_predict`)."""
    if test_features.shape[0] == 0:
        raise SnapViTError("kNN needs at least one test image.", "Check the data source's test split.")
    predicted = knn_predict(train_features, train_labels, test_features, k, weighted, temperature, **chunks)
    return float((predicted == test_labels.to(predicted.device).long()).float().mean())


def stratified_subset(labels: torch.Tensor, count: int, seed: int = 0) -> torch.Tensor:
    """Sorted indices of ``count`` items drawn per class in proportion to its size (deterministic).

    Every class present keeps at least one item while ``count`` allows; the largest remainders
    get the leftover places.
    """
    labels = labels.long()
    count = max(0, min(int(count), len(labels)))
    classes, sizes = labels.unique(return_counts=True)
    quota = sizes.double() * count / len(labels)
    take = quota.floor().long()
    if count >= len(classes):
        take = take.clamp(min=1)
    leftover = count - int(take.sum())
    order = torch.argsort(quota - quota.floor(), descending=True, stable=True)
    for index in order.tolist():
        if leftover <= 0:
            break
        if take[index] < sizes[index]:
            take[index] += 1
            leftover -= 1
    while int(take.sum()) > count:  # the clamp overshot: trim the largest shares
        take[int(torch.argmax(take))] -= 1
    generator = torch.Generator().manual_seed(seed)
    chosen = []
    for cls, n in zip(classes.tolist(), take.tolist()):
        members = torch.nonzero(labels == cls).flatten()
        chosen.append(members[torch.randperm(len(members), generator=generator)[:n]])
    return torch.cat(chosen).sort().values if chosen else torch.empty(0, dtype=torch.long)
