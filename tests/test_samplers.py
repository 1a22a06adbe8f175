"""Samplers: the contract every sampler keeps, and their statistics on a known Gaussian."""

import dataclasses
import math

import pytest
import torch
from torch import nn

from ebmlab.samplers import HMC, MALA, Langevin, energy_grad, frozen_params, langevin_step
from ebmlab.samplers.mala import mala_step

MEAN = torch.tensor([1.0, -2.0])
COV = torch.tensor([[1.0, 0.6], [0.6, 2.0]])
PRECISION = torch.linalg.inv(COV)


def gaussian_energy(x):
    d = x - MEAN
    return 0.5 * ((d @ PRECISION) * d).sum(1)


SAMPLERS = [Langevin(20, 0.01), MALA(20, 0.1), HMC(5, 0.1, leapfrog_steps=5)]


@pytest.mark.parametrize("sampler", SAMPLERS, ids=lambda s: type(s).__name__)
def test_contract(sampler):
    net = nn.Linear(2, 1)
    flags = [p.requires_grad for p in net.parameters()]

    def energy(x):
        return net(x).squeeze(-1) + x.pow(2).sum(1)

    x0 = torch.randn(16, 2, dtype=torch.float64).float()
    with torch.no_grad():
        x, info = sampler(energy, x0)
    assert x.shape == x0.shape and x.dtype == x0.dtype and not x.requires_grad
    assert isinstance(info, dict)
    assert all(p.grad is None for p in net.parameters())
    assert [p.requires_grad for p in net.parameters()] == flags
    assert not torch.equal(x, x0)


@pytest.mark.parametrize("sampler", SAMPLERS, ids=lambda s: type(s).__name__)
def test_seeded_generator_repeats(sampler):
    x0 = torch.zeros(8, 2)
    a, _ = sampler(gaussian_energy, x0, generator=torch.Generator().manual_seed(3))
    b, _ = sampler(gaussian_energy, x0, generator=torch.Generator().manual_seed(3))
    assert torch.equal(a, b)


def moments(x):
    return x.mean(0), torch.cov(x.T)


def test_langevin_reproduces_gaussian_mean_and_covariance():
    torch.manual_seed(0)
    x, info = Langevin(steps=1500, step_size=0.01)(gaussian_energy, torch.randn(8000, 2))
    mean, cov = moments(x)
    # ULA's bias is O(step): about 1% of the covariance at step 0.01
    assert torch.allclose(mean, MEAN, atol=0.05)
    assert torch.allclose(cov, COV, atol=0.06)
    assert info["temperature"] == pytest.approx(1.0)


def test_mala_is_exact_where_ula_is_biased():
    torch.manual_seed(0)
    x0 = MEAN + torch.randn(8000, 2)
    step = 0.4
    x_ula, _ = Langevin(steps=400, step_size=step)(gaussian_energy, x0)
    x_mala, info = MALA(steps=400, step_size=step)(gaussian_energy, x0)
    ula_error = (moments(x_ula)[1] - COV).abs().max()
    mala_error = (moments(x_mala)[1] - COV).abs().max()
    # ULA's stationary variance along precision eigenvalue l is 1 / (l (1 - step l / 2)):
    # here 0.28 too large on the narrow axis
    assert ula_error > 0.2
    assert mala_error < 0.1
    assert ula_error > 4 * mala_error
    assert 0.3 < info["accept_rate"] < 1.0


def test_hmc_matches_moments_and_acceptance_falls_with_step():
    torch.manual_seed(0)
    x, info = HMC(steps=200, step_size=0.2, leapfrog_steps=8)(gaussian_energy, torch.randn(4000, 2))
    mean, cov = moments(x)
    assert torch.allclose(mean, MEAN, atol=0.06)
    assert torch.allclose(cov, COV, atol=0.1)
    assert info["accept_rate"] > 0.8
    rates = [HMC(20, s, 8)(gaussian_energy, x)[1]["accept_rate"] for s in (0.2, 0.8, 1.4)]
    assert rates[0] > rates[1] > rates[2]
    mala_rates = [MALA(20, s)(gaussian_energy, x)[1]["accept_rate"] for s in (0.05, 0.5, 2.0)]
    assert mala_rates[0] > mala_rates[1] > mala_rates[2]


def half_square(x):
    return 0.5 * x.pow(2).sum(1)


def restated_leapfrog(x, p, eps, steps, mass):
    """The leapfrog map on E = x^2 / 2: half kick, drift, half kick, `steps` times."""
    for _ in range(steps):
        p = p - 0.5 * eps * x
        x = x + eps * p / mass
        p = p - 0.5 * eps * x
    return x, p


@pytest.mark.parametrize(
    ("hmc", "steps", "mass"), [(HMC(1, 0.3), 10, 1.0), (HMC(1, 0.3, 4, 3.0), 4, 3.0)]
)
def test_leapfrog_is_half_kick_drift_half_kick_with_the_mass(hmc, steps, mass):
    """Against the map restated on E = x^2 / 2; the defaults are 10 steps and mass 1."""
    x, p = torch.randn(6, 2, dtype=torch.float64), torch.randn(6, 2, dtype=torch.float64)
    x_new, p_new, e_new, grad_new = hmc._leapfrog(half_square, x, p, x.clone())
    x_ref, p_ref = restated_leapfrog(x, p, 0.3, steps, mass)
    torch.testing.assert_close(x_new, x_ref)
    torch.testing.assert_close(p_new, p_ref)
    torch.testing.assert_close(e_new, half_square(x_ref))
    torch.testing.assert_close(grad_new, x_ref)


def test_hmc_is_exact_with_any_mass_at_a_step_where_the_correction_matters():
    """N(0, 1) in 1D at eps = 3 with mass 4 (momentum N(0, 4), an effective step of 1.5): the
    leapfrog alone is far off (an energy error of order 1), the Metropolis test on
    H = E + |p|^2 / (2 m) makes it exact; the mean acceptance is a share, between 0 and 1."""
    torch.manual_seed(0)
    x, info = HMC(steps=300, step_size=3.0, leapfrog_steps=3, mass=4.0)(
        half_square, torch.randn(6000, 1) * 3
    )
    assert float(x.mean()) == pytest.approx(0.0, abs=0.05)
    assert float(x.var()) == pytest.approx(1.0, rel=0.06)
    assert 0.2 < info["accept_rate"] < 0.95


def test_hmc_acceptance_is_the_mean_over_transitions():
    """A tiny step accepts every move (rate 1, one transition or many); no transition, rate 0."""
    x0 = torch.randn(50, 2)
    assert HMC(1, 1e-4, 2)(half_square, x0)[1]["accept_rate"] == pytest.approx(1.0)
    assert HMC(7, 1e-4, 2)(half_square, x0)[1]["accept_rate"] == pytest.approx(1.0)
    x, info = HMC(0, 0.1)(half_square, x0)
    assert torch.equal(x, x0) and info["accept_rate"] == 0.0


def test_temperature_of_step_plus_small_noise():
    assert Langevin(10, step_size=10.0, noise=0.005).temperature == pytest.approx(0.005**2 / 20)


def test_grad_clip_bounds_each_move_and_clamp_keeps_the_box():
    x0 = torch.full((4, 2), 3.0)
    steep = lambda x: 1000 * x.pow(2).sum(1)  # noqa: E731
    x, _ = Langevin(1, step_size=1.0, noise=0.0, grad_clip=0.01)(steep, x0)
    assert torch.allclose(x, x0 - 0.01)
    x, _ = Langevin(5, step_size=0.1, noise=1.0, clamp=(-1.0, 1.0))(gaussian_energy, x0)
    assert x.min() >= -1 and x.max() <= 1


def test_transition_opens_each_block_of_steps():
    calls = []

    def transition(x):
        calls.append(1)
        return x + 1.0

    Langevin(12, 0.01, transition=transition, every=4)(gaussian_energy, torch.zeros(3, 2))
    assert len(calls) == 3  # before steps 0, 4 and 8
    calls.clear()
    Langevin(5, 0.01, transition=transition, every=4)(gaussian_energy, torch.zeros(3, 2))
    assert len(calls) == 2  # before steps 0 and 4
    calls.clear()
    Langevin(1, 0.01, transition=transition, every=4)(gaussian_energy, torch.zeros(3, 2))
    assert len(calls) == 1  # before step 0, the first
    calls.clear()
    Langevin(4, 0.01, transition=transition)(gaussian_energy, torch.zeros(3, 2))
    assert calls == []  # every = 0 by default: never


def test_the_clip_bounds_moves_of_either_sign_and_grad_norm_is_the_last_steps_mean():
    """IGEBM's per-element clip in [-c, c]; info's grad_norm is mean_i |grad_x E(x_i)| at the
    last step's start."""
    x0 = torch.tensor([[3.0, -3.0], [-2.0, 2e-6]])  # the last one unclipped: 2000 x = 0.004
    steep = lambda x: 1000 * x.pow(2).sum(1)  # noqa: E731
    x, info = Langevin(1, step_size=1.0, noise=0.0, grad_clip=0.01)(steep, x0)
    torch.testing.assert_close(x, x0 - torch.tensor([[0.01, -0.01], [-0.01, 0.004]]))
    expected = (2000 * x0).norm(dim=1).mean()
    torch.testing.assert_close(info["grad_norm"], expected)


def test_langevin_step_with_create_graph_reaches_parameters_only_through_the_step():
    net = nn.Sequential(nn.Linear(2, 8), nn.Tanh(), nn.Linear(8, 1))

    def energy(x):
        return net(x).squeeze(-1)

    x0 = torch.randn(5, 2)
    x1 = langevin_step(energy, x0, step_size=0.1, noise=0.0, create_graph=True)
    with frozen_params(net):  # the outer evaluation does not differentiate E itself
        outer = energy(x1).sum()
    grads = torch.autograd.grad(outer, list(net.parameters()), allow_unused=True)
    assert any(g is not None and g.abs().sum() > 0 for g in grads)
    assert all(p.requires_grad for p in net.parameters())
    # without the differentiable step the frozen outer energy carries no parameter gradient
    x1_detached = langevin_step(energy, x0, step_size=0.1, noise=0.0)
    with frozen_params(net):
        assert not energy(x1_detached).requires_grad


def test_frozen_params_restores_flags_after_an_exception():
    net = nn.Linear(2, 2)
    net.bias.requires_grad_(False)
    with pytest.raises(RuntimeError), frozen_params(net):
        assert not net.weight.requires_grad
        raise RuntimeError("inside")
    assert net.weight.requires_grad and not net.bias.requires_grad


def test_energy_grad_detaches_by_default_and_keeps_the_callers_tensor():
    """Without create_graph: energies and gradient carry no graph even where the energy has
    trainable parameters, and the caller's x is not switched to requires_grad; with it, both
    keep their graph."""
    net = nn.Linear(2, 1)
    x = torch.randn(4, 2)
    energies, grad = energy_grad(lambda y: net(y).squeeze(-1) + y.pow(2).sum(1), x)
    assert not (energies.requires_grad or grad.requires_grad or x.requires_grad)
    torch.testing.assert_close(grad, net.weight.detach().expand(4, 2) + 2 * x)
    energies, grad = energy_grad(
        lambda y: net(y).squeeze(-1) * y.pow(2).sum(1), x, create_graph=True
    )
    assert energies.requires_grad and grad.requires_grad


def test_the_compiled_branch_takes_the_same_step_as_the_eager_one(monkeypatch):
    """compile=True with the compiler replaced by the identity: `_pure_update` with the noise
    drawn outside it gives the eager chains (float rounding apart), clipped or not."""
    from ebmlab.samplers import langevin

    monkeypatch.setattr(langevin, "_compiled_update", lambda: langevin._pure_update)
    net = nn.Sequential(nn.Linear(2, 16), nn.Tanh(), nn.Linear(16, 1))
    energy = lambda x: net(x).squeeze(-1) + 0.5 * x.pow(2).sum(1)  # noqa: E731
    start = torch.randn(32, 2)
    for clip in (None, 0.05):
        chains = [
            Langevin(6, 0.05, noise=0.3, grad_clip=clip, compile=compiled)(
                energy, start, generator=torch.Generator().manual_seed(4)
            )[0]
            for compiled in (False, True)
        ]
        torch.testing.assert_close(chains[1], chains[0], atol=1e-6, rtol=1e-6)
        assert not torch.equal(chains[0], start)


def test_energy_grad_matches_the_analytic_gradient_under_no_grad():
    x = torch.randn(10, 2)
    with torch.no_grad():
        energies, grad = energy_grad(gaussian_energy, x)
    assert torch.allclose(grad, (x - MEAN) @ PRECISION, atol=1e-6)
    assert torch.allclose(energies, gaussian_energy(x))
    assert math.isfinite(float(energies.sum()))


COMPILED_CASES = {  # id -> (chain shape, energy net options, grad_clip)
    "mlp": ((2,), {"kind": "mlp", "hidden": 32, "depth": 2, "activation": "swish"}, None),
    "mlp-clipped": ((2,), {"kind": "mlp", "hidden": 32, "depth": 2, "activation": "swish"}, 0.05),
    "conv-clipped": ((1, 8, 8), {"kind": "conv", "width": 4}, 0.05),
}


@pytest.mark.slow
@pytest.mark.parametrize("case", list(COMPILED_CASES))
def test_compiled_langevin_follows_the_eager_chains(case):
    """Same net, start and noise stream: the compiled step reproduces the eager chains up to
    float rounding and frees no parameter, both for flat chains (forward, torch.func.grad and
    update in one graph) and for image chains on the CPU (torch.autograd.grad between a
    compiled forward and backward)."""
    from ebmlab.nets import build_energy

    shape, options, grad_clip = COMPILED_CASES[case]
    net = build_energy(shape, **options)
    start = torch.randn(64, *shape)
    chains = {}
    with frozen_params(net):
        for compiled in (False, True):
            sampler = Langevin(steps=10, step_size=0.05, grad_clip=grad_clip, compile=compiled)
            generator = torch.Generator().manual_seed(7)
            chains[compiled], info = sampler(net, start, generator=generator)
        assert not any(p.requires_grad or p.grad is not None for p in net.parameters())
    assert not torch.equal(chains[False], start)
    torch.testing.assert_close(chains[True], chains[False], atol=1e-5, rtol=1e-5)
    assert torch.isfinite(info["grad_norm"])


@pytest.mark.slow
@pytest.mark.parametrize("case", ["mlp", "conv-clipped"])
def test_compiled_langevin_leaves_trainable_parameters_without_gradients(case):
    """Under `compiled_langevin` (how train.compile reaches the samplers) with parameters left
    trainable, the compiled step's backward never stores a gradient and no flag changes."""
    from ebmlab.nets import build_energy
    from ebmlab.samplers import compiled_langevin

    shape, options, grad_clip = COMPILED_CASES[case]
    net = build_energy(shape, **options)
    with compiled_langevin():
        sampler = Langevin(steps=3, step_size=0.05, grad_clip=grad_clip)
        samples, _ = sampler(net, torch.randn(8, *shape))
    assert torch.isfinite(samples).all()
    assert all(p.requires_grad and p.grad is None for p in net.parameters())


def test_the_compiled_step_runs_only_when_asked_and_is_built_once(monkeypatch):
    """compile=False (the default) steps eagerly; compile=True or a `compiled_langevin()` block
    takes the compiled step, whose compiled function is made once per process."""
    from ebmlab.samplers import compiled_langevin, langevin

    assert langevin._compiled_update() is langevin._compiled_update()
    calls = []

    def spy():
        calls.append(1)
        return langevin._pure_update

    monkeypatch.setattr(langevin, "_compiled_update", spy)
    x0 = torch.randn(4, 2)
    Langevin(3, 0.01)(gaussian_energy, x0)
    assert calls == []
    Langevin(3, 0.01, compile=True)(gaussian_energy, x0)
    assert len(calls) == 3
    with compiled_langevin():
        Langevin(2, 0.01)(gaussian_energy, x0)
    assert len(calls) == 5
    Langevin(2, 0.01)(gaussian_energy, x0)  # the block is over
    assert len(calls) == 5


def test_image_chains_on_the_cpu_take_the_gradient_by_autograd_flat_ones_by_func(monkeypatch):
    """`_pure_update`'s split for torch.compile: (B, C, H, W) chains on the CPU through
    torch.autograd.grad (a compiled forward and a compiled backward), every other chain through
    torch.func.grad (one graph). Both give the same step."""
    from ebmlab.samplers import langevin

    used = []
    real = torch.func.grad
    monkeypatch.setattr(torch.func, "grad", lambda f: used.append(1) or real(f))
    energy = lambda x: 0.5 * x.flatten(1).pow(2).sum(1)  # noqa: E731
    cases = [((3, 2), True), ((3, 1, 2, 2), False), ((3, 2, 2), True), ((2, 1, 2, 2, 2), True)]
    for shape, by_func in cases:
        used.clear()
        x = torch.randn(shape)
        moved, grad = langevin._pure_update(energy, x, torch.zeros(shape), 0.1, None)
        assert bool(used) == by_func, shape
        torch.testing.assert_close(grad, x)
        torch.testing.assert_close(moved, 0.9 * x)


def test_eager_chains_carry_no_graph_from_step_to_step():
    """Each step's gradient is taken at a detached copy, so the energy never sees a chain with
    a graph behind it (memory stays flat over K steps)."""
    seen = []

    def energy(x):
        seen.append(x.grad_fn is None)
        return 0.5 * x.pow(2).sum(1)

    Langevin(4, 0.1)(energy, torch.randn(5, 2))
    assert seen == [True] * 4


@pytest.mark.parametrize(
    "sampler",
    [Langevin(steps=2, step_size=0.1), MALA(steps=2, step_size=0.1), HMC(steps=2, step_size=0.1)],
)
def test_a_sampler_is_an_immutable_value(sampler):
    """Samplers are frozen: a method builds one per chain length and may reuse it, so a field
    changed in place would change every chain that shares it."""
    with pytest.raises(dataclasses.FrozenInstanceError):
        sampler.steps = 3


def test_mala_accept_rate_of_one_step_and_of_none():
    """The rate is the accepted share per step: one step of a tiny move on a quadratic is
    nearly always accepted (rate in (0.9, 1]); no steps accept nothing (rate 0, not 0/0)."""
    energy = lambda x: 0.5 * x.pow(2).sum(1)  # noqa: E731
    _, info = MALA(steps=1, step_size=1e-4)(energy, torch.randn(2000, 2))
    assert 0.9 < float(info["accept_rate"]) <= 1.0
    x = torch.randn(10, 2)
    moved, info = MALA(steps=0, step_size=0.1)(energy, x)
    assert torch.equal(moved, x) and float(info["accept_rate"]) == 0.0


def test_a_mala_step_keeps_no_graph_unless_asked():
    net = nn.Linear(2, 1)
    energy = lambda x: net(x).squeeze(1)  # noqa: E731
    x = torch.randn(8, 2)
    plain, _ = mala_step(energy, x, 0.1)
    assert plain.grad_fn is None
    kept, accepted = mala_step(energy, x, 0.1, create_graph=True)
    assert accepted.any() and kept.grad_fn is not None
    assert torch.equal(kept[~accepted].detach(), x[~accepted])  # a rejected row stays x
    # grad_x E = w for a linear energy: each accepted row is x - 0.1 w + noise, so the sum of
    # the rows has gradient -0.1 x (accepted rows) in every weight, and rejected rows none
    (weight_grad,) = torch.autograd.grad(kept.sum(), net.weight)
    expected = torch.full_like(net.weight, -0.1 * int(accepted.sum()))
    torch.testing.assert_close(weight_grad, expected)
