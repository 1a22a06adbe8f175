"""IGEBM's equations, restated here: the update is the gradient of Eq. 2 plus alpha's penalty at
the chain that ran, and the sampler is IGEBM's on [0, 1] pixels carried to [-1, 1]."""

import copy

import pytest
import torch

from ebmlab.errors import EbmlabError
from ebmlab.methods.cd import CD, Config
from ebmlab.samplers import energy_grad
from tests.helpers import (
    applied_gradients,
    assert_gradients_equal,
    gradients,
    preset_method,
    recorded_calls,
    tiny_method,
)

STEP, CLIP, ALPHA = 0.5, 0.03, 0.1


def test_the_applied_gradient_is_eq_2_plus_the_penalty_at_the_restated_chain():
    """x^- = K steps x - lambda clip(grad E), stop-gradient (l. 5-7); theta's step is the
    gradient of mean E(x+) - mean E(x-) + alpha (mean E(x+)^2 + mean E(x-)^2) (l. 8), and x^-
    is written back to the slots it came from (l. 10)."""
    method = tiny_method(
        "cd",
        noise=0.0,
        step_size=STEP,
        langevin_grad_clip=CLIP,
        alpha=ALPHA,
        reinit_prob=0.0,
        langevin_steps=3,
    )
    before = copy.deepcopy(method.energy_net)
    starts = recorded_calls(method.buffer, "sample")
    writes = recorded_calls(method.buffer, "update")
    applied = applied_gradients(method)
    x = torch.randn(16, 2)
    logs = method.train_step(x, 0)

    (x0, idx, _), ((written_idx, x_written), _) = starts[0][1], writes[0]
    assert x0.shape == x.shape  # one chain per data example
    x_neg = x0
    for _ in range(3):
        grad = energy_grad(before, x_neg)[1]
        x_neg = (x_neg - STEP * grad.clamp(-CLIP, CLIP)).detach()
    assert (grad.abs() > CLIP).any() and (grad.abs() < CLIP).any()  # both sides of the clip
    assert torch.equal(written_idx, idx) and torch.allclose(x_written, x_neg, atol=1e-6)
    e_pos, e_neg = before(x), before(x_neg)
    loss = e_pos.mean() - e_neg.mean() + ALPHA * (e_pos.pow(2).mean() + e_neg.pow(2).mean())
    assert_gradients_equal(applied["energy"], gradients(loss, before.parameters()))
    logged = {"loss": loss, "loss_cd": e_pos.mean() - e_neg.mean(), "e_neg": e_neg.mean()}
    for name, value in logged.items():
        torch.testing.assert_close(logs[name], value.detach(), rtol=1e-5, atol=1e-6)


def igebm_move(grad_01: torch.Tensor) -> torch.Tensor:
    """IGEBM's noiseless move on [0, 1] pixels: -10 clip(grad_x E, 0.01)."""
    return -10 * grad_01.clamp(-0.01, 0.01)


@pytest.mark.parametrize("source", ["config", "image preset"])
@pytest.mark.parametrize("slope", [1e-3, 1.0])  # unclipped and clipped gradients
def test_the_image_sampler_is_igebms_in_model_units(source, slope):
    """On [-1, 1] pixels y = 2u - 1 the energy E(y) = E_01((y + 1) / 2) has half the gradient,
    and a move in u is twice as long in y: one step must move y by 2 x IGEBM's move in u."""
    shape = (1, 2, 2)
    if source == "config":
        method = CD(Config(noise=0.0, energy_net={"kind": "mlp", "hidden": 8}), shape)
    else:
        method, _ = preset_method("cd", "digits", "image", shape, {"method": {"noise": 0.0}})
    weights = slope * torch.tensor([1.0, -1.0, 0.5, -0.25]).view(1, *shape)

    def energy(y):  # E_01(u) = w . u at u = (y + 1) / 2
        return ((y + 1) / 2 * weights).flatten(1).sum(1)

    y0 = torch.zeros(3, *shape)
    y1 = method.chain(energy, y0, 1)[0]
    expected = 2 * igebm_move(weights.expand_as(y0))
    assert torch.allclose(y1 - y0, expected, rtol=1e-5, atol=1e-9)


def test_a_training_chain_adapts_the_step_toward_the_target_acceptance():
    """l. 5-7 with `target_accept`: the step the next chain takes follows this chain's
    acceptance (dual averaging): it grows while chains accept more than the target, shrinks
    while they accept less, and is logged as the step each chain took."""
    method = tiny_method("cd", sampler="mala", step_size=0.05, target_accept=0.6, langevin_steps=5)
    first = method.chain.step_size
    logs = method.train_step(0.01 * torch.randn(32, 2), 0)
    assert float(logs["step_size"]) == pytest.approx(first)
    assert method.chain.step_size != pytest.approx(first, rel=0.1)
    assert (method.chain.step_size > first) == (float(logs["accept_rate"]) > 0.6)


def test_defaults_are_igebms_in_model_units():
    """IGEBM (Du & Mordatch 2019, App. A): spectral norm, K = 60, step 10 and clip 0.01 and
    noise 0.005 on [0, 1] pixels (40, 0.005, 0.01 here), alpha 1, a 10,000-sample buffer
    re-initialised at 5% from U[-1, 1], Adam 3e-4 with betas (0, 0.999)."""
    cfg = Config()
    assert cfg.energy_net == {"kind": "auto", "spectral_norm": True}
    assert (cfg.langevin_steps, cfg.step_size, cfg.langevin_grad_clip, cfg.noise) == (
        60,
        40.0,
        0.005,
        0.01,
    )
    assert (cfg.alpha, cfg.buffer_size, cfg.reinit_prob) == (1.0, 10_000, 0.05)
    assert (cfg.init_low, cfg.init_high, cfg.sample_steps) == (-1.0, 1.0, 200)
    assert (cfg.lr, cfg.betas) == (3e-4, (0.0, 0.999))


@pytest.mark.parametrize(
    ("options", "accepted"),
    [
        ({"langevin_steps": 0}, True),
        ({"sample_steps": 0}, True),
        ({"langevin_steps": -1}, False),
        ({"sample_steps": -1}, False),
        ({"noise": -0.01}, False),
        ({"global_moves": -1}, False),
    ],
)
def test_chain_lengths_from_zero_up(options, accepted):
    if accepted:
        Config(**options)
    else:
        with pytest.raises(EbmlabError):
            Config(**options)
