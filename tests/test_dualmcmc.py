"""Dual-MCMC teaching: the z-posterior, what each update trains, the step order, inpainting."""

import copy
import dataclasses

import pytest
import torch
from torch import nn

from ebmlab.errors import EbmlabError
from ebmlab.methods import get_method
from tests.helpers import (
    applied_gradients,
    assert_gradients_equal,
    fixture_image_run,
    gradients,
    preset_method,
    recorded_calls,
    tiny_method,
    use_offset_linear_energy,
)


def dual(shape=(2,), **extra):
    return tiny_method("dualmcmc", shape, **extra)


def linear(weight, bias):
    layer = nn.Linear(weight.shape[1], weight.shape[0])
    with torch.no_grad():
        layer.weight.copy_(weight)
        layer.bias.copy_(bias)
    return layer


def snapshot(module):
    return [p.detach().clone() for p in module.parameters()]


def moved(module, before):
    return any(not torch.equal(p, b) for p, b in zip(module.parameters(), before, strict=True))


def test_posterior_energy_gradient_is_the_analytic_one_for_a_linear_generator():
    """grad_z U = -W^T (x - W z - b) / sigma^2 + z, for g(z) = W z + b."""
    torch.manual_seed(0)
    method = dual((5,), z_dim=3, sigma=0.3)
    weight, bias = torch.randn(5, 3), torch.randn(5)
    method.generator = linear(weight, bias)
    x, z = torch.randn(4, 5), torch.randn(4, 3, requires_grad=True)
    (grad,) = torch.autograd.grad(method.posterior_energy(x)(z).sum(), z)
    expected = -(x - z.detach() @ weight.T - bias) @ weight / 0.3**2 + z.detach()
    torch.testing.assert_close(grad, expected)
    mask = torch.tensor([1.0, 0, 1, 0, 1])
    (masked,) = torch.autograd.grad(method.posterior_energy(x, mask)(z).sum(), z)
    residual = (x - z.detach() @ weight.T - bias) * mask
    torch.testing.assert_close(masked, -residual @ weight / 0.3**2 + z.detach())


def test_z_langevin_reaches_the_gaussian_posterior_of_a_linear_generator():
    """For g(z) = W z, p(z | x) = N(S W^T x / sigma^2, S), S = (W^T W / sigma^2 + I)^-1."""
    torch.manual_seed(1)
    method = dual((3,), z_dim=2, sigma=1.0, z_steps=400, z_step_size=0.01)
    weight = torch.tensor([[1.0, 0.0], [0.0, 2.0], [1.0, 1.0]])
    method.generator = linear(weight, torch.zeros(3))
    x = torch.tensor([[1.0, -1.0, 0.5]]).expand(4000, 3)
    cov = torch.linalg.inv(weight.T @ weight + torch.eye(2))
    mean = (cov @ weight.T @ x[0]).expand(4000, 2)
    z = method.revise_z(torch.zeros(4000, 2), x)
    torch.testing.assert_close(z.mean(0), mean[0], atol=0.05, rtol=0)
    torch.testing.assert_close(torch.cov(z.T), cov, atol=0.05, rtol=0)


def test_each_update_trains_only_its_own_model():
    method = dual()
    x = torch.randn(32, 2)
    z = method.prior(32)
    x_hat = method.generator(z)
    x_tilde, _ = method.revise_x(x_hat)
    z_tilde = method.revise_z(torch.randn(32, 2), x)
    nets = {"energy": method.energy_net, "generator": method.generator, "inference": method.encoder}
    before = {name: snapshot(net) for name, net in nets.items()}
    method._learn_energy(x, x_tilde)
    assert [moved(net, before[n]) for n, net in nets.items()] == [True, False, False]
    before = {name: snapshot(net) for name, net in nets.items()}
    method._teach(x, z, x_hat, x_tilde, z_tilde)
    assert [moved(net, before[n]) for n, net in nets.items()] == [False, True, True]
    assert all(p.requires_grad for p in method.parameters())


def test_chains_leave_every_parameter_without_gradient():
    method = dual()
    x = torch.randn(8, 2)
    method.revise_x(x)
    method.revise_z(torch.randn(8, 2), x)
    assert all(p.grad is None for p in method.parameters())


def test_teaching_losses_are_eqs_3_and_4():
    method = dual(sigma=0.5, sampling_weight=2.0, inference_sample_weight=0.5)
    x, z, x_tilde, z_tilde = (torch.randn(16, 2) for _ in range(4))
    with torch.no_grad():
        gen = (x - method.generator(z_tilde)).pow(2).sum(1).mean() / 0.5
        gen_s = (x_tilde - method.generator(z)).pow(2).sum(1).mean() / 0.5
        mu, log_var = method.encoder(x)
        inf = (0.5 * (log_var + (z_tilde - mu).pow(2) / log_var.exp())).sum(1).mean()
    logs = method._teach(x, z, method.generator(z), x_tilde, z_tilde)
    torch.testing.assert_close(logs["generator_data"], gen)
    torch.testing.assert_close(logs["generator_sample"], gen_s)
    torch.testing.assert_close(logs["inference_data"], inf)


@pytest.mark.parametrize("order", ["supplement", "code"])
def test_the_applied_gradients_are_those_of_eqs_2_to_4(order):
    """A whole `train_step`, restated: alpha steps with the gradient of mean E(x) - mean
    E(x_tilde) (Eq. 2), theta with that of |x - g(z_tilde)|^2 / 2s^2 + w_s |x_tilde - g(z)|^2 / 2s^2
    (Eq. 3), phi with that of -log q(z_tilde | x) - w_q log q(z | x_tilde) (Eq. 4), each at the
    chains that ran (in the code's order the EBM sees the negatives regenerated after teaching)."""
    sigma, w_s, w_q = 0.5, 2.0, 0.5
    method = dual(
        order=order,
        sigma=sigma,
        sampling_weight=w_s,
        inference_sample_weight=w_q,
        weight_decay=0.0,
    )
    energy, generator, encoder = (
        copy.deepcopy(net) for net in (method.energy_net, method.generator, method.encoder)
    )
    draws = recorded_calls(method, "prior")
    x_chains = recorded_calls(method, "revise_x")
    z_chains = recorded_calls(method, "revise_z")
    applied = applied_gradients(method)
    x = torch.randn(16, 2)
    method.train_step(x, 0)

    z, x_tilde, z_tilde = draws[0][1], x_chains[0][1][0], z_chains[0][1]
    negatives = x_chains[-1][1][0]  # the code's order regenerates them after teaching
    assert len(x_chains) == (2 if order == "code" else 1)
    e_loss = energy(x).mean() - energy(negatives).mean()
    assert_gradients_equal(applied["energy"], gradients(e_loss, energy.parameters()))
    g_loss = (x - generator(z_tilde)).pow(2).sum(1).mean() / (2 * sigma**2) + w_s * (
        x_tilde - generator(z)
    ).pow(2).sum(1).mean() / (2 * sigma**2)
    assert_gradients_equal(applied["generator"], gradients(g_loss, generator.parameters()))

    def nll(z_, x_):
        mu, log_var = encoder(x_)
        return (0.5 * (log_var + (z_ - mu).pow(2) / log_var.exp())).sum(1).mean()

    q_loss = nll(z_tilde, x) + w_q * nll(z, x_tilde)
    assert_gradients_equal(applied["inference"], gradients(q_loss, encoder.parameters()))


def test_the_x_chain_starts_from_the_generator_draw_that_eq_3_fits():
    """One forward of g per step, in training mode: with BatchNorm in g, the chain's start is the
    batch-statistics g(z) whose residual |x_tilde - g(z)|^2 the generator is taught with (not an
    eval-mode draw with running statistics)."""
    method = dual(generator={"kind": "mlp", "hidden": 32, "depth": 2, "batch_norm": True})
    generator = copy.deepcopy(method.generator)
    draws = recorded_calls(method, "prior")
    x_chains = recorded_calls(method, "revise_x")
    logs = method.train_step(torch.randn(16, 2), 0)
    (x_start,), (x_tilde, _) = x_chains[0]
    with torch.no_grad():
        x_hat = generator(draws[0][1])  # training mode, batch statistics
    torch.testing.assert_close(x_start, x_hat)
    expected = (x_tilde - x_hat).pow(2).sum(1).mean() / (2 * method.cfg.sigma**2)
    torch.testing.assert_close(logs["generator_sample"], expected)


@pytest.mark.parametrize(("order", "energy_chains"), [("supplement", 1), ("code", 2)])
def test_code_order_regenerates_the_negatives_after_teaching(order, energy_chains):
    method = dual(order=order)
    calls = []
    revise_x = method.revise_x
    method.revise_x = lambda x, **kw: calls.append("x") or revise_x(x, **kw)
    logs = method.train_step(torch.randn(16, 2), 0)
    assert calls.count("x") == energy_chains and torch.isfinite(logs["loss"])


def test_tempered_energy_loss_divides_by_the_chain_temperature():
    """With T = 0.01^2 / (2 * 0.125), an SGD step of lr T on the tempered loss equals a step of
    lr 1 on the plain loss."""
    temperature = 0.01**2 / 0.25
    tempered = dual(x_noise=0.01, x_step_size=0.125, temper_energy_loss=True)
    plain = dual(x_noise=0.01, x_step_size=0.125)
    plain.energy_net.load_state_dict(tempered.energy_net.state_dict())
    tempered.optimizers["energy"] = torch.optim.SGD(
        tempered.energy_net.parameters(), lr=temperature
    )
    plain.optimizers["energy"] = torch.optim.SGD(plain.energy_net.parameters(), lr=1.0)
    before = snapshot(plain.energy_net)
    x, x_tilde = torch.randn(16, 2), torch.randn(16, 2)
    tempered._learn_energy(x, x_tilde)
    plain._learn_energy(x, x_tilde)
    assert moved(plain.energy_net, before)
    for p, q in zip(tempered.energy_net.parameters(), plain.energy_net.parameters(), strict=True):
        torch.testing.assert_close(p, q)


def test_inpainting_keeps_observed_pixels_and_returns_three_recoveries():
    method = dual(
        (1, 8, 8),
        energy_net={"kind": "conv", "width": 4},
        encoder={"kind": "conv", "width": 4},
        generator={"kind": "dcgan", "width": 4},
    )
    x = torch.rand(3, 1, 8, 8) * 2 - 1
    mask = torch.ones(3, 1, 8, 8)
    mask[:, :, 2:6, 2:6] = 0
    out = method.inpaint(x, mask)
    assert list(out) == ["inference", "z_langevin", "x_langevin"]
    for image in out.values():
        assert torch.equal(image * mask, x * mask) and image.abs().max() <= 1
    assert not torch.equal(out["inference"], out["x_langevin"])


@pytest.mark.parametrize(
    "bad",
    [
        {"order": "paper"},
        {"sigma": 0.0},
        {"x_steps": 0},
        {"sigma": -0.3},
        {"x_step_size": -0.1},
        {"x_step_size": 0.0},
        {"z_step_size": 0.0},
        {"z_step_size": -0.5},
        {"z_steps": -1},
        {"sample_steps": -1},
        {"x_noise": -0.5},
        {"x_global_moves": -1},
    ],
)
def test_bad_options_are_refused(bad):
    with pytest.raises(EbmlabError):
        dual(**bad)


@pytest.mark.parametrize(
    ("data", "preset", "shape"),
    [("8gaussians", "dualmcmc_tabular", (2,)), ("digits", "dualmcmc_image", (1, 8, 8))],
)
def test_presets_build_and_take_a_step(data, preset, shape):
    kind = "toy2d" if len(shape) == 1 else "image"
    method, stem = preset_method("dualmcmc", data, kind, shape)
    assert stem == preset
    x = torch.rand(16, *shape) * 2 - 1
    assert torch.isfinite(method.train_step(x, 0)["loss"])
    assert method.sample(4).shape == (4, *shape)


@pytest.mark.slow
def test_cifar10_preset_trains_a_step_on_fixture_images(tmp_path):
    overrides = {"method": {"x_steps": 2, "z_steps": 2, "sample_steps": 2}}
    method, data, config = fixture_image_run(tmp_path, "dualmcmc", "cifar10", 40, 32, overrides)
    assert (method.cfg.order, method.cfg.sampling_weight, config.data.batch_size) == (
        "code",
        50.0,
        100,
    )
    assert torch.isfinite(method.train_step(data.train[:4], 0)["loss"])
    assert method.sample(2).shape == (2, 3, 32, 32)


def test_standard_masks_hide_the_supplements_fractions():
    from ebmlab.tasks import standard_masks

    masks = standard_masks(200, 64)
    hidden = {name: 1 - float(mask.mean()) for name, mask in masks.items()}
    assert hidden["M20"] == pytest.approx(400 / 4096) and hidden["M40"] == pytest.approx(
        1600 / 4096
    )
    for k in (20, 30, 40):
        assert hidden[f"R{k}"] == pytest.approx(k / 100, abs=1 / 4096)
    assert standard_masks(2, 28)["M30"].shape == (2, 1, 28, 28)


@pytest.mark.parametrize("size", [28, 64])
def test_random_masks_are_blocks_covering_exactly_their_fraction(size):
    """R20/R30/R40: several blocks (side 8 px on 64, scaled) per image, not single pixels; each
    image hides round(k% of its pixels), in its own places, the same for a seed."""
    from scipy import ndimage

    from ebmlab.tasks import standard_masks

    masks = standard_masks(20, size, seed=3)
    side = round(size * 8 / 64)
    for k in (20, 30, 40):
        mask = masks[f"R{k}"][:, 0]
        hidden = (mask == 0).flatten(1).sum(1)
        assert hidden.tolist() == [round(k / 100 * size * size)] * 20
        for image in mask:
            _, regions = ndimage.label((image == 0).numpy())
            assert 2 <= regions <= hidden[0] / (side * side / 2)  # blocks, a few of them
        assert not torch.equal(mask[0], mask[1])
    assert torch.equal(standard_masks(20, size, seed=3)["R30"], masks["R30"])


def test_inpainting_scores_are_per_stage_psnr_and_ssim_on_the_whole_image():
    from types import SimpleNamespace

    from ebmlab.tasks import inpainting_scores, standard_masks

    x = torch.rand(4, 1, 16, 16) * 2 - 1
    perfect = SimpleNamespace(inpaint=lambda v, m: {"exact": v, "blank": v * m - (1 - m)})
    table = inpainting_scores(perfect, x, standard_masks(4, 16))
    assert table["M20"]["exact"]["psnr"] == float("inf") and table["R40"]["exact"]["ssim"] == 1
    assert table["M40"]["blank"]["psnr"] < table["M20"]["blank"]["psnr"] < 100


class HalfSquare(nn.Module):
    """E(x) = a |x|^2 / 2: the energy of N(0, I / a)."""

    def __init__(self, a: float):
        super().__init__()
        self.a = nn.Parameter(torch.tensor(a))

    def forward(self, x):
        return 0.5 * self.a * x.pow(2).sum(1)


@pytest.mark.parametrize("sampler", ["langevin", "mala"])
def test_on_tables_the_x_chain_reaches_the_energys_modes_wherever_the_generator_is(sampler):
    """T^x from generator draws that cover one side only, N(0.5, 0.1^2), on E = 8 |x|^2 / 2
    with 20 steps of 1e-4: the paper's Langevin barely moves them; the tabular chain (MALA
    with 5 moves from the data batch's kernel density, step adapted) ends in N(0, 1/8), and
    logs its step and rates."""
    a, n = 8.0, 4000
    options = {"x_steps": 20, "x_step_size": 1e-4}
    if sampler == "mala":
        options |= {"x_sampler": "mala", "x_target_accept": 0.6, "x_global_moves": 5}
    method = dual((1,), z_dim=1, **options)
    method.energy_net = HalfSquare(a)
    data = torch.randn(n, 1) / a**0.5
    start = 0.5 + 0.1 * torch.randn(n, 1)
    x_tilde, info = method.revise_x(start, reference=data, adapt=True)
    if sampler == "langevin":
        assert float(x_tilde.mean()) > 0.45
        return
    assert float(x_tilde.mean()) == pytest.approx(0.0, abs=0.03)
    assert float(x_tilde.var()) == pytest.approx(1 / a, rel=0.08)
    assert float(method.chain.step_size) != 1e-4  # adapted after the chain
    assert float(info["global_accept_rate"]) > 0 and 0 < float(info["accept_rate"]) <= 1
    logs = method.train_step(data[:64], 0)
    assert {"step_size", "accept_rate", "global_accept_rate"} <= set(logs)


def test_the_tabular_preset_runs_the_adapted_mala_chain_with_global_moves():
    method, stem = preset_method("dualmcmc", "points.npy", "tabular", (2,))
    assert stem == "dualmcmc_tabular"
    assert method.cfg.x_sampler == "mala" and method.cfg.x_global_moves == 5
    assert method.chain.adapter is not None and method.chain.global_moves == 5


def test_x_langevin_inpainting_restores_the_observed_pixels_after_every_step():
    """The third recovery: T^x on the EBM with the observed pixels put back after each step,
    restated for a coupled energy E = (sum of pixels)^2 / 2, whose gradient at every pixel is
    the sum of all of them (so the observed ones steer the rest)."""
    method = dual((1, 2, 2), x_noise=0.0, x_steps=3, x_step_size=0.05)
    method.energy = lambda v: 0.5 * v.flatten(1).sum(1).pow(2)
    x = torch.tensor([[0.9, -0.2], [0.4, 0.1]]).view(1, 1, 2, 2).repeat(2, 1, 1, 1)
    mask = torch.tensor([[1.0, 0.0], [1.0, 0.0]]).view(1, 1, 2, 2).expand_as(x)
    out = method.inpaint(x, mask)
    v = out["z_langevin"]
    for _ in range(3):
        v = (v - 0.05 * v.flatten(1).sum(1).view(-1, 1, 1, 1)).clamp(-1, 1)
        v = x * mask + (1 - mask) * v
    torch.testing.assert_close(out["x_langevin"], v)


def test_encode_is_the_posterior_mean():
    method = dual()
    x = torch.randn(6, 2)
    with torch.no_grad():
        method.encoder.eval()
        expected = method.encoder(x)[0]
    torch.testing.assert_close(method.encode(x), expected)
    assert not method.encode(x).requires_grad


def test_one_latent_per_example_and_the_step_adapted_only_in_training():
    method = dual(x_sampler="mala", x_target_accept=0.6, x_step_size=0.05)
    draws = recorded_calls(method, "prior")
    first = method.chain.step_size
    method.revise_x(torch.randn(8, 2))
    assert method.chain.step_size == first
    logs = method.train_step(torch.randn(16, 2), 0)
    assert draws[0][0] == (16,)
    assert float(logs["step_size"]) == pytest.approx(first)
    assert method.chain.step_size != pytest.approx(first, rel=0.1)


@pytest.mark.parametrize(("sampler", "name"), [("langevin", "Langevin"), ("mala", "MALA")])
def test_the_report_names_the_x_chain(sampler, name):
    procedure = dual(x_sampler=sampler).sampling_procedure()
    assert f" {name} steps" in procedure


def test_defaults_are_the_supplements_and_the_authors_code():
    cfg = get_method("dualmcmc").Config()
    assert (cfg.z_dim, cfg.sigma, cfg.x_steps, cfg.x_step_size, cfg.x_noise) == (
        128,
        0.3,
        30,
        0.125,
        None,
    )
    assert cfg.energy_net == {"kind": "auto", "spectral_norm": True}
    assert (cfg.z_steps, cfg.z_step_size) == (10, 0.005)
    assert (cfg.lr_energy, cfg.lr_generator, cfg.lr_inference) == (1e-4, 3e-4, 1e-4)
    assert (cfg.betas, cfg.weight_decay) == ((0.0, 0.9), 5e-4)
    assert (cfg.sampling_weight, cfg.inference_sample_weight) == (1.0, 1.0)  # the supplement's


def test_the_fewest_steps_allowed():
    """One x step, no z steps, and a sampler of zero steps (the generator's draw) are valid."""
    method = dual(x_steps=1, z_steps=0, sample_steps=0)
    assert "a generator draw g(z), then 0 Langevin steps" in method.sampling_procedure()
    assert "then 1 Langevin steps" in dual(x_steps=1).sampling_procedure()


def test_sample_runs_sample_steps_not_the_training_chains():
    """`sample` refines g(z) by `sample_steps` steps: zero leaves the generator's draw as it is,
    although the training chain T^x runs one."""
    method = dual(x_steps=1, z_steps=0, sample_steps=0)
    torch.manual_seed(0)
    drawn = method.sample(8)
    torch.manual_seed(0)
    with torch.no_grad():
        generated = method._generate(method.prior(8))
    assert torch.equal(drawn, generated)
    method.cfg = dataclasses.replace(method.cfg, sample_steps=1)
    torch.manual_seed(0)
    assert not torch.equal(method.sample(8), generated)


def test_generator_draws_carry_no_graph():
    assert not dual().decode(torch.randn(4, 2)).requires_grad


def test_the_ebm_loss_is_the_energy_difference_whatever_their_ratio():
    """Eq. 2 with a linear energy E(x) = x1 + x2 + 5: data near (-3, -3) at energy -1 and the
    revised samples near the generator's draws: the logged loss is mean E(x) - mean E(x~), and
    its gradient in the offset is 1 - 1 = 0."""
    method = dual()
    use_offset_linear_energy(method)
    applied = applied_gradients(method)
    revised = recorded_calls(method, "revise_x")
    logs = method.train_step(torch.full((16, 2), -3.0), 0)
    x_tilde = revised[0][1][0]
    expected = -1.0 - (x_tilde.sum(1) + 5).mean()
    assert float(logs["loss"]) == pytest.approx(float(expected), rel=1e-5)
    assert float(applied["energy"][1]) == pytest.approx(0.0, abs=1e-6)
