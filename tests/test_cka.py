"""Component CKA (DESIGN section 4): the initial covariance of the multiplier search."""

from __future__ import annotations

import pytest
import torch

from snapvit_core.search.cka import component_cka, linear_cka_matrix, make_positive_definite

torch.set_num_threads(1)


def _naive_cka(features: list[torch.Tensor]) -> torch.Tensor:
    samples = features[0].shape[0]
    centring = torch.eye(samples, dtype=torch.float64) - 1.0 / samples
    grams = [centring @ (f.double() @ f.double().T) @ centring for f in features]
    count = len(features)
    out = torch.empty(count, count, dtype=torch.float64)
    for i in range(count):
        for j in range(count):
            out[i, j] = (grams[i] * grams[j]).sum() / ((grams[i] ** 2).sum() * (grams[j] ** 2).sum()).sqrt()
    return out


@pytest.mark.parametrize("samples", [6, 40])  # few samples: Gram form; many: feature-space form
def test_cka_matches_naive_reference(samples):
    generator = torch.Generator().manual_seed(0)
    base = torch.randn(samples, 5, generator=generator)
    features = [
        base @ torch.randn(5, w, generator=generator) + 0.3 * torch.randn(samples, w, generator=generator)
        for w in (4, 7, 3, 9)
    ]
    cka = linear_cka_matrix(features)
    assert torch.allclose(cka, _naive_cka(features), atol=1e-10)
    assert torch.equal(cka, cka.T)
    assert torch.allclose(cka.diagonal(), torch.ones(4, dtype=torch.float64))


def test_cka_of_a_dead_component_is_zero_off_the_diagonal():
    features = [torch.randn(10, 3), torch.zeros(10, 2), torch.randn(10, 4)]
    cka = linear_cka_matrix(features)
    assert cka[1, 1] == 1.0 and cka[1, 0] == 0.0 and cka[2, 1] == 0.0


def test_positive_definite_repair():
    indefinite = torch.tensor([[1.0, 0.9, -0.9], [0.9, 1.0, 0.9], [-0.9, 0.9, 1.0]], dtype=torch.float64)
    assert torch.linalg.eigvalsh(indefinite).min() < 0
    repaired = make_positive_definite(indefinite)
    assert torch.linalg.eigvalsh(repaired).min() > 0
    assert torch.allclose(repaired.diagonal(), torch.ones(3, dtype=torch.float64))
    assert torch.allclose(repaired, repaired.T)


def test_component_cka_of_a_vit(tiny_vit):
    images = torch.randn(12, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    cka = component_cka(tiny_vit, images)
    assert cka.shape == (3 + 3 * 6, 3 + 3 * 6)
    assert torch.linalg.cholesky_ex(cka).info == 0
    assert torch.allclose(cka.diagonal(), torch.ones(21, dtype=torch.float64))
