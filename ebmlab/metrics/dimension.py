"""Intrinsic dimension by the maximum-likelihood estimator of Levina & Bickel (NeurIPS 2004).

The GEBM talk uses it to show that natural images lie near a low-dimensional set. Near a point
x, points on a d-dimensional set spread like a Poisson process whose count within radius t grows
as t^d; with T_1 <= ... <= T_k the distances from x to its k nearest neighbours, the MLE of d is

    d_k(x) = [ 1/(k-1) * sum_{j=1}^{k-1} log(T_k(x) / T_j(x)) ]^(-1)

averaged over the points x and then over k = k_min..k_max, as on the talk's slide.
"""

from __future__ import annotations

import numpy as np
from sklearn.neighbors import NearestNeighbors
from torch import Tensor

from ebmlab.errors import EbmlabError


def intrinsic_dimension(
    points: Tensor | np.ndarray,
    k_min: int = 10,
    k_max: int = 20,
    max_points: int = 5_000,
    seed: int = 0,
) -> float:
    """Levina-Bickel estimate of the dimension of the set the points lie near.

    Args:
        points: (N, ...) array; each example is flattened.
        k_min, k_max: the range of neighbour counts averaged over (Levina & Bickel use 10-20).
        max_points: a seeded random subset of this many distinct points is used if there are
            more (the nearest-neighbour search is quadratic in N).
        seed: seed of that subset.

    Returns:
        The estimated dimension (a float; no rounding).

    Raises:
        EbmlabError: if k_min < 2, k_max < k_min, or there are not more than k_max distinct
            points.
    """
    if k_min < 2 or k_max < k_min:
        raise EbmlabError(f"need 2 <= k_min <= k_max, got k_min={k_min}, k_max={k_max}")
    x = _distinct(points)
    if len(x) <= k_max:
        raise EbmlabError(f"need more than k_max={k_max} distinct points, got {len(x)}")
    if len(x) > max_points:
        x = x[np.random.default_rng(seed).choice(len(x), max_points, replace=False)]
    distances, _ = NearestNeighbors(n_neighbors=k_max + 1).fit(x).kneighbors(x)
    log_t = np.log(distances[:, 1:])  # column 0 is each point itself
    per_k = [_mean_estimate(log_t, k) for k in range(k_min, k_max + 1)]
    return float(np.mean(per_k))


def _distinct(points: Tensor | np.ndarray) -> np.ndarray:
    """Flattened float64 rows without repeats (a repeated point has a neighbour at distance 0)."""
    array = points.detach().cpu().numpy() if isinstance(points, Tensor) else np.asarray(points)
    return np.unique(array.reshape(len(array), -1).astype(np.float64), axis=0)


def _mean_estimate(log_t: np.ndarray, k: int) -> float:
    """Mean over points of d_k(x), from the log-distances to each point's neighbours."""
    log_ratios = log_t[:, k - 1 : k] - log_t[:, : k - 1]  # log T_k - log T_j, j < k
    return float(np.mean((k - 1) / log_ratios.sum(axis=1)))
