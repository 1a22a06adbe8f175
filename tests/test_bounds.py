"""Bounds: Jacobian tools, the entropy term, the score-mismatch penalty, what each step trains."""

import copy
import math

import pytest
import torch
from torch import nn

from ebmlab.errors import EbmlabError
from ebmlab.methods import get_method
from ebmlab.nets.jacobian import jacobian, jvp, smallest_singular_value, vjp
from tests.helpers import (
    applied_gradients,
    assert_gradients_equal,
    fixture_image_run,
    gradients,
    preset_method,
    recorded_calls,
    tiny_method,
)


def linear(weight, bias=None):
    """x = W z (+ b): a generator whose Jacobian is W everywhere."""
    weight = torch.as_tensor(weight, dtype=torch.float32)
    layer = nn.Linear(weight.shape[1], weight.shape[0], bias=bias is not None)
    with torch.no_grad():
        layer.weight.copy_(weight)
        if bias is not None:
            layer.bias.copy_(torch.as_tensor(bias, dtype=torch.float32))
    return layer


class GaussianEnergy(nn.Module):
    """E(x) = x^T P x / 2 for a fixed precision-like matrix P (no parameters but a scale)."""

    def __init__(self, matrix):
        super().__init__()
        self.register_buffer("matrix", matrix)
        self.scale = nn.Parameter(torch.ones(()))

    def forward(self, x):
        return 0.5 * self.scale * ((x @ self.matrix) * x).sum(1)


def bounds(shape=(2,), **extra):
    return tiny_method("bounds", shape, **extra)


# ---------------------------------------------------------------- the Jacobian tools


def test_products_match_the_full_jacobian_of_a_network():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(3, 16), nn.Tanh(), nn.Linear(16, 5))
    z, v, u = torch.randn(4, 3), torch.randn(4, 3), torch.randn(4, 5)
    full = torch.func.vmap(torch.func.jacrev(net))(z)  # (4, 5, 3)
    torch.testing.assert_close(jacobian(net, z), full)
    torch.testing.assert_close(jvp(net, z, v)[1], (full @ v.unsqueeze(-1)).squeeze(-1))
    torch.testing.assert_close(vjp(net, z, u), (u.unsqueeze(1) @ full).squeeze(1))


def test_products_of_an_image_generator_are_flattened_per_sample():
    """G: R^3 -> (1, 2, 2) images: G(z) and J v come back as (B, 4), u J as (B, 3)."""
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(3, 4), nn.Unflatten(1, (1, 2, 2)))
    z, v = torch.randn(5, 3), torch.randn(5, 3)
    out, tangent = jvp(net, z, v)
    assert out.shape == tangent.shape == (5, 4)
    torch.testing.assert_close(out, net(z).flatten(1))
    assert vjp(net, z, torch.randn(5, 4)).shape == (5, 3)


def test_smallest_singular_value_of_a_one_dimensional_latent_is_the_columns_norm():
    """d = 1: no iteration; s_1 = |J v| at the unit vector v = +-1, the norm of J's column."""
    weight = torch.tensor([[3.0], [4.0]])
    z = torch.randn(7, 1)
    torch.testing.assert_close(smallest_singular_value(linear(weight), z, 2), torch.full((7,), 5.0))


@pytest.mark.parametrize(("d", "iters", "rtol"), [(2, 1, 1e-5), (8, 30, 1e-4)])
def test_smallest_singular_value_of_a_random_linear_generator(d, iters, rtol):
    """Rayleigh-Ritz reaches s_1(W): exactly in one step for d = 2 (the basis spans R^2), to
    1e-4 in 30 steps for d = 8."""
    torch.manual_seed(1)
    weight = torch.randn(40, d)
    estimate = smallest_singular_value(linear(weight), torch.randn(6, d), iters=iters)
    truth = torch.linalg.svdvals(weight)[-1]
    torch.testing.assert_close(estimate, truth.expand(6), rtol=rtol, atol=0)
    assert (estimate >= truth * (1 - 1e-5)).all()  # a Rayleigh quotient never undershoots


def test_each_rayleigh_ritz_step_lowers_the_estimate():
    """The new basis holds the old vector, so the Ritz value never rises: the code's 2 steps
    sit between the random start and s_1."""
    torch.manual_seed(8)
    weight, z = torch.randn(40, 8), torch.randn(6, 8)
    estimates = torch.stack(
        [
            smallest_singular_value(linear(weight), z, k, torch.Generator().manual_seed(0))
            for k in range(6)
        ]
    ).detach()
    assert (estimates[1:] <= estimates[:-1] * (1 + 1e-5)).all()
    assert (estimates[-1] >= torch.linalg.svdvals(weight)[-1] * (1 - 1e-5)).all()


def test_smallest_singular_value_carries_the_gradient_of_s1():
    """d s_1 / dW = u_1 v_1^T for the singular pair (u_1, v_1): what the estimate backprops."""
    torch.manual_seed(2)
    gen = linear(torch.randn(10, 4))
    s_1 = smallest_singular_value(gen, torch.randn(1, 4), iters=30)
    (grad,) = torch.autograd.grad(s_1.sum(), gen.weight)
    u, _, vh = torch.linalg.svd(gen.weight.detach(), full_matrices=False)
    expected = torch.outer(u[:, -1], vh[-1])
    torch.testing.assert_close(grad, expected, atol=1e-4, rtol=1e-3)


# ---------------------------------------------------------------- the entropy term


@pytest.mark.parametrize("entropy", ["logdet", "svd", "lobpcg"])
def test_entropy_term_of_a_linear_generator_against_its_closed_form(entropy):
    """H(p_g) = H(N(0, I_d)) + 1/2 log det(W^T W) for x = W z; d log s_1 bounds the second
    part from below, with equality when all singular values are equal."""
    torch.manual_seed(3)
    weight = torch.randn(5, 3)
    method = bounds((5,), z_dim=3, entropy=entropy, ssv_iters=30)
    method.generator = linear(weight)
    h = method.entropy_term(torch.randn(4, 3))
    half_logdet = 0.5 * torch.logdet(weight.T @ weight)
    d_log_s1 = 3 * torch.log(torch.linalg.svdvals(weight)[-1])
    expected = half_logdet if entropy == "logdet" else d_log_s1
    torch.testing.assert_close(h, expected.expand(4), rtol=1e-4, atol=1e-4)
    assert d_log_s1 < half_logdet
    orthogonal = torch.linalg.qr(torch.randn(5, 3)).Q * 2.0  # singular values all 2
    method.generator = linear(orthogonal)
    torch.testing.assert_close(
        method.entropy_term(torch.randn(2, 3)), torch.full((2,), 3 * math.log(2.0))
    )


def test_the_exact_entropy_stays_finite_for_an_ill_conditioned_jacobian():
    """1/2 log det(J^T J) = sum_i log s_i(J): forming J^T J squares J's condition number, and
    at singular values 10 and 1e-4 (condition 1e5, squared 1e10, past float32's 1e7) its
    determinant rounds to zero, -inf, and training turned NaN (bounds on unseen-59)."""
    generator = torch.Generator().manual_seed(0)
    left = torch.linalg.qr(torch.randn(4, 2, generator=generator)).Q
    right = torch.linalg.qr(torch.randn(2, 2, generator=generator)).Q  # J^T J not diagonal
    method = bounds((4,), z_dim=2, entropy="logdet")
    method.generator = linear(left @ torch.diag(torch.tensor([10.0, 1e-4])) @ right)
    z = torch.randn(3, 2, requires_grad=True)
    h = method.entropy_term(z)
    torch.testing.assert_close(h, torch.full((3,), math.log(10.0 * 1e-4)), rtol=0, atol=0.02)
    (grad,) = torch.autograd.grad(h.sum(), method.generator.weight)
    assert torch.isfinite(grad).all()


# ---------------------------------------------------------------- the upper bound


@pytest.mark.parametrize(("data_dim", "entropy"), [(3, "logdet"), (5, "logdet"), (5, "lobpcg")])
def test_penalty_vanishes_when_exp_minus_energy_is_the_generators_density(data_dim, entropy):
    """x = W z + b has density N(b, W W^T) on its range; E(x) = (x - b)^T (W W^T)^+ (x - b) / 2
    matches it there, so u J v = grad_z [E(G(z)) + log p_g(G(z))] . v = 0. A wrong energy
    (twice as sharp) leaves a penalty."""
    torch.manual_seed(4)
    weight = torch.randn(data_dim, 3)
    method = bounds((data_dim,), z_dim=3, entropy=entropy, ssv_iters=30)
    method.generator = linear(weight)
    method.energy_net = GaussianEnergy(torch.linalg.pinv(weight @ weight.T))
    z = torch.randn(64, 3, requires_grad=True)
    entropy_value = method.entropy_term(z)
    b = method.log_density_gradient(z, entropy_value)
    if entropy == "logdet":  # J is constant: grad_z log p_g = -z exactly
        torch.testing.assert_close(b, -z.detach())
    penalty = method.score_mismatch_penalty(z.detach(), b)
    assert penalty < 1e-8
    with torch.no_grad():
        method.energy_net.scale.fill_(2.0)
    assert method.score_mismatch_penalty(z.detach(), b) > 0.1


class Parabola(nn.Module):
    """G(z) = (z, z^2), a curved generator: J_z = (1, 2z), h(z) = log(1 + 4z^2) / 2."""

    def forward(self, z):
        return torch.cat([z, z.pow(2)], dim=1)


class ParabolaEnergy(nn.Module):
    """E(x) = x_1^2 / 2 + log(1 + 4 x_1^2) / 2: on the parabola, -log p_g(G(z)) + const."""

    def __init__(self):
        super().__init__()
        self.scale = nn.Parameter(torch.ones(()))

    def forward(self, x):
        first = x[:, 0]
        return self.scale * (0.5 * first.pow(2) + 0.5 * torch.log1p(4 * first.pow(2)))


@pytest.mark.parametrize("entropy", ["logdet", "svd"])
def test_log_density_gradient_and_penalty_of_a_curved_generator(entropy):
    """b = grad_z log p_g(G(z)) = -z - grad_z h(z) = -z - 4z / (1 + 4z^2) for the parabola, and
    the penalty vanishes at the energy that is -log p_g on it (a linear G has grad h = 0, so only
    a curved one checks the sign of grad h)."""
    method = bounds((2,), z_dim=1, entropy=entropy)
    method.generator, method.energy_net = Parabola(), ParabolaEnergy()
    z = torch.linspace(-2, 2, 41).view(-1, 1).requires_grad_()
    b = method.log_density_gradient(z, method.entropy_term(z))
    zd = z.detach()
    torch.testing.assert_close(b, -zd - 4 * zd / (1 + 4 * zd.pow(2)))
    assert not b.requires_grad
    assert method.score_mismatch_penalty(zd, b) < 1e-10
    with torch.no_grad():
        method.energy_net.scale.fill_(2.0)
    assert method.score_mismatch_penalty(zd, b) > 0.1


def test_penalty_is_eq_20_and_reaches_only_the_energy():
    """P = mean_i (a_i . J v_i + b_i . v_i)^2 / z_dim, recomputed by hand; its gradient
    reaches the energy's parameters and not the generator's."""
    torch.manual_seed(5)
    weight = torch.randn(4, 2)
    method = bounds((4,), z_dim=2, entropy="logdet")
    method.generator = linear(weight)
    z = torch.randn(16, 2)
    b = -z
    torch.manual_seed(6)
    penalty = method.score_mismatch_penalty(z, b)
    torch.manual_seed(6)
    v = torch.randn_like(z)
    x = (z @ weight.T).requires_grad_()
    (a,) = torch.autograd.grad(method.energy(x).sum(), x)
    expected = ((a * (v @ weight.T)).sum(1) + (b * v).sum(1)).pow(2).mean() / 2
    torch.testing.assert_close(penalty, expected)
    grads = torch.autograd.grad(
        penalty, [*method.energy_net.parameters(), method.generator.weight], allow_unused=True
    )
    *energy_grads, last_bias, generator_grad = grads  # grad_x E ignores the output bias
    assert all(g is not None for g in energy_grads) and last_bias is None
    assert generator_grad is None


@pytest.mark.parametrize("scale", ["z_dim", "v_norm", "none"])
def test_penalty_scales_divide_by_z_dim_by_v_norm_or_by_nothing(scale):
    weight = torch.randn(3, 2)
    method = bounds((3,), z_dim=2, entropy="logdet", penalty_scale=scale)
    method.generator = linear(weight)
    z = torch.randn(8, 2)
    torch.manual_seed(7)
    penalty = method.score_mismatch_penalty(z, -z)
    torch.manual_seed(7)
    v = torch.randn_like(z)
    x = (z @ weight.T).requires_grad_()
    (a,) = torch.autograd.grad(method.energy(x).sum(), x)
    squared = ((a * (v @ weight.T)).sum(1) - (z * v).sum(1)).pow(2)
    divisor = {"z_dim": 2.0, "v_norm": v.pow(2).sum(1), "none": 1.0}[scale]
    torch.testing.assert_close(penalty, (squared / divisor).mean())


def test_zero_centred_penalty_is_the_squared_gradient_norm_on_data():
    method = bounds(upper_bound="zero_centred")
    method.energy_net = GaussianEnergy(torch.eye(2))  # grad E(x) = x
    x = torch.randn(10, 2)
    torch.testing.assert_close(method.zero_centred_penalty(x), x.pow(2).sum(1).mean())


# ---------------------------------------------------------------- the two steps


def snapshot(module):
    return [p.detach().clone() for p in module.parameters()]


def moved(module, before):
    return [not torch.equal(p, b) for p, b in zip(module.parameters(), before, strict=True)]


@pytest.mark.parametrize("upper_bound", ["score_mismatch", "zero_centred", "none"])
def test_energy_step_trains_only_the_energy_and_generator_step_only_the_generator(upper_bound):
    method = bounds(upper_bound=upper_bound, entropy="svd")
    x = torch.randn(32, 2)
    z = method.prior(32).requires_grad_()
    entropy = method.entropy_term(z)
    energy, generator = snapshot(method.energy_net), snapshot(method.generator)
    logs = method._energy_step(x, z, entropy)
    assert any(moved(method.energy_net, energy)) and not any(moved(method.generator, generator))
    assert (logs["penalty"] > 0) == (upper_bound != "none")
    energy = snapshot(method.energy_net)
    method._generator_step(z.detach(), entropy)
    assert not any(moved(method.energy_net, energy)) and any(moved(method.generator, generator))
    assert all(p.requires_grad for p in method.parameters())


def test_generator_loss_is_the_negative_lower_bound():
    """L_G = mean E(G(z)) - lambda_H mean h(z), with E fixed."""
    method = bounds(entropy="logdet", entropy_weight=0.5)
    z = method.prior(16).requires_grad_()
    entropy = method.entropy_term(z)
    with torch.no_grad():
        expected = method.energy(method.generator(z)).mean() - 0.5 * entropy.mean()
    logs = method._generator_step(z.detach(), entropy)
    torch.testing.assert_close(logs["loss_generator"], expected)


def test_applied_gradients_are_those_of_the_two_bounds():
    """A whole `train_step`, restated: the energy steps with the gradient of
    mean E(x) - mean E(G(z)) + w mean |grad_x E(x)|^2 (the zero-centred penalty, deterministic),
    the generator with that of mean E(G(z)) - lambda_H mean h(z), both at the step's z."""
    method = tiny_method(
        "bounds",
        (2,),
        upper_bound="zero_centred",
        penalty_weight=0.3,
        entropy="logdet",
        entropy_weight=0.5,
    )
    energy, generator = copy.deepcopy(method.energy_net), copy.deepcopy(method.generator)
    draws = recorded_calls(method, "prior")
    applied = applied_gradients(method)
    x = torch.randn(32, 2)
    method.train_step(x, 0)

    z = draws[0][1].detach().requires_grad_()
    x_data = x.clone().requires_grad_()
    (grad_x,) = torch.autograd.grad(energy(x_data).sum(), x_data, create_graph=True)
    energy_loss = (
        energy(x).mean() - energy(generator(z).detach()).mean() + 0.3 * grad_x.pow(2).sum(1).mean()
    )
    assert_gradients_equal(applied["energy"], gradients(energy_loss, energy.parameters()))
    jac = torch.func.vmap(torch.func.jacrev(lambda one: generator(one[None])[0]))(z)
    h = 0.5 * torch.linalg.slogdet(jac.transpose(1, 2) @ jac).logabsdet  # J: (n, D, d)
    updated_energy = method.energy_net  # the generator steps after the energy (1:1)
    generator_loss = updated_energy(generator(z)).mean() - 0.5 * h.mean()
    expected = gradients(generator_loss, generator.parameters())
    assert_gradients_equal(applied["generator"], expected, atol=1e-3)  # slogdet of a tight J


@pytest.mark.parametrize("threshold", [0.0, 1e-4])
def test_the_penalty_term_is_relu_of_w_p_minus_the_threshold(threshold):
    method = bounds(penalty_weight=0.3, penalty_threshold=threshold)
    z = method.prior(16).requires_grad_()
    logs = method._energy_step(torch.randn(16, 2), z, method.entropy_term(z))
    expected = max(0.3 * float(logs["penalty"].detach()) - threshold, 0.0)
    assert float(logs["penalty_term"].detach()) == pytest.approx(expected, rel=1e-5)


def test_b_is_minus_z_where_the_entropy_does_not_depend_on_z():
    """b = -z - grad_z h, with grad_z h = 0 (not an error) for an h without z in its graph."""
    method = bounds()
    z = method.prior(8).requires_grad_()
    unrelated = torch.ones(8, requires_grad=True) * 2.0
    torch.testing.assert_close(method.log_density_gradient(z, unrelated), -z.detach())


def test_a_training_step_draws_one_latent_per_example():
    method = bounds()
    calls = recorded_calls(method, "entropy_term")
    method.train_step(torch.randn(16, 2), 0)
    (z,), _ = calls[0]
    assert z.shape == (16, method.cfg.z_dim)


def test_gate_keeps_only_penalties_above_the_threshold():
    method = bounds(penalty_threshold=1e6)
    z = method.prior(16).requires_grad_()
    logs = method._energy_step(torch.randn(16, 2), z, method.entropy_term(z))
    assert logs["penalty"] > 0 and logs["penalty_term"] == 0


@pytest.mark.parametrize(
    "bad",
    [
        {"upper_bound": "both"},
        {"penalty_scale": "sqrt"},
        {"entropy": "exact"},
        {"z_dim": 3},  # wider than the 2D data
        {"penalty_weight": -1.0},
        {"penalty_weight": -1e-3},
        {"ssv_iters": -1},
        {"generator": {"kind": "mlp", "widths": [32, 1, 32]}},  # narrower than z_dim = 2
    ],
)
def test_bad_options_are_refused(bad):
    with pytest.raises(EbmlabError):
        bounds(**bad)


def test_zero_iterations_and_zero_penalty_are_allowed():
    """ssv_iters = 0 keeps the first Rayleigh quotient; penalty_weight = 0 drops the upper
    bound's penalty (the README's w = 0 row)."""
    assert bounds(ssv_iters=0, penalty_weight=0.0).cfg.ssv_iters == 0


def test_defaults_are_the_papers():
    """Eq. 20 with M / s_1^2 = 0.001 / z_dim, no gate, lambda_H = 1, two Rayleigh-Ritz
    iterations for s_1; Table 6: z_dim 128, Adam (0, 0.9), eps 1e-6, 2e-4 for both nets."""
    cfg = get_method("bounds").Config()
    assert (cfg.z_dim, cfg.lr_energy, cfg.lr_generator, cfg.betas) == (128, 2e-4, 2e-4, (0, 0.9))
    assert (cfg.adam_eps, cfg.penalty_weight, cfg.penalty_threshold) == (1e-6, 1e-3, 0.0)
    assert (cfg.entropy, cfg.entropy_weight, cfg.ssv_iters) == ("lobpcg", 1.0, 2)


# ---------------------------------------------------------------- presets


@pytest.mark.parametrize(
    ("data", "preset", "shape"),
    [("8gaussians", "bounds_toy2d", (2,)), ("digits", "bounds_image", (1, 8, 8))],
)
def test_presets_build_and_take_a_step(data, preset, shape):
    kind = "toy2d" if len(shape) == 1 else "image"
    overrides = {"method": {"z_dim": 8}} if kind == "image" else {}
    method, stem = preset_method("bounds", data, kind, shape, overrides)
    assert stem == preset
    x = torch.rand(16, *shape) * 2 - 1
    logs = method.train_step(x, 0)
    assert all(torch.isfinite(v) for v in logs.values())
    assert method.sample(4).shape == (4, *shape)


@pytest.mark.slow
def test_cifar10_preset_trains_a_step_on_fixture_images(tmp_path):
    from ebmlab.nets import DCGANEnergy

    method, data, config = fixture_image_run(tmp_path, "bounds", "cifar10", 40, 32)
    assert isinstance(method.energy_net, DCGANEnergy)
    assert (method.cfg.z_dim, method.cfg.lr_energy, config.data.batch_size) == (128, 5e-5, 64)
    assert torch.isfinite(method.train_step(data.train[:4], 0)["loss"])
    assert method.sample(2).shape == (2, 3, 32, 32)


@pytest.mark.slow
def test_animeface_preset_builds_the_supplements_resnets(tmp_path):
    from ebmlab.nets import ResNetEnergy, ResNetGenerator

    method, data, config = fixture_image_run(tmp_path, "bounds", "animeface", 12, 64)
    assert isinstance(method.energy_net, ResNetEnergy)
    assert isinstance(method.generator, ResNetGenerator)
    assert method.generator.c0 == 1024 and config.train.steps == 100_000
    assert torch.isfinite(method.train_step(data.train[:2], 0)["loss"])
    assert method.sample(2).shape == (2, 3, 64, 64)
