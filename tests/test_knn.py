"""kNN classifier: votes, chunking by size, tiny sets, bad input."""

from __future__ import annotations

import pytest
import torch

from snapvit_core.errors import SnapViTError
from snapvit_core.knn import knn_predict, knn_top1


def clustered(n_per_class: int, classes: int, dim: int = 8, seed: int = 0):
    """Tight clusters around fixed centres; ``seed`` only changes the noise."""
    centres = torch.randn(classes, dim, generator=torch.Generator().manual_seed(123)) * 5
    generator = torch.Generator().manual_seed(seed)
    labels = torch.arange(classes).repeat_interleave(n_per_class)
    features = centres[labels] + 0.1 * torch.randn(len(labels), dim, generator=generator)
    return features, labels


def test_separable_clusters_are_classified_perfectly():
    train, train_labels = clustered(30, 5)
    test, test_labels = clustered(7, 5, seed=1)
    assert knn_top1(train, train_labels, test, test_labels, k=20) == 1.0
    assert knn_top1(train, train_labels, test, test_labels, k=20, weighted=True) == 1.0


def test_uniform_and_weighted_vote_differ_as_defined():
    # Query (1, 0): one very close neighbour of class 1, two farther ones of class 0.
    bank = torch.tensor([[1.0, 0.0], [0.6, 0.8], [0.6, -0.8]])
    labels = torch.tensor([1, 0, 0])
    query = torch.tensor([[1.0, 0.0]])
    assert knn_predict(bank, labels, query, k=3).item() == 0  # majority
    assert knn_predict(bank, labels, query, k=3, weighted=True, temperature=0.07).item() == 1  # exp(sim/T)


def test_chunking_by_size_handles_any_query_count():
    train, train_labels = clustered(10, 3)
    for queries in (1, 2, 5):
        test, test_labels = clustered(queries, 3, seed=2)
        full = knn_predict(train, train_labels, test, k=5, chunk_size=1024)
        chunked = knn_predict(train, train_labels, test, k=5, chunk_size=2)
        assert torch.equal(full, chunked) and full.shape[0] == 3 * queries


def test_k_larger_than_bank_is_capped():
    train, train_labels = clustered(2, 2)
    test, test_labels = clustered(1, 2, seed=3)
    assert 0.0 <= knn_top1(train, train_labels, test, test_labels, k=20) <= 1.0


def test_empty_inputs_are_clear_errors():
    with pytest.raises(SnapViTError, match="non-empty bank"):
        knn_predict(torch.empty(0, 4), torch.empty(0, dtype=torch.long), torch.randn(2, 4))
    with pytest.raises(SnapViTError, match="at least one test image"):
        knn_top1(torch.randn(3, 4), torch.tensor([0, 1, 0]), torch.empty(0, 4), torch.empty(0, dtype=torch.long))
