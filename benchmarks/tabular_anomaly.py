"""Outlier detection on tables: ebmlab's EnergyOutlierDetector beside scikit-learn's detectors.

    python benchmarks/tabular_anomaly.py [--methods cd dsm] [--steps 1000] [--seeds 3]
                                         [--data breast_cancer wine digits blobs moons ...]
                                         [--threads 1]

Each dataset is a table of inliers and one of outliers. Tables that ship with scikit-learn:
one class as the inliers and the other classes as the outliers (breast_cancer: benign against
malignant; wine: cultivar 1 against 0 and 2; digits: the 8s, the digit most like others,
against the other digits, 64 pixel columns). Synthetic: blobs (three Gaussian clusters in 4
dimensions, standard deviation 1.5, outliers uniform on their bounding box), moons
(scikit-learn's two moons, outliers uniform on their box) and correlated (a 16-dimensional
Gaussian with random correlations; each outlier takes each column from another inlier, so its
columns look normal one at a time and only their dependence betrays it). Per seed every
detector trains on a random 70% of the inliers and scores the other 30% and every outlier; the
cell is the AUROC of `score_samples` (higher = more normal), mean ± std over the seeds.

The detectors, each with its defaults: ebmlab's `EnergyOutlierDetector(method)`, which
standardises the columns itself (1,000 training steps, a third of the presets'; `--steps 0`
takes each preset's), and, on columns standardised by `StandardScaler`, IsolationForest,
LocalOutlierFactor (novelty=True), GaussianMixture (full covariance, 1, 2, 4 or 8 components
by BIC) and KernelDensity (a Gaussian kernel, Scott's bandwidth). Everything runs on one
thread (`--threads`): the small MLPs train fastest so. The last column is the mean seconds of
one fit. Prints a markdown table; asserts nothing.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import numpy as np
import torch
from sklearn.base import BaseEstimator, DensityMixin
from sklearn.datasets import load_breast_cancer, load_digits, load_wine, make_blobs, make_moons
from sklearn.ensemble import IsolationForest
from sklearn.metrics import roc_auc_score
from sklearn.mixture import GaussianMixture
from sklearn.neighbors import KernelDensity, LocalOutlierFactor
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from ebmlab import EnergyOutlierDetector
from ebmlab.bench import machine

TRAIN_SHARE = 0.7


def by_class(x: np.ndarray, y: np.ndarray, inlier: int) -> tuple[np.ndarray, np.ndarray]:
    return x[y == inlier], x[y != inlier]


def uniform_on_box(inliers: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    low, high = inliers.min(0), inliers.max(0)
    return rng.uniform(low, high, size=(n, inliers.shape[1]))


def blobs() -> tuple[np.ndarray, np.ndarray]:
    inliers, _ = make_blobs(
        n_samples=1000, n_features=4, centers=3, cluster_std=1.5, random_state=0
    )
    return inliers, uniform_on_box(inliers, 100, np.random.default_rng(0))


def moons() -> tuple[np.ndarray, np.ndarray]:
    inliers, _ = make_moons(n_samples=1000, noise=0.05, random_state=0)
    return inliers, uniform_on_box(inliers, 100, np.random.default_rng(0))


def correlated() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    mixing = rng.normal(size=(16, 16))
    inliers = rng.normal(size=(1000, 16)) @ mixing
    donors = rng.integers(0, len(inliers), size=(100, 16))  # row of each outlier's columns
    return inliers, inliers[donors, np.arange(16)]


DATASETS: dict[str, Callable[[], tuple[np.ndarray, np.ndarray]]] = {
    "breast_cancer": lambda: by_class(*load_breast_cancer(return_X_y=True), inlier=1),
    "wine": lambda: by_class(*load_wine(return_X_y=True), inlier=1),
    "digits": lambda: by_class(*load_digits(return_X_y=True), inlier=8),
    "blobs": blobs,
    "moons": moons,
    "correlated": correlated,
}


class BICGaussianMixture(DensityMixin, BaseEstimator):
    """A full-covariance GaussianMixture with the number of components that minimises BIC."""

    def __init__(self, random_state: int):
        self.random_state = random_state

    def fit(self, x: np.ndarray, y: None = None) -> BICGaussianMixture:
        fits = [
            GaussianMixture(k, random_state=self.random_state).fit(x)
            for k in (1, 2, 4, 8)
            if k < len(x)
        ]
        self.mixture_ = min(fits, key=lambda mixture: mixture.bic(x))
        return self

    def score_samples(self, x: np.ndarray) -> np.ndarray:
        return self.mixture_.score_samples(x)


def detectors(args: argparse.Namespace) -> dict[str, Callable[[int], object]]:
    """Detector name -> a factory taking the seed."""
    ebmlab = {
        f"ebmlab {method}": lambda seed, method=method: EnergyOutlierDetector(
            method, steps=args.steps or None, random_state=seed
        )
        for method in args.methods
    }
    scaled = {
        "IsolationForest": lambda seed: IsolationForest(random_state=seed),
        "LocalOutlierFactor": lambda seed: LocalOutlierFactor(novelty=True),
        "GaussianMixture": lambda seed: BICGaussianMixture(random_state=seed),
        "KernelDensity": lambda seed: KernelDensity(bandwidth="scott"),
    }
    return ebmlab | {
        name: lambda seed, make=make: make_pipeline(StandardScaler(), make(seed))
        for name, make in scaled.items()
    }


def auroc(detector, inliers: np.ndarray, outliers: np.ndarray, seed: int) -> tuple[float, float]:
    """(AUROC on held-out inliers against the outliers, seconds of the fit)."""
    order = np.random.default_rng(seed).permutation(len(inliers))
    n_train = int(TRAIN_SHARE * len(inliers))
    train, test = inliers[order[:n_train]], inliers[order[n_train:]]
    start = time.perf_counter()
    detector.fit(train)
    seconds = time.perf_counter() - start
    scores = detector.score_samples(np.r_[test, outliers])
    labels = np.r_[np.ones(len(test)), np.zeros(len(outliers))]
    return float(roc_auc_score(labels, scores)), seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--methods", nargs="+", default=["cd", "dsm"])
    parser.add_argument("--steps", type=int, default=1000, help="0: each preset's")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--data", nargs="+", default=list(DATASETS), choices=list(DATASETS))
    parser.add_argument("--threads", type=int, default=1, help="torch threads")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    tables = {name: DATASETS[name]() for name in args.data}
    print(f"{machine()}; {torch.get_num_threads()} threads")
    sizes = ", ".join(f"{name} {len(i)}+{len(o)}x{i.shape[1]}" for name, (i, o) in tables.items())
    print(f"inliers+outliers x columns: {sizes}; seeds {args.seeds}\n")
    print("| detector | " + " | ".join(tables) + " | fit s |")
    print("|---" * (len(tables) + 2) + "|")
    for name, make in detectors(args).items():
        cells, seconds = [], []
        for inliers, outliers in tables.values():
            results = [auroc(make(seed), inliers, outliers, seed) for seed in range(args.seeds)]
            values = [value for value, _ in results]
            seconds += [s for _, s in results]
            cells.append(f"{np.mean(values):.3f} ± {np.std(values, ddof=1):.3f}")
        print(f"| {name} | " + " | ".join(cells) + f" | {np.mean(seconds):.2g} |", flush=True)


if __name__ == "__main__":
    main()
