"""Short-run MCMC's update, restated: the gradient of Eq. 3 at the K-step chain from noise."""

import copy

import pytest
import torch

from ebmlab.errors import EbmlabError
from ebmlab.methods.shortrun import Config
from ebmlab.samplers import energy_grad
from tests.helpers import (
    applied_gradients,
    assert_gradients_equal,
    gradients,
    recorded_calls,
    tiny_method,
    use_offset_linear_energy,
)

STEP = 0.2


def test_the_applied_gradient_is_eq_3_at_the_restated_chain():
    """l. 4-7: x~_K from K steps x - s grad E; theta's step is the gradient of
    mean E(x+) - mean E(sg x~_K), the descent direction of -Delta theta."""
    method = tiny_method("shortrun", noise=0.0, step_size=STEP, data_noise=0.0, langevin_steps=4)
    before = copy.deepcopy(method.energy_net)
    chains = recorded_calls(method.chain, "forward")
    applied = applied_gradients(method)
    x = torch.randn(16, 2)
    logs = method.train_step(x, 0)

    (_, x0, _), (x_returned, _) = chains[0]
    assert x0.shape == x.shape  # one chain per data example
    x_neg = x0
    for _ in range(4):
        x_neg = x_neg - STEP * energy_grad(before, x_neg)[1]
    assert torch.allclose(x_returned, x_neg, atol=1e-6)
    loss = before(x).mean() - before(x_neg).mean()
    assert_gradients_equal(applied["energy"], gradients(loss, before.parameters()))
    torch.testing.assert_close(logs["loss"], loss.detach(), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("clamp_chains", [True, False])
def test_image_chains_are_clamped_only_when_asked(clamp_chains):
    method = tiny_method(
        "shortrun", shape=(1, 2, 2), noise=0.0, step_size=1.0, clamp_chains=clamp_chains
    )

    def energy(y):  # pushes every pixel up by 0.5 a step
        return -0.5 * y.flatten(1).sum(1)

    y = method.chain(energy, torch.zeros(3, 1, 2, 2), 4)[0]
    assert float(y.max()) == pytest.approx(1.0 if clamp_chains else 2.0)


def test_the_data_batch_gets_gaussian_noise_of_data_noise_std():
    """The authors' code scores x+ + N(0, data_noise^2), not x+ itself."""
    method = tiny_method("shortrun", data_noise=0.5, langevin_steps=1)
    calls = recorded_calls(method.energy_net, "forward")
    method.train_step(torch.zeros(4000, 2), 0)
    (x_pos,), _ = calls[-2]  # E(x+), then E(x-)
    assert float(x_pos.mean()) == pytest.approx(0.0, abs=0.03)
    assert float(x_pos.std()) == pytest.approx(0.5, rel=0.03)


def test_chains_start_from_the_uniform_box_of_the_authors_script():
    """l. 3: x~_0 ~ U[-1, 1]^D by default (seen through a chain of zero steps)."""
    x0 = tiny_method("shortrun", langevin_steps=0).sample(20_000)
    assert float(x0.min()) >= -1.0 and float(x0.max()) <= 1.0
    assert float(x0.min()) < -0.99 and float(x0.max()) > 0.99
    assert float(x0.mean()) == pytest.approx(0.0, abs=0.02)
    shifted = tiny_method("shortrun", langevin_steps=0, init_low=2.0, init_high=3.0).sample(1000)
    assert float(shifted.min()) >= 2.0 and float(shifted.max()) <= 3.0


def test_defaults_are_the_authors_minimal_script():
    cfg = Config()
    assert (cfg.lr, cfg.betas, cfg.langevin_steps, cfg.step_size) == (1e-4, (0.9, 0.999), 100, 1.0)
    assert (cfg.noise, cfg.data_noise, cfg.init_low, cfg.init_high) == (0.01, 0.03, -1.0, 1.0)


def test_training_chains_adapt_the_step_and_sampling_leaves_it():
    method = tiny_method("shortrun", sampler="mala", step_size=0.05, target_accept=0.6)
    first = method.chain.step_size
    method.sample(16)
    assert method.chain.step_size == first
    method.train_step(torch.randn(16, 2), 0)
    assert method.chain.step_size != pytest.approx(first, rel=0.1)


def test_training_chains_take_the_configured_broad_share_of_global_moves(monkeypatch):
    method = tiny_method("shortrun", sampler="mala", global_moves=1, global_broad_share=0.2)
    shares = []

    def move(energy, x, centres, bandwidths, broad_share):
        shares.append(broad_share)
        return x, torch.tensor(1.0)

    monkeypatch.setattr("ebmlab.samplers.chain.independence_move", move)
    method.train_step(torch.randn(16, 2), 0)
    assert shares == [0.2]


@pytest.mark.parametrize("bad", [{"langevin_steps": -1}, {"noise": -0.5}, {"global_moves": -1}])
def test_negative_chain_options_are_refused(bad):
    with pytest.raises(EbmlabError):
        Config(**bad)


def test_the_loss_is_the_energy_difference_whatever_their_ratio():
    """Eq. 3 with a linear energy E(x) = x1 + x2 + 5: data near (-3, -3) at energy -1, chains
    from U[-1, 1] near energy 5: the loss is mean E(x+) - mean E(x-) and its gradient in the
    offset is 1 - 1 = 0 (a ratio of energies or any other combination would not give both)."""
    method = tiny_method("shortrun", noise=0.0, step_size=STEP, data_noise=0.0, langevin_steps=2)
    use_offset_linear_energy(method)
    chains = recorded_calls(method.chain, "forward")
    applied = applied_gradients(method)
    x = torch.full((16, 2), -3.0)
    logs = method.train_step(x, 0)
    (_, (x_neg, _)) = chains[0]
    expected = -1.0 - (x_neg.sum(1) + 5).mean()
    assert float(logs["loss"]) == pytest.approx(float(expected), rel=1e-6)
    assert float(applied["energy"][1]) == pytest.approx(0.0, abs=1e-6)
