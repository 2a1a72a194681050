"""xNES, exponential natural evolution strategies (Glasmachers et al. 2010; Wierstra et al. 2014), in torch.

An ask/tell minimiser with a full covariance ``A A^T``, stored as a scalar step size ``sigma`` and a
shape matrix ``B`` with ``det B = 1`` (``A = sigma B``). The search (``search.py``) starts it from
the CKA similarity matrix of the backbone's components, so a full *initial* covariance is required.
It is written here rather than taken from a package: evox would pull in a whole JAX/torch framework
stack, and pypop7 and cmaes have no xNES that accepts a full initial covariance.

Bounds are not this module's concern: the caller clips candidates for evaluation and reports the
fitness of the clipped point; the distribution itself stays unconstrained.
"""

from __future__ import annotations

import math
from typing import Any

import torch

from snapvit_core.errors import SnapViTError


def default_population_size(dimension: int) -> int:
    """4 + floor(3 ln d), the standard NES / CMA-ES population size."""
    return 4 + int(math.floor(3.0 * math.log(dimension)))


def rank_utilities(population_size: int) -> torch.Tensor:
    """Fitness-shaping utilities by rank (index 0 = best): max(0, ln(l/2 + 1) - ln(rank)), normalised, minus 1/l.

    They sum to zero, so a generation of equal fitness values moves nothing.
    """
    ranks = torch.arange(1, population_size + 1, dtype=torch.float64)
    raw = (math.log(population_size / 2.0 + 1.0) - ranks.log()).clamp(min=0.0)
    return raw / raw.sum() - 1.0 / population_size


class XNES:
    """Exponential natural evolution strategies with a full covariance (minimisation).

    Args:
        mean: (d,) initial mean.
        covariance: (d, d) symmetric positive definite initial covariance.
        population_size: candidates per generation; default 4 + floor(3 ln d).
        seed: seed of the private generator that draws the candidates.
    """

    def __init__(
        self,
        mean: torch.Tensor,
        covariance: torch.Tensor,
        population_size: int | None = None,
        seed: int = 0,
    ) -> None:
        mean = torch.as_tensor(mean, dtype=torch.float64).flatten()
        covariance = torch.as_tensor(covariance, dtype=torch.float64)
        dimension = mean.numel()
        if dimension < 1 or covariance.shape != (dimension, dimension):
            raise SnapViTError(
                f"xNES needs a (d,) mean and a (d, d) covariance, "
                f"got {tuple(mean.shape)} and {tuple(covariance.shape)}."
            )
        factor, info = torch.linalg.cholesky_ex(0.5 * (covariance + covariance.T))  # lower, A A^T = covariance
        if int(info) != 0:
            raise SnapViTError("The xNES initial covariance is not positive definite.", "Repair it first (cka.py).")
        self.dimension = dimension
        self.population_size = population_size or default_population_size(dimension)
        if self.population_size < 2:
            raise SnapViTError(f"xNES needs a population of at least 2, got {self.population_size}.")
        # Learning rates of Glasmachers et al. 2010, Table 1.
        self.eta_mean = 1.0
        self.eta_sigma = (9.0 + 3.0 * math.log(dimension)) / (5.0 * dimension * math.sqrt(dimension))
        self.eta_shape = self.eta_sigma
        self.mean = mean
        log_det = factor.diagonal().log().sum()  # log det A of the Cholesky factor
        self.sigma = float(torch.exp(log_det / dimension))
        self.shape = factor / self.sigma  # det = 1
        self.utilities = rank_utilities(self.population_size)
        self.generator = torch.Generator().manual_seed(seed)
        self.generation = 0
        self._pending: torch.Tensor | None = None  # (lambda, d) standard-normal draws of the last ask

    def ask(self) -> torch.Tensor:
        """Draw one generation: (population_size, d) candidates (float64)."""
        self._pending = torch.randn(self.population_size, self.dimension, generator=self.generator, dtype=torch.float64)
        return self.mean + self.sigma * self._pending @ self.shape.T  # x_k = mu + sigma B z_k

    def tell(self, fitness: torch.Tensor | list[float]) -> None:
        """Update the distribution from the fitness (lower is better) of the last ``ask``'s candidates."""
        if self._pending is None:
            raise SnapViTError("xNES.tell was called without a preceding ask.")
        fitness = torch.as_tensor(fitness, dtype=torch.float64).flatten()
        if fitness.numel() != self.population_size:
            raise SnapViTError(f"xNES.tell expects {self.population_size} fitness values, got {fitness.numel()}.")
        z = self._pending
        order = torch.argsort(fitness, stable=True)  # best first
        utilities = torch.empty_like(self.utilities)
        utilities[order] = self.utilities
        grad_mean = utilities @ z  # (d,)
        eye = torch.eye(self.dimension, dtype=torch.float64)
        grad_m = (z.T * utilities) @ z - utilities.sum() * eye  # sum_k u_k (z_k z_k^T - I)
        grad_sigma = grad_m.trace() / self.dimension
        grad_shape = grad_m - grad_sigma * eye
        self.mean = self.mean + self.eta_mean * self.sigma * (self.shape @ grad_mean)
        self.sigma = self.sigma * math.exp(0.5 * self.eta_sigma * float(grad_sigma))
        self.shape = self.shape @ torch.linalg.matrix_exp(0.5 * self.eta_shape * grad_shape)
        self.generation += 1
        self._pending = None

    @property
    def covariance(self) -> torch.Tensor:
        """The current (d, d) covariance sigma^2 B B^T."""
        return self.sigma**2 * self.shape @ self.shape.T

    def state_dict(self) -> dict[str, Any]:
        """Everything needed to continue exactly where this optimiser is (plain tensors and numbers)."""
        return {
            "mean": self.mean.clone(),
            "sigma": self.sigma,
            "shape": self.shape.clone(),
            "population_size": self.population_size,
            "generation": self.generation,
            "generator": self.generator.get_state(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore a ``state_dict`` (drops any candidates asked but not told)."""
        if int(state["population_size"]) != self.population_size or state["mean"].numel() != self.dimension:
            raise SnapViTError(
                "The xNES checkpoint was made with another dimension or population size.",
                "Resume with the settings of the interrupted run, or start without --resume.",
            )
        self.mean = state["mean"].to(torch.float64).clone()
        self.sigma = float(state["sigma"])
        self.shape = state["shape"].to(torch.float64).clone()
        self.generation = int(state["generation"])
        self.generator.set_state(state["generator"])
        self._pending = None
