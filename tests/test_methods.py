"""The Method contract, for every registered method, plus each baseline's own equations."""

import dataclasses
import math

import pytest
import torch

from ebmlab.methods import METHODS
from ebmlab.samplers import energy_grad
from tests.helpers import tiny_method

ALL = sorted(METHODS)


def gaussian_batch(n=128):
    return torch.randn(n, 2) * 0.5 + torch.tensor([1.0, -1.0])


@pytest.mark.parametrize("name", ALL)
def test_a_config_cannot_change_under_a_built_method(name):
    """Configs are frozen: a method reads its options at every step, so a change after
    building would silently split the run into two settings (and the checkpoint's config)."""
    method = tiny_method(name)
    with pytest.raises(dataclasses.FrozenInstanceError):
        method.cfg.z_dim = 1


@pytest.mark.parametrize("name", ALL)
def test_train_step_returns_finite_tensors(name):
    method = tiny_method(name)
    for step in range(2):
        logs = method.train_step(gaussian_batch(), step)
    assert "loss" in logs
    for key, value in logs.items():
        assert isinstance(value, torch.Tensor), key
        assert torch.isfinite(value).all(), key


@pytest.mark.parametrize("name", ALL)
def test_energy_and_sample_shapes(name):
    method = tiny_method(name)
    assert method.energy(gaussian_batch(7)).shape == (7,)
    samples = method.sample(9)
    assert samples.shape == (9, 2)
    assert not samples.requires_grad
    assert torch.isfinite(samples).all()


@pytest.mark.parametrize("name", ALL)
def test_sampling_leaves_parameters_untouched(name):
    method = tiny_method(name)
    before = {k: v.clone() for k, v in method.state_dict().items()}
    with torch.no_grad():  # sampling must work under a caller's no_grad too
        method.sample(16)
    for param in method.parameters():
        assert param.grad is None
        assert param.requires_grad
    for key, value in method.state_dict().items():
        if "buffer" not in key:
            assert torch.equal(value, before[key]), key


@pytest.mark.parametrize("name", ALL)
def test_train_step_restores_requires_grad_and_changes_weights(name):
    method = tiny_method(name)
    before = [p.detach().clone() for p in method.parameters()]
    method.train_step(gaussian_batch(), 0)
    assert all(p.requires_grad for p in method.parameters())
    assert any(not torch.equal(a, b) for a, b in zip(before, method.parameters(), strict=True))


@pytest.mark.parametrize("name", ALL)
def test_state_dict_round_trip(name):
    method = tiny_method(name)
    method.train_step(gaussian_batch(), 0)
    clone = tiny_method(name)
    clone.load_state_dict(method.state_dict())
    clone.load_optimizer_state(method.optimizer_state())
    x = gaussian_batch(5)
    assert torch.equal(clone.energy(x), method.energy(x))


@pytest.mark.parametrize("name", ALL)
def test_image_shaped_data(name):
    method = tiny_method(name, shape=(1, 8, 8))
    x = torch.rand(16, 1, 8, 8) * 2 - 1
    logs = method.train_step(x, 0)
    assert torch.isfinite(logs["loss"])
    samples = method.sample(4)
    assert samples.shape == (4, 1, 8, 8)
    assert samples.min() >= -1 and samples.max() <= 1  # chains are clamped to the pixel box


def test_cd_writes_negatives_back_to_the_buffer():
    method = tiny_method("cd", buffer_size=32, reinit_prob=0.0)
    before = method.buffer.storage.clone()
    written = []
    real_update = method.buffer.update
    method.buffer.update = lambda idx, x: (written.append(idx.clone()), real_update(idx, x))
    method.train_step(gaussian_batch(8), 0)
    (idx,) = written
    changed = (method.buffer.storage != before).any(dim=1).nonzero().flatten()
    assert changed.tolist() == sorted(set(idx.tolist()))  # the sampled slots, nothing else


def test_cd_lowers_data_energy_relative_to_negatives():
    method = tiny_method("cd", lr=1e-2, alpha=0.0)
    x = gaussian_batch(256)
    gaps = [float(method.train_step(x, step)["loss_cd"]) for step in range(30)]
    assert sum(gaps[-5:]) / 5 < sum(gaps[:5]) / 5 - 0.5


def test_dsm_step_matches_written_loss():
    method = tiny_method("dsm", sigma=0.3)
    x = gaussian_batch(64)
    torch.manual_seed(3)
    eps = torch.randn_like(x)
    _, grad_e = energy_grad(method.energy_net, x + 0.3 * eps)
    expected = 0.5 * (0.3 * -grad_e + eps).pow(2).sum(1).mean()
    torch.manual_seed(3)
    logs = method.train_step(x, 0)
    assert float(logs["loss"]) == pytest.approx(float(expected), rel=1e-5)


def test_shortrun_chains_start_from_fresh_uniform_noise():
    method = tiny_method("shortrun", langevin_steps=0, init_low=-2.0, init_high=2.0)
    samples = method.sample(20000)
    assert float(samples.min()) >= -2.0 and float(samples.max()) <= 2.0
    assert float(samples.var()) == pytest.approx(16 / 12, rel=0.05)  # U[-2, 2] variance
    assert not math.isclose(float(method.sample(4)[0, 0]), float(method.sample(4)[0, 0]))


def test_update_with_parts_applies_their_summed_gradient_and_reports_each_norm():
    torch.manual_seed(0)
    a, b = tiny_method("cd"), tiny_method("cd")
    b.load_state_dict(a.state_dict())
    x = gaussian_batch(16)

    def parts(method):
        e = method.energy_net(x)
        return {"mean": e.mean(), "square": e.pow(2).mean()}

    a_parts = parts(a)
    expected = {}
    for name, value in a_parts.items():
        grads = torch.autograd.grad(value, list(a.energy_net.parameters()), retain_graph=True)
        expected[name] = torch.linalg.vector_norm(torch.cat([g.flatten() for g in grads]))
    sum_grads = torch.autograd.grad(
        sum(a_parts.values()), list(a.energy_net.parameters()), retain_graph=True
    )
    total = torch.linalg.vector_norm(torch.cat([g.flatten() for g in sum_grads]))
    a.update("energy", sum(a_parts.values()))
    norms = b.update("energy", parts(b))
    for name in ("mean", "square"):
        assert torch.allclose(norms[f"grad_norm/{name}"], expected[name])
    assert torch.allclose(norms["grad_norm"], total)
    for pa, pb in zip(a.parameters(), b.parameters(), strict=True):  # the same Adam step
        assert torch.allclose(pa, pb, atol=1e-7)
