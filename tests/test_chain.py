"""Samplers that fit the data's scale: dual averaging, MALA chains with an adapted step,
independence moves between modes, the data-derived defaults, and their exact resume."""

import json
import math

import numpy as np
import pytest
import torch

import ebmlab
import ebmlab.methods
from ebmlab import checkpoints
from ebmlab.defaults import derived_values, local_scale, resolve_auto
from ebmlab.errors import EbmlabError
from ebmlab.samplers import MALA, DataChain, DualAveraging, Langevin, check_chain, independence_move
from ebmlab.samplers.independence import (
    broad_gaussian,
    kde_bandwidths,
    kde_log_density,
    proposal_log_density,
)

ROTATION = torch.tensor([[math.cos(0.5), -math.sin(0.5)], [math.sin(0.5), math.cos(0.5)]])


def gaussian(scale: float):
    """A rotated, anisotropic 2D Gaussian of overall size `scale`, offset by 3 * scale."""
    mean = torch.tensor([3.0, -1.0], dtype=torch.float64) * scale
    root = (ROTATION @ torch.diag(torch.tensor([1.0, 0.3]))).double() * scale
    cov = root @ root.T
    precision = torch.linalg.inv(cov)

    def energy(x):
        d = x.double() - mean
        return 0.5 * ((d @ precision) * d).sum(1)

    return mean, cov, root, energy


def test_dual_averaging_finds_the_step_of_the_target_acceptance():
    adapter = DualAveraging(step_size=1e-4, target_accept=0.6)
    for _ in range(2000):
        adapter.update(math.exp(-float(adapter.step_size)))  # acceptance exp(-eps)
    assert float(adapter.step_size) == pytest.approx(-math.log(0.6), rel=0.05)
    assert float(adapter.averaged_step_size) == pytest.approx(-math.log(0.6), rel=0.05)


def test_dual_averaging_is_hoffman_and_gelmans_recursion():
    """Eps_0 = 0.02, target 0.65, Stan's gamma 0.05, t0 10, kappa 0.75, mu = log(10 eps_0):
    the iterate, its average and H_bar after each of a fixed sequence of acceptance rates,
    against the recursion restated (Hoffman & Gelman 2014, Sec. 3.2.1)."""
    rates = [0.9, 0.2, 0.5, 0.7, 0.95, 0.1, 0.65, 0.4]
    adapter = DualAveraging(step_size=0.02, target_accept=0.65)
    mu, h_bar, log_eps_bar = math.log(10 * 0.02), 0.0, math.log(0.02)
    for t, rate in enumerate(rates, start=1):
        adapter.update(rate)
        h_bar = (1 - 1 / (t + 10)) * h_bar + (0.65 - rate) / (t + 10)
        log_eps = mu - math.sqrt(t) / 0.05 * h_bar
        log_eps_bar = t**-0.75 * log_eps + (1 - t**-0.75) * log_eps_bar
        assert float(adapter.h_avg) == pytest.approx(h_bar, rel=1e-12, abs=1e-15)
        assert float(adapter.log_step) == pytest.approx(log_eps, rel=1e-12)
        assert float(adapter.log_step_avg) == pytest.approx(log_eps_bar, rel=1e-12)
        assert float(adapter.count) == t


@pytest.mark.parametrize("target", [0.0, 1.0, -0.5, 1.5])
def test_a_target_acceptance_outside_zero_one_is_refused(target):
    with pytest.raises(ValueError, match="target_accept"):
        DualAveraging(step_size=0.1, target_accept=target)
    assert DualAveraging(step_size=0.1, target_accept=0.999).target == 0.999


def test_dual_averaging_lowers_the_step_when_acceptance_is_below_target():
    lowered, raised = (DualAveraging(step_size=1.0, target_accept=0.6) for _ in range(2))
    for _ in range(20):
        lowered.update(0.1)
        raised.update(0.99)
    assert float(lowered.step_size) < 0.1 < 10 < float(raised.step_size)


@pytest.mark.parametrize("scale", [1e-3, 1.0, 1e3])
def test_adapted_mala_samples_a_gaussian_at_any_scale_without_a_hand_set_step(scale):
    torch.manual_seed(0)
    mean, cov, root, energy = gaussian(scale)
    points = (mean + torch.randn(4000, 2, dtype=torch.float64) @ root.T).float()
    chain = DataChain("mala", derived_values(points, 2)["step_size"], target_accept=0.6)
    low, high = float(points.min()), float(points.max())
    x = torch.rand(4000, 2) * (high - low) + low  # from a box around the data, as a buffer
    for _ in range(60):  # training-time calls: each adapts the step after its chain
        x, info = chain(energy, x, 20, adapt=True)
    x, info = chain(energy, x, 200)
    assert float(info["accept_rate"]) == pytest.approx(0.6, abs=0.1)
    x = x.double()
    assert torch.allclose(x.mean(0), mean, atol=0.05 * scale)
    assert torch.allclose(torch.cov(x.T), cov, atol=0.06 * scale**2)


def two_modes(weight_left: float = 0.8):
    """A 1D mixture: weight_left at -5, the rest at +5, each of std 0.3."""
    log_w = torch.tensor([math.log(weight_left), math.log(1 - weight_left)], dtype=torch.float64)
    centres = torch.tensor([-5.0, 5.0], dtype=torch.float64)

    def energy(x):
        d = (x.double() - centres) / 0.3  # (B, 2) against the two centres
        return -torch.logsumexp(log_w - 0.5 * d.pow(2), dim=1)

    return energy


@pytest.mark.parametrize("broad_share", [0.0, 0.3])
def test_independence_moves_put_chains_into_modes_by_their_mass(broad_share):
    torch.manual_seed(0)
    energy = two_modes(0.8)
    reference = torch.cat([torch.full((128, 1), -5.0), torch.full((128, 1), 5.0)])
    reference += 0.3 * torch.randn_like(reference)  # an equal-weight kernel density
    x = -5.0 + 0.3 * torch.randn(20_000, 1)  # every chain starts in the left mode
    for _ in range(40):
        x, rate = independence_move(energy, x, reference, broad_share=broad_share)
    left = float((x < 0).float().mean())
    assert left == pytest.approx(0.8, abs=0.015)  # the proposal's 0.5 is corrected
    assert 0.2 < float(rate) < 1.0


def test_a_chain_with_global_moves_crosses_modes_that_mala_alone_keeps():
    torch.manual_seed(0)
    energy = two_modes(0.5)
    reference = torch.tensor([[-5.0], [5.0]]).repeat(64, 1) + 0.3 * torch.randn(128, 1)
    start = -5.0 + 0.3 * torch.randn(4000, 1)
    local, _ = DataChain("mala", 0.05)(energy, start, 100, reference=reference)
    mixed, chain = start, DataChain("mala", 0.05, global_moves=1)
    for _ in range(10):  # ten training iterations' chains of 5 steps
        mixed, info = chain(energy, mixed, 5, reference=reference)
    assert float((local > 0).float().mean()) < 0.01
    assert float((mixed > 0).float().mean()) == pytest.approx(0.5, abs=0.05)
    assert "global_accept_rate" in info


def test_chains_far_from_the_data_are_moved_into_it_only_with_a_broad_share():
    """Short-run chains start from uniform noise, where the kernel density is nearly zero: the
    broad component lets exp(-E) take them into the modes, which hold 98% of its mass here."""
    torch.manual_seed(0)
    modes = two_modes(0.5)
    energy = lambda x: -torch.logaddexp(-modes(x), torch.tensor(-8.0, dtype=torch.float64))  # noqa: E731
    reference = torch.tensor([[-5.0], [5.0]]).repeat(64, 1) + 0.3 * torch.randn(128, 1)
    start = torch.rand(4000, 1) * 20 - 10
    in_modes = {}
    for share in (0.0, 0.1):
        x = start
        for _ in range(5):
            x, _ = independence_move(energy, x, reference, broad_share=share)
        in_modes[share] = float(((x.abs() - 5).abs() < 1).float().mean())
    assert in_modes[0.1] > 0.9
    assert in_modes[0.0] < 0.3


def test_the_broad_share_mixes_the_kernel_density_with_the_batchs_gaussian():
    centres = torch.tensor([[-1.0, 0.0], [0.0, 2.0], [0.5, 0.0], [3.0, 1.0]], dtype=torch.float64)
    bandwidths = kde_bandwidths(centres, k=2)
    x = torch.randn(6, 2, dtype=torch.float64) * 3
    broad = torch.distributions.Normal(centres.mean(0), 2 * centres.std(0)).log_prob(x).sum(1)
    expected = (0.75 * kde_log_density(x, centres, bandwidths).exp() + 0.25 * broad.exp()).log()
    torch.testing.assert_close(proposal_log_density(x, centres, bandwidths, 0.25), expected)
    assert torch.equal(
        proposal_log_density(x, centres, bandwidths), kde_log_density(x, centres, bandwidths)
    )


@pytest.mark.parametrize("broad_share", [0.0, 0.3])
def test_moves_toward_the_proposals_own_density_land_chains_at_its_spread(broad_share):
    """With exp(-E) = q_w every move is accepted, so one move draws the chains from q_w: its
    variance is (1 - w) (var of the centres + mean h^2) + w (2 std)^2 (both parts share a mean)."""
    torch.manual_seed(0)
    centres = torch.tensor([[-5.0], [-4.0], [-3.5], [4.0], [5.0], [6.0]], dtype=torch.float64)
    bandwidths = kde_bandwidths(centres, k=2)
    energy = lambda x: -proposal_log_density(x, centres, bandwidths, broad_share)  # noqa: E731
    moved, rate = independence_move(
        energy,
        torch.zeros(100_000, 1, dtype=torch.float64),
        centres,
        bandwidths=bandwidths,
        broad_share=broad_share,
    )
    kde_var = centres.var(unbiased=False) + bandwidths.pow(2).mean()
    expected = (1 - broad_share) * kde_var + broad_share * (2 * centres.std()) ** 2
    assert float(rate) == 1.0
    assert float(moved.var()) == pytest.approx(float(expected), rel=0.02)


def test_a_constant_coordinate_gets_a_real_broad_spread():
    centres = torch.tensor([[0.0, 1.0], [1.0, 1.0], [3.0, 1.0]])
    bandwidths = kde_bandwidths(centres, k=1)
    broad = broad_gaussian(centres, bandwidths)
    assert float(broad.stddev[1]) == pytest.approx(2 * float(bandwidths.min()))
    assert torch.isfinite(broad.log_prob(torch.tensor([[0.5, 1.3]]))).all()


@pytest.mark.parametrize("share", [-0.1, 1.0])
def test_a_broad_share_outside_zero_to_one_is_refused(share):
    with pytest.raises(EbmlabError, match="broad share"):
        check_chain("mala", 0.6, share)
    with pytest.raises(EbmlabError, match="broad share"):
        ebmlab.methods.get_method("shortrun").Config(global_broad_share=share)


def test_the_kernel_density_of_the_moves_is_normalised():
    centres = torch.tensor([[-1.0], [0.0], [0.2], [3.0], [3.0]], dtype=torch.float64)
    bandwidths = kde_bandwidths(centres, k=2)
    assert (bandwidths > 0).all()  # duplicated centres still get a kernel
    grid = torch.linspace(-10, 14, 48_001, dtype=torch.float64).unsqueeze(1)
    mass = kde_log_density(grid, centres, bandwidths).exp().sum() * (grid[1] - grid[0])
    assert float(mass) == pytest.approx(1.0, abs=1e-4)


def test_local_scale_follows_the_data_scale_and_ignores_duplicates():
    torch.manual_seed(0)
    points = torch.randn(3000, 2)
    assert local_scale(points * 1e3) == pytest.approx(1e3 * local_scale(points), rel=1e-4)
    assert local_scale(torch.cat([points, points])) > 0
    values = derived_values(points, z_dim_max=128)
    assert values["z_dim"] == 2 and "sigma" not in values
    assert values["step_size"] == pytest.approx(local_scale(points) ** 2 / 4)  # r^2 / (2 D)
    assert values["init_low"] < float(points.min()) and values["init_high"] > float(points.max())


def test_auto_values_are_resolved_and_a_users_step_switches_adaptation_off():
    train = torch.randn(500, 3)
    preset = {"step_size": "auto", "target_accept": 0.6, "z_dim": "auto", "z_dim_max": 2}
    resolved = resolve_auto(preset, {}, train)
    assert resolved["step_size"] == pytest.approx(local_scale(train) ** 2 / 6)
    assert resolved["target_accept"] == 0.6 and resolved["z_dim"] == 2
    assert "z_dim_max" not in resolved
    fixed = resolve_auto({**preset, "step_size": 0.002}, {"step_size": 0.002}, train)
    assert fixed["step_size"] == 0.002 and fixed["target_accept"] is None
    both = {"step_size": 0.002, "target_accept": 0.7}
    assert resolve_auto({**preset, **both}, both, train)["target_accept"] == 0.7
    with pytest.raises(EbmlabError, match="cannot be auto"):
        resolve_auto({"lr": "auto"}, {}, train)


TABLE_OVERRIDES = {
    "method": {"energy_net": {"kind": "mlp", "hidden": 32, "depth": 2}, "buffer_size": 200},
    "data": {"batch_size": 64},
    "train": {"log_every": 5, "ckpt_every": 10, "sample_every": 0, "device": "cpu"},
}


def table_run(out, steps, resume=False):
    rng = np.random.default_rng(0)
    table = np.concatenate([rng.normal(0, 1e-3, (300, 2)), rng.normal(5e-3, 2e-4, (300, 2))])
    path = out.parent / "table.npy"  # a file: a resume loads the data again
    np.save(path, table.astype(np.float32) + 1.0)
    return ebmlab.train(
        "cd",
        path,
        steps=steps,
        out=out,
        overrides=TABLE_OVERRIDES,
        resume=resume,
        evaluate=False,
        progress=False,
    )


def test_the_adapted_step_is_logged_saved_and_resumed_bit_for_bit(tmp_path):
    run = table_run(tmp_path / "whole", 30)
    assert run.method.cfg.sampler == "mala" and run.method.cfg.target_accept == 0.6
    table_run(tmp_path / "split", 20)
    table_run(tmp_path / "split", 30, resume=True)
    whole = checkpoints.read_latest(tmp_path / "whole")[0]
    split = checkpoints.read_latest(tmp_path / "split")[0]
    for key in ("chain.adapter.log_step", "chain.adapter.h_avg", "buffer.storage"):
        assert torch.equal(whole["method"][key], split["method"][key]), key
    rows = [json.loads(line) for line in (tmp_path / "whole/metrics.jsonl").open()]
    steps = [row["step_size"] for row in rows]
    assert len(set(steps)) == len(steps)  # it moves
    derived = run.config.method_params["step_size"]
    assert isinstance(derived, float) and derived < 1.0  # from the standardised data


def test_the_report_names_the_values_derived_from_the_data(tmp_path):
    path = tmp_path / "points.npy"
    np.save(path, np.random.default_rng(0).normal(5.0, 1e-2, (400, 2)).astype(np.float32))
    overrides = {**TABLE_OVERRIDES, "train": {**TABLE_OVERRIDES["train"], "eval_samples": 50}}
    run = ebmlab.train(
        "icd", path, steps=4, out=tmp_path / "run", overrides=overrides, progress=False
    )
    report = (tmp_path / "run/report.md").read_text()
    step = run.config.method_params["step_size"]
    assert f"`step_size` = {step:.4g}" in report and "`init_low` =" in report


NO_FLAG_DATA = {
    "one column": lambda rng: rng.normal(3.0, 1e-3, (120, 1)).astype(np.float32),
    "three columns": lambda rng: rng.normal(0.0, 1e3, (120, 3)).astype(np.float32),
    "odd-sized colour images": lambda rng: rng.integers(0, 256, (24, 10, 12, 3), dtype=np.uint8),
}


@pytest.mark.parametrize("data", NO_FLAG_DATA)
@pytest.mark.parametrize("method", sorted(ebmlab.methods.METHODS))
def test_every_method_trains_with_no_flags_on_any_width_and_image_size(method, data, tmp_path):
    x = NO_FLAG_DATA[data](np.random.default_rng(0))
    quick = {"train": {"sample_every": 0, "device": "cpu"}, "data": {"batch_size": 16}}
    run = ebmlab.train(
        method, x, steps=2, out=tmp_path / "r", overrides=quick, evaluate=False, progress=False
    )
    params = run.config.method_params
    assert "auto" not in params.values()
    if "z_dim" in params and x.ndim == 2:
        assert params["z_dim"] <= x.shape[1]
    with torch.no_grad():
        energies = run.model.energy(x[:8])
    assert energies.shape == (8,) and torch.isfinite(energies).all()


@pytest.mark.parametrize(
    ("kind", "target", "refused"),
    [
        ("mala", 0.0, True),
        ("mala", 1.0, True),
        ("mala", -0.5, True),
        ("mala", 1.5, True),
        ("mala", 0.6, False),
        ("mala", None, False),
        ("langevin", None, False),
        ("langevin", 0.6, True),
        ("hmc", None, True),
    ],
)
def test_a_methods_chain_options_are_checked_in_one_place(kind, target, refused):
    if refused:
        with pytest.raises(EbmlabError):
            check_chain(kind, target)
    else:
        check_chain(kind, target)


def test_a_chain_runs_at_a_step_given_for_it_or_else_at_its_own():
    chain = DataChain("langevin", 0.25, noise=0.0)
    assert chain.sampler(3).step_size == 0.25
    assert chain.sampler(3, step_size=0.5).step_size == 0.5
    assert isinstance(chain.sampler(3), Langevin)
    assert isinstance(DataChain("mala", 0.25).sampler(3), MALA)


def test_a_chain_adapts_only_when_asked_and_only_after_steps():
    energy = lambda x: 0.5 * x.pow(2).sum(1)  # noqa: E731
    chain = DataChain("mala", 0.05, target_accept=0.6)
    first, x = chain.step_size, torch.randn(64, 2)
    chain(energy, x, 3)
    chain(energy, x, 0, adapt=True)
    assert chain.step_size == first
    chain(energy, x, 1, adapt=True)
    assert chain.step_size != pytest.approx(first, rel=0.1)


def test_the_global_acceptance_is_the_mean_over_the_moves(monkeypatch):
    rates = iter([0.2, 0.6, 0.7])
    monkeypatch.setattr(
        "ebmlab.samplers.chain.independence_move",
        lambda energy, x, centres, bandwidths, broad_share: (x, torch.tensor(next(rates))),
    )
    chain = DataChain("mala", 0.05, global_moves=3)
    energy = lambda x: 0.5 * x.pow(2).sum(1)  # noqa: E731
    _, info = chain(energy, torch.randn(8, 2), 1, reference=torch.randn(32, 2))
    assert float(info["global_accept_rate"]) == pytest.approx(0.5)


def test_a_chain_gives_its_moves_its_broad_share(monkeypatch):
    shares = []

    def move(energy, x, centres, bandwidths, broad_share):
        shares.append(broad_share)
        return x, torch.tensor(1.0)

    monkeypatch.setattr("ebmlab.samplers.chain.independence_move", move)
    chain = DataChain("mala", 0.05, global_moves=2, broad_share=0.15)
    chain(lambda x: x.pow(2).sum(1), torch.randn(8, 2), 1, reference=torch.randn(32, 2))
    assert shares == [0.15, 0.15]


def test_bandwidths_are_half_the_distance_to_the_kth_nearest_other_centre():
    centres = torch.tensor([[0.0], [1.0], [3.0], [6.0], [10.0]])
    expected = 0.5 * torch.tensor([3.0, 2.0, 3.0, 4.0, 7.0])  # 2nd nearest other centre
    torch.testing.assert_close(kde_bandwidths(centres, k=2), expected)
    nearest = 0.5 * torch.tensor([1.0, 1.0, 2.0, 3.0, 4.0])
    torch.testing.assert_close(kde_bandwidths(centres, k=1), nearest)
    farthest_kept = 0.5 * torch.tensor([10.0, 9.0, 7.0, 6.0, 10.0])  # k = 5 -> 4 others
    torch.testing.assert_close(kde_bandwidths(centres), farthest_kept)


def test_the_default_k_is_five():
    centres = torch.arange(8.0).pow(2).unsqueeze(1)
    fifth = torch.cdist(centres, centres).sort(dim=1).values[:, 5]
    torch.testing.assert_close(kde_bandwidths(centres), 0.5 * fifth)


def test_duplicated_centres_keep_the_smallest_real_bandwidth():
    centres = torch.tensor([[0.0], [0.0], [1.0], [5.0]])
    torch.testing.assert_close(kde_bandwidths(centres, k=1), 0.5 * torch.tensor([1, 1, 1, 4.0]))
    torch.testing.assert_close(kde_bandwidths(torch.zeros(4, 2), k=2), torch.full((4,), 0.5))


def test_the_kernel_density_is_the_gaussian_mixture_in_two_dimensions():
    centres, bandwidths = torch.randn(5, 2), torch.rand(5) + 0.2
    x = torch.randn(7, 2)
    mixture = torch.distributions.MixtureSameFamily(
        torch.distributions.Categorical(torch.ones(5)),
        torch.distributions.Independent(
            torch.distributions.Normal(centres, bandwidths.unsqueeze(1).expand(5, 2)), 1
        ),
    )
    torch.testing.assert_close(kde_log_density(x, centres, bandwidths), mixture.log_prob(x))


def test_an_independence_move_toward_the_kernel_density_itself_is_always_accepted():
    """With exp(-E) = q, the proposal's own density, the Metropolis-Hastings ratio is 1."""
    centres = torch.randn(20, 2)
    bandwidths = kde_bandwidths(centres)
    energy = lambda x: -kde_log_density(x, centres, bandwidths)  # noqa: E731
    x = torch.randn(500, 2) * 3
    moved, rate = independence_move(energy, x, centres, bandwidths=bandwidths)
    assert float(rate) == 1.0 and not torch.equal(moved, x)
