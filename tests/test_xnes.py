"""xNES (DESIGN section 4): rank utilities, convergence on test functions, seeding and resuming."""

from __future__ import annotations

import math

import pytest
import torch

from snapvit_core.errors import SnapViTError
from snapvit_core.search.xnes import XNES, default_population_size, rank_utilities

torch.set_num_threads(1)


def _minimise(objective, dimension: int, tolerance: float, budget: int, seed: int = 0) -> tuple[float, int]:
    optimizer = XNES(torch.full((dimension,), 1.0), torch.eye(dimension), seed=seed)
    best, used = math.inf, 0
    while used < budget and best > tolerance:
        candidates = optimizer.ask()
        values = objective(candidates)
        optimizer.tell(values)
        used += len(values)
        best = min(best, float(values.min()))
    return best, used


def test_utilities_sum_to_zero_and_favour_the_best():
    utilities = rank_utilities(12)
    assert utilities.sum().abs() < 1e-12
    assert torch.all(utilities[:-1] >= utilities[1:])


def test_xnes_converges_on_sphere():
    best, used = _minimise(lambda x: (x**2).sum(dim=1), 5, 1e-6, 3000)
    assert best <= 1e-6, (best, used)


def test_xnes_converges_on_rotated_ellipsoid():
    dimension = 8
    generator = torch.Generator().manual_seed(1)
    rotation, _ = torch.linalg.qr(torch.randn(dimension, dimension, generator=generator, dtype=torch.float64))
    weights = torch.logspace(0, 3, dimension, dtype=torch.float64)  # condition number 1e3
    best, used = _minimise(lambda x: (((x - 0.3) @ rotation.T) ** 2 * weights).sum(dim=1), dimension, 1e-4, 8000)
    assert best <= 1e-4, (best, used)


def test_xnes_is_seeded_and_resumes_from_state_dict():
    def run(optimizer: XNES, generations: int) -> None:
        for _ in range(generations):
            candidates = optimizer.ask()
            optimizer.tell((candidates**2).sum(dim=1))

    covariance = torch.tensor([[1.0, 0.5, 0.0], [0.5, 1.0, 0.2], [0.0, 0.2, 1.0]])
    straight = XNES(torch.ones(3), covariance, seed=7)
    run(straight, 10)
    first = XNES(torch.ones(3), covariance, seed=7)
    run(first, 4)
    resumed = XNES(torch.zeros(3), torch.eye(3), seed=99)
    resumed.load_state_dict(first.state_dict())
    run(resumed, 6)
    assert torch.equal(straight.mean, resumed.mean) and torch.equal(straight.covariance, resumed.covariance)
    assert straight.population_size == default_population_size(3) == 7
    with pytest.raises(SnapViTError):
        XNES(torch.ones(2), torch.tensor([[1.0, 2.0], [2.0, 1.0]]))  # not positive definite
