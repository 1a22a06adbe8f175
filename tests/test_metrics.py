import math
import os
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from sklearn.datasets import load_digits
from torch import nn

from ebmlab.data import load_dataset
from ebmlab.errors import EbmlabError
from ebmlab.metrics import (
    auroc,
    classifier_features,
    confident_label_metrics,
    data_box,
    density_grid,
    evaluate,
    frechet_distance,
    grid_density_metrics,
    held_out_nll,
    image_scores,
    inception_features,
    intrinsic_dimension,
    kid,
    mmd2,
    mode_metrics,
    ood_table,
    psnr,
    random_features,
    rmse,
    ssim,
    train_feature_net,
)
from ebmlab.metrics import fd as fd_module

LOG_2PI = math.log(2 * math.pi)


def standard_normal_log_density(x):
    return -0.5 * x.square().sum(1) - LOG_2PI


def gaussian_energy(mean, offset=0.0):
    mean = torch.tensor(mean)
    return lambda x: 0.5 * (x - mean).square().sum(1) + offset


class GaussianModel(nn.Module):
    """Unit-covariance Gaussian 'model' with exact energy and exact samples."""

    def __init__(self, mean):
        super().__init__()
        self.mean = nn.Parameter(torch.tensor(mean))

    def energy(self, x):
        return 0.5 * (x - self.mean).square().sum(1)

    def sample(self, n):
        return torch.randn(n, len(self.mean), device=self.mean.device) + self.mean.detach()


class ImageModel:
    """Samples drawn from a fixed image pool: a perfect sampler when the pool is the data."""

    def __init__(self, pool):
        self.pool = pool

    def energy(self, x):
        return x.flatten(1).square().mean(1)

    def sample(self, n):
        return self.pool[torch.randint(len(self.pool), (n,))]


class DrawingModel:
    """A 'model' whose energy is the data's own -log p and whose samples are fresh draws."""

    def __init__(self, data, shift=None):
        self.data, self.shift = data, shift

    def energy(self, x):
        return -self.data.log_density(x)

    def sample(self, n):
        x = self.data.draw(n, torch.Generator().manual_seed(int(torch.randint(10**6, ()))))
        return x if self.shift is None else x + self.shift


def gaussian_toy_dataset():
    return SimpleNamespace(
        name="gauss",
        kind="toy2d",
        train=torch.randn(2000, 2),
        test=torch.randn(1000, 2),
        train_labels=None,
        test_labels=None,
        log_density=standard_normal_log_density,
        log_density_exact=True,
        bounds=(-6.0, 6.0),
    )


@pytest.fixture(scope="module")
def feature_cache(tmp_path_factory):
    with pytest.MonkeyPatch.context() as patch:
        path = tmp_path_factory.mktemp("cache")
        patch.setenv("EBMLAB_CACHE", str(path))
        yield path


@pytest.fixture(scope="module")
def digits():
    bunch = load_digits()
    images = torch.tensor(bunch.images, dtype=torch.float32)[:, None] / 8.0 - 1.0
    labels = torch.tensor(bunch.target, dtype=torch.int64)
    order = torch.randperm(len(images), generator=torch.Generator().manual_seed(0))
    train, test = order[:1437], order[1437:]
    return SimpleNamespace(
        name="digits",
        kind="image",
        train=images[train],
        test=images[test],
        train_labels=labels[train],
        test_labels=labels[test],
    )


@pytest.fixture(scope="module")
def digit_features(feature_cache, digits):
    return classifier_features(digits)


# --- toy2d -------------------------------------------------------------------------------------


def test_grid_log_z_of_gaussian_energy_is_log_two_pi():
    metrics = grid_density_metrics(gaussian_energy([0.0, 0.0]), None, (-6.0, 6.0))
    assert metrics.keys() == {"log_z"}
    assert abs(metrics["log_z"] - LOG_2PI) < 1e-6


def test_grid_kl_of_a_density_to_itself_is_zero():
    mean, scale = torch.tensor([0.5, -1.0]), 0.8

    def log_density(x):
        return standard_normal_log_density((x - mean) / scale) - 2 * math.log(scale)

    metrics = grid_density_metrics(lambda x: -log_density(x), log_density, (-6.0, 6.0))
    assert abs(metrics["kl"]) < 1e-4


def test_grid_kl_matches_closed_form_for_shifted_gaussian():
    mean = [1.0, -0.5]
    metrics = grid_density_metrics(gaussian_energy(mean), standard_normal_log_density, (-7, 7))
    assert metrics["kl"] == pytest.approx(0.5 * (1.0 + 0.25), abs=1e-3)
    assert metrics["data_entropy"] == pytest.approx(1 + LOG_2PI, abs=1e-4)
    assert metrics["nll"] - metrics["data_entropy"] == pytest.approx(metrics["kl"], abs=1e-9)


def test_grid_metrics_ignore_an_energy_constant():
    base = grid_density_metrics(gaussian_energy([0.3, 0.2]), standard_normal_log_density, (-6, 6))
    shifted = grid_density_metrics(
        gaussian_energy([0.3, 0.2], offset=123.0), standard_normal_log_density, (-6, 6)
    )
    assert shifted["kl"] == pytest.approx(base["kl"], abs=1e-6)
    assert shifted["nll"] == pytest.approx(base["nll"], abs=1e-6)
    assert shifted["log_z"] == pytest.approx(base["log_z"] - 123.0, abs=1e-5)


def test_grid_cells_without_data_mass_add_nothing():
    def uniform_square(x):  # uniform on [-1, 1]^2, zero density elsewhere
        inside = (x.abs() <= 1).all(dim=1)
        return torch.where(inside, -math.log(4.0), -math.inf)

    metrics = grid_density_metrics(lambda x: torch.zeros(len(x)), uniform_square, (-2.0, 2.0))
    # q is uniform on the 4 x 4 box: KL = log(16 / 4), NLL = log 16, H(p) = log 4
    assert metrics["kl"] == pytest.approx(math.log(4.0), abs=1e-9)
    assert metrics["nll"] == pytest.approx(math.log(16.0), abs=1e-9)
    assert metrics["data_entropy"] == pytest.approx(math.log(4.0), abs=1e-9)


def test_grid_cells_are_centred_in_the_box():
    """Cell centres low + (i + 1/2) h: on [0, 1] with 2 cells, Z of exp(-x) is the midpoint
    sum (e^-1/4 + e^-3/4) / 2, and density_grid's coordinates are the centres."""
    log_z = grid_density_metrics(lambda x: x[:, 0], None, ((0.0, 1.0),), resolution=2)["log_z"]
    assert log_z == pytest.approx(math.log((math.exp(-0.25) + math.exp(-0.75)) / 2), abs=1e-12)
    xs, ys, _ = density_grid(lambda x: x[:, 0], ((0.0, 1.0), (-2.0, 2.0)), resolution=4)
    assert np.allclose(xs, [0.125, 0.375, 0.625, 0.875]) and np.allclose(ys, [-1.5, -0.5, 0.5, 1.5])


def test_default_grids_are_4000_cells_in_1d_400_squared_in_2d_and_200_squared_to_draw():
    seen = []

    def counting(x):
        seen.append(len(x))
        return x[:, 0] * 0

    grid_density_metrics(counting, None, ((0.0, 1.0),))
    assert sum(seen) == 4000
    seen.clear()
    grid_density_metrics(counting, None, (0.0, 1.0))
    assert sum(seen) == 400**2
    assert density_grid(counting, (0.0, 1.0))[2].shape == (200, 200)


@pytest.mark.parametrize("box", [((0.0, 1.0),), ((0.0, 1.0),) * 3])
def test_density_grid_draws_only_2d_functions(box):
    with pytest.raises(EbmlabError, match="2D"):
        density_grid(lambda x: x[:, 0], box)


@pytest.mark.parametrize("side", [(0.0,), (0.0, 1.0, 2.0)])
def test_each_side_of_a_box_is_low_and_high(side):
    with pytest.raises(EbmlabError, match=r"\(low, high\)"):
        grid_density_metrics(lambda x: x[:, 0], None, (side,))


def test_a_grid_needs_two_cells_per_side():
    with pytest.raises(EbmlabError, match="at least 2"):
        grid_density_metrics(lambda x: x[:, 0], None, ((0.0, 1.0),), resolution=1)
    assert math.isfinite(grid_density_metrics(lambda x: x[:, 0], None, ((0.0, 1.0),), 2)["log_z"])


def test_density_grid_rows_are_y():
    xs, ys, values = density_grid(lambda x: x[:, 0] + 10 * x[:, 1], (-1.0, 1.0), resolution=5)
    assert values.shape == (5, 5)
    assert values[1, 3] == pytest.approx(xs[3] + 10 * ys[1], abs=1e-6)


@pytest.mark.parametrize(
    "bounds, resolution",
    [((1.0, -1.0), 10), ((0.0, math.inf), 10), (((0.0, 1.0), (2.0, 2.0)), 10)],
)
def test_grid_rejects_impossible_grids(bounds, resolution):
    with pytest.raises(EbmlabError, match="bounds"):
        grid_density_metrics(gaussian_energy([0.0, 0.0]), None, bounds, resolution)


def test_grid_needs_one_or_two_dimensions():
    with pytest.raises(EbmlabError, match="1 or 2 dimensions"):
        grid_density_metrics(gaussian_energy([0.0] * 3), None, ((-1.0, 1.0),) * 3)


# --- 1D grids, per-dimension boxes, held-out NLL -------------------------------------------------


def normal_log_density(mean, std):
    """log N(x; mean, std^2) of points (B, 1)."""
    return lambda x: -0.5 * ((x[:, 0] - mean) / std) ** 2 - math.log(std) - 0.5 * LOG_2PI


def test_1d_grid_kl_of_the_true_density_is_zero():
    log_p = normal_log_density(0.3, 0.7)
    metrics = grid_density_metrics(lambda x: -log_p(x), log_p, ((-5.0, 5.0),))
    assert abs(metrics["kl"]) < 1e-9
    assert metrics["log_z"] == pytest.approx(0.0, abs=1e-6)
    entropy = 0.5 + 0.5 * LOG_2PI + math.log(0.7)
    assert metrics["data_entropy"] == pytest.approx(entropy, abs=1e-6)


def test_1d_grid_kl_of_a_shifted_wider_model_is_the_gaussians_closed_form():
    mean, std = 0.8, 1.3
    log_q = normal_log_density(mean, std)
    metrics = grid_density_metrics(lambda x: 7.0 - log_q(x), normal_log_density(0, 1), ((-9, 9),))
    # KL(N(0, 1) || N(mean, std^2)) = log std + (1 + mean^2) / (2 std^2) - 1/2
    closed_form = math.log(std) + (1 + mean**2) / (2 * std**2) - 0.5
    assert metrics["kl"] == pytest.approx(closed_form, abs=1e-6)
    assert metrics["log_z"] == pytest.approx(-7.0, abs=1e-6)


def test_a_per_dimension_box_fits_an_anisotropic_density():
    std = torch.tensor([1.0, 0.01])

    def log_p(x):
        return -0.5 * (x / std).square().sum(1) - LOG_2PI - std.log().sum()

    narrow = grid_density_metrics(lambda x: -log_p(x), log_p, ((-6.0, 6.0), (-0.08, 0.08)))
    assert narrow["log_z"] == pytest.approx(0.0, abs=1e-6)
    # the square box has cells of 0.03 along y, 3 std: the midpoint sum is off by 20%
    square = grid_density_metrics(lambda x: -log_p(x), None, (-6.0, 6.0))
    assert abs(square["log_z"]) > 0.1


def test_a_square_box_and_its_per_dimension_form_agree():
    energy = gaussian_energy([0.3, -0.2])
    square = grid_density_metrics(energy, standard_normal_log_density, (-6.0, 6.0))
    boxed = grid_density_metrics(energy, standard_normal_log_density, ((-6.0, 6.0),) * 2)
    assert boxed == square


@pytest.mark.parametrize("dim", [1, 2])
def test_held_out_nll_is_the_exact_cross_entropy_of_a_gaussian_energy(dim):
    mean, std = torch.tensor([0.5, -0.5][:dim]), torch.tensor([0.8, 1.0][:dim])
    test = torch.randn(3000, dim, generator=torch.Generator().manual_seed(1)) * 1.2 + 0.3

    def energy(x):  # q = N(mean, diag(std^2)), offset by 4 to be unnormalised
        return 0.5 * ((x - mean) / std).square().sum(1) + 4.0

    exact = float((0.5 * ((test - mean) / std).square().sum(1)).mean())
    exact += 0.5 * dim * LOG_2PI + float(std.log().sum())
    box = data_box(test)
    assert held_out_nll(energy, test, box) == pytest.approx(exact, abs=1e-5)


def test_data_box_widens_the_range_by_a_quarter():
    points = torch.tensor([[0.0, 5.0], [4.0, 5.0], [1.0, 5.0]])
    assert data_box(points) == ((-1.0, 5.0), (4.75, 5.25))


# --- mode metrics ------------------------------------------------------------------------------


def test_mode_metrics_on_samples_placed_by_hand():
    means, covariances = torch.tensor([[-5.0], [5.0]]), torch.ones(2, 1, 1)
    weights = torch.tensor([0.25, 0.75])
    on_modes = torch.cat([torch.full((30, 1), -5.0), torch.full((70, 1), 5.0)])
    scores = mode_metrics(on_modes, means, covariances, weights)
    assert scores["mode_coverage"] == 1.0
    assert scores["mode_weight_tv"] == pytest.approx(0.05, abs=1e-12)
    # 10 samples half-way: 5 std from both, off the modes, shared 0.25 / 0.75 by the weights
    between = torch.cat([on_modes, torch.zeros(10, 1)])
    scores = mode_metrics(between, means, covariances, weights)
    assert scores["mode_coverage"] == pytest.approx(100 / 110)
    assert scores["mode_weight_tv"] == pytest.approx(abs(32.5 / 110 - 0.25), abs=1e-12)
    collapsed = mode_metrics(torch.full((50, 1), 5.0), means, covariances, weights)
    assert collapsed["mode_weight_tv"] == pytest.approx(0.25, abs=1e-12)


def test_mode_coverage_is_measured_in_each_component_s_own_metric():
    covariance = torch.tensor([[[100.0, 0.0], [0.0, 1.0]]])  # std 10 along x, 1 along y
    points = torch.tensor([[29.0, 0.0], [0.0, 2.9], [0.0, 3.1], [31.0, 0.0]])
    scores = mode_metrics(points, torch.zeros(1, 2), covariance, torch.ones(1))
    assert scores["mode_coverage"] == 0.5


def test_mode_metrics_reject_mismatched_shapes():
    with pytest.raises(EbmlabError, match="samples of shape"):
        mode_metrics(
            torch.zeros(5, 3), torch.zeros(2, 2), torch.eye(2).repeat(2, 1, 1), torch.ones(2)
        )


# --- mmd ---------------------------------------------------------------------------------------


def test_mmd_is_unbiased_for_one_distribution():
    values = []
    for seed in range(20):
        generator = torch.Generator().manual_seed(seed)
        values.append(mmd2(torch.randn(300, 2, generator=generator), torch.randn(300, 2)))
    values = np.array(values)
    assert abs(values.mean()) < 3 * values.std() / math.sqrt(len(values))
    assert mmd2(torch.randn(300, 2), torch.randn(300, 2) + 0.5) > 10 * values.std()


def test_mmd_grows_with_shift():
    x, noise = torch.randn(400, 3), torch.randn(400, 3)
    bandwidths = [0.5, 1.0, 2.0]
    values = [mmd2(x, noise + shift, bandwidths) for shift in (0.25, 0.5, 1.0, 2.0)]
    assert values[0] > 0
    assert all(a < b for a, b in zip(values, values[1:], strict=False))


def test_mmd_rejects_mismatched_samples():
    with pytest.raises(EbmlabError, match="same size"):
        mmd2(torch.randn(10, 2), torch.randn(10, 3))
    with pytest.raises(EbmlabError, match="at least 2"):
        mmd2(torch.randn(1, 2), torch.randn(10, 2))


# --- image scores ------------------------------------------------------------------------------


def test_identical_images_score_perfectly():
    x = torch.rand(4, 1, 28, 28)
    assert np.all(np.isinf(psnr(x, x)))
    assert np.allclose(ssim(x, x), 1.0)
    assert np.allclose(rmse(x, x), 0.0)


def test_constant_offset_gives_rmse_and_psnr():
    x = torch.rand(3, 3, 16, 16, dtype=torch.float64) * 0.9
    assert np.allclose(rmse(x + 0.1, x), 0.1)
    assert np.allclose(psnr(x + 0.1, x), 20.0)
    assert image_scores(x + 0.1, x)["psnr"] == pytest.approx(20.0)


@pytest.mark.parametrize("shape", [(2, 1, 8, 8), (2, 3, 32, 32), (2, 1, 5, 9)])
def test_ssim_handles_small_and_colour_images(shape):
    clean = torch.rand(shape)
    noisy = (clean + 0.2 * torch.randn(shape)).clamp(0, 1)
    scores = ssim(noisy, clean)
    assert scores.shape == (2,)
    assert np.all(scores < 0.99)
    assert np.allclose(ssim(clean, clean), 1.0)


def test_mask_scores_only_the_region():
    x = torch.rand(2, 1, 8, 8) * 0.5
    y = x.clone()
    y[:, :, :4] += 0.2  # error only in the top half
    top = torch.zeros(2, 1, 8, 8, dtype=torch.bool)
    top[:, :, :4] = True
    assert np.allclose(rmse(y, x, mask=top), 0.2)
    assert np.allclose(rmse(y, x, mask=~top), 0.0)
    assert np.allclose(rmse(y, x), math.sqrt(0.5 * 0.04))
    assert np.allclose(ssim(x, x, mask=top), 1.0)


def test_image_scores_reject_model_units_and_empty_masks():
    x = torch.rand(2, 1, 8, 8)
    with pytest.raises(EbmlabError, match=r"\[0, 1\]"):
        rmse(x * 2 - 1, x)
    with pytest.raises(EbmlabError, match="no pixel"):
        rmse(x, x, mask=torch.zeros(2, 1, 8, 8))


# --- OOD ---------------------------------------------------------------------------------------


def test_auroc_extremes_and_chance():
    inside, outside = torch.arange(100.0), torch.arange(100.0) - 1000
    assert auroc(inside, outside) == 1.0
    assert auroc(outside, inside) == 0.0
    same = torch.randn(2000)
    assert auroc(same[:1000], same[1000:]) == pytest.approx(0.5, abs=0.05)


def test_ood_table_scores_each_set_by_negative_energy():
    energy = GaussianModel([0.0, 0.0]).energy
    test = torch.randn(500, 2)
    table = ood_table(energy, test, {"far": torch.randn(500, 2) * 4, "same": torch.randn(500, 2)})
    assert list(table) == ["far", "same"]
    assert table["far"] > 0.9
    assert table["same"] == pytest.approx(0.5, abs=0.07)
    with pytest.raises(EbmlabError, match="shape"):
        ood_table(energy, test, {"bad": torch.randn(10, 3)})


def test_auroc_rejects_nan_scores():
    with pytest.raises(EbmlabError, match="NaN"):
        auroc(torch.tensor([1.0, math.nan]), torch.tensor([0.0]))


# --- Fréchet distance and KID ------------------------------------------------------------------


def gaussian_with_exact_moments(n, mean, variances, seed):
    """Points whose sample mean and covariance equal the given ones exactly."""
    rng = np.random.default_rng(seed)
    z = rng.standard_normal((n, len(mean)))
    z -= z.mean(axis=0)
    z = z @ np.linalg.inv(np.linalg.cholesky(np.cov(z, rowvar=False))).T
    return z * np.sqrt(variances) + mean


def test_frechet_distance_of_a_set_with_itself_is_zero():
    a = torch.randn(500, 16)
    assert abs(frechet_distance(a, a)) < 1e-8


def test_frechet_distance_matches_closed_form_for_gaussians():
    m1, m2 = np.array([0.0, 1.0, -1.0]), np.array([0.5, 0.0, 0.0])
    s1, s2 = np.array([1.0, 2.0, 0.5]), np.array([3.0, 0.5, 0.5])
    a = gaussian_with_exact_moments(400, m1, s1, seed=0)
    b = gaussian_with_exact_moments(300, m2, s2, seed=1)
    expected = np.sum((m1 - m2) ** 2) + np.sum(s1 + s2 - 2 * np.sqrt(s1 * s2))
    assert frechet_distance(a, b) == pytest.approx(expected, abs=1e-8)


def test_distances_are_nan_for_diverged_features():
    a, b = torch.randn(50, 4), torch.randn(50, 4)
    b[3, 1] = math.nan
    assert math.isnan(frechet_distance(a, b))
    assert all(math.isnan(v) for v in kid(a, b))


def test_kid_is_near_zero_for_one_distribution_and_grows_with_shift():
    a, b = torch.randn(600, 32), torch.randn(600, 32)
    same, same_std = kid(a, b)
    assert abs(same) < 3 * same_std
    shifted = [kid(a, b + shift)[0] for shift in (0.25, 0.5, 1.0)]
    assert shifted[0] > same + 3 * same_std
    assert shifted[0] < shifted[1] < shifted[2]
    # subsets drawn twice from one set share points, so a set against itself sits just below 0
    assert abs(kid(a, a)[0]) < 0.2 * shifted[0]


def test_feature_classifier_learns_digits_and_is_cached(digits, digit_features, monkeypatch):
    assert digit_features.test_accuracy > 0.85
    assert digit_features.path.parent == fd_module.cache_dir() / "feature_nets"
    assert digit_features.path.name.startswith("digits-")
    features = digit_features(digits.test)
    assert features.shape == (len(digits.test), 128)
    written = os.stat(digit_features.path).st_mtime_ns

    def no_training(*args, **kwargs):
        raise AssertionError("the cached network should be loaded, not retrained")

    monkeypatch.setattr(fd_module, "train_feature_net", no_training)
    again = classifier_features(digits)
    assert os.stat(again.path).st_mtime_ns == written
    assert again.test_accuracy == digit_features.test_accuracy
    assert torch.allclose(again(digits.test), features)


def test_feature_classifier_is_fixed_by_seed_whatever_the_clock(digits, monkeypatch):
    """The network trains all its steps even when the clock runs fast (a busy machine), so FD
    in its features cannot change with the load on the machine."""
    few = SimpleNamespace(**{**vars(digits), "train": digits.train[:64]})
    few.train_labels = digits.train_labels[:64]
    steady = train_feature_net(few, seed=1, batch_size=4)
    ticks = iter(range(0, 10**9, 1000))
    monkeypatch.setattr(fd_module, "time", SimpleNamespace(monotonic=lambda: next(ticks)))
    hurried = train_feature_net(few, seed=1, batch_size=4)
    assert torch.equal(hurried(digits.test), steady(digits.test))
    other_seed = train_feature_net(few, seed=2, batch_size=4)
    assert not torch.equal(other_seed(digits.test), steady(digits.test))


def test_random_features_are_fixed_by_seed_and_any_size():
    images = torch.rand(6, 3, 32, 32) * 2 - 1
    first = random_features(images, seed=3)(images)
    assert first.shape == (6, 128)
    assert torch.equal(first, random_features(images, seed=3)(images))
    assert not torch.equal(first, random_features(images, seed=4)(images))
    with pytest.raises(EbmlabError, match="H, W >= 8"):
        random_features(torch.rand(2, 1, 4, 4))


def test_classifier_features_need_labels(digits):
    unlabelled = SimpleNamespace(**{**vars(digits), "train_labels": None})
    with pytest.raises(EbmlabError, match="no labels"):
        classifier_features(unlabelled)


@pytest.mark.network
@pytest.mark.slow
def test_inception_features_shape_and_self_distance():
    images = torch.rand(8, 1, 28, 28) * 2 - 1
    feats = inception_features(images)
    assert feats.shape == (8, 2048)
    # 8 points in 2048 dimensions: the covariance is singular, so allow sqrtm's rounding
    assert abs(frechet_distance(feats, feats)) < 1e-6 * float(feats.var(0).sum()) + 1e-6


class CountingNet:
    """A stand-in for the Inception network: pixel features, and how many batches it saw."""

    def __init__(self):
        self.batches = 0

    def to(self, device):
        return self

    def __call__(self, batch):
        self.batches += 1
        return batch.flatten(1)[:, :2048]


def test_inception_features_are_cached_by_content(tmp_path, monkeypatch):
    monkeypatch.setenv("EBMLAB_CACHE", str(tmp_path))
    net = CountingNet()
    monkeypatch.setattr(fd_module, "_inception_net", lambda: net)
    images = torch.rand(3, 1, 8, 8) * 2 - 1
    first = inception_features(images, cache=True)
    assert net.batches == 1
    again = inception_features(images.clone(), cache=True)
    assert net.batches == 1  # the same images: read back, not recomputed
    torch.testing.assert_close(again, first)
    other = images.clone()
    other[0, 0, 0, 0] += 0.5
    changed = inception_features(other, cache=True)
    assert net.batches == 2  # one pixel changed: another entry
    assert not torch.equal(changed, first)
    inception_features(images)
    assert net.batches == 3  # without cache=True the network always runs
    assert len(list((tmp_path / "inception_features").glob("*.pt"))) == 2


# --- evaluate ----------------------------------------------------------------------------------


def test_evaluate_exact_gaussian_model_has_no_kl():
    results = evaluate(GaussianModel([0.0, 0.0]), gaussian_toy_dataset(), n_samples=500)
    assert results["kl"] < 1e-3
    assert results["kl_exact_density"] == 1.0
    assert results["log_z"] == pytest.approx(LOG_2PI, abs=1e-5)
    assert abs(results["mmd2"]) < 0.01
    assert results["energy_test"] == pytest.approx(1.0, abs=0.15)
    assert all(isinstance(value, float) for value in results.values())


def test_evaluate_wrong_gaussian_model_has_large_kl_and_mmd():
    results = evaluate(GaussianModel([1.0, 1.0]), gaussian_toy_dataset(), n_samples=500)
    assert results["kl"] == pytest.approx(1.0, abs=1e-3)
    assert results["mmd2"] > 0.05


def test_evaluate_scores_a_one_column_table_by_its_held_out_grid_nll():
    table = SimpleNamespace(
        name="column",
        kind="tabular",
        train=torch.randn(2000, 1),
        test=torch.randn(1000, 1) * 0.9 + 0.2,
        train_labels=None,
        test_labels=None,
    )
    results = evaluate(GaussianModel([0.0]), table, n_samples=300)
    exact = float(0.5 * table.test.square().mean()) + 0.5 * LOG_2PI  # q = N(0, 1)
    assert results["nll_test_grid"] == pytest.approx(exact, abs=1e-5)
    assert "kl" not in results and "log_z" not in results and "mode_coverage" not in results


def test_evaluate_an_unseen_mixture_with_its_density_and_modes():
    data = load_dataset("unseen-24")
    results = evaluate(DrawingModel(data), data, n_samples=2000)
    assert {"kl", "nll", "log_z", "nll_test_grid", "mode_coverage", "mode_weight_tv"} <= set(
        results
    )
    assert results["kl"] < 1e-6 and results["log_z"] == pytest.approx(0, abs=1e-4)
    assert results["nll_test_grid"] == pytest.approx(results["nll"], abs=0.05)
    assert results["mode_coverage"] > 0.97 and results["mode_weight_tv"] < 0.03
    gebm_like = DrawingModel(data)
    gebm_like.energy_is_density = False
    results = evaluate(gebm_like, data, n_samples=2000)
    assert "nll_test_grid" not in results and "kl" not in results
    assert results["mode_coverage"] > 0.97


def test_evaluate_8gaussians_reports_its_modes():
    data = load_dataset("8gaussians")
    exact = evaluate(DrawingModel(data), data, n_samples=2000)
    assert exact["mode_coverage"] > 0.98 and exact["mode_weight_tv"] < 0.04
    shifted = DrawingModel(data, shift=torch.tensor([0.0, 1.0]))  # 2.8 std off every mode
    results = evaluate(shifted, data, n_samples=2000)
    assert results["mode_coverage"] < 0.7
    two = load_dataset("8gaussians", classes=[0, 3]).components  # east and south
    assert torch.allclose(two.means, torch.tensor([[4.0, 0.0], [0.0, -4.0]]).double() / 1.414)
    assert two.weights.tolist() == [0.5, 0.5]


def test_evaluate_is_repeatable_and_keeps_the_callers_random_state():
    dataset = gaussian_toy_dataset()
    state = torch.get_rng_state()
    first = evaluate(GaussianModel([0.0, 0.0]), dataset, n_samples=200, seed=5)
    assert torch.equal(torch.get_rng_state(), state)
    assert evaluate(GaussianModel([0.0, 0.0]), dataset, n_samples=200, seed=5) == first


def test_evaluate_tabular_data():
    dataset = SimpleNamespace(
        name="table",
        kind="tabular",
        train=torch.randn(500, 5),
        test=torch.randn(500, 5),
        train_labels=None,
        test_labels=None,
    )
    results = evaluate(GaussianModel([0.0] * 5), dataset, n_samples=300)
    assert set(results) == {
        "energy_test",
        "energy_samples",
        "mmd2",
        "intrinsic_dim_test",
        "intrinsic_dim_samples",
        "loglik_test_ais",
        "loglik_test_ais_se",
    }
    # 300 points of N(0, I_5): the Levina-Bickel estimate is within 25% of 5 for both sets
    assert results["intrinsic_dim_test"] == pytest.approx(5, rel=0.25)
    assert results["intrinsic_dim_samples"] == pytest.approx(5, rel=0.25)


def test_evaluate_leaves_out_the_dimension_of_a_collapsed_sampler():
    model = GaussianModel([0.0, 0.0])
    model.sample = lambda n: torch.zeros(n, 2)  # every sample the same point
    results = evaluate(model, gaussian_toy_dataset(), n_samples=300)
    assert "intrinsic_dim_samples" not in results
    assert results["intrinsic_dim_test"] == pytest.approx(2, rel=0.2)


def test_evaluate_skips_grid_metrics_when_the_energy_is_not_the_density():
    model = GaussianModel([0.0, 0.0])
    model.energy_is_density = False  # as a GEBM, whose energy re-weights a generator
    results = evaluate(model, gaussian_toy_dataset(), n_samples=500)
    assert "kl" not in results and "log_z" not in results
    assert abs(results["mmd2"]) < 0.01


def test_evaluate_images_with_classifier_features(digits, digit_features):
    perfect = evaluate(ImageModel(digits.train), digits, n_samples=300)
    noise = evaluate(ImageModel(torch.rand(300, 1, 8, 8) * 2 - 1), digits, n_samples=300)
    floor = perfect["fd_classifier_floor"]
    assert perfect["feature_net_acc"] == digit_features.test_accuracy
    assert perfect["fd_classifier"] < 2 * floor
    assert noise["fd_classifier"] > 5 * floor
    assert noise["kid"] > perfect["kid"] + 3 * perfect["kid_std"]


def test_evaluate_labels_samples_by_the_classifier_and_the_test_split_alike(digits):
    perfect = evaluate(ImageModel(digits.test), digits, n_samples=300)
    # draws from the test split score as a subset of it does, up to the draws' chance
    assert perfect["confident_share"] == pytest.approx(perfect["confident_share_test"], abs=0.08)
    assert perfect["confident_share"] > 0.8
    assert perfect["confident_classes"] == perfect["confident_classes_test"] == 10
    assert perfect["confident_label_entropy_test"] > 0.95
    assert perfect["confident_label_entropy"] > 0.95
    ones = digits.test[digits.test_labels == 1]
    only_ones = evaluate(ImageModel(ones.repeat(3, 1, 1, 1)), digits, n_samples=300)
    assert only_ones["confident_classes"] <= 2
    assert only_ones["confident_label_entropy"] < 0.2


def test_confident_labels_count_shares_and_spread():
    probabilities = torch.tensor(
        [
            [0.9, 0.05, 0.05],  # exactly at the threshold: confident, class 0
            [0.95, 0.03, 0.02],  # class 0
            [0.0, 1.0, 0.0],  # class 1
            [0.1, 0.8, 0.1],  # not confident
            [0.2, 0.3, 0.5],  # not confident
        ]
    )
    result = confident_label_metrics(probabilities)
    assert result["confident_share"] == pytest.approx(3 / 5)
    assert result["confident_classes"] == 2
    frequencies = torch.tensor([2 / 3, 1 / 3])
    entropy = float(-(frequencies * frequencies.log()).sum()) / math.log(3)
    assert result["confident_label_entropy"] == pytest.approx(entropy)
    even = confident_label_metrics(torch.eye(4))
    assert even == {
        "confident_share": 1.0,
        "confident_label_entropy": pytest.approx(1.0),
        "confident_classes": 4.0,
    }
    one_class = confident_label_metrics(torch.tensor([[0.0, 1.0]] * 3))
    assert one_class["confident_label_entropy"] == 0.0 and one_class["confident_classes"] == 1
    unsure = confident_label_metrics(torch.full((4, 2), 0.5))
    assert unsure == {"confident_share": 0.0, "confident_classes": 0.0}  # no entropy of nothing
    assert confident_label_metrics(probabilities, threshold=0.95)[
        "confident_share"
    ] == pytest.approx(2 / 5)
    with pytest.raises(EbmlabError, match=r"\(n, K\)"):
        confident_label_metrics(torch.ones(3, 1))


def test_evaluate_unlabelled_images_use_random_features_and_ood(digits):
    unlabelled = SimpleNamespace(**{**vars(digits), "train_labels": None, "test_labels": None})
    ood = {"noise": torch.rand(200, 1, 8, 8) * 2 - 1}
    results = evaluate(ImageModel(digits.train), unlabelled, n_samples=200, ood=ood)
    assert {"fd_random_features", "fd_random_features_floor", "kid_random_features"} <= set(results)
    assert "fd_classifier" not in results and "feature_net_acc" not in results
    assert 0.0 <= results["auroc/noise"] <= 1.0


def test_evaluate_rejects_bad_requests():
    dataset = gaussian_toy_dataset()
    with pytest.raises(EbmlabError, match="sample"):
        evaluate(SimpleNamespace(energy=lambda x: x.sum(1)), dataset)
    with pytest.raises(EbmlabError, match="fid=True"):
        evaluate(GaussianModel([0.0, 0.0]), dataset, fid=True)
    with pytest.raises(EbmlabError, match="kind"):
        evaluate(GaussianModel([0.0, 0.0]), SimpleNamespace(**{**vars(dataset), "kind": "audio"}))


# --- intrinsic dimension -------------------------------------------------------------------------


def embedded_gaussian(dim, ambient=20, n=3000, seed=0):
    """n points of N(0, I_dim) rotated into R^ambient: a flat dim-dimensional set."""
    rng = np.random.default_rng(seed)
    rotation, _ = np.linalg.qr(rng.normal(size=(ambient, ambient)))
    return rng.normal(size=(n, dim)) @ rotation[:dim]


@pytest.mark.parametrize("dim", [1, 2, 3, 5])
def test_intrinsic_dimension_of_flat_gaussians_in_twenty_dimensions(dim):
    # measured: 1.08, 2.19, 3.33, 5.50 (the k - 1 normaliser of the slides biases it up a little)
    assert intrinsic_dimension(embedded_gaussian(dim)) == pytest.approx(dim, rel=0.12)


def test_intrinsic_dimension_of_a_circle_is_one_and_ignores_repeats():
    t = np.random.default_rng(1).uniform(0, 2 * np.pi, 2000)
    circle = np.stack([np.cos(t), np.sin(t)], 1)
    estimate = intrinsic_dimension(circle)
    assert estimate == pytest.approx(1, abs=0.15)
    assert intrinsic_dimension(np.concatenate([circle, circle[:500]])) == estimate


def test_intrinsic_dimension_takes_images_and_tensors():
    images = torch.as_tensor(embedded_gaussian(2, ambient=64, n=1000)).view(1000, 1, 8, 8)
    assert intrinsic_dimension(images) == pytest.approx(2, rel=0.15)


def test_intrinsic_dimension_rejects_too_few_points_and_bad_k():
    with pytest.raises(EbmlabError, match="k_max"):
        intrinsic_dimension(np.random.default_rng(0).normal(size=(20, 3)))
    with pytest.raises(EbmlabError, match="k_min"):
        intrinsic_dimension(embedded_gaussian(2), k_min=1)
