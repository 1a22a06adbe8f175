"""Outlier detection on tables: ebmlab's energy detectors beside scikit-learn's and PyOD's.

    python benchmarks/tabular_anomaly.py [--quick] [--methods cd dsm] [--steps 0]
                                         [--seeds 3] [--data iris wine ...] [--threads 1]

Each data set is a table of inliers (the normal rows) and one of outliers (the anomalies). Every
table that ships with scikit-learn takes part, each split by a class or, for diabetes, by its
target (`TABLES` states each split; `--quick` prints them): iris, wine, breast_cancer, digits
and diabetes. linnerud, the one other, is left out: 20 rows with no classes, too few to hold out
any. Three synthetic tables add what those lack: blobs (three Gaussian clusters in 4
dimensions, outliers uniform on their box), moons (scikit-learn's two moons, the same) and
correlated (a 16-dimensional Gaussian whose outliers take each column from another inlier, so
that only the columns' dependence gives them away).

Per seed every detector trains on a random 70% of the inliers and scores the other 30% and
every outlier; a cell is the AUROC of its score (higher = more normal), mean ± std over the
seeds, and the last columns are the mean AUROC over the tables and the mean seconds of a fit.

The detectors, each with its defaults: ebmlab's `EnergyOutlierDetector(method)`, which
standardises the columns itself and stops early on a held-out loss (the presets' own 3,000
training steps at most, as a user gets them; `--steps N` trains N at most; `EnergyDensity(method)`
scores the same -E(x), so it would repeat the row),
and, on columns standardised by `StandardScaler`: scikit-learn's IsolationForest,
LocalOutlierFactor (novelty=True), OneClassSVM, GaussianMixture (full covariance, 1, 2, 4 or 8
components by BIC) and KernelDensity (a Gaussian kernel, Scott's bandwidth); and, where PyOD is
installed (`pip install ebmlab[anomaly]`), its KNN, ECOD, COPOD, HBOS, PCA, MCD, INNE and
LODA, scored by minus PyOD's outlier score. Everything runs on one thread (`--threads`).
`--quick` (1 seed, 100 steps) checks in a minute or two that every detector runs on every table.
Prints markdown tables; asserts nothing.
"""

from __future__ import annotations

import argparse
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from sklearn.base import BaseEstimator, DensityMixin
from sklearn.datasets import (
    load_breast_cancer,
    load_diabetes,
    load_digits,
    load_iris,
    load_wine,
    make_blobs,
    make_moons,
)
from sklearn.ensemble import IsolationForest
from sklearn.metrics import roc_auc_score
from sklearn.mixture import GaussianMixture
from sklearn.neighbors import KernelDensity, LocalOutlierFactor
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.svm import OneClassSVM

from ebmlab import EnergyOutlierDetector
from ebmlab.bench import machine

TRAIN_SHARE = 0.7
QUICK_STEPS = 100


@dataclass(frozen=True)
class Table:
    """A data set as inliers and outliers, and what each of them is."""

    load: Callable[[], tuple[np.ndarray, np.ndarray]]
    inliers: str
    outliers: str


def by_class(x: np.ndarray, y: np.ndarray, inlier: int) -> tuple[np.ndarray, np.ndarray]:
    return x[y == inlier], x[y != inlier]


def uniform_on_box(inliers: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    low, high = inliers.min(0), inliers.max(0)
    return rng.uniform(low, high, size=(n, inliers.shape[1]))


def diabetes() -> tuple[np.ndarray, np.ndarray]:
    """Patients by disease progression a year on: the top quarter against the rest."""
    x, progression = load_diabetes(return_X_y=True)
    high = progression > np.percentile(progression, 75)
    return x[~high], x[high]


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


TABLES: dict[str, Table] = {
    # versicolor, the middle class: outliers on both sides of it, virginica overlapping it
    "iris": Table(
        lambda: by_class(*load_iris(return_X_y=True), inlier=1), "versicolor", "setosa, virginica"
    ),
    "wine": Table(
        lambda: by_class(*load_wine(return_X_y=True), inlier=1), "cultivar 1", "cultivars 0, 2"
    ),
    "breast_cancer": Table(
        lambda: by_class(*load_breast_cancer(return_X_y=True), inlier=1), "benign", "malignant"
    ),
    # the 8s, the digit most like the others
    "digits": Table(
        lambda: by_class(*load_digits(return_X_y=True), inlier=8), "8s", "the other digits"
    ),
    # a regression target, split at its third quartile (211.5): no class, so a threshold
    "diabetes": Table(diabetes, "progression <= 75th percentile", "progression > 75th percentile"),
    "blobs": Table(blobs, "3 Gaussian clusters", "uniform on their box"),
    "moons": Table(moons, "two moons", "uniform on their box"),
    "correlated": Table(correlated, "correlated Gaussian", "columns from other inliers"),
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


class PyODScore(BaseEstimator):
    """A PyOD detector with scikit-learn's sign: `score_samples` is minus its outlier score."""

    def __init__(self, detector):
        self.detector = detector

    def fit(self, x: np.ndarray, y: None = None) -> PyODScore:
        self.detector_ = self.detector.fit(x)
        return self

    def score_samples(self, x: np.ndarray) -> np.ndarray:
        return -self.detector_.decision_function(x)


def pyod_detectors() -> dict[str, Callable[[int], object]]:
    """PyOD's classic detectors with their defaults, or none where PyOD is not installed."""
    try:
        from pyod.models.copod import COPOD
        from pyod.models.ecod import ECOD
        from pyod.models.hbos import HBOS
        from pyod.models.inne import INNE
        from pyod.models.knn import KNN
        from pyod.models.loda import LODA
        from pyod.models.mcd import MCD
        from pyod.models.pca import PCA
    except ImportError:
        return {}
    return {
        "PyOD KNN": lambda seed: KNN(),
        "PyOD ECOD": lambda seed: ECOD(),
        "PyOD COPOD": lambda seed: COPOD(),
        "PyOD HBOS": lambda seed: HBOS(),
        "PyOD PCA": lambda seed: PCA(random_state=seed),
        "PyOD MCD": lambda seed: MCD(random_state=seed),
        "PyOD INNE": lambda seed: INNE(random_state=seed),
        "PyOD LODA": lambda seed: LODA(),
    }


def detectors(methods: list[str], steps: int | None) -> dict[str, Callable[[int], object]]:
    """Detector name -> a factory taking the seed."""
    ebmlab = {
        f"ebmlab {method}": lambda seed, method=method: EnergyOutlierDetector(
            method, steps=steps, random_state=seed
        )
        for method in methods
    }
    scaled = {
        "IsolationForest": lambda seed: IsolationForest(random_state=seed),
        "LocalOutlierFactor": lambda seed: LocalOutlierFactor(novelty=True),
        "OneClassSVM": lambda seed: OneClassSVM(),
        "GaussianMixture": lambda seed: BICGaussianMixture(random_state=seed),
        "KernelDensity": lambda seed: KernelDensity(bandwidth="scott"),
    }
    pyod = {
        name: lambda seed, make=make: PyODScore(make(seed))
        for name, make in pyod_detectors().items()
    }
    return ebmlab | {
        name: lambda seed, make=make: make_pipeline(StandardScaler(), make(seed))
        for name, make in (scaled | pyod).items()
    }


def auroc(detector, inliers: np.ndarray, outliers: np.ndarray, seed: int) -> tuple[float, float]:
    """(AUROC on held-out inliers against the outliers, seconds of the fit)."""
    order = np.random.default_rng(seed).permutation(len(inliers))
    n_train = int(TRAIN_SHARE * len(inliers))
    train, test = inliers[order[:n_train]], inliers[order[n_train:]]
    start = time.perf_counter()
    with warnings.catch_warnings():  # e.g. MCD on singular covariances: noted, not fatal
        warnings.simplefilter("ignore")
        detector.fit(train)
        seconds = time.perf_counter() - start
        scores = detector.score_samples(np.r_[test, outliers])
    labels = np.r_[np.ones(len(test)), np.zeros(len(outliers))]
    return float(roc_auc_score(labels, scores)), seconds


def split_table(tables: dict[str, tuple[np.ndarray, np.ndarray]]) -> str:
    """Markdown: each table's split and size."""
    lines = ["| data | inliers (normal) | outliers (anomalies) | inliers + outliers × columns |"]
    lines.append("|---|---|---|---|")
    for name, (inliers, outliers) in tables.items():
        table = TABLES[name]
        size = f"{len(inliers)} + {len(outliers)} × {inliers.shape[1]}"
        lines.append(f"| {name} | {table.inliers} | {table.outliers} | {size} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help=f"1 seed, {QUICK_STEPS} steps")
    parser.add_argument("--methods", nargs="+", default=["cd", "dsm"])
    parser.add_argument("--steps", type=int, default=0, help="0: each preset's")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--data", nargs="+", default=list(TABLES), choices=list(TABLES))
    parser.add_argument("--threads", type=int, default=1, help="torch threads")
    args = parser.parse_args()
    seeds, steps = (1, QUICK_STEPS) if args.quick else (args.seeds, args.steps or None)
    torch.set_num_threads(args.threads)
    tables = {name: TABLES[name].load() for name in args.data}
    print(f"{machine()}; {torch.get_num_threads()} threads; seeds {seeds}; steps {steps}\n")
    print(split_table(tables) + "\n")
    print("| detector | " + " | ".join(tables) + " | mean | fit s |")
    print("|---" * (len(tables) + 3) + "|")
    start = time.perf_counter()
    for name, make in detectors(args.methods, steps).items():
        cells, means, seconds = [], [], []
        for inliers, outliers in tables.values():
            results = [auroc(make(seed), inliers, outliers, seed) for seed in range(seeds)]
            values = [value for value, _ in results]
            seconds += [s for _, s in results]
            means.append(np.mean(values))
            spread = f" ± {np.std(values, ddof=1):.3f}" if seeds > 1 else ""
            cells.append(f"{np.mean(values):.3f}{spread}")
        row = f"| {name} | " + " | ".join(cells) + f" | {np.mean(means):.3f} |"
        print(row + f" {np.mean(seconds):.2g} |", flush=True)
    print(f"\n{(time.perf_counter() - start) / 60:.1f} minutes")


if __name__ == "__main__":
    main()
