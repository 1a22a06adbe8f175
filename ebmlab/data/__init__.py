"""Datasets: one `load_dataset(spec)` for bundled names, fetched sets, paths and arrays.

A `Dataset` holds train and test tensors in model units (images (N, C, H, W) in [-1, 1], tables
standardised, 2D toys as they are) and the `Scaler` that maps them back to the user's units.
Sources without a predefined split hold out a seeded 10% as the test split; `n_train` then
subsamples the training split, so the test split does not depend on it.

`unseen-<seed>` names a random density of `ebmlab.data.unseen`, loaded as a user's table would
be (kind "tabular", standardised) from 20,000 train and 5,000 test draws, and carrying what a
table never has: its exact log-density, box and mixture components, all in model units.
"""

from __future__ import annotations

import os
import zipfile
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from ebmlab.data import images, tabular, toy2d, unseen
from ebmlab.data.fetch import ALIASES, FETCHERS, cached_path
from ebmlab.data.scaling import Scaler
from ebmlab.errors import EbmlabError

TOY_TRAIN, TOY_TEST = 20_000, 5_000
TEST_SHARE = 0.1
MIN_EXAMPLES = 10
PIXEL_RANGE = (0.0, 255.0)
DIGITS_RANGE = (0.0, 16.0)
FLOAT32_MAX = float(np.finfo(np.float32).max)


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
    log_density: Callable[[Tensor], Tensor] | None = None  # log p(x), (B, D) -> (B,)
    log_density_exact: bool = False
    bounds: tuple[float, float] | None = None  # toy2d: square box with all but 1e-4 of the mass
    draw: Callable[[int, torch.Generator], Tensor] | None = None  # fresh samples
    #: per dimension (low, high) with all but 1e-4 of the mass: toy2d's square box, or an
    #: unseen density's box; what the grid metrics integrate over
    box: tuple[tuple[float, float], ...] | None = None
    components: unseen.GaussianComponents | None = None  # a Gaussian mixture's parts

    def __post_init__(self) -> None:
        if self.box is None and self.bounds is not None:
            self.box = (tuple(self.bounds),) * self.train.shape[1]

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.train.shape[1:])


def dataset_names() -> dict[str, str]:
    """Every bundled or fetchable name with a one-line description (for `ebmlab info`)."""
    names = {name: toy.description for name, toy in toy2d.TOY2D.items()}
    names["digits"] = "8x8 handwritten digits, 1,797, bundled with scikit-learn"
    names["mnist"] = "28x28 digits, 60k/10k (ebmlab data fetch mnist)"
    names["fashion-mnist"] = "28x28 clothing, 60k/10k, alias fmnist (ebmlab data fetch fmnist)"
    names["animal-mnist"] = (
        "28x28 animal drawings, 10k, an OOD set (ebmlab data fetch animal-mnist)"
    )
    names[f"{unseen.PREFIX}<seed>"] = (
        "a random 1D/2D mixture, ring or spiral with an exact density, loaded as a table; "
        f"the bench suite 'unseen' has seeds {', '.join(map(str, unseen.UNSEEN_SUITE))}"
    )
    return names


def load_dataset(
    spec: str | os.PathLike | np.ndarray,
    *,
    n_train: int | None = None,
    seed: int = 0,
    cache_dir: str | Path | None = None,
    classes: Sequence[int] | None = None,
) -> Dataset:
    """A dataset from a bundled name, a fetched name, a path (.npy/.npz/.csv/folder) or an array.

    Args:
        spec: A name from `dataset_names()` (or the alias "fmnist"); a .npy/.npz file or an
            array (N x D: a table; N x H x W or N x H x W x C with C in {1, 3}: images); a .csv
            file (numbers only, an optional header row); or a folder of PNG/JPEG images, with one
            subfolder per class for labels.
        n_train: Subsample the training split to this many examples (toy2d: points drawn,
            default 20,000; its test split is always 5,000 points).
        seed: Seeds the train/test split, the subsampling and the toy draws.
        cache_dir: Where fetched datasets live (default `ebmlab.data.fetch.cache_root()`).
        classes: Keep only examples with these labels, in both splits (labelled images, and
            the 2D mixtures, whose classes are their components); `n_train` then counts the
            kept training examples. The conditional data of a class-conditional EBM.

    Returns:
        The splits in model units with their scaler; labels where the source has them.

    Raises:
        EbmlabError: For an unknown name, a missing or unreadable file, an unsupported file type,
            a wrong rank, NaN or infinite values, values beyond float32 (or columns whose
            standardisation overflows it), too few examples, a set not fetched yet, or classes
            the data does not have.
    """
    _check_n_train(n_train)
    if classes is not None:
        return _with_classes(spec, tuple(int(c) for c in classes), n_train, seed, cache_dir)
    if isinstance(spec, np.ndarray):
        return _from_array(spec, None, "array", n_train, seed)
    name = ALIASES.get(str(spec), str(spec))
    if name in toy2d.TOY2D:
        return _toy(name, n_train, seed)
    if name == "digits":
        x, y = images.digits()
        return _images(name, x, y, DIGITS_RANGE, n_train, seed)
    if name in FETCHERS:
        return _fetched(name, Path(cache_dir) if cache_dir else None, n_train, seed)
    if unseen.parse_name(name) is not None:
        return _unseen(name, n_train, seed)
    return _from_path(Path(spec), n_train, seed)


def _with_classes(
    spec: str | os.PathLike | np.ndarray,
    classes: tuple[int, ...],
    n_train: int | None,
    seed: int,
    cache_dir: str | Path | None,
) -> Dataset:
    name = ALIASES.get(str(spec), str(spec)) if not isinstance(spec, np.ndarray) else "array"
    if name in toy2d.TOY2D:
        try:
            return _toy(name, n_train, seed, classes)
        except ValueError as err:
            raise EbmlabError(str(err)) from None
    full = load_dataset(spec, seed=seed, cache_dir=cache_dir)
    if full.train_labels is None:
        raise EbmlabError(f"{full.name} has no labels, so it cannot be restricted to classes")
    train_keep = torch.isin(full.train_labels, torch.tensor(classes))
    test_keep = torch.isin(full.test_labels, torch.tensor(classes))
    if not train_keep.any() or not test_keep.any():
        present = sorted(set(full.train_labels.tolist()))
        raise EbmlabError(
            f"{full.name} has no examples of classes {list(classes)}; it has {present}"
        )
    keep = train_keep.nonzero().squeeze(1)
    keep = keep[torch.as_tensor(_subsample(len(keep), n_train, seed))]
    full.train, full.train_labels = full.train[keep], full.train_labels[keep]
    full.test, full.test_labels = full.test[test_keep], full.test_labels[test_keep]
    return full


def _check_n_train(n_train: int | None) -> None:
    valid = isinstance(n_train, (int, np.integer)) and not isinstance(n_train, bool)
    if n_train is not None and not (valid and n_train > 0):
        raise EbmlabError(f"n_train must be a positive whole number or None, got {n_train!r}")


def _toy(
    name: str, n_train: int | None, seed: int, classes: tuple[int, ...] | None = None
) -> Dataset:
    """A named 2D density, or the mixture `name` restricted to `classes` (`toy2d.with_classes`,
    which raises ValueError for classes it does not have)."""
    toy = toy2d.with_classes(name, classes) if classes else toy2d.TOY2D[name]
    generator = torch.Generator().manual_seed(seed)
    draw = toy.draw_labelled or (lambda n, g: (toy.draw(n, g), None))
    test, test_labels = draw(TOY_TEST, generator)  # drawn first: it does not change with n_train
    train, train_labels = draw(n_train or TOY_TRAIN, generator)
    log_density, exact = (toy.log_density, True) if toy.log_density else toy2d.log_density(name)
    return Dataset(
        name,
        "toy2d",
        train,
        test,
        Scaler.identity(),
        train_labels=train_labels,
        test_labels=test_labels,
        log_density=log_density,
        log_density_exact=exact,
        bounds=toy.bounds,
        draw=toy.draw,
        components=_toy_components(name, classes),
    )


def _toy_components(name: str, classes: tuple[int, ...] | None) -> unseen.GaussianComponents | None:
    """A 2D mixture's components: all of them, or those of `classes`."""
    if name not in toy2d.MIXTURES:
        return None
    centres, std, _ = toy2d.MIXTURES[name]
    kept = centres[sorted(set(classes))] if classes else centres
    covariances = torch.eye(2, dtype=torch.float64).expand(len(kept), 2, 2) * std**2
    weights = torch.full((len(kept),), 1 / len(kept), dtype=torch.float64)
    return unseen.GaussianComponents(kept.double(), covariances, weights)


def _unseen(name: str, n_train: int | None, seed: int) -> Dataset:
    """An unseen density's draws as a user's table, with its density, box, sampler and
    components mapped into model units: log p_model(x) = log p(to_user(x)) + sum(log scale)."""
    density = unseen.unseen_density(unseen.parse_name(name))
    generator = torch.Generator().manual_seed(seed)
    test = density.draw(TOY_TEST, generator)  # drawn first: it does not change with n_train
    train = density.draw(n_train or TOY_TRAIN, generator)
    dataset = _standardised(name, train.float(), test.float())
    shift, scale = dataset.scaler.shift.double(), dataset.scaler.scale.double()
    log_jacobian = scale.log().sum()

    def log_density(x: Tensor) -> Tensor:
        user = x.double() * scale.to(x.device) + shift.to(x.device)
        return (density.log_density(user) + log_jacobian).to(x.dtype)

    def draw(n: int, g: torch.Generator) -> Tensor:
        return ((density.draw(n, g) - shift) / scale).float()

    dataset.log_density, dataset.log_density_exact, dataset.draw = log_density, True, draw
    dataset.box = tuple(
        ((low - s0) / s1, (high - s0) / s1)
        for (low, high), s0, s1 in zip(density.bounds, shift.tolist(), scale.tolist(), strict=True)
    )
    if density.components is not None:
        dataset.components = density.components.affine(shift, scale)
    return dataset


def _fetched(name: str, cache_dir: Path | None, n_train: int | None, seed: int) -> Dataset:
    path = cached_path(name, cache_dir)
    if not path.is_file():
        raise EbmlabError(f"{name} is not fetched yet: run `ebmlab data fetch {name}` once")
    try:
        with np.load(path) as arrays:
            stored = {key: arrays[key] for key in arrays.files}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile):
        raise EbmlabError(
            f"{path} is damaged: delete it and run `ebmlab data fetch {name}` again"
        ) from None
    x_test = stored["x_test"][:, None]
    if "x_train" not in stored:  # an OOD-only set: all of it serves as both splits
        return _make_image_dataset(name, x_test, x_test, None, None, PIXEL_RANGE, n_train, seed)
    x_train = stored["x_train"][:, None]
    y_train, y_test = stored["y_train"], stored["y_test"]
    return _make_image_dataset(name, x_train, x_test, y_train, y_test, PIXEL_RANGE, n_train, seed)


def _from_path(path: Path, n_train: int | None, seed: int) -> Dataset:
    if not path.exists():
        raise EbmlabError(_not_found_message(path))
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


def _not_found_message(path: Path) -> str:
    known = ", ".join(dataset_names())
    if path.suffix or len(path.parts) > 1:  # it was meant as a path
        return f"{path} does not exist; check the path (or use a dataset name: {known})"
    return f"unknown dataset {str(path)!r}; use one of {known}, or a file or folder path"


def _read_numpy(path: Path) -> tuple[np.ndarray, np.ndarray | None]:
    try:  # an .npz reads its arrays lazily: they fail, if at all, inside this block too
        loaded = np.load(path, allow_pickle=False)
        if isinstance(loaded, np.ndarray):
            return loaded, None
        with loaded:
            return _npz_arrays(path, loaded)
    except (OSError, ValueError, EOFError, zipfile.BadZipFile, zlib.error) as err:
        reason = (str(err).splitlines() or [type(err).__name__])[0]
        if "allow_pickle" in reason:  # numpy refused to unpickle, as asked
            raise EbmlabError(
                f"cannot read {path}: it holds pickled Python objects, which ebmlab never loads "
                "(unpickling can run code); save an array of numbers"
            ) from None
        raise EbmlabError(f"cannot read {path}: {reason}; save it with numpy.save/savez") from None


def _npz_arrays(path: Path, loaded: np.lib.npyio.NpzFile) -> tuple[np.ndarray, np.ndarray | None]:
    """The data array ('x', or the only one) and the labels ('y' or 'labels') of an .npz."""
    keys = list(loaded.files)
    if not keys:
        raise EbmlabError(f"{path} holds no arrays; save the data as 'x' (labels 'y')")
    key = "x" if "x" in keys else keys[0] if len(keys) == 1 else None
    if key is None:
        raise EbmlabError(f"{path} holds {keys}; name the data array 'x' (labels 'y')")
    label_key = next((k for k in ("y", "labels") if k in keys), None)
    return loaded[key], loaded[label_key] if label_key else None


def _from_array(
    x: np.ndarray, labels: np.ndarray | None, source: str, n_train: int | None, seed: int
) -> Dataset:
    x = np.asarray(x)
    if x.ndim == 2:
        return _tabular(source, x, n_train, seed)
    if x.ndim in (3, 4):
        x = images.channels_first(x, source)
        return _images(source, x, labels, images.value_range(_checked(x, source)), n_train, seed)
    raise EbmlabError(
        f"{source}: expected N x D (table) or N x H x W [x C] (images), got shape {x.shape}"
    )


def _checked(x: np.ndarray, source: str) -> np.ndarray:
    """x itself, once it is known to hold enough finite real numbers."""
    if x.size == 0:
        raise EbmlabError(
            f"{source} is empty (shape {x.shape}); give at least {MIN_EXAMPLES} examples"
        )
    if not (np.issubdtype(x.dtype, np.integer) or np.issubdtype(x.dtype, np.floating)):
        raise EbmlabError(f"{source}: values must be real numbers, got dtype {x.dtype}")
    if not np.isfinite(x).all():
        raise EbmlabError(f"{source} contains NaN or infinite values; remove or impute them")
    largest = float(np.abs(x).max())
    if largest > FLOAT32_MAX:
        raise EbmlabError(
            f"{source} holds values up to {largest:.3g}, beyond float32, the models' precision "
            f"(at most {FLOAT32_MAX:.3g}); rescale them"
        )
    if len(x) < MIN_EXAMPLES:
        raise EbmlabError(f"{source} has {len(x)} examples; at least {MIN_EXAMPLES} are needed")
    return x


def _checked_labels(labels: np.ndarray | None, n: int, source: str) -> np.ndarray | None:
    if labels is None:
        return None
    labels = np.asarray(labels)
    if labels.shape != (n,) or not np.issubdtype(labels.dtype, np.integer):
        raise EbmlabError(
            f"{source}: labels must be {n} whole numbers (one per example), "
            f"got shape {labels.shape} of {labels.dtype}"
        )
    return labels


def _split(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    perm = np.random.default_rng(seed).permutation(n)
    n_test = max(2, int(round(n * TEST_SHARE)))  # sample metrics (MMD) need two
    return perm[n_test:], perm[:n_test]


def _subsample(n: int, n_train: int | None, seed: int) -> np.ndarray:
    """Indices of the training examples kept: all, or a seeded n_train of them."""
    if n_train is None or n_train >= n:
        return np.arange(n)
    return np.sort(np.random.default_rng(seed + 1).choice(n, n_train, replace=False))


def _tabular(name: str, x: np.ndarray, n_train: int | None, seed: int) -> Dataset:
    x = tabular.as_float32(_checked(x, name), name)
    train_idx, test_idx = _split(len(x), seed)
    train = torch.as_tensor(x[train_idx][_subsample(len(train_idx), n_train, seed)])
    return _standardised(name, train, torch.as_tensor(x[test_idx]))


def _standardised(name: str, train: Tensor, test: Tensor) -> Dataset:
    """A table's float32 splits, standardised by the training split's columns."""
    scaler = Scaler.standardise(train)
    train_model, test_model = scaler.to_model(train), scaler.to_model(test)
    if not (train_model.isfinite().all() and test_model.isfinite().all()):
        largest = max(float(train.abs().max()), float(test.abs().max()))
        raise EbmlabError(
            f"{name}: standardising its columns overflows float32 (values up to "
            f"{largest:.3g}); rescale them"
        )
    return Dataset(name, "tabular", train_model, test_model, scaler)


def _images(
    name: str,
    x: np.ndarray,
    labels: np.ndarray | None,
    value_range: tuple[float, float],
    n_train: int | None,
    seed: int,
) -> Dataset:
    labels = _checked_labels(labels, len(_checked(x, name)), name)
    train_idx, test_idx = _split(len(x), seed)
    y_train = labels[train_idx] if labels is not None else None
    y_test = labels[test_idx] if labels is not None else None
    return _make_image_dataset(
        name, x[train_idx], x[test_idx], y_train, y_test, value_range, n_train, seed
    )


def _make_image_dataset(
    name: str,
    x_train: np.ndarray,
    x_test: np.ndarray,
    y_train: np.ndarray | None,
    y_test: np.ndarray | None,
    value_range: tuple[float, float],
    n_train: int | None,
    seed: int,
) -> Dataset:
    keep = _subsample(len(x_train), n_train, seed)
    scaler = Scaler.to_unit_box(*value_range)

    def to_model(x: np.ndarray) -> Tensor:
        pixels = torch.as_tensor(np.asarray(x, dtype=np.float32))
        return scaler.to_model(pixels).clamp(-1, 1)  # float32 rounding can step past the box

    def to_labels(y: np.ndarray | None) -> Tensor | None:
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
