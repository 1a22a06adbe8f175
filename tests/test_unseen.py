"""Unseen densities: exact normalisation, draws that match the density, seeds that repeat, the
suite's coverage, their loading as a user's table with the density in model units, and the
bench suite that runs every method on them."""

import math
from functools import cache

import numpy as np
import pytest
import torch
from scipy import integrate

from ebmlab.bench import SUITES, bench
from ebmlab.bench.spec import Budget
from ebmlab.bench.tables import across_datasets_table, read_results
from ebmlab.data import load_dataset, unseen
from ebmlab.data.unseen import UNSEEN_SUITE, parse_name, unseen_density
from ebmlab.errors import EbmlabError
from ebmlab.metrics import grid_density_metrics, mode_metrics

DRAWS = 200_000
#: cells per side of the reference grids (finer than the metrics' 4,000 and 400)
FINE = {1: 20_000, 2: 500}


def cell_centres(bounds, cells):
    """Cell centres (N, D) of a grid over a per-dimension box, and the cell volume, float64."""
    axes, volume = [], 1.0
    for low, high in bounds:
        step = (high - low) / cells
        axes.append(low + step * (torch.arange(cells, dtype=torch.float64) + 0.5))
        volume *= step
    return torch.cartesian_prod(*axes).reshape(-1, len(bounds)), volume


@cache
def fine_grid(seed):
    """(points, probability of each cell) of a suite density on its fine grid."""
    density = unseen_density(seed)
    points, volume = cell_centres(density.bounds, FINE[density.dim])
    log_p = torch.cat([density.log_density(chunk) for chunk in points.split(65_536)])
    return points, log_p.exp() * volume, log_p


@cache
def draws(seed):
    return unseen_density(seed).draw(DRAWS, torch.Generator().manual_seed(seed + 1))


# ---------------------------------------------------------------- exact normalisation


@pytest.mark.parametrize("seed", UNSEEN_SUITE)
def test_density_integrates_to_one_on_its_box(seed):
    _, mass, _ = fine_grid(seed)
    # the box leaves out < 1.4e-5 of the mass; the midpoint rule is far more exact than that
    assert float(mass.sum()) == pytest.approx(1.0, abs=1e-4)


@pytest.mark.parametrize("seed", UNSEEN_SUITE)
def test_box_holds_all_but_1e4_of_the_mass(seed):
    density, x = unseen_density(seed), draws(seed)
    low = torch.tensor([side[0] for side in density.bounds], dtype=torch.float64)
    high = torch.tensor([side[1] for side in density.bounds], dtype=torch.float64)
    assert float(((x < low) | (x > high)).any(1).double().mean()) < 1e-4


@pytest.mark.parametrize("seed", [s for s in UNSEEN_SUITE if unseen_density(s).kind == "spiral"])
def test_spiral_quadrature_matches_adaptive_quadrature(seed):
    """p(u) = int_0^1 mean_arm N(u; c(t), s^2 I) dt by scipy's adaptive quadrature."""
    density = unseen_density(seed)
    curve = density.curve
    generator = torch.Generator().manual_seed(0)
    u = density.unit_draw(12, generator)
    u = u + curve.std * torch.randn(u.shape, generator=generator, dtype=torch.float64)

    def exact(point):
        def integrand(t):
            centres = curve.curve(torch.tensor([t], dtype=torch.float64)).numpy()
            squared = ((centres - point) ** 2).sum(1) / curve.std**2
            return np.exp(-squared / 2).mean() / (2 * math.pi * curve.std**2)

        breaks = np.linspace(0, 1, 101)[1:-1]
        return integrate.quad(integrand, 0, 1, points=breaks, limit=5000, epsrel=1e-11)[0]

    reference = np.array([exact(point.numpy()) for point in u])
    quadrature = density.unit_log_density(u).exp().numpy()
    assert np.allclose(quadrature, reference, rtol=1e-6, atol=0)


# ---------------------------------------------------------------- draws match the density


@pytest.mark.parametrize("seed", UNSEEN_SUITE)
def test_draws_have_the_density_s_mean_and_covariance(seed):
    points, mass, _ = fine_grid(seed)
    mean = (mass[:, None] * points).sum(0)
    centred = points - mean
    covariance = (mass[:, None, None] * centred[:, :, None] * centred[:, None, :]).sum(0)
    x = draws(seed)
    spread = covariance.diagonal().sqrt()
    assert ((x.mean(0) - mean).abs() < 5 * spread / math.sqrt(DRAWS)).all()
    products = (x - x.mean(0))[:, :, None] * (x - x.mean(0))[:, None, :]
    standard_error = products.std(0) / math.sqrt(DRAWS)
    assert ((products.mean(0) - covariance).abs() < 5 * standard_error).all()


@pytest.mark.parametrize("seed", UNSEEN_SUITE)
def test_draws_score_the_density_s_entropy(seed):
    """-mean(log p(draws)) estimates the entropy -sum p log p only if the draws come from p."""
    _, mass, log_p = fine_grid(seed)
    entropy = float(-(mass * log_p).sum())
    scores = unseen_density(seed).log_density(draws(seed))
    standard_error = float(scores.std()) / math.sqrt(DRAWS)
    assert float(-scores.mean()) == pytest.approx(entropy, abs=5 * standard_error + 1e-3)


# ---------------------------------------------------------------- seeds and the suite


def test_a_seed_gives_the_same_density_every_time():
    first, again, other = unseen_density(60), unseen_density(60), unseen_density(61)
    x = first.draw(1000, torch.Generator().manual_seed(3))
    assert first.description == again.description != other.description
    assert torch.equal(x, again.draw(1000, torch.Generator().manual_seed(3)))
    assert torch.equal(first.log_density(x), again.log_density(x))
    # the stream numpy keeps stable: the suite's comments stay true on every machine
    assert first.description.startswith("2D mixture of 12 Gaussians")
    assert first.scale == pytest.approx(0.0015, rel=0.05)


def test_the_suite_covers_every_kind_size_and_scale():
    densities = [unseen_density(seed) for seed in UNSEEN_SUITE]
    assert len(set(UNSEEN_SUITE)) == 12
    kinds = [d.kind for d in densities]
    assert {kind: kinds.count(kind) for kind in set(kinds)} == {
        "1D mixture": 3,
        "2D mixture": 5,
        "rings": 2,
        "spiral": 2,
    }
    sizes = [len(d.components.weights) for d in densities if d.kind == "2D mixture"]
    assert min(sizes) <= 3 and max(sizes) >= 10
    scales = [d.scale for d in densities]
    assert min(scales) < 2e-3 and max(scales) > 5e2
    assert all((d.offset.abs() >= d.scale).all() for d in densities)
    assert max(d.offset.abs().max() / d.scale for d in densities) > 10
    weights = [d.components.weights for d in densities if d.components is not None]
    assert all(float(w.max() / w.min()) > 1.5 for w in weights)  # unequal weights everywhere
    rotated = [d for d in densities if d.kind == "2D mixture"]
    stds = [torch.linalg.eigvalsh(d.components.covariances).sqrt() for d in rotated]
    assert max(float((s[:, 1] / s[:, 0]).max()) for s in stds) > 2.5  # anisotropic
    assert all(d.components.covariances[:, 0, 1].abs().max() > 0 for d in rotated)


def test_names_parse_to_seeds():
    assert parse_name("unseen-17") == 17
    assert [parse_name(n) for n in ("unseen-", "unseen--1", "unseen-1.5", "rings")] == [None] * 4
    with pytest.raises(EbmlabError, match="unseen-x"):
        load_dataset("unseen-x")


# ---------------------------------------------------------------- as a user's table


@pytest.fixture(scope="module")
def loaded():
    return {seed: load_dataset(f"{unseen.PREFIX}{seed}") for seed in UNSEEN_SUITE}


def test_loads_as_a_standardised_table_of_20000_and_5000_draws(loaded):
    data = loaded[UNSEEN_SUITE[0]]
    assert data.kind == "tabular" and data.log_density_exact
    assert data.train.shape == (20_000, 1) and data.test.shape == (5_000, 1)
    assert data.train.dtype == torch.float32
    assert float(data.train.mean()) == pytest.approx(0, abs=1e-5)
    assert float(data.train.std()) == pytest.approx(1, abs=1e-4)
    smaller = load_dataset("unseen-25", n_train=300, seed=4)
    assert smaller.train.shape == (300, 1) and smaller.test.shape == (5_000, 1)


@pytest.mark.parametrize("seed", UNSEEN_SUITE)
def test_model_unit_density_integrates_to_one_on_the_metric_grid(loaded, seed):
    """exp(log p_model) normalised on the default grid of `evaluate` (4,000 cells, 400 x 400)
    over the model-unit box: the change of variables is right and the grid resolves it."""
    data = loaded[seed]
    metrics = grid_density_metrics(
        lambda x: -data.log_density(x.double()), data.log_density, data.box
    )
    assert metrics["log_z"] == pytest.approx(0.0, abs=1e-3)
    assert metrics["kl"] == pytest.approx(0.0, abs=1e-6)


@pytest.mark.parametrize("seed", [25, 8, 141])  # 1D at 1e-3, 2D at 8e2, a ring at 1e3
def test_model_units_change_the_density_by_the_jacobian_only(loaded, seed):
    data, density = loaded[seed], unseen_density(seed)
    x = data.test[:500].double()
    user = x * data.scaler.scale.double() + data.scaler.shift.double()
    expected = density.log_density(user) + data.scaler.scale.double().log().sum()
    assert torch.allclose(data.log_density(x), expected, rtol=0, atol=1e-9)
    fresh = data.draw(4000, torch.Generator().manual_seed(0))
    assert float(fresh.mean()) == pytest.approx(0, abs=0.1)


@pytest.mark.parametrize(
    "seed", [s for s in UNSEEN_SUITE if unseen_density(s).components is not None]
)
def test_true_draws_cover_the_model_unit_modes_with_their_weights(loaded, seed):
    data = loaded[seed]
    parts = data.components
    x = data.draw(50_000, torch.Generator().manual_seed(2))
    scores = mode_metrics(x, parts.means, parts.covariances, parts.weights)
    assert scores["mode_coverage"] > 0.985  # P(chi2_D <= 9) is 0.997 (1D), 0.989 (2D)
    assert scores["mode_weight_tv"] < 0.015  # sampling noise alone, at 50,000 draws


# ---------------------------------------------------------------- the bench suite


def test_the_unseen_suite_runs_every_density_for_3000_steps_once():
    suite = SUITES["unseen"]
    assert list(suite.budgets) == [f"unseen-{seed}" for seed in UNSEEN_SUITE]
    assert {str(Budget.parse(budget)) for budget in suite.budgets.values()} == {"3000 steps"}
    assert suite.seeds == 1


def bench_row(method, data, kl, status="ok", **metrics):
    return {"method": method, "data": data, "seed": 0.0, "status": status, "kl": kl, **metrics}


def test_across_datasets_gives_median_and_worst_and_counts_failures():
    rows = [
        bench_row("cd", "a", 0.1),
        bench_row("cd", "b", 0.3),
        bench_row("cd", "c", 0.8),
        bench_row("icd", "a", 0.05),
        bench_row("icd", "b", "", status="failed"),
        bench_row("icd", "c", 0.9),
        bench_row("gebm", "a", "", mode_coverage=0.95),
        bench_row("gebm", "b", "", mode_coverage=0.5),
    ]
    table = across_datasets_table(rows, ["a", "b", "c"])
    rows_of_cells = [line.removeprefix("| ").removesuffix(" |").split(" | ") for line in table[4:]]
    cells = {method: rest for method, *rest in rows_of_cells}
    assert cells["cd"][:3] == ["**0.3**", "**0.8**", "3/3"]
    assert cells["icd"][:3] == ["0.475", "0.9", "2/3"]  # the failed run is not a good one
    assert cells["gebm"][:3] == ["-", "-", "0/3"]
    assert cells["gebm"][3:6] == ["0.725", "0.5", "2/2"]  # coverage: the worst is the lowest


@pytest.mark.slow
def test_a_tiny_unseen_bench_scores_kl_held_out_nll_and_modes(tmp_path):
    out = bench(
        "unseen", methods=["dsm"], data=["unseen-25"], budget="100", out=tmp_path / "b", jobs=1
    )
    (row,) = read_results(out / "results.csv")
    assert row["status"] == "ok" and row["steps"] == 100 and row["budget"] == "100 steps"
    assert 0 <= row["kl"] < 10 and math.isfinite(row["nll_test_grid"])
    assert 0 <= row["mode_coverage"] <= 1 and 0 <= row["mode_weight_tv"] <= 1
    board = (out / "leaderboard.md").read_text()
    assert "## unseen-25" in board and "| dsm |" in board
