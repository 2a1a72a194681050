"""kNN classifier: votes, chunking by size, tiny sets, bad input."""

from __future__ import annotations

import pytest
import torch
from conftest import LargestTensor

from snapvit_core.errors import SnapViTError
from snapvit_core.evaluation.knn import knn_predict, knn_top1


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


def test_bank_chunks_give_the_same_neighbours_as_one_block():
    train, train_labels = clustered(40, 6, dim=16)
    test, _ = clustered(9, 6, dim=16, seed=4)
    full = knn_predict(train, train_labels, test, k=7, weighted=True)
    for bank_chunk in (1, 5, 7, 239, 240, 1000):
        chunked = knn_predict(train, train_labels, test, k=7, weighted=True, chunk_size=4, bank_chunk_size=bank_chunk)
        assert torch.equal(full, chunked), bank_chunk


def test_fp16_bank_and_prepared_bank_keep_the_predictions():
    from snapvit_core.evaluation.knn import prepare_bank

    train, train_labels = clustered(30, 5, dim=32)
    test, test_labels = clustered(10, 5, dim=32, seed=5)
    full = knn_predict(train, train_labels, test, k=10)
    bank = prepare_bank(train, torch.float16)
    assert bank.dtype == torch.float16 and torch.allclose(bank.float().norm(dim=1), torch.ones(150), atol=1e-3)
    assert torch.equal(knn_predict(bank, train_labels, test, k=10, normalized=True, bank_chunk_size=16), full)


def test_chunked_knn_never_materialises_the_full_similarity_matrix():
    """Records every tensor the kNN creates: the largest is bounded by the chunk sizes, not Q x N."""
    bank_rows, dim, queries, q_chunk, b_chunk = 20_000, 32, 600, 64, 512
    bank = torch.randn(bank_rows, dim).half()  # the fp16 bank a large run keeps on the device
    labels = torch.randint(0, 10, (bank_rows,))
    test = torch.randn(queries, dim)
    with LargestTensor() as recorded:
        predicted = knn_predict(bank, labels, test, k=20, chunk_size=q_chunk, bank_chunk_size=b_chunk)
    assert predicted.shape == (queries,)
    bound = max(q_chunk * b_chunk * 4, b_chunk * dim * 4, queries * dim * 4)  # sims, float bank chunk, queries
    assert recorded.largest <= bound
    assert recorded.largest < queries * bank_rows * 4 / 50  # the unchunked (Q, N) float32 matrix
    full = knn_predict(bank.float(), labels, test, k=20)
    assert (predicted == full).float().mean() > 0.99  # fp16 rounding may swap near-ties only
