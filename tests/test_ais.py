"""AIS against energies whose log Z is known exactly: Gaussians and a two-mode mixture."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import Tensor, nn

from ebmlab.data import load_dataset
from ebmlab.errors import EbmlabError
from ebmlab.metrics import evaluate
from ebmlab.metrics.ais import ais_log_likelihood, ais_log_z, sigmoid_schedule

#: |estimate - exact| must stay below this many standard errors, and below ABS_TOL nats
Z_SCORE = 3.0
ABS_TOL = 0.1


class GaussianEnergy(nn.Module):
    """E(x) = (x - mean)' cov^-1 (x - mean) / 2 + offset, float32 parameters, so
    log Z = D/2 log(2 pi) + log det(cov) / 2 - offset."""

    def __init__(self, mean: Tensor, cov: Tensor, offset: float = 0.0):
        super().__init__()
        self.mean = nn.Parameter(mean.float())
        self.precision = nn.Parameter(torch.linalg.inv(cov).float())
        self.offset = offset
        dim = len(mean)
        self.log_z = 0.5 * dim * math.log(2 * math.pi) + 0.5 * float(torch.logdet(cov)) - offset

    def forward(self, x: Tensor) -> Tensor:
        y = x - self.mean
        return 0.5 * ((y @ self.precision) * y).sum(1) + self.offset


def rotated_covariance(variances: list[float], seed: int = 0) -> Tensor:
    generator = torch.Generator().manual_seed(seed)
    rotation, _ = torch.linalg.qr(torch.randn(len(variances), len(variances), generator=generator))
    return rotation @ torch.diag(torch.tensor(variances)) @ rotation.T


GAUSSIANS = {
    "D=3, cov 0.5 I, offset energy": (torch.zeros(3), 0.5 * torch.eye(3), 1.3),
    "D=10, cov 2 I": (torch.zeros(10), 2.0 * torch.eye(10), 0.0),
    "D=5, rotated, variances 0.05..4": (
        torch.zeros(5),
        rotated_covariance([0.05, 0.3, 1.0, 2.0, 4.0]),
        0.0,
    ),
    "D=4, mean (2, -1, 0.5, 3), cov 0.3 I": (
        torch.tensor([2.0, -1.0, 0.5, 3.0]),
        0.3 * torch.eye(4),
        -2.0,
    ),
}


def assert_recovers(estimate, exact: float) -> None:
    error = estimate.log_z - exact
    assert abs(error) < Z_SCORE * estimate.log_z_se, (error, estimate.log_z_se)
    assert abs(error) < ABS_TOL, error


@pytest.mark.parametrize("name", GAUSSIANS)
def test_gaussian_log_z_is_recovered(name):
    energy = GaussianEnergy(*GAUSSIANS[name])
    estimate = ais_log_z(energy, (len(energy.mean),), chains=256, temperatures=500)
    assert_recovers(estimate, energy.log_z)
    assert estimate.log_z_se < 0.05  # a test that passes by a huge SE would prove nothing


@pytest.mark.parametrize("transition", ["hmc", "mala"])
@pytest.mark.parametrize("base_scale", [0.6, 2.0])
def test_any_base_scale_and_transition_gives_the_same_log_z(transition, base_scale):
    """The base's normaliser D/2 log(2 pi s^2) and its energy |x|^2 / 2s^2 must match for
    every s: a wrong one shifts log Z by a multiple of D log s."""
    energy = GaussianEnergy(*GAUSSIANS["D=3, cov 0.5 I, offset energy"])
    estimate = ais_log_z(
        energy, (3,), chains=256, temperatures=300, base_scale=base_scale, transition=transition
    )
    assert_recovers(estimate, energy.log_z)


def test_standard_error_shrinks_as_one_over_root_chains():
    energy = GaussianEnergy(*GAUSSIANS["D=10, cov 2 I"])
    few = ais_log_z(energy, (10,), chains=64, temperatures=200, seed=1)
    many = ais_log_z(energy, (10,), chains=1024, temperatures=200, seed=1)
    assert 2.5 < few.log_z_se / many.log_z_se < 6.5  # sqrt(1024 / 64) = 4
    assert abs(many.log_z - energy.log_z) < abs(few.log_z - energy.log_z) + 2 * many.log_z_se


def test_two_mode_mixture_log_z_is_recovered():
    """0.3 N(-3 e_1, 0.4^2 I) + 0.7 N(3 e_1, 0.4^2 I) in 3 dimensions, energy offset by 2: the
    chains split between the modes early in the annealing, and the weights set their shares."""
    centres = torch.zeros(2, 3)
    centres[:, 0] = torch.tensor([-3.0, 3.0])
    log_shares = torch.log(torch.tensor([0.3, 0.7]))
    std = 0.4

    def energy(x: Tensor) -> Tensor:
        sq = (x[:, None, :] - centres).pow(2).sum(-1) / (2 * std**2)
        log_normal = -sq - 1.5 * math.log(2 * math.pi * std**2)
        return 2.0 - torch.logsumexp(log_shares + log_normal, 1)

    estimate = ais_log_z(energy, (3,), chains=512, temperatures=500)
    assert_recovers(estimate, -2.0)


def test_held_out_log_likelihood_is_minus_the_entropy_with_both_errors():
    energy = GaussianEnergy(*GAUSSIANS["D=5, rotated, variances 0.05..4"])
    cov = torch.linalg.inv(energy.precision.detach().double())
    generator = torch.Generator().manual_seed(3)
    test = torch.randn(4000, 5, generator=generator, dtype=torch.float64)
    test = (test @ torch.linalg.cholesky(cov).T).float()
    result = ais_log_likelihood(energy, test, chains=256, temperatures=500)
    entropy = 0.5 * 5 * (1 + math.log(2 * math.pi)) + 0.5 * float(torch.logdet(cov))
    assert abs(result["loglik"] + entropy) < Z_SCORE * result["loglik_se"]
    with torch.no_grad():
        test_energy = energy(test).double()
    test_mean_se = float(test_energy.std()) / math.sqrt(len(test))
    assert result["loglik_se"] == pytest.approx(math.hypot(test_mean_se, result["log_z_se"]))
    assert result["loglik"] == pytest.approx(float(-test_energy.mean()) - result["log_z"])


def test_parameters_get_no_gradients_and_keep_their_flags():
    energy = GaussianEnergy(*GAUSSIANS["D=3, cov 0.5 I, offset energy"])
    energy.precision.requires_grad_(False)
    estimate = ais_log_z(energy.forward, (3,), chains=8, temperatures=20)
    assert [p.grad for p in energy.parameters()] == [None, None]
    assert [p.requires_grad for p in energy.parameters()] == [True, False]
    assert estimate.log_weights.dtype == torch.float64 and estimate.log_weights.shape == (8,)


def test_a_seed_repeats_and_the_callers_random_state_is_untouched():
    energy = GaussianEnergy(*GAUSSIANS["D=3, cov 0.5 I, offset energy"])
    state = torch.get_rng_state()
    first = ais_log_z(energy, (3,), chains=16, temperatures=30, seed=5)
    assert torch.equal(torch.get_rng_state(), state)
    again = ais_log_z(energy, (3,), chains=16, temperatures=30, seed=5)
    assert torch.equal(first.log_weights, again.log_weights)


def test_schedule_runs_from_zero_to_one_upward():
    betas = sigmoid_schedule(50)
    assert betas[0] == 0 and betas[-1] == 1 and len(betas) == 51
    assert bool((betas.diff() > 0).all())


@pytest.mark.parametrize(
    "options",
    [{"chains": 1}, {"temperatures": 0}, {"base_scale": 0.0}, {"transition": "ula"}],
)
def test_options_that_cannot_work_are_refused(options):
    with pytest.raises(EbmlabError):
        ais_log_z(GaussianEnergy(torch.zeros(2), torch.eye(2)), (2,), **options)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_gaussian_log_z_on_cuda():
    energy = GaussianEnergy(*GAUSSIANS["D=5, rotated, variances 0.05..4"]).to("cuda")
    estimate = ais_log_z(energy, (5,), chains=512, temperatures=500)
    assert_recovers(estimate, energy.log_z)
    test = torch.randn(100, 5, device="cuda")
    assert math.isfinite(ais_log_likelihood(energy, test, chains=64, temperatures=50)["loglik"])


class StandardGaussianModel(GaussianEnergy):
    """N(0, I) as a model for `evaluate`: energy and exact samples, in model units."""

    def __init__(self, dim: int):
        super().__init__(torch.zeros(dim), torch.eye(dim))

    def energy(self, x: Tensor) -> Tensor:
        return self(x)

    def sample(self, n: int) -> Tensor:
        return torch.randn(n, len(self.mean))


def test_evaluate_reports_the_ais_log_likelihood_of_tables_wider_than_two_columns():
    generator = np.random.default_rng(0)
    wide = load_dataset(generator.normal(size=(5000, 4)).astype("float32"))
    metrics = evaluate(StandardGaussianModel(4), wide, n_samples=200)
    minus_entropy = -0.5 * 4 * (1 + math.log(2 * math.pi))  # of N(0, I): the data, standardised
    assert metrics["loglik_test_ais_se"] < 0.1
    assert abs(metrics["loglik_test_ais"] - minus_entropy) < Z_SCORE * metrics["loglik_test_ais_se"]
    narrow = load_dataset(generator.normal(size=(5000, 2)).astype("float32"))
    assert "loglik_test_ais" not in evaluate(StandardGaussianModel(2), narrow, n_samples=200)
    not_a_density = StandardGaussianModel(4)
    not_a_density.energy_is_density = False
    assert "loglik_test_ais" not in evaluate(not_a_density, wide, n_samples=200)
