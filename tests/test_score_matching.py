"""ebmlab.metrics.denoising_score_matching: the held-out loss the estimators stop early on."""

import math

import pytest
import torch
from torch import nn

from ebmlab.metrics import denoising_score_matching

D, S, SIGMA = 3, 0.5, 0.2  # data N(0, S^2 I_D), noise SIGMA


class Gaussian(nn.Module):
    """E(x) = |x|^2 / (2 v), v a parameter: exp(-E) is N(0, v I)."""

    def __init__(self, variance: float):
        super().__init__()
        self.log_variance = nn.Parameter(torch.tensor(math.log(variance)))

    def forward(self, x):
        return x.pow(2).sum(1) / (2 * self.log_variance.exp())


def loss_of(variance: float, n: int = 200_000) -> float:
    x = S * torch.randn(n, D, generator=torch.Generator().manual_seed(1))
    generator = torch.Generator().manual_seed(2)
    return float(denoising_score_matching(Gaussian(variance), x, SIGMA, generator))


def test_the_loss_of_a_gaussian_energy_is_its_closed_form():
    # residual eps - SIGMA (x + SIGMA eps) / v per column, x = S z, r = SIGMA^2 / v:
    # L = 1/2 D ((1 - r)^2 + SIGMA^2 S^2 / v^2)
    for v in (S**2, 0.5):
        r = SIGMA**2 / v
        expected = 0.5 * D * ((1 - r) ** 2 + SIGMA**2 * S**2 / v**2)
        assert loss_of(v) == pytest.approx(expected, rel=0.01)


def test_the_loss_is_least_at_the_data_smoothed_by_the_noise():
    smoothed = S**2 + SIGMA**2
    best = loss_of(smoothed)
    for v in (0.5 * smoothed, 0.8 * smoothed, 1.25 * smoothed, 2 * smoothed, S**2):
        assert loss_of(v) > best + 1e-4


def test_the_same_generator_seed_gives_the_same_noise_and_no_parameter_gets_a_gradient():
    energy = Gaussian(0.3)
    x = torch.randn(64, D)
    first = denoising_score_matching(energy, x, SIGMA, torch.Generator().manual_seed(0))
    again = denoising_score_matching(energy, x, SIGMA, torch.Generator().manual_seed(0))
    other = denoising_score_matching(energy, x, SIGMA, torch.Generator().manual_seed(1))
    assert first == again != other
    assert not first.requires_grad and energy.log_variance.grad is None
