"""ICD's own equations: L_opt reaches theta only through the last step, L_ent, the switches."""

import pytest
import torch
from torch.func import functional_call

from ebmlab.data.augment import Augment
from ebmlab.samplers import energy_grad, frozen_params
from tests.helpers import tiny_method


def test_l_opt_gradient_flows_only_through_the_sampler_step():
    """d/dtheta E_{sg(theta)}(x - lambda grad_x E_theta(x)): the outer E's own parameter
    dependence is cut; only the step's grad_x E_theta carries theta (Eq. 7)."""
    method = tiny_method("icd", noise=0.0, step_size=0.1)
    net, params = method.energy_net, dict(method.energy_net.named_parameters())
    x = torch.randn(16, 2)

    def grads(loss):  # the last layer's bias does not enter grad_x E: its gradient is zero
        found = torch.autograd.grad(
            loss, list(params.values()), allow_unused=True, retain_graph=True
        )
        return [
            torch.zeros_like(p) if g is None else g
            for g, p in zip(found, params.values(), strict=True)
        ]

    x_kl = method._last_step(x)
    with frozen_params(net):
        loss_opt = net(x_kl).mean()
    got = grads(loss_opt)

    frozen = {k: v.detach().clone() for k, v in params.items()}
    _, grad_x = energy_grad(net, x, create_graph=True)
    expected = grads(functional_call(net, frozen, (x - 0.1 * grad_x,)).mean())
    for g, e in zip(got, expected, strict=True):
        assert torch.allclose(g, e, atol=1e-6)
    assert got[-1].abs().sum() == 0  # the outer energy's own bias gets nothing
    naive = grads(net(x - 0.1 * grad_x).mean())  # without stop_grad(theta) the bias would move
    assert naive[-1].abs().sum() > 0


def test_entropy_loss_is_minus_log_nearest_distance_to_past_samples():
    method = tiny_method("icd", buffer_size=5, entropy_set=50)
    method.buffer.storage.copy_(torch.tensor([[0.0, 0], [3, 0], [0, 4], [10, 10], [-5, 0]]))
    x = torch.tensor([[0.0, 1.0], [3.0, 2.0]])
    expected = -(torch.log(torch.tensor(1.0)) + torch.log(torch.tensor(2.0))) / 2
    assert float(method._entropy_loss(x)) == pytest.approx(float(expected), abs=1e-6)


def test_switches_reduce_the_loss_to_cd_plus_penalty():
    method = tiny_method("icd", use_opt=False, use_ent=False, alpha=0.0)
    logs = method.train_step(torch.randn(32, 2), 0)
    assert float(logs["loss"]) == pytest.approx(float(logs["loss_cd"]), abs=1e-6)
    full = tiny_method("icd", alpha=0.0)
    torch.manual_seed(0)
    logs = full.train_step(torch.randn(32, 2), 0)
    total = logs["loss_cd"] + logs["loss_opt"] + 0.3 * logs["loss_ent"]
    assert float(logs["loss"]) == pytest.approx(float(total), abs=1e-5)


def test_entropy_waits_for_the_buffer_to_fill():
    method = tiny_method("icd", alpha=0.0, entropy_after=100)
    logs = method.train_step(torch.randn(32, 2), 0)  # received 0 < 100: no L_ent
    assert float(logs["loss"]) == pytest.approx(float(logs["loss_cd"] + logs["loss_opt"]), abs=1e-5)
    assert int(method.received) == 32


def test_images_get_augmented_chains_and_clamped_samples():
    method = tiny_method("icd", shape=(1, 8, 8), augmentation={"jitter": None})
    assert method.augment == Augment(jitter=None)  # built from the config's options
    logs = method.train_step(torch.rand(8, 1, 8, 8) * 2 - 1, 0)
    assert torch.isfinite(logs["loss"])
    samples = method.sample(3)
    assert samples.shape == (3, 1, 8, 8) and samples.abs().max() <= 1
    assert tiny_method("icd").augment is None  # vectors: no image augmentation
