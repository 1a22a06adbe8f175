"""ICD's own equations: L_opt reaches theta only through the last step, L_ent, the switches."""

import copy
import math

import pytest
import torch
from torch.func import functional_call

from ebmlab.data.augment import Augment
from ebmlab.errors import EbmlabError
from ebmlab.methods.icd import ICD
from ebmlab.samplers import energy_grad, frozen_params
from tests.helpers import (
    applied_gradients,
    assert_gradients_equal,
    gradients,
    recorded_calls,
    tiny_method,
    use_offset_linear_energy,
)


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

    x_kl = method._last_steps(x)
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
    method = tiny_method("icd", buffer_size=6, entropy_set=200)
    method.buffer.storage.fill_(1e6)
    method.buffer.storage[5] = torch.tensor([0.0, 1.0])  # nearest to x[0], but never written
    past = torch.tensor([[0.0, 0], [3, 0], [0, 4], [10, 10], [-5, 0]])
    method.buffer.update(torch.arange(5), past)
    x = torch.tensor([[0.0, 1.0], [3.0, 2.0]])
    expected = -(torch.log(torch.tensor(1.0)) + torch.log(torch.tensor(2.0))) / 2
    torch.manual_seed(0)  # 200 draws from 5 written slots: each is drawn (miss chance 1e-19)
    assert float(method._entropy_loss(x)) == pytest.approx(float(expected), abs=1e-6)


def test_l_opt_through_all_steps_matches_the_unrolled_chain():
    """backprop_steps = K (App. D.2): theta reaches L_opt through every step's grad_x E."""
    method = tiny_method("icd", noise=0.0, step_size=0.1, langevin_steps=2, backprop_steps=2)
    net, params = method.energy_net, dict(method.energy_net.named_parameters())
    x = torch.randn(8, 2)
    x_kl = method._last_steps(x)
    with frozen_params(net):
        loss_opt = net(x_kl).mean()
    (got,) = torch.autograd.grad(loss_opt, [params["net.0.weight"]])

    def step(y):
        return y - 0.1 * energy_grad(net, y, create_graph=True)[1]

    frozen = {k: v.detach().clone() for k, v in params.items()}
    outer = functional_call(net, frozen, (step(step(x)),)).mean()
    (expected,) = torch.autograd.grad(outer, [params["net.0.weight"]])
    assert torch.allclose(got, expected, atol=1e-6)
    with pytest.raises(EbmlabError, match="backprop_steps"):
        tiny_method("icd", langevin_steps=2, backprop_steps=3)


STEP, ALPHA = 0.05, 0.1


def restated_last_step(net, x0: torch.Tensor, steps: int) -> torch.Tensor:
    """x^-hat of Algorithm 1 without noise: K - 1 stop-gradient steps, then one with its graph."""
    y = x0
    for _ in range(steps - 1):
        y = y - STEP * energy_grad(net, y)[1]
    return y - STEP * energy_grad(net, y, create_graph=True)[1]


@pytest.mark.parametrize("entropy_after", [0, 10**9])  # L_ent in, and not yet in
def test_the_applied_gradient_is_that_of_eqs_5_to_8_and_the_penalty(entropy_after):
    """theta's step is the gradient of L_CD + alpha reg + L_opt + 0.3 L_ent, each restated here
    from the paper: E(x^-) at the detached last step, L_opt's outer energy frozen (Eq. 7), L_ent
    the nearest distance to the past samples X (Eq. 8); each part's norm is logged."""
    method = tiny_method(
        "icd",
        noise=0.0,
        step_size=STEP,
        alpha=ALPHA,
        grad_clip=None,
        reinit_prob=0.0,
        entropy_after=entropy_after,
    )
    before = copy.deepcopy(method.energy_net)
    past = torch.randn(7, 2)
    method.buffer.past = lambda n: past
    starts = recorded_calls(method.buffer, "sample")
    writes = recorded_calls(method.buffer, "update")
    applied = applied_gradients(method)
    x = torch.randn(16, 2)
    logs = method.train_step(x, 0)

    params = list(before.parameters())
    frozen = {k: v.detach() for k, v in before.named_parameters()}
    x_hat = restated_last_step(before, starts[0][1][0], method.cfg.langevin_steps)
    assert torch.allclose(writes[0][0][1], x_hat, atol=1e-6)  # l. 14: x^- goes back to B
    e_pos, e_neg = before(x), before(x_hat.detach())
    nearest = torch.cdist(x_hat, past).min(dim=1).values
    parts = {
        "cd": e_pos.mean() - e_neg.mean(),
        "reg": ALPHA * (e_pos.pow(2).mean() + e_neg.pow(2).mean()),
        "kl": functional_call(before, frozen, (x_hat,)).mean()
        + 0.3 * (entropy_after == 0) * -torch.log(nearest).mean(),
    }
    expected = {name: gradients(part, params) for name, part in parts.items()}
    total = [sum(g) for g in zip(*expected.values(), strict=True)]
    assert_gradients_equal(applied["energy"], total)
    for name, grads in expected.items():
        norm = torch.linalg.vector_norm(torch.cat([g.flatten() for g in grads]))
        assert float(logs[f"grad_norm/{name}"]) == pytest.approx(float(norm), rel=1e-4)
    ablated = tiny_method("icd", use_opt=False, use_ent=False).train_step(torch.randn(32, 2), 0)
    assert "grad_norm/kl" not in ablated


def test_chains_start_from_the_buffer_and_are_written_back():
    """Alg. 1 l. 4 and 14: with no re-initialisation every chain starts where the buffer holds
    it, and the moved chain goes back to its slot."""
    method = tiny_method("icd", noise=0.0, step_size=1e-9, reinit_prob=0.0, langevin_steps=1)
    method.buffer.storage.fill_(0.5)
    method.train_step(torch.randn(32, 2), 0)
    written = method.buffer.storage[method.buffer.written]
    assert len(written) > 0
    assert torch.allclose(written, torch.full_like(written, 0.5), atol=1e-6)


def flip(x: torch.Tensor) -> torch.Tensor:
    return x.flip(-1)  # a deterministic stand-in for D(.)


@pytest.mark.parametrize("augment_fresh", [False, True])
@pytest.mark.parametrize("reinit_prob", [0.0, 1.0])
def test_buffer_rows_are_augmented_before_the_chain_and_fresh_rows_as_configured(
    reinit_prob, augment_fresh
):
    """l. 6: D(x~^0) on rows read from the buffer; on fresh-noise rows only with augment_fresh
    (Algorithm 1), not by default (the authors' code)."""
    method = tiny_method(
        "icd",
        shape=(1, 2, 4),
        noise=0.0,
        step_size=1e-9,
        langevin_steps=1,
        reinit_prob=reinit_prob,
        augment_fresh=augment_fresh,
        init_low=-1.0,
        init_high=1.0,
    )
    method.augment = flip
    starts = recorded_calls(method.buffer, "sample")
    writes = recorded_calls(method.buffer, "update")
    method.train_step(torch.rand(8, 1, 2, 4) * 2 - 1, 0)
    (x0, _, fresh), ((_, x_neg), _) = starts[0][1], writes[0]
    assert bool(fresh.all()) == (reinit_prob == 1.0)
    augmented = reinit_prob == 0.0 or augment_fresh
    assert torch.allclose(x_neg, flip(x0) if augmented else x0, atol=1e-6)
    assert not torch.allclose(flip(x0), x0)


def test_sampling_augments_between_rounds():
    """Algorithm 2: D(.) before each round of K steps on the chains from U."""
    method = tiny_method(
        "icd",
        shape=(1, 2, 4),
        noise=0.0,
        step_size=1e-9,
        sample_rounds=1,
        sample_round_steps=1,
        init_low=-1.0,
        init_high=1.0,
    )
    method.augment = flip
    starts = recorded_calls(method.buffer, "initial")
    samples = method.sample(5)
    x0 = starts[-1][1]
    assert torch.allclose(samples, flip(x0), atol=1e-6) and not torch.allclose(x0, flip(x0))


def test_switches_reduce_the_loss_to_cd_plus_penalty():
    method = tiny_method("icd", use_opt=False, use_ent=False, alpha=0.0)
    logs = method.train_step(torch.randn(32, 2), 0)
    assert float(logs["loss"]) == pytest.approx(float(logs["loss_cd"]), abs=1e-6)
    full = tiny_method("icd", alpha=0.5)
    torch.manual_seed(0)
    logs = full.train_step(torch.randn(32, 2), 0)
    assert float(logs["loss_reg"]) > 0
    total = logs["loss_cd"] + logs["loss_reg"] + logs["loss_opt"] + 0.3 * logs["loss_ent"]
    assert float(logs["loss"]) == pytest.approx(float(total), abs=1e-5)


def test_entropy_waits_for_the_buffer_to_fill():
    method = tiny_method("icd", alpha=0.0, entropy_after=40)
    logs = method.train_step(torch.randn(32, 2), 0)  # the buffer held 0 < 40: no L_ent
    assert float(logs["loss"]) == pytest.approx(float(logs["loss_cd"] + logs["loss_opt"]), abs=1e-5)
    held = int(method.buffer.written.sum())
    assert 0 < held <= 32
    while int(method.buffer.written.sum()) < 40:
        method.train_step(torch.randn(32, 2), 0)
    logs = method.train_step(torch.randn(32, 2), 0)  # now it holds >= 40: L_ent is in
    with_ent = logs["loss_cd"] + logs["loss_opt"] + 0.3 * logs["loss_ent"]
    assert float(logs["loss"]) == pytest.approx(float(with_ent), abs=1e-5)


def test_images_get_augmented_chains_and_clamped_samples():
    method = tiny_method("icd", shape=(1, 8, 8), augmentation={"jitter": None})
    assert method.augment == Augment(jitter=None)  # built from the config's options
    logs = method.train_step(torch.rand(8, 1, 8, 8) * 2 - 1, 0)
    assert torch.isfinite(logs["loss"])
    samples = method.sample(3)
    assert samples.shape == (3, 1, 8, 8) and samples.abs().max() <= 1
    assert tiny_method("icd").augment is None  # vectors: no image augmentation


@pytest.mark.slow
def test_cifar10_preset_builds_the_papers_multiscale_resnet_and_trains(tmp_path):
    """The CIFAR-10-shaped preset: Table 5 at three scales, App. B.2's sampler; one short step."""
    import numpy as np

    from ebmlab.api import build_method_config, resolve_config
    from ebmlab.data import load_dataset
    from ebmlab.nets import MultiscaleEnergy, ResNetEnergy

    path = tmp_path / "cifar10.npy"
    np.save(path, np.random.default_rng(0).integers(0, 256, (40, 32, 32, 3), dtype=np.uint8))
    data = load_dataset(path)
    config = resolve_config("icd", data, str(path), None, {"method": {"langevin_steps": 2}})
    cfg = build_method_config(config)
    assert (cfg.step_size, cfg.noise, cfg.buffer_size, cfg.reinit_prob) == (
        2000.0,
        0.002,
        10_000,
        0.001,
    )
    assert config.train.ema_decay == 0.9999 and config.data.batch_size == 128
    method = ICD(cfg, data.shape)
    net = method.energy_net
    assert isinstance(net, MultiscaleEnergy) and net.factors == (1, 2, 4)
    assert all(isinstance(sub, ResNetEnergy) and sub.pool == "mean" for sub in net.nets)
    logs = method.train_step(data.train[:4], 0)
    assert torch.isfinite(logs["loss"]) and float(logs["grad_norm/kl"]) > 0


class HalfSquare(torch.nn.Module):
    """E(x) = a |x|^2 / 2, the energy of N(0, I / a), with a a parameter."""

    def __init__(self, a: float):
        super().__init__()
        self.a = torch.nn.Parameter(torch.tensor(a))

    def forward(self, x):
        return 0.5 * self.a * x.pow(2).sum(1)


def test_on_mala_chains_the_last_step_is_exact_for_exp_minus_e():
    """At a step as large as the variance, one MALA last step keeps N(0, 1/a) (within 3%),
    where an unadjusted Langevin step doubles the variance: (1 - tau a)^2 / a + 2 tau."""
    a, n = 4.0, 40_000
    method = tiny_method("icd", sampler="mala", target_accept=0.6, step_size=1 / a)
    method.energy_net = HalfSquare(a)
    x = torch.randn(n, 2, generator=torch.Generator().manual_seed(1)) / a**0.5
    x_kl = method._last_steps(x)
    assert float(x_kl.detach().var()) == pytest.approx(1 / a, rel=0.03)
    assert 0.2 < float((x_kl != x).any(1).float().mean()) < 0.95  # both kinds of rows
    unadjusted = tiny_method("icd", noise=None, step_size=1 / a)
    unadjusted.energy_net = HalfSquare(a)
    assert float(unadjusted._last_steps(x).detach().var()) == pytest.approx(2 / a, rel=0.03)


def test_on_mala_chains_l_opt_reaches_theta_through_the_accepted_proposals():
    """x^-hat is the MALA proposal with its graph where accepted and the state where not, so
    L_opt's gradient is that of the mean over chains of E_sg(proposal) on accepted rows
    (rejected rows carry no theta), with grad_x E_theta in the proposal."""
    tau = 0.25
    method = tiny_method("icd", sampler="mala", target_accept=0.6, step_size=tau)
    method.energy_net = HalfSquare(4.0)
    net, params = method.energy_net, list(method.energy_net.parameters())
    x = torch.randn(64, 2) / 2
    torch.manual_seed(5)
    x_kl = method._last_steps(x.clone())
    with frozen_params(net):
        loss_opt = net(x_kl).mean()
    got = gradients(loss_opt, params)

    torch.manual_seed(5)  # the same xi and uniform draws, restated
    xi = torch.randn(64, 2)
    _, grad = energy_grad(net, x.clone(), create_graph=True)
    proposal = x - tau * grad + (2 * tau) ** 0.5 * xi
    e, g = energy_grad(net, x)
    e_new, g_new = energy_grad(net, proposal.detach())

    def log_q(to, frm, grad_from):  # the proposal density, up to a constant
        return -(to - frm + tau * grad_from).pow(2).sum(1) / (4 * tau)

    log_ratio = e - e_new + log_q(x, proposal.detach(), g_new) - log_q(proposal.detach(), x, g)
    keep = torch.log(torch.rand(64)) < log_ratio
    assert 0 < int(keep.sum()) < 64
    assert torch.allclose(x_kl, torch.where(keep[:, None], proposal, x), atol=1e-6)
    frozen = {k: v.detach() for k, v in net.named_parameters()}
    energies = functional_call(net, frozen, (proposal,))
    expected = gradients(torch.where(keep, energies, energies.detach()).mean(), params)
    assert_gradients_equal(got, expected)


def test_l_cd_is_the_energy_difference_whatever_their_ratio():
    """Eq. 5 with a linear energy E(x) = x1 + x2 + 5, data near (-3, -3) at energy -1 and
    chains in [-1, 1]^2 near 5: L_CD = mean E(x+) - mean E(x-), whose gradient in the offset
    is 1 - 1 = 0 (a ratio or remainder of the two would give neither)."""
    method = tiny_method("icd", use_opt=False, use_ent=False, alpha=0.0, grad_clip=None)
    use_offset_linear_energy(method)
    applied = applied_gradients(method)
    writes = recorded_calls(method.buffer, "update")
    logs = method.train_step(torch.full((16, 2), -3.0), 0)
    x_neg = writes[0][0][1]
    assert x_neg.shape == (16, 2)  # one chain per example
    expected = -1.0 - (x_neg.sum(1) + 5).mean()
    assert float(logs["loss_cd"]) == pytest.approx(float(expected), rel=1e-6)
    assert float(applied["energy"][1]) == pytest.approx(0.0, abs=1e-6)


@pytest.mark.parametrize(("use_opt", "use_ent"), [(True, False), (False, True)])
def test_either_half_of_l_kl_alone_still_trains_theta(use_opt, use_ent):
    method = tiny_method("icd", use_opt=use_opt, use_ent=use_ent, entropy_after=0)
    logs = method.train_step(torch.randn(32, 2), 0)
    assert float(logs["grad_norm/kl"]) > 0


def test_mala_sampling_runs_the_rounds_as_one_chain():
    """Algorithm 2 on vectors with MALA chains: N x K steps of the adapted chain from U."""
    method = tiny_method("icd", sampler="mala", sample_rounds=3, sample_round_steps=4)
    calls = recorded_calls(method.chain, "forward")
    samples = method.sample(5)
    (_, x0, steps), (returned, _) = calls[0]
    assert steps == 12 and x0.shape == (5, 2)
    assert torch.equal(samples, returned)


def test_vector_and_volume_data_get_no_augmentation():
    assert tiny_method("icd").augment is None
    assert tiny_method("icd", shape=(1, 2, 2, 2)).augment is None
    assert isinstance(tiny_method("icd", shape=(1, 8, 8)).augment, Augment)


def test_defaults_are_the_papers_and_the_authors_code():
    """Sec. 3.1 and App. B.2 (K = 40, lambda 500 and noise 0.001 on [0, 1] pixels, a 10,000
    buffer resampled at 0.1% from U[-1, 1], Adam 2e-4 (0, 0.9), SimCLR colour strength 1 and
    crops 0.02-1, 10 rounds of 20 steps); the code's alpha 1, clip 0.5, L_ent 0.3 on 100 past
    samples after 1,000."""
    cfg = ICD.Config()
    assert (cfg.lr, cfg.betas, cfg.langevin_steps, cfg.step_size, cfg.noise) == (
        2e-4,
        (0.0, 0.9),
        40,
        2000.0,
        0.002,
    )
    assert (cfg.buffer_size, cfg.reinit_prob, cfg.init_low, cfg.init_high) == (
        10_000,
        0.001,
        -1.0,
        1.0,
    )
    assert cfg.augmentation == {"crop_scale": (0.02, 1.0), "jitter": (0.8, 0.8, 0.8, 0.2)}
    assert (cfg.sample_rounds, cfg.sample_round_steps) == (10, 20)
    assert (cfg.alpha, cfg.grad_clip, cfg.entropy_weight) == (1.0, 0.5, 0.3)
    assert (cfg.entropy_set, cfg.entropy_after, cfg.backprop_steps) == (100, 1000, 1)
    assert cfg.augment and not cfg.augment_fresh  # the code: buffer rows only


@pytest.mark.parametrize(
    "bad",
    [
        {"noise": -0.5},
        {"sample_rounds": -1},
        {"sample_round_steps": -1},
        {"global_moves": -1},
        {"backprop_steps": 0},
    ],
)
def test_negative_or_empty_chain_options_are_refused(bad):
    with pytest.raises(EbmlabError):
        tiny_method("icd", **bad)


def test_zero_rounds_or_zero_round_steps_sample_the_start():
    for options in ({"sample_rounds": 0}, {"sample_round_steps": 0}):
        method = tiny_method("icd", **options)
        starts = recorded_calls(method.buffer, "initial")
        assert torch.equal(method.sample(4), starts[0][1])


def test_langevin_sampling_runs_n_rounds_of_k_steps():
    method = tiny_method("icd", sample_rounds=3, sample_round_steps=2)
    calls = []

    def energy(x):
        calls.append(1)
        return 0.5 * x.pow(2).sum(1)

    method.sample_from(energy, 4)
    assert len(calls) == 6


def test_the_entropy_of_a_sample_on_a_past_one_is_large_but_finite():
    """Eq. 8 at distance 0: -log is taken at 1e-12, not at 0."""
    method = tiny_method("icd")
    past = torch.randn(5, 2)
    method.buffer.past = lambda n: past
    loss = method._entropy_loss(past[:1].clone())
    assert float(loss) == pytest.approx(-math.log(1e-12), rel=1e-6)


def test_training_chains_adapt_the_step_toward_the_target_acceptance():
    method = tiny_method("icd", sampler="mala", step_size=0.05, target_accept=0.6)
    first = method.chain.step_size
    logs = method.train_step(torch.randn(16, 2), 0)
    assert float(logs["step_size"]) == pytest.approx(first)
    assert method.chain.step_size != pytest.approx(first, rel=0.1)
