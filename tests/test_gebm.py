"""GEBM: the KALE bound, the learned log-partition, the envelope gradient, the latent samplers."""

import copy
import math
from types import SimpleNamespace

import pytest
import torch
from torch import nn

from ebmlab.errors import EbmlabError
from tests.helpers import (
    applied_gradients,
    assert_gradients_equal,
    gradients,
    preset_method,
    tiny_method,
)


class QuadraticEnergy(nn.Module):
    """E(x) = |x - m|^2 / (2 s^2), fixed (no parameters)."""

    def __init__(self, mean, std):
        super().__init__()
        self.register_buffer("mean", torch.tensor(mean))
        self.std = std

    def forward(self, x):
        return (x - self.mean).pow(2).sum(1) / (2 * self.std**2)


class LinearEnergy(nn.Module):
    """E(x) = a . x, fixed."""

    def __init__(self, a):
        super().__init__()
        self.register_buffer("a", torch.tensor(a))

    def forward(self, x):
        return x @ self.a


def linear_generator(weight, bias):
    g = nn.Linear(len(weight[0]), len(weight))
    with torch.no_grad():
        g.weight.copy_(torch.tensor(weight))
        g.bias.copy_(torch.tensor(bias))
    return g


def with_fixed_parts(method, energy=None, generator=None, lr=1.0):
    """Swap in known nets; plain SGD (no momentum) so a step moves parameters by -lr * grad."""
    if energy is not None:
        method.energy_net = energy
    if generator is not None:
        method.generator = generator
    energy_params = [*method.energy_net.parameters(), method.log_partition]
    method.optimizers["energy"] = torch.optim.SGD(energy_params, lr=lr)
    method.optimizers["generator"] = torch.optim.SGD(method.generator.parameters(), lr=lr)
    return method


def gebm(**extra):
    return tiny_method("gebm", **extra)


# ---------------------------------------------------------------- the bound


def test_kale_at_the_optimal_energy_is_the_kl_of_two_gaussians():
    """P = N(mu, I), B = N(0, I): E* = -log dP/dB = -(mu.x - |mu|^2/2), c* = log Z = 0 and
    F(E* + c*) = KL(P || B) = |mu|^2 / 2; any other c gives less."""
    method, mu = gebm(), torch.tensor([0.8, -0.6])
    torch.manual_seed(0)
    x_data, x_base = torch.randn(400_000, 2) + mu, torch.randn(400_000, 2)

    def e_star(x):
        return -(x @ mu - mu.pow(2).sum() / 2)

    kale = method.bound(e_star(x_data), e_star(x_base), torch.tensor(0.0))
    assert float(kale) == pytest.approx(float(mu.pow(2).sum() / 2), abs=0.01)  # = 0.5
    for c in (-0.5, 0.3):
        assert float(method.bound(e_star(x_data), e_star(x_base), torch.tensor(c))) < kale - 0.03


def test_energy_step_logs_the_bound_on_its_batch():
    method = gebm()
    x = torch.randn(64, 2)
    torch.manual_seed(4)
    z = torch.randn(64, 2)  # the energy step's first draw is its batch of z
    with torch.no_grad():
        expected = method.bound(method.energy(x), method.energy(method.decode(z)), 0.0)
    torch.manual_seed(4)
    logs = method.train_step(x, 0)  # the first call is an energy step
    assert float(logs["base_step"]) == 0
    assert float(logs["kale"]) == pytest.approx(float(expected), abs=1e-6)
    assert method.log_partition.item() != 0.0  # c was trained with the energy


@pytest.mark.parametrize("newton", [True, False])
def test_log_partition_converges_to_log_z_for_a_fixed_energy(newton):
    """E(x) = a.x on the base N(0, I) (identity generator): log Z = log E[exp(-a.x)] = |a|^2/2."""
    a = [0.6, -0.9]
    method = gebm(newton_log_partition=newton, warmup_energy_steps=10_000)
    with_fixed_parts(
        method, LinearEnergy(a), linear_generator([[1.0, 0.0], [0.0, 1.0]], [0.0, 0.0]), lr=0.05
    )
    torch.manual_seed(0)
    x = torch.randn(512, 2)
    for step in range(600 if newton else 1500):
        logs = method.train_step(x, step)
    log_z = sum(v**2 for v in a) / 2  # 0.585
    assert method.log_partition.item() == pytest.approx(log_z, abs=0.05)
    assert float(logs["log_z_naive"]) == pytest.approx(log_z, abs=0.3)  # one batch: noisy


def test_log_partition_initialisation_is_the_batch_estimate():
    """c <- log mean exp(-E(G(z))): for E = a.x on the base N(b, I), log Z = -a.b + |a|^2 / 2
    (here -1 + 0.625; with the sign of E flipped it would be +1.625). Done once, before the
    first step, from batches of the data batch's size."""
    a = [1.0, 0.5]
    method = gebm(init_log_partition_batches=200, warmup_energy_steps=2, energy_steps=1)
    with_fixed_parts(method, LinearEnergy(a), linear_generator([[1.0, 0], [0, 1.0]], [1, 0]), 0.0)
    sizes = []
    draw = method.prior
    method.prior = lambda n: sizes.append(n) or draw(n)
    torch.manual_seed(1)
    method.train_step(torch.randn(256, 2), 0)
    assert method.log_partition.item() == pytest.approx(-1 + sum(v**2 for v in a) / 2, abs=0.05)
    assert sizes[:200] == [256] * 200
    calls = []
    method._initialise_log_partition = lambda batch: calls.append(batch)
    for step in range(1, 8):  # warm-up energy steps, base steps, energy steps: never again
        method.train_step(torch.randn(256, 2), step)
    assert calls == []


# ---------------------------------------------------------------- the two steps' gradients


def run_to_base_step(method, x):
    """Energy steps until the next call is a base step."""
    step = 0
    while method.energy_steps_since_base < method._energy_steps_due():
        method.train_step(x, step)
        step += 1


@pytest.mark.parametrize("base_loss", ["kale", "snis"])
def test_base_step_follows_the_envelope_gradient(base_loss):
    """Linear G(z) = W z + b, fixed E: dKALE/dW = mean_i w_i grad E(x_i) z_i^T with
    w_i = exp(-(E(x_i) + c)) (paper), or w_i = softmax_i(-E(x_i)) * b (the code's SNIS form)."""
    method = gebm(base_loss=base_loss)
    energy = QuadraticEnergy([1.0, -0.5], 0.8)
    with_fixed_parts(method, energy, linear_generator([[0.9, 0.2], [-0.1, 1.1]], [0.1, 0.0]), 0.1)
    x = torch.randn(64, 2)
    run_to_base_step(method, x)
    w_before = method.generator.weight.detach().clone()
    b_before = method.generator.bias.detach().clone()
    c = method.log_partition.detach().clone()
    torch.manual_seed(7)
    z = torch.randn(64, 2)
    torch.manual_seed(7)
    logs = method.train_step(x, 0)
    assert float(logs["base_step"]) == 1
    x_gen = z @ w_before.T + b_before
    e = energy(x_gen)
    grad_e = (x_gen - energy.mean) / energy.std**2
    weights = torch.exp(-(e + c)) if base_loss == "kale" else torch.softmax(-e, 0) * len(e)
    expected = (weights[:, None, None] * grad_e[:, :, None] * z[:, None, :]).mean(0)
    moved = (w_before - method.generator.weight.detach()) / 0.1  # SGD: -lr * grad
    assert torch.allclose(moved, expected, atol=1e-5)


def test_each_step_gives_gradients_only_to_its_own_parameters():
    method = gebm(gradient_penalty=1.0)
    x = torch.randn(32, 2)
    method.train_step(x, 0)  # energy step
    assert all(p.grad is None for p in method.generator.parameters())
    assert float(method.log_partition.grad.abs()) > 0  # c is trained with the energy
    run_to_base_step(method, x)
    for p in [*method.energy_net.parameters(), method.log_partition]:
        p.grad = None
    method.train_step(x, 1)  # base step
    assert all(p.grad is None for p in method.energy_net.parameters())
    assert method.log_partition.grad is None
    assert all(p.grad is not None for p in method.generator.parameters())
    assert all(p.requires_grad for p in method.parameters())


def test_energy_step_keeps_batch_norm_statistics_of_the_generator():
    method = gebm(generator={"kind": "mlp", "hidden": 16, "depth": 2, "batch_norm": True})
    before = {k: v.clone() for k, v in method.generator.state_dict().items()}
    method.train_step(torch.randn(32, 2), 0)  # energy step: G in eval mode, no grad
    method.sample(8)
    for key, value in method.generator.state_dict().items():
        assert torch.equal(value, before[key]), key
    assert method.generator.training


def test_soft_gradient_clipping_and_newton_step_of_c():
    """With SGD(lr=1): energy params move by -2g/(1+g^2); c by -(1/m - 1), m = mean
    exp(-(E(G(z)) + c))."""
    plain = gebm()
    guarded = gebm(soft_grad_clip=True, newton_log_partition=True)
    guarded.load_state_dict(plain.state_dict())
    for method in (plain, guarded):
        with_fixed_parts(method, lr=1.0)
    x = torch.randn(32, 2)
    p0 = [p.detach().clone() for p in plain.energy_net.parameters()]
    torch.manual_seed(3)
    z = torch.randn(32, 2)
    with torch.no_grad():
        m = torch.exp(-(plain.energy(plain.decode(z)) + plain.log_partition)).mean()
    for method in (plain, guarded):
        torch.manual_seed(3)
        method.train_step(x, 0)
    for before, p_plain, p_guard in zip(
        p0, plain.energy_net.parameters(), guarded.energy_net.parameters(), strict=True
    ):
        g = before - p_plain.detach()
        assert torch.allclose(before - p_guard.detach(), 2 * g / (1 + g**2), atol=1e-6)
    assert plain.log_partition.item() == pytest.approx(-(1 - float(m)), abs=1e-5)
    assert guarded.log_partition.item() == pytest.approx(-(1 / float(m) - 1), abs=1e-4)


def test_energy_floor_bounds_the_energy_below():
    method = gebm(energy_floor=-2.0)
    with_fixed_parts(method, LinearEnergy([3.0, 0.0]))
    e = method.energy(torch.tensor([[-5.0, 0.0], [1.0, 0.0]]))
    assert e.tolist() == [-2.0, 3.0]


# ---------------------------------------------------------------- the schedule


def test_schedule_alternates_energy_and_base_steps_with_warm_ups():
    """3 energy steps before base steps 1, 2 and every 4th; 2 otherwise."""
    method = gebm(warmup_energy_steps=3, energy_steps=2, warmup_every=4)
    x = torch.randn(16, 2)
    kinds = "".join(
        "B" if float(method.train_step(x, step)["base_step"]) else "E" for step in range(28)
    )
    assert kinds == "EEEB" + "EEEB" + "EEB" + "EEEB" + "EEB" + "EEB" + "EEB" + "EEEB"


def test_schedule_counters_survive_a_state_dict_round_trip():
    method = gebm(warmup_energy_steps=3, energy_steps=2)
    x = torch.randn(16, 2)
    for step in range(5):
        method.train_step(x, step)
    clone = gebm(warmup_energy_steps=3, energy_steps=2)
    clone.load_state_dict(method.state_dict())
    assert (clone.base_steps, clone.energy_steps_since_base) == (1, 1)


# ---------------------------------------------------------------- latent sampling


@pytest.mark.parametrize(("sampler", "step"), [("ula", 0.01), ("mala", 0.05), ("hmc", 0.2)])
@pytest.mark.parametrize("temperature", [1.0, 4.0])
def test_latent_samplers_target_the_posterior_of_a_linear_generator(sampler, step, temperature):
    """G(z) = A z + b, E(x) = |x - m|^2 / (2 s^2): nu is Gaussian with precision
    P = I + T A^T A / s^2 and mean P^-1 T A^T (m - b) / s^2."""
    a, b, m, s = [[1.0, 0.5], [0.0, 0.8]], [0.2, -0.1], [1.0, 1.0], 0.7
    method = gebm(
        latent_sampler=sampler,
        latent_step_size=step,
        hmc_step_size=step,
        latent_steps=300,
        sample_temperature=temperature,
    )
    with_fixed_parts(method, QuadraticEnergy(m, s), linear_generator(a, b))
    A, b_, m_ = torch.tensor(a), torch.tensor(b), torch.tensor(m)
    precision = torch.eye(2) + temperature * A.T @ A / s**2
    cov = torch.linalg.inv(precision)
    mean = cov @ (temperature * A.T @ (m_ - b_) / s**2)
    torch.manual_seed(0)
    z, info = method.sample_latent(method.prior(4000))
    tol = 0.1 if sampler == "ula" else 0.05  # ULA's O(step) bias
    assert torch.allclose(z.mean(0), mean, atol=0.05)
    assert torch.allclose(torch.cov(z.T), cov, atol=tol * float(cov.diagonal().max()) + 0.01)
    if sampler != "ula":
        assert 0.3 < info["accept_rate"] <= 1.0


def test_sample_from_base_is_the_generator_of_prior_draws():
    method = gebm()
    torch.manual_seed(2)
    x = method.sample(16, from_base=True)
    torch.manual_seed(2)
    assert torch.equal(x, method.decode(torch.randn(16, 2)))


def test_recorded_latent_path_and_step_decay():
    """The recorded chain is the same chain, one step per piece; HMC decays its own step."""
    method = gebm(latent_steps=6, latent_step_size=0.1, step_decay=0.5, step_decay_every=4)
    assert method._segments("ula", one_step_each=False) == [(4, 0.1), (2, 0.05)]
    assert method._segments("hmc", one_step_each=False) == [(4, 0.1), (2, 0.05)]  # hmc_step 0.1
    assert method._segments("mala", one_step_each=True) == [(1, 0.1)] * 4 + [(1, 0.05)] * 2
    z0 = method.prior(5)
    torch.manual_seed(3)
    z, info = method.sample_latent(z0, record=True)
    assert info["path"].shape == (7, 5, 2)
    torch.manual_seed(3)
    torch.testing.assert_close(info["path"][-1], method.sample_latent(z0)[0])
    torch.testing.assert_close(info["path"][-1], z)
    assert gebm(hmc_step_size=0.3)._segments("hmc", False) == [(10, 0.3)]  # tiny: 10 steps


def test_each_latent_sampler_is_the_one_named_and_decoding_carries_no_graph():
    from ebmlab.samplers import HMC, MALA, Langevin

    method = gebm()
    kinds = {k: type(method._latent_sampler(k, 1, 0.1)) for k in ("ula", "mala", "hmc")}
    assert kinds == {"ula": Langevin, "mala": MALA, "hmc": HMC}
    z, info = method.sample_latent(method.prior(3))
    assert "path" not in info  # recorded only when asked
    assert not method.decode(z).requires_grad


def test_acceptance_is_the_mean_over_the_chains_pieces():
    """MALA at a tiny step accepts every move: 1.0 over two pieces of a decaying step."""
    method = gebm(latent_sampler="mala", latent_steps=4, latent_step_size=1e-6, step_decay_every=2)
    _, info = method.sample_latent(method.prior(50))
    assert info["accept_rate"] == pytest.approx(1.0)


def test_the_defaults_are_the_authors_schedule_and_samplers():
    """methods.md §5.3 and §5.5: 5 energy steps per base step, 100 before base steps 1, 2 and
    every 500th, Adam 1e-4 for both nets, no gradient penalty unless set, 100 latent steps, HMC
    with 10 leapfrog steps of 0.1, a constant step; and exp(-E) is no density on x."""
    cfg = gebm().cfg.__class__()
    assert (cfg.energy_steps, cfg.warmup_energy_steps, cfg.warmup_every) == (5, 100, 500)
    assert (cfg.lr_energy, cfg.lr_generator, cfg.gradient_penalty) == (1e-4, 1e-4, 0.0)
    assert (cfg.latent_steps, cfg.hmc_step_size, cfg.leapfrog_steps) == (100, 0.1, 10)
    assert (cfg.step_decay, cfg.step_decay_every) == (1.0, 0)
    assert (cfg.z_dim, cfg.latent_step_size) == (100, 1e-2)
    from ebmlab.methods.gebm import GEBM

    assert GEBM.energy_is_density is False


@pytest.mark.parametrize(
    "bad",
    [
        {"energy_steps": 0},
        {"warmup_energy_steps": 0},
        {"latent_steps": -1},
        {"leapfrog_steps": 0},
    ],
)
def test_counts_below_their_least_are_refused(bad):
    with pytest.raises(EbmlabError):
        gebm(**bad)
    ((key, value),) = bad.items()
    assert getattr(gebm(**{key: value + 1}).cfg, key) == value + 1  # the least allowed


def test_bad_options_are_refused():
    with pytest.raises(EbmlabError, match="latent_sampler"):
        gebm(latent_sampler="gibbs")
    with pytest.raises(EbmlabError, match="base_loss"):
        gebm(base_loss="wgan")
    with pytest.raises(EbmlabError, match="latent sampler"):
        gebm().sample(4, sampler="gibbs")


# ---------------------------------------------------------------- presets


@pytest.mark.parametrize(
    ("data", "preset", "shape"),
    [("8gaussians", "gebm_toy2d", (2,)), ("digits", "gebm_image", (1, 8, 8))],
)
def test_presets_build_and_take_a_step(data, preset, shape):
    from ebmlab.api import build_method_config, resolve_config
    from ebmlab.config import find_preset
    from ebmlab.methods.gebm import GEBM

    kind = "toy2d" if len(shape) == 1 else "image"
    assert find_preset("gebm", data, kind).stem == preset
    dataset = SimpleNamespace(name=data, kind=kind, train=torch.randn(256, *shape))
    config = resolve_config("gebm", dataset, data, None, {"method": {"latent_steps": 3}})
    method = GEBM(build_method_config(config), shape)
    assert method.cfg.gradient_penalty > 0 and method.cfg.energy_floor == -10.0
    x = torch.rand(16, *shape) * 2 - 1
    assert torch.isfinite(method.train_step(x, 0)["loss"])
    assert method.sample(4).shape == (4, *shape)


@pytest.mark.slow
def test_cifar10_preset_trains_a_step_on_fixture_images(tmp_path):
    import numpy as np

    from ebmlab.api import build_method_config, resolve_config
    from ebmlab.data import load_dataset
    from ebmlab.methods.gebm import GEBM
    from ebmlab.nets import ResNetEnergy

    path = tmp_path / "cifar10.npy"
    np.save(path, np.random.default_rng(0).integers(0, 256, (40, 32, 32, 3), dtype=np.uint8))
    data = load_dataset(path)
    overrides = {"method": {"latent_steps": 2, "init_log_partition_batches": 1}}
    config = resolve_config("gebm", data, str(path), None, overrides)
    method = GEBM(build_method_config(config), data.shape)
    assert isinstance(method.energy_net, ResNetEnergy)
    assert (method.cfg.sample_temperature, config.data.batch_size) == (100.0, 128)
    assert torch.isfinite(method.train_step(data.train[:4], 0)["loss"])
    assert method.sample(2).shape == (2, 3, 32, 32)


def test_fit_energy_from_fixes_the_base_and_trains_the_energy():
    method = gebm(warmup_energy_steps=1, energy_steps=1, fit_energy_from=3)
    x = torch.randn(16, 2)
    kinds = [float(method.train_step(x, step)["base_step"]) for step in range(3)]
    assert kinds == [0.0, 1.0, 0.0]
    generator = {k: v.clone() for k, v in method.generator.state_dict().items()}
    energy = [p.detach().clone() for p in method.energy_net.parameters()]
    assert all(float(method.train_step(x, step)["base_step"]) == 0 for step in range(3, 9))
    assert all(torch.equal(v, generator[k]) for k, v in method.generator.state_dict().items())
    after = method.energy_net.parameters()
    assert any(not torch.equal(a, b) for a, b in zip(energy, after, strict=True))


def test_sample_from_a_composed_energy_targets_the_product_reweighting():
    """Two fixed quadratic energies on an identity base: the latent posterior of their sum is the
    Gaussian of precision I + 1/s1^2 + 1/s2^2 around the precision-weighted means."""
    method = gebm(latent_sampler="mala", latent_step_size=0.05, latent_steps=300)
    identity = linear_generator([[1.0, 0.0], [0.0, 1.0]], [0.0, 0.0])
    first, second = QuadraticEnergy([1.0, 0.0], 1.0), QuadraticEnergy([0.0, 2.0], 0.5)
    with_fixed_parts(method, first, identity)
    torch.manual_seed(0)
    x = method.sample_from(lambda v: first(v) + second(v), 4000)
    precision = 1 + 1 / 1.0**2 + 1 / 0.5**2  # 6
    mean = torch.tensor([1.0 / 1.0, 2.0 / 0.25]) / precision
    assert torch.allclose(x.mean(0), mean, atol=0.05)
    assert torch.allclose(x.var(0), torch.full((2,), 1 / precision), atol=0.02)


# ---------------------------------------------------------------- the authors' guards and sampler


def test_the_bound_is_minus_e_data_minus_mean_exp_plus_one():
    """F(E + c) on numbers: -(mean E_data + c) - mean exp(-(E_base + c)) + 1."""
    e_data, e_base, c = torch.tensor([0.5, 1.5]), torch.tensor([0.0, 2.0]), torch.tensor(0.3)
    expected = -(1.0 + 0.3) - (math.exp(-0.3) + math.exp(-2.3)) / 2 + 1
    assert float(gebm().bound(e_data, e_base, c)) == pytest.approx(expected, rel=1e-6)


def test_the_energy_step_descends_minus_the_bound_plus_the_weighted_penalty():
    """The applied gradient of an energy step is that of -F(E + c) + lambda GP (lambda 0.5),
    GP at the step's own interpolates, with its graph to the energy's weights; the logged
    naive log Z is log mean exp(-E(x_B))."""
    method = gebm(gradient_penalty=0.5, warmup_energy_steps=10)
    with torch.no_grad():  # energies about 3: log mean exp(-E) negative, unlike at 0
        [*method.energy_net.parameters()][-1].add_(3.0)
    before = copy.deepcopy(method.energy_net)
    c0 = method.log_partition.detach().clone()
    applied = applied_gradients(method)
    x = torch.randn(32, 2)
    torch.manual_seed(6)
    logs = method.train_step(x, 0)
    torch.manual_seed(6)
    with torch.no_grad():
        x_base = method.decode(torch.randn(32, 2))
    a = torch.rand(32, 1)
    x_hat = (a * x + (1 - a) * x_base).requires_grad_()
    (grad_x,) = torch.autograd.grad(before(x_hat).sum(), x_hat, create_graph=True)
    e_data, e_base = before(x), before(x_base)
    bound = -(e_data + c0).mean() - torch.exp(-(e_base + c0)).mean() + 1
    loss = -bound + 0.5 * grad_x.pow(2).sum(1).mean()
    assert_gradients_equal(applied["energy"][:-1], gradients(loss, list(before.parameters())))
    naive = torch.logsumexp(-e_base.detach(), 0) - math.log(32)
    assert float(logs["log_z_naive"]) == pytest.approx(float(naive), rel=1e-5)


def test_gradient_penalty_is_the_squared_gradient_norm_at_interpolates():
    """GP = mean |grad_x E(x_hat)|^2 at x_hat = a x + (1 - a) x_B (methods.md 5.3: the squared
    norm, not WGAN's (|grad| - 1)^2): |a|^2 for a linear energy, |x_hat|^2 for |x|^2 / 2."""
    method = with_fixed_parts(gebm(gradient_penalty=1.0), energy=LinearEnergy([0.3, -0.4]))
    x, x_base = torch.randn(64, 2), torch.randn(64, 2)
    assert float(method._gradient_penalty(x, x_base).detach()) == pytest.approx(0.25, rel=1e-6)
    method = with_fixed_parts(gebm(gradient_penalty=1.0), energy=QuadraticEnergy([0.0, 0.0], 1.0))
    torch.manual_seed(3)
    penalty = method._gradient_penalty(x, x_base)
    torch.manual_seed(3)
    a = torch.rand(64, 1)
    expected = (a * x + (1 - a) * x_base).pow(2).sum(1).mean()
    assert float(penalty.detach()) == pytest.approx(float(expected), rel=1e-6)


@pytest.mark.parametrize(("data", "shape"), [("digits", (1, 8, 8)), ("cifar10", (3, 32, 32))])
def test_image_presets_take_the_authors_latent_step(data, shape):
    """Their ULA z - gamma/2 grad U + sqrt(gamma) xi at gamma = 1e-4: on U = |z|^2 / 2 one step
    shrinks z by 1 - gamma/2 and adds noise of std sqrt(gamma) = 0.01."""
    method, _ = preset_method("gebm", data, "image", shape)
    (_, step), *_ = method._segments("ula", False)
    sampler = method._latent_sampler("ula", 1, step)
    z0 = torch.ones(20_000, 4)
    torch.manual_seed(0)
    moves = sampler(lambda z: 0.5 * z.pow(2).sum(1), z0)[0] - z0
    assert float(moves.mean()) == pytest.approx(-1e-4 / 2, abs=4e-4)
    assert float(moves.std()) == pytest.approx(1e-2, rel=0.02)


def test_cifar10_preset_uses_the_authors_self_normalised_base_loss():
    method, stem = preset_method("gebm", "cifar10", "image", (3, 32, 32))
    assert stem == "gebm_cifar10" and method.cfg.base_loss == "snis"


def test_a_warm_up_longer_than_small_integers_still_ends_in_a_base_step():
    """The schedule compares counts by value: after 300 warm-up energy steps (a count that is
    not one of Python's cached small integers) the next step is the first base step."""
    method = gebm(warmup_energy_steps=300, energy_steps=1)
    method._energy_step = lambda x: {"base_step": torch.tensor(0.0)}
    method._base_step = lambda x: {"base_step": torch.tensor(1.0)}
    x = torch.randn(16, 2)
    kinds = [float(method.train_step(x, step)["base_step"]) for step in range(301)]
    assert kinds == [0.0] * 300 + [1.0]
