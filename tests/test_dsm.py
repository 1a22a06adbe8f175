"""DSM's estimator, checked on a model with a closed form: the DSM class must find the energy of
the data smoothed by N(0, sigma^2 I), and sample exp(-E) at temperature 1."""

import math

import pytest
import torch
from torch import nn

from ebmlab.errors import EbmlabError
from ebmlab.methods.dsm import Config
from tests.helpers import tiny_method

SIGMA, DATA_STD = 0.3, 0.8


class Quadratic(nn.Module):
    """E(x) = a |x|^2 / 2: the energy of N(0, I / a)."""

    def __init__(self, a: float):
        super().__init__()
        self.a = nn.Parameter(torch.tensor(a))

    def forward(self, x):
        return 0.5 * self.a * x.flatten(1).pow(2).sum(1)


def dsm_with_quadratic(a: float):
    method = tiny_method("dsm", sigma=SIGMA)
    method.energy_net = Quadratic(a)
    method.optimizers["energy"] = torch.optim.SGD(method.energy_net.parameters(), lr=0.0)
    return method


def test_the_dsm_loss_is_smallest_at_the_smoothed_datas_energy():
    """For data N(0, s^2 I) the smoothed density is N(0, (s^2 + sigma^2) I): among quadratic
    energies the DSM loss is smallest at a = 1 / (s^2 + sigma^2), and its value there is
    D / 2 x s^2 / (s^2 + sigma^2) (D = 2), both in closed form."""
    x = DATA_STD * torch.randn(40_000, 2, generator=torch.Generator().manual_seed(0))
    best = 1 / (DATA_STD**2 + SIGMA**2)
    grid = torch.linspace(0.6, 1.4, 33) * best

    def loss_at(a):
        torch.manual_seed(1)  # the same eps for every a: common random numbers
        return float(dsm_with_quadratic(float(a)).train_step(x, 0)["loss"])

    losses = torch.tensor([loss_at(a) for a in grid])
    assert float(grid[losses.argmin()]) == pytest.approx(best, rel=0.04)
    assert float(losses.min()) == pytest.approx(DATA_STD**2 / (DATA_STD**2 + SIGMA**2), rel=0.03)


@pytest.mark.parametrize("bridge", [{}, {"bridge_sigma": 1.0, "bridge_share": 0.3}])
def test_the_held_out_loss_is_the_training_loss_with_the_generators_noise(bridge):
    """On the same draws (a generator and the global RNG seeded alike) the held-out loss equals
    the loss `train_step` minimises, bridge included; it repeats per seed and leaves every
    parameter without a gradient, trainable."""
    x = DATA_STD * torch.randn(4096, 2, generator=torch.Generator().manual_seed(0))
    method = tiny_method("dsm", sigma=SIGMA, **bridge)
    method.optimizers["energy"] = torch.optim.SGD(method.energy_net.parameters(), lr=0.0)

    def held_out(seed):
        loss = method.validation_loss(x, torch.Generator().manual_seed(seed))
        assert not loss.requires_grad  # no graph kept through the parameters
        return float(loss)

    assert all(p.grad is None for p in method.parameters())
    value = held_out(1)
    assert all(p.grad is None and p.requires_grad for p in method.parameters())
    assert held_out(1) == value != held_out(2)
    torch.manual_seed(1)
    assert float(method.train_step(x, 0)["loss"]) == pytest.approx(value, rel=1e-6)


def test_training_moves_the_energy_toward_the_smoothed_data():
    method = dsm_with_quadratic(0.2)
    method.optimizers["energy"] = torch.optim.SGD(method.energy_net.parameters(), lr=0.2)
    generator = torch.Generator().manual_seed(0)
    for step in range(300):
        method.train_step(DATA_STD * torch.randn(512, 2, generator=generator), step)
    assert float(method.energy_net.a.detach()) == pytest.approx(
        1 / (DATA_STD**2 + SIGMA**2), rel=0.05
    )


def test_samples_follow_exp_minus_e_at_temperature_one():
    """`sample`: unadjusted Langevin with noise sqrt(2 step) on E: N(0, 1/a) for a quadratic."""
    method = tiny_method("dsm", sample_steps=1500, sample_step_size=0.01)
    method.energy_net = Quadratic(4.0)
    torch.manual_seed(0)
    samples = method.sample(4000)
    assert float(samples.mean()) == pytest.approx(0.0, abs=0.03)
    assert float(samples.var()) == pytest.approx(1 / 4.0, rel=0.06)


class ShiftedQuadratic(Quadratic):
    """E(x) = a |x - m|^2 / 2: the energy of N(m, I / a)."""

    def __init__(self, a: float, m: float):
        super().__init__(a)
        self.m = m

    def forward(self, x):
        return super().forward(x - self.m)


def test_the_denoising_jump_is_tweedies_posterior_mean():
    """With `sample_denoise` the chains of p_sigma = N(m, (s^2 + sigma^2) I) end with
    y - sigma^2 grad E(y) = E[x | y], distributed N(m, s^4 / (s^2 + sigma^2) I) in closed form
    (a sign slip or sigma for sigma^2 moves the variance, a lost m the mean)."""
    smoothed = DATA_STD**2 + SIGMA**2
    method = tiny_method(
        "dsm", sigma=SIGMA, sample_steps=1500, sample_step_size=0.05, sample_denoise=True
    )
    method.energy_net = ShiftedQuadratic(1 / smoothed, 0.5)
    torch.manual_seed(0)
    samples = method.sample(4000)
    assert float(samples.mean()) == pytest.approx(0.5, abs=0.03)
    assert float(samples.var()) == pytest.approx(DATA_STD**4 / smoothed, rel=0.06)


def test_sampling_chains_start_from_the_uniform_box():
    """`sample`'s chains start from U[init_low, init_high]^D (seen through zero steps)."""
    x0 = tiny_method("dsm", sample_steps=0).sample(20_000)
    assert -1.0 <= float(x0.min()) < -0.99 and 0.99 < float(x0.max()) <= 1.0
    assert float(x0.mean()) == pytest.approx(0.0, abs=0.02)
    shifted = tiny_method("dsm", sample_steps=0, init_low=2.0, init_high=3.0).sample(20_000)
    assert 2.0 <= float(shifted.min()) < 2.01 and 2.99 < float(shifted.max()) <= 3.0


def test_defaults():
    cfg = Config()
    assert (cfg.lr, cfg.betas, cfg.sigma) == (1e-3, (0.9, 0.999), 0.1)
    assert (cfg.sample_steps, cfg.sample_step_size, cfg.init_low, cfg.init_high) == (
        500,
        1e-3,
        -1.0,
        1.0,
    )


def test_sample_steps_from_zero_up():
    Config(sample_steps=0)
    with pytest.raises(EbmlabError):
        Config(sample_steps=-1)


BRIDGE, SHARE = 1.2, 0.2


class SmoothedMixture(nn.Module):
    """E(x) = -log((1 - w) N(x; 0, v1 I) + w N(x; 0, v2 I)), with the weight w as parameter."""

    def __init__(self, w: float, v1: float, v2: float):
        super().__init__()
        self.w, self.variances = nn.Parameter(torch.tensor(w)), (v1, v2)

    def forward(self, x):
        sq, dim = x.flatten(1).pow(2).sum(1), x[0].numel()
        logs = [-sq / (2 * v) - dim / 2 * math.log(2 * math.pi * v) for v in self.variances]
        weights = torch.stack([1 - self.w, self.w]).log()
        return -torch.logsumexp(torch.stack(logs, 1) + weights, 1)


def test_the_bridged_loss_is_smallest_at_the_mixture_of_the_two_smoothed_densities():
    """With the bridge, the loss is the unweighted Fisher loss over the two levels: among
    mixtures (1 - w) p_sigma + w p_sigma' of the smoothed data's densities it is smallest at
    w = b, the bridge's share (weighting each level by its own sigma^2 would move it to
    b sigma'^2 / ((1 - b) sigma^2 + b sigma'^2) = 0.8 here)."""
    x = DATA_STD * torch.randn(40_000, 2, generator=torch.Generator().manual_seed(0))
    variances = (DATA_STD**2 + SIGMA**2, DATA_STD**2 + BRIDGE**2)

    def loss_at(w):
        method = tiny_method("dsm", sigma=SIGMA, bridge_sigma=BRIDGE, bridge_share=SHARE)
        method.energy_net = SmoothedMixture(float(w), *variances)
        method.optimizers["energy"] = torch.optim.SGD(method.energy_net.parameters(), lr=0.0)
        torch.manual_seed(1)  # the same eps and levels for every w
        return float(method.train_step(x, 0)["loss"])

    grid = torch.linspace(0.04, 0.9, 44)
    losses = torch.tensor([loss_at(w) for w in grid])
    assert float(grid[losses.argmin()]) == pytest.approx(SHARE, abs=0.06)


def test_the_bridge_noises_its_share_of_examples_at_its_level():
    method = tiny_method("dsm", sigma=SIGMA, bridge_sigma=BRIDGE, bridge_share=SHARE)
    torch.manual_seed(0)
    levels = method.noise_levels(torch.zeros(20_000, 2))
    assert levels.shape == (20_000, 1)
    assert levels.unique().tolist() == pytest.approx([SIGMA, BRIDGE])
    assert float((levels == BRIDGE).float().mean()) == pytest.approx(SHARE, abs=0.01)
    assert torch.all(tiny_method("dsm", sigma=SIGMA).noise_levels(torch.zeros(5, 2)) == SIGMA)
    for bad in (0.0, 1.0, float("nan")):
        with pytest.raises(EbmlabError, match="bridge_share"):
            Config(bridge_sigma=BRIDGE, bridge_share=bad)
    with pytest.raises(EbmlabError, match="bridge_sigma"):
        Config(bridge_sigma=0.0)


SIGMA_MAX, LEVELS = 1.2, 3  # levels 1.2, 0.6, 0.3 (geometric down to SIGMA)


def annealed_dsm(**overrides):
    return tiny_method("dsm", sigma=SIGMA, sigma_max=SIGMA_MAX, levels=LEVELS, **overrides)


def test_annealed_levels_are_geometric_and_drawn_uniformly():
    method = annealed_dsm()
    assert method.annealed_levels() == pytest.approx([1.2, 0.6, 0.3])
    assert dsm_with_quadratic(1.0).annealed_levels() == [SIGMA]
    torch.manual_seed(0)
    drawn = method.noise_levels(torch.zeros(30_000, 2))
    assert drawn.shape == (30_000, 1)
    for level in (1.2, 0.6, 0.3):
        assert float((drawn - level).abs().lt(1e-6).float().mean()) == pytest.approx(
            1 / 3, abs=0.01
        )


def test_the_annealed_loss_is_smallest_at_the_sigma_squared_weighted_quadratic():
    """Annealed, the energy at level sigma_i is (sigma / sigma_i) E and level i's loss is
    weighted by sigma_i^2. For data N(0, s^2 I) and E = a |x|^2 / 2 the expected loss per
    dimension is sum_i sigma^2 a^2 s^2 + (1 - sigma a sigma_i)^2, smallest at
    a = sum sigma_i / (sigma (L s^2 + sum sigma_i^2)) = 1.84; the unweighted loss of the bridge
    would put it at L / (L s^2 + sum sigma_i^2) = 0.79."""
    x = DATA_STD * torch.randn(40_000, 2, generator=torch.Generator().manual_seed(0))
    levels = torch.tensor([1.2, 0.6, 0.3])
    best = float(levels.sum() / (SIGMA * (LEVELS * DATA_STD**2 + levels.pow(2).sum())))

    def loss_at(a):
        method = annealed_dsm()
        method.energy_net = Quadratic(float(a))
        method.optimizers["energy"] = torch.optim.SGD(method.energy_net.parameters(), lr=0.0)
        torch.manual_seed(1)  # the same eps and levels for every a
        return float(method.train_step(x, 0)["loss"])

    grid = torch.linspace(0.6, 1.4, 33) * best
    losses = torch.tensor([loss_at(a) for a in grid])
    assert float(grid[losses.argmin()]) == pytest.approx(best, rel=0.04)


def test_annealed_langevin_tempers_e_by_each_level_and_ends_at_temperature_one():
    """Level i's chain is Langevin on E at temperature sigma_i / sigma (alpha_i = step
    (sigma_i / sigma)^2 on the level's energy E sigma / sigma_i): for E = a |x|^2 / 2 the widest
    level alone gives N(0, 4 / a), the whole annealed sampler N(0, 1 / a), each up to the
    unadjusted chain's own bias: variance T / (a (1 - h a / 2)) at the step h on E."""
    method = annealed_dsm(sample_steps=1500, sample_step_size=0.01)
    method.energy_net = Quadratic(4.0)
    chains = method.chains_per_level(None)
    assert [c.temperature for c in chains] == pytest.approx([4.0, 2.0, 1.0])
    assert [c.step_size for c in chains] == pytest.approx([0.04, 0.02, 0.01])
    torch.manual_seed(0)
    widest = chains[0](method.energy_net, torch.zeros(4000, 2))[0]
    assert float(widest.var()) == pytest.approx(4.0 / (4.0 * (1 - 0.04 * 4.0 / 2)), rel=0.04)
    samples = method.sample(4000)
    assert float(samples.mean()) == pytest.approx(0.0, abs=0.03)
    assert float(samples.var()) == pytest.approx(1 / (4.0 * (1 - 0.01 * 4.0 / 2)), rel=0.04)


def test_annealing_needs_a_wider_top_level_two_levels_and_no_bridge():
    for bad, match in (
        ({"sigma_max": 0.05}, "sigma_max"),
        ({"sigma_max": 1.0, "levels": 1}, "levels"),
        ({"sigma_max": 1.0, "bridge_sigma": 1.0}, "bridge_sigma"),
    ):
        with pytest.raises(EbmlabError, match=match):
            Config(sigma=0.1, **bad)


def test_the_denoising_jump_stays_in_the_images_box():
    """On images the jump's output is clamped to [-1, 1] like every Langevin step: a steep
    quadratic centred outside the box pulls the chains to its edge, and the jump
    y - sigma^2 grad E(y) would carry them past it."""
    method = tiny_method(
        "dsm",
        shape=(1, 4, 4),
        sigma=SIGMA,
        sample_steps=50,
        sample_step_size=0.01,
        sample_denoise=True,
    )
    method.energy_net = ShiftedQuadratic(50.0, 3.0)
    torch.manual_seed(0)
    samples = method.sample(64)
    assert samples.shape == (64, 1, 4, 4)
    assert float(samples.max()) == 1.0 and float(samples.min()) >= -1.0


def test_annealed_chains_on_images_run_unclamped_and_only_their_ends_are_clamped():
    """Level i's target p_sigma_i reaches sigma_i past the images' box [-1, 1], so the annealed
    chains are not clamped (Song & Ermon 2019, Algorithm 1): for E = |x|^2 / 2 the widest
    level's chain (temperature 4, variance 4) leaves the box; the samples it ends in are in it."""
    method = tiny_method(
        "dsm",
        shape=(1, 4, 4),
        sigma=SIGMA,
        sigma_max=SIGMA_MAX,
        levels=LEVELS,
        sample_steps=300,
        sample_step_size=0.01,
    )
    method.energy_net = Quadratic(1.0)
    chains = method.chains_per_level((-1.0, 1.0))
    torch.manual_seed(0)
    widest = chains[0](method.energy_net, torch.zeros(500, 1, 4, 4))[0]
    assert float(widest.var()) == pytest.approx(4.0, rel=0.1)
    samples = method.sample(500)
    assert float(samples.min()) == -1.0 and float(samples.max()) == 1.0
