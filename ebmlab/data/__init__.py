"""Datasets: one `load_dataset(spec)` for bundled names, fetched sets, paths and arrays.

A `Dataset` holds train and test tensors in model units (images (N, C, H, W) in [-1, 1], tables
standardised, 2D toys as they are) and the `Scaler` that maps them back to the user's units.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from ebmlab.data import images, tabular, toy2d
from ebmlab.data.fetch import ALIASES, FETCHERS, cached_path
from ebmlab.data.scaling import Scaler
from ebmlab.errors import EbmlabError

TOY_TRAIN, TOY_TEST = 20_000, 5_000
TEST_SHARE = 0.1
MIN_EXAMPLES = 10


@dataclass
class Dataset:
    """Train and test splits in model units, and everything metrics and reports need."""

    name: str
    kind: str  # "toy2d" | "image" | "tabular"
    train: Tensor
    test: Tensor
    scaler: Scaler
    train_labels: Tensor | None = None
    test_labels: Tensor | None = None
    log_density: Callable[[Tensor], Tensor] | None = None  # toy2d: log p(x), (B, 2) -> (B,)
    log_density_exact: bool = False
    bounds: tuple[float, float] | None = None  # toy2d: square box with all but 1e-4 of the mass
    draw: Callable[[int, torch.Generator], Tensor] | None = None  # toy2d: fresh samples

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.train.shape[1:])


def dataset_names() -> dict[str, str]:
    """Every bundled or fetchable name with a one-line description (for `ebmlab info`)."""
    names = {name: toy.description for name, toy in toy2d.TOY2D.items()}
    names["digits"] = "8x8 handwritten digits, 1,797, bundled with scikit-learn"
    names["mnist"] = "28x28 digits, 60k/10k (ebmlab data fetch mnist)"
    names["fashion-mnist"] = "28x28 clothing, 60k/10k (ebmlab data fetch fashion-mnist)"
    names["animal-mnist"] = "28x28 animal drawings, 10k, an OOD set (ebmlab data fetch ...)"
    return names


def load_dataset(
    spec: str | os.PathLike | np.ndarray,
    *,
    n_train: int | None = None,
    seed: int = 0,
    cache_dir: str | Path | None = None,
) -> Dataset:
    """A dataset from a bundled name, a fetched name, a path (.npy/.npz/.csv/folder) or an array.

    Args:
        spec: what to load.
        n_train: subsample the training split (toy2d: points drawn).
        seed: the train/test split, subsampling and toy draws.
        cache_dir: where fetched datasets live (default `ebmlab.data.fetch.cache_root()`).
    """
    if isinstance(spec, np.ndarray):
        return _from_array(spec, None, "array", n_train, seed)
    name = ALIASES.get(str(spec), str(spec))
    if name in toy2d.TOY2D:
        return _toy(name, n_train, seed)
    if name == "digits":
        x, y = images.digits()
        return _images(name, x, y, (0.0, 16.0), n_train, seed)
    if name in FETCHERS:
        return _fetched(name, Path(cache_dir) if cache_dir else None, n_train, seed)
    return _from_path(Path(spec), n_train, seed)


def _toy(name: str, n_train: int | None, seed: int) -> Dataset:
    toy = toy2d.TOY2D[name]
    generator = torch.Generator().manual_seed(seed)
    train = toy.draw(n_train or TOY_TRAIN, generator)
    test = toy.draw(TOY_TEST, generator)
    log_density, exact = toy2d.log_density(name)
    return Dataset(
        name,
        "toy2d",
        train,
        test,
        Scaler.identity(),
        log_density=log_density,
        log_density_exact=exact,
        bounds=toy.bounds,
        draw=toy.draw,
    )


def _fetched(name: str, cache_dir: Path | None, n_train: int | None, seed: int) -> Dataset:
    path = cached_path(name, cache_dir)
    if not path.is_file():
        raise EbmlabError(f"{name} is not fetched yet: run `ebmlab data fetch {name}` once")
    with np.load(path) as arrays:
        if "x_train" not in arrays:  # an OOD-only set: all of it is the test split
            x = arrays["x_test"][:, None]
            return _make_image_dataset(name, x, x, None, None, (0.0, 255.0), n_train, seed)
        x_train, x_test = arrays["x_train"][:, None], arrays["x_test"][:, None]
        y_train, y_test = arrays["y_train"], arrays["y_test"]
    return _make_image_dataset(name, x_train, x_test, y_train, y_test, (0.0, 255.0), n_train, seed)


def _from_path(path: Path, n_train: int | None, seed: int) -> Dataset:
    if not path.exists():
        known = ", ".join(dataset_names())
        raise EbmlabError(f"{path} is neither a file, a folder, nor a known dataset ({known})")
    if path.is_dir():
        x, labels = images.image_folder(path)
        return _images(path.name, x, labels, images.value_range(x), n_train, seed)
    suffix = path.suffix.lower()
    if suffix == ".csv":
        return _from_array(tabular.read_csv(path), None, path.name, n_train, seed)
    if suffix in (".npy", ".npz"):
        x, labels = _read_numpy(path)
        return _from_array(x, labels, path.name, n_train, seed)
    raise EbmlabError(f"{path}: unsupported file type {suffix!r}; use .npy, .npz, .csv or a folder")


def _read_numpy(path: Path) -> tuple[np.ndarray, np.ndarray | None]:
    try:
        loaded = np.load(path, allow_pickle=False)
    except ValueError as err:
        raise EbmlabError(f"cannot read {path}: {str(err).splitlines()[0]}") from None
    if isinstance(loaded, np.ndarray):
        return loaded, None
    with loaded:
        keys = list(loaded.keys())
        key = "x" if "x" in keys else keys[0] if len(keys) == 1 else None
        if key is None:
            raise EbmlabError(f"{path} holds {keys}; name the data array 'x' (labels 'y')")
        label_key = next((k for k in ("y", "labels") if k in keys), None)
        return loaded[key], loaded[label_key] if label_key else None


def _from_array(x: np.ndarray, labels, source: str, n_train: int | None, seed: int) -> Dataset:
    x = np.asarray(x)
    if x.ndim == 2:
        return _tabular(source, x, n_train, seed)
    if x.ndim in (3, 4):
        x = images.channels_first(x, source)
        return _images(
            source, x, labels, images.value_range(_check_values(x, source)), n_train, seed
        )
    raise EbmlabError(
        f"{source}: expected N x D (table) or N x H x W [x C] (images), got shape {x.shape}"
    )


def _check_values(x: np.ndarray, source: str) -> np.ndarray:
    if x.size == 0 or len(x) == 0:
        raise EbmlabError(f"{source} holds no examples")
    if not np.issubdtype(x.dtype, np.number) or np.issubdtype(x.dtype, np.complexfloating):
        raise EbmlabError(f"{source}: values must be real numbers, got dtype {x.dtype}")
    if not np.isfinite(x).all():
        raise EbmlabError(f"{source} contains NaN or infinite values; remove or impute them")
    if len(x) < MIN_EXAMPLES:
        raise EbmlabError(f"{source} has {len(x)} examples; at least {MIN_EXAMPLES} are needed")
    return x


def _split(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    perm = np.random.default_rng(seed).permutation(n)
    n_test = max(1, int(round(n * TEST_SHARE)))
    return perm[n_test:], perm[:n_test]


def _subsample(idx: np.ndarray, n_train: int | None, seed: int) -> np.ndarray:
    if n_train is None or n_train >= len(idx):
        return idx
    return np.random.default_rng(seed + 1).choice(idx, n_train, replace=False)


def _tabular(name: str, x: np.ndarray, n_train: int | None, seed: int) -> Dataset:
    x = _check_values(x, name).astype(np.float32)
    train_idx, test_idx = _split(len(x), seed)
    train = torch.as_tensor(x[_subsample(train_idx, n_train, seed)])
    scaler = Scaler.standardise(train)
    return Dataset(
        name,
        "tabular",
        scaler.to_model(train),
        scaler.to_model(torch.as_tensor(x[test_idx])),
        scaler,
    )


def _images(name, x, labels, value_range, n_train, seed) -> Dataset:
    _check_values(x, name)
    if labels is not None and len(labels) != len(x):
        raise EbmlabError(f"{name}: {len(labels)} labels for {len(x)} images")
    train_idx, test_idx = _split(len(x), seed)
    y_train = labels[train_idx] if labels is not None else None
    y_test = labels[test_idx] if labels is not None else None
    return _make_image_dataset(
        name, x[train_idx], x[test_idx], y_train, y_test, value_range, n_train, seed
    )


def _make_image_dataset(name, x_train, x_test, y_train, y_test, value_range, n_train, seed):
    keep = _subsample(np.arange(len(x_train)), n_train, seed)
    scaler = Scaler.to_unit_box(*value_range)

    def to_model(x: np.ndarray) -> Tensor:
        pixels = torch.as_tensor(np.asarray(x, dtype=np.float32))
        return scaler.to_model(pixels).clamp(-1, 1)  # min-max scaling can round past the box

    def to_labels(y) -> Tensor | None:
        return None if y is None else torch.as_tensor(np.asarray(y, dtype=np.int64))

    return Dataset(
        name,
        "image",
        to_model(x_train[keep]),
        to_model(x_test),
        scaler,
        to_labels(None if y_train is None else y_train[keep]),
        to_labels(y_test),
    )
