"""BiDVL: the importance-weighted VAE loss, the cycle term, what each level trains, inference."""

import copy
import math
from types import SimpleNamespace

import pytest
import torch
from torch.distributions import Normal, kl_divergence
from torch.func import functional_call

from ebmlab.errors import EbmlabError
from ebmlab.methods import get_method
from ebmlab.methods.bidvl import gaussian_kl_to_prior
from tests.helpers import (
    applied_gradients,
    assert_gradients_equal,
    fixture_image_run,
    gradients,
    preset_method,
    tiny_method,
)


def bidvl(shape=(2,), **extra):
    return tiny_method("bidvl", shape, **extra)


def fixed_prior(method, h):
    """Make every prior draw return h, so a test can recompute what a step saw."""
    method.prior = lambda n: h[:n]
    return method


def snapshot(module):
    return [p.detach().clone() for p in module.parameters()]


def moved(module, before):
    return [not torch.equal(p, b) for p, b in zip(module.parameters(), before, strict=True)]


# ---------------------------------------------------------------- the lower-level terms


def test_kl_to_prior_matches_torch_distributions():
    mu, log_var = torch.randn(5, 3), torch.randn(5, 3)
    expected = kl_divergence(Normal(mu, (0.5 * log_var).exp()), Normal(0.0, 1.0)).sum(1)
    torch.testing.assert_close(gaussian_kl_to_prior(mu, log_var), expected)


@pytest.mark.parametrize("basic_ratio", [1.0, 0.05])
def test_weighted_vae_loss_is_r_times_the_plain_vae_loss(basic_ratio):
    """At r' = 1 the importance-weighted loss is the VAE's (Gaussian decoder of variance 1/2):
    mean over examples of |G(mu + sigma eps) - x|^2 + KL(q(h|x) || N(0, I)); r' scales it."""
    method = bidvl(basic_ratio=basic_ratio)
    x = torch.randn(32, 2)
    ratio = method.importance_ratio(x)
    torch.manual_seed(0)
    parts = method.weighted_vae_loss(x, ratio)
    torch.manual_seed(0)
    mu, log_var = method.encoder(x)
    h = mu + (0.5 * log_var).exp() * torch.randn(mu.shape)
    plain = ((method.generator(h) - x).pow(2).sum(1) + gaussian_kl_to_prior(mu, log_var)).mean()
    torch.testing.assert_close(parts["loss"], basic_ratio * plain)
    torch.testing.assert_close(parts["recon"] + parts["kl_prior"], plain)


def test_importance_ratio_bias_is_the_sigmoid_of_eq_15():
    method = bidvl(basic_ratio=0.1, ratio_bias=True)
    x = torch.randn(16, 2)
    e = method.energy(x).detach()
    torch.testing.assert_close(method.importance_ratio(x), 0.1 * torch.sigmoid(e.mean() - e))
    assert torch.equal(bidvl(basic_ratio=0.1).importance_ratio(x), torch.full((16,), 0.1))


def test_cycle_loss_is_the_gaussian_negative_log_likelihood_or_the_codes_squared_error():
    method = bidvl()
    h, v = torch.randn(8, 2), torch.randn(8, 2)
    mu, log_var = method.encoder(v)
    nll = -Normal(mu, (0.5 * log_var).exp()).log_prob(h).sum(1).mean()
    torch.testing.assert_close(method.cycle_loss(h, v), nll)
    squared = bidvl(cycle_loss="squared_error")
    squared.encoder.load_state_dict(method.encoder.state_dict())
    torch.testing.assert_close(squared.cycle_loss(h, v), (mu - h).pow(2).sum(1).mean())


def test_cycle_nll_holds_for_log_variances_beyond_minus_log_two_pi():
    """The Gaussian NLL's constant log(2 pi) is added, whatever the log-variance (an unbounded
    encoder, scaled to give log-variances far from zero)."""
    method = bidvl(bounded_log_var=False)
    with torch.no_grad():
        for p in method.encoder.parameters():
            p.mul_(3.0)
    h, v = torch.randn(8, 2), torch.randn(8, 2)
    mu, log_var = method.encoder(v)
    assert log_var.min() < -2 * math.log(2 * math.pi) and log_var.max() > 0
    nll = -Normal(mu, (0.5 * log_var).exp()).log_prob(h).sum(1).mean()
    assert torch.isfinite(nll)
    torch.testing.assert_close(method.cycle_loss(h, v), nll)


def test_softplus_energy_output_is_the_softplus_of_the_net():
    method = bidvl(energy_output="softplus")
    x = torch.randn(16, 2)
    expected = torch.nn.functional.softplus(method.energy_net(x))
    torch.testing.assert_close(method.energy(x), expected)
    linear = bidvl()
    torch.testing.assert_close(linear.energy(x), linear.energy_net(x))


def test_the_ratio_and_inference_carry_no_graph():
    method = bidvl(ratio_bias=True)
    x = torch.randn(8, 2)
    assert not method.importance_ratio(x).requires_grad
    assert not method.encode(x).requires_grad
    assert not method.decode(torch.randn(8, 2)).requires_grad


def test_defaults_are_the_papers_and_the_authors_dcgan_settings():
    cfg = get_method("bidvl").Config()
    assert (cfg.z_dim, cfg.basic_ratio, cfg.lower_steps) == (100, 0.05, 1)
    assert cfg.energy_net == {"kind": "auto", "spectral_norm": True}
    assert (cfg.lr_energy, cfg.lr_lower, cfg.betas) == (1e-4, 3e-4, (0.0, 0.9))
    assert (cfg.sample_langevin_steps, cfg.sample_step_size, cfg.sample_noise) == (0, 1e-3, None)


def test_bounded_log_variance_keeps_the_encoder_variance_below_one():
    mu, log_var = bidvl().encoder(100 * torch.randn(64, 2))
    assert (log_var <= 0).all() and torch.isfinite(mu).all()


# ---------------------------------------------------------------- what each level trains


@pytest.mark.parametrize("terms", ["offset", "not_offset", "none"])
def test_lower_step_trains_encoder_and_generator_never_the_energy(terms):
    method = bidvl(opposite_terms=terms)
    energy, encoder, generator = (snapshot(getattr(method, n)) for n in method.ema_modules)
    logs = method._lower_step(torch.randn(32, 2))
    assert not any(moved(method.energy_net, energy))
    assert all(moved(method.generator, generator))
    assert any(moved(method.encoder, encoder))
    assert (logs["cycle"] == 0) == (terms == "none")


@pytest.mark.parametrize(
    ("terms", "encoder_gets_gradient"), [("offset", False), ("not_offset", True)]
)
def test_cycle_term_reaches_the_encoder_only_when_not_offset(terms, encoder_gets_gradient):
    """Eq. 13 (offset): the cycle KL trains G only; Eq. 11 (not offset): G and the encoder."""
    method = bidvl(opposite_terms=terms)
    h = torch.randn(16, 2)
    cycle = method._cycle_term(h, method.generator(h))
    params = [*method.encoder.parameters(), *method.generator.parameters()]
    grads = torch.autograd.grad(cycle, params, allow_unused=True)
    n_enc = len(list(method.encoder.parameters()))
    reached = [g is not None and bool(g.abs().sum() > 0) for g in grads]
    assert any(reached[:n_enc]) == encoder_gets_gradient
    assert all(reached[n_enc:])
    assert all(p.requires_grad for p in params)


def test_the_lower_steps_gradient_is_that_of_eq_13_restated():
    """(w1, w2) step with the gradient of r' mean(|G(mu + s eps) - v|^2 + KL(q_w1(h|v) || p))
    + mean E(G(h')) + mean -log q(h' | G(h')), the last with w1 frozen (Eq. 13, offset), each
    term written out here from the paper rather than from the method's own functions."""
    h = torch.randn(32, 2)
    method = fixed_prior(bidvl(basic_ratio=0.2), h)
    encoder, generator = copy.deepcopy(method.encoder), copy.deepcopy(method.generator)
    applied = applied_gradients(method)
    x = torch.randn(32, 2)
    torch.manual_seed(1)
    logs = method._lower_step(x)
    torch.manual_seed(1)
    eps = torch.randn(32, 2)

    mu, log_var = encoder(x)
    recon = (generator(mu + (0.5 * log_var).exp() * eps) - x).pow(2).sum(1)
    kl = 0.5 * (mu.pow(2) + log_var.exp() - log_var - 1).sum(1)
    v_gen = generator(h)
    frozen = {k: p.detach() for k, p in encoder.named_parameters()}
    mu_gen, log_var_gen = functional_call(encoder, frozen, (v_gen,))
    cycle = 0.5 * ((h - mu_gen).pow(2) / log_var_gen.exp() + log_var_gen + math.log(2 * math.pi))
    loss = (0.2 * (recon + kl)).mean() + method.energy(v_gen).mean() + cycle.sum(1).mean()
    torch.testing.assert_close(logs["loss_lower"], loss)
    params = [*encoder.parameters(), *generator.parameters()]
    assert_gradients_equal(applied["lower"], gradients(loss, params))


@pytest.mark.parametrize("terms", ["offset", "none"])
@pytest.mark.parametrize("upper_loss", ["difference", "hinge"])
def test_upper_step_is_eq_14_or_the_hinge_of_eq_23_and_trains_only_the_energy(upper_loss, terms):
    method = fixed_prior(bidvl(upper_loss=upper_loss, opposite_terms=terms), torch.randn(32, 2))
    x = torch.randn(32, 2)
    with torch.no_grad():
        e_data, e_gen = method.energy(x), method.energy(method.generator(method.prior(32)))
    if upper_loss == "hinge":
        expected = torch.relu(1 + e_data).mean() + torch.relu(1 - e_gen).mean()
    else:
        expected = e_data.mean() - e_gen.mean()
    energy, encoder, generator = (snapshot(getattr(method, n)) for n in method.ema_modules)
    logs = method._upper_step(x)
    torch.testing.assert_close(logs["loss_upper"], expected)
    energy_moved = moved(method.energy_net, energy)
    assert all(energy_moved[:-1])
    if upper_loss == "difference":  # the loss ignores a constant shift: the last bias stays
        assert not energy_moved[-1]
    assert not any(moved(method.encoder, encoder)) and not any(moved(method.generator, generator))


def test_not_offset_upper_step_pulls_the_encoder_to_the_prior_on_generated_data():
    """Sec. 4.4: the upper level also moves w1 by KL(q(h|v') || p(h)), v' generated."""
    method = fixed_prior(bidvl(opposite_terms="not_offset"), torch.randn(32, 2))
    with torch.no_grad():
        v_gen = method.generator(method.prior(32))
        expected = gaussian_kl_to_prior(*method.encoder(v_gen)).mean()
    encoder, generator = snapshot(method.encoder), snapshot(method.generator)
    logs = method._upper_step(torch.randn(32, 2))
    torch.testing.assert_close(logs["encoder_kl_generated"], expected)
    assert all(moved(method.encoder, encoder)) and not any(moved(method.generator, generator))


@pytest.mark.parametrize(("order", "calls"), [("lower_first", "LLU"), ("upper_first", "ULL")])
def test_step_order_and_number_of_lower_steps(order, calls):
    method = bidvl(order=order, lower_steps=2)
    seen = []
    lower, upper = method._lower_step, method._upper_step
    method._lower_step = lambda x: seen.append("L") or lower(x)
    method._upper_step = lambda x: seen.append("U") or upper(x)
    method.train_step(torch.randn(16, 2), 0)
    assert "".join(seen) == calls


def test_a_short_run_separates_data_from_noise_and_learns_to_reconstruct():
    torch.manual_seed(0)
    method = bidvl(lr_energy=1e-3, basic_ratio=1.0)
    centres = torch.tensor([[2.0, 0.0], [-2.0, 0.0]])
    data = lambda n: centres[torch.randint(0, 2, (n,))] + 0.1 * torch.randn(n, 2)  # noqa: E731
    x = data(256)
    before = (method.reconstruct(x) - x).norm(dim=1).mean()
    for step in range(400):
        method.train_step(data(128), step)
    after = (method.reconstruct(x) - x).norm(dim=1).mean()
    noise = 6 * torch.rand(256, 2) - 3
    with torch.no_grad():
        gap = method.energy(noise).mean() - method.energy(x).mean()
    assert after < 0.5 * before and gap > 0.5


# ---------------------------------------------------------------- inference and sampling


def test_reconstruct_is_decode_of_the_posterior_mean_and_leaves_batch_norm_alone():
    method = bidvl(
        shape=(1, 8, 8),
        energy_net={"kind": "conv", "width": 4, "spectral_norm": True},
        encoder={"kind": "conv", "width": 4, "batch_norm": True},
        generator={"kind": "dcgan", "width": 4},
    )
    x = torch.rand(6, 1, 8, 8) * 2 - 1
    buffers = [b.clone() for b in method.buffers()]
    z = method.encode(x)
    assert z.shape == (6, 2)
    torch.testing.assert_close(method.reconstruct(x), method.decode(z))
    assert all(torch.equal(b, c) for b, c in zip(method.buffers(), buffers, strict=True))
    assert method.training


def test_langevin_refinement_of_samples_lowers_their_energy_inside_the_box():
    method = bidvl(
        shape=(1, 8, 8),
        energy_net={"kind": "conv", "width": 4},
        encoder={"kind": "conv", "width": 4},
        generator={"kind": "dcgan", "width": 4},
        sample_langevin_steps=30,
        sample_step_size=0.05,
        sample_noise=0.0,
    )
    torch.manual_seed(0)
    plain = method.decode(method.prior(64))
    torch.manual_seed(0)
    refined = method.sample(64)
    with torch.no_grad():
        assert method.energy(refined).mean() < method.energy(plain).mean()
    assert refined.abs().max() <= 1.0
    assert "30 Langevin steps" in method.sampling_procedure()
    assert "no MCMC" in bidvl().sampling_procedure()


@pytest.mark.parametrize(
    "bad",
    [
        {"opposite_terms": "both"},
        {"upper_loss": "wgan"},
        {"basic_ratio": 0.0},
        {"basic_ratio": -0.05},
        {"sample_langevin_steps": -1},
        {"sample_noise": -1.0},
        {"lower_steps": 0},
        {"encoder": {"kind": "mlp", "bounded_log_var": False}},
    ],
)
def test_bad_options_are_refused(bad):
    with pytest.raises(EbmlabError):
        bidvl(**bad)


# ---------------------------------------------------------------- evaluation and presets


def test_evaluate_reports_the_reconstruction_rmse_in_pixel_units():
    from ebmlab.metrics import reconstruction_rmse

    x = torch.rand(20, 1, 8, 8) * 2 - 1
    shifted = SimpleNamespace(reconstruct=lambda v: (v + 0.2).clamp(-1, 1))
    expected = ((((x + 0.2).clamp(-1, 1) - x) / 2).pow(2).flatten(1).mean(1).sqrt()).mean()
    assert math.isclose(reconstruction_rmse(shifted, x, "image"), float(expected), rel_tol=1e-5)
    identity = SimpleNamespace(reconstruct=lambda v: v)
    assert reconstruction_rmse(identity, torch.randn(10, 3), "tabular") == 0.0


def test_a_digits_run_reports_reconstructions_and_how_it_sampled(tmp_path):
    import json

    import ebmlab

    nets = {
        "energy_net": {"kind": "conv", "width": 8, "spectral_norm": True},
        "encoder": {"kind": "conv", "width": 8, "batch_norm": True},
        "generator": {"kind": "dcgan", "width": 8},
        "z_dim": 8,
    }
    run = ebmlab.train(
        "bidvl",
        "digits",
        steps=30,
        out=tmp_path / "run",
        overrides={"method": nets},
        evaluate=False,
        progress=False,
    )
    metrics = ebmlab.evaluate(run, ood=["noise"], n_samples=50)
    assert 0 < metrics["recon_rmse_test"] < 1 and 0 <= metrics["auroc/noise"] <= 1
    assert json.loads((run.path / "eval.json").read_text()) == metrics
    assert (run.path / "recon.png").stat().st_size > 5000
    report = (run.path / "report.md").read_text()
    assert "Samples: one generator pass" in report and "recon.png" in report


@pytest.mark.parametrize(
    ("data", "preset", "shape"),
    [("8gaussians", "bidvl_toy2d", (2,)), ("digits", "bidvl_image", (1, 8, 8))],
)
def test_presets_build_and_take_a_step(data, preset, shape):
    kind = "toy2d" if len(shape) == 1 else "image"
    method, stem = preset_method("bidvl", data, kind, shape)
    assert stem == preset
    x = torch.rand(16, *shape) * 2 - 1
    assert torch.isfinite(method.train_step(x, 0)["loss"])
    assert method.sample(4).shape == (4, *shape)
    assert method.reconstruct(x).shape == x.shape


@pytest.mark.slow
def test_cifar10_preset_trains_a_step_on_fixture_images(tmp_path):
    method, data, config = fixture_image_run(tmp_path, "bidvl", "cifar10", 40, 32)
    assert (method.cfg.energy_output, method.cfg.z_dim, config.data.batch_size) == (
        "softplus",
        100,
        100,
    )
    assert torch.isfinite(method.train_step(data.train[:8], 0)["loss"])
    assert method.sample(2).shape == (2, 3, 32, 32)
    assert method.reconstruct(data.test[:2]).shape == (2, 3, 32, 32)
