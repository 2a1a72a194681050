"""kNN classification on frozen embeddings (DESIGN section 7), as pure tensor functions.

The published numbers use k = 20 and an unweighted majority vote; DINO's weighted vote
(weights exp(sim / T), T = 0.07) is offered as ``weighted=True``. Queries are processed in chunks of
a fixed *size*, so any number of test images works (DINO's fixed chunk count fails below 100).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .errors import SnapViTError


def knn_predict(
    train_features: torch.Tensor,
    train_labels: torch.Tensor,
    test_features: torch.Tensor,
    k: int = 20,
    weighted: bool = False,
    temperature: float = 0.07,
    chunk_size: int = 1024,
) -> torch.Tensor:
    """Predicted class of each test embedding.

    Args:
        train_features: (N, D) bank embeddings (L2-normalised here).
        train_labels: (N,) int64 labels.
        test_features: (Q, D) query embeddings.
        k: neighbours, capped at N.
        weighted: DINO's exp(sim / temperature) vote instead of one vote per neighbour.
        temperature: the weighted vote's temperature.
        chunk_size: queries per similarity matmul (bounds memory at chunk_size x N).

    Returns:
        (Q,) int64 predictions; ties go to the smaller class index.
    """
    if train_features.shape[0] == 0 or train_features.shape[0] != train_labels.shape[0]:
        raise SnapViTError(
            f"kNN needs a non-empty bank with one label per feature, got {train_features.shape[0]} "
            f"features and {train_labels.shape[0]} labels.",
            "Check the data source: the train split is empty or unlabeled.",
        )
    k = min(k, train_features.shape[0])
    bank = F.normalize(train_features.float(), dim=1)
    queries = F.normalize(test_features.float(), dim=1)
    labels = train_labels.long()
    num_classes = int(labels.max()) + 1
    predictions = []
    for start in range(0, queries.shape[0], chunk_size):
        similarity = queries[start : start + chunk_size] @ bank.T  # (q, N)
        top_sim, top_idx = similarity.topk(k, dim=1)  # (q, k)
        votes = torch.ones_like(top_sim) if not weighted else (top_sim / temperature).exp()
        tally = torch.zeros(top_sim.shape[0], num_classes, dtype=votes.dtype)
        tally.scatter_add_(1, labels[top_idx], votes)  # (q, C)
        predictions.append(tally.argmax(dim=1))
    return torch.cat(predictions) if predictions else torch.empty(0, dtype=torch.long)


def knn_top1(
    train_features: torch.Tensor,
    train_labels: torch.Tensor,
    test_features: torch.Tensor,
    test_labels: torch.Tensor,
    k: int = 20,
    weighted: bool = False,
    temperature: float = 0.07,
) -> float:
    """Top-1 accuracy (0..1) of the kNN classifier on the test set."""
    if test_features.shape[0] == 0:
        raise SnapViTError("kNN needs at least one test image.", "Check the data source's test split.")
    predicted = knn_predict(train_features, train_labels, test_features, k, weighted, temperature)
    return float((predicted == test_labels.long()).float().mean())


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
