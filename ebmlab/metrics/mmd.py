"""Maximum mean discrepancy between two samples, for data where no density is known."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from ebmlab.errors import EbmlabError

#: multiples of the median distance used as RBF widths: one kernel per scale keeps the test
#: sensitive to differences both finer and coarser than the typical spacing
MEDIAN_SCALES = (0.5, 1.0, 2.0)
#: points used to estimate the median distance; more changes it little and costs quadratically
MEDIAN_POINTS = 1_000
#: rows per kernel block, so memory stays bounded for large samples
BLOCK = 1_024


def mmd2(x: Tensor, y: Tensor, bandwidths: Sequence[float] | None = None) -> float:
    """Unbiased squared MMD with a sum of Gaussian RBF kernels.

    k(a, b) = sum_s exp(-|a - b|^2 / (2 s^2)); the estimate drops the diagonal terms of the
    within-sample sums, so it is unbiased and can be slightly negative when both samples come
    from one distribution. Computed in float64 on `x`'s device.

    Args:
        x: First sample (N, ...); trailing dimensions are flattened.
        y: Second sample (M, ...), same trailing size as `x`.
        bandwidths: Kernel widths s. Default: 0.5, 1 and 2 times the median distance between
            points of the pooled sample (a deterministic subset of at most 1,000 points).

    Returns:
        The squared MMD estimate.

    Raises:
        EbmlabError: If a sample has fewer than two points, the feature sizes differ, or a
            bandwidth is not positive.
    """
    x, y = _flat_pair(x, y)
    scales = _median_bandwidths(x, y) if bandwidths is None else [float(s) for s in bandwidths]
    if not scales or min(scales) <= 0:
        raise EbmlabError(f"MMD bandwidths must be positive numbers, got {bandwidths!r}")
    n, m = len(x), len(y)
    within_x = _kernel_sum(x, x, scales) - n * len(scales)
    within_y = _kernel_sum(y, y, scales) - m * len(scales)
    across = _kernel_sum(x, y, scales)
    value = within_x / (n * (n - 1)) + within_y / (m * (m - 1)) - 2 * across / (n * m)
    return float(value)


def _flat_pair(x: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
    """Both samples as float64 (N, D) matrices on x's device, after checking they compare."""
    x = x.detach().reshape(len(x), -1).double()
    y = y.detach().reshape(len(y), -1).to(x.device, torch.float64)
    if len(x) < 2 or len(y) < 2:
        raise EbmlabError(f"MMD needs at least 2 points per sample, got {len(x)} and {len(y)}")
    if x.shape[1] != y.shape[1]:
        raise EbmlabError(
            f"MMD samples must have the same size per point, got {x.shape[1]} and {y.shape[1]}"
        )
    return x, y


def _median_bandwidths(x: Tensor, y: Tensor) -> list[float]:
    """Median-heuristic widths from evenly spaced points of each sample (no randomness)."""
    pooled = torch.cat([_spread(x, MEDIAN_POINTS // 2), _spread(y, MEDIAN_POINTS // 2)])
    distances = torch.pdist(pooled)
    median = float(distances.median()) if distances.numel() else 0.0
    # identical points everywhere give a zero median; any width then measures the same thing
    median = median if median > 0 else 1.0
    return [median * scale for scale in MEDIAN_SCALES]


def _spread(points: Tensor, count: int) -> Tensor:
    """At most `count` rows spread evenly over `points`."""
    if len(points) <= count:
        return points
    index = torch.linspace(0, len(points) - 1, count, device=points.device).long()
    return points[index]


def _kernel_sum(a: Tensor, b: Tensor, scales: Sequence[float]) -> Tensor:
    """Sum over all pairs (i, j) of the multi-scale RBF kernel k(a_i, b_j), diagonal included."""
    total = a.new_zeros(())
    for start in range(0, len(a), BLOCK):
        squared = torch.cdist(a[start : start + BLOCK], b).square()
        for scale in scales:
            total = total + torch.exp(-squared / (2 * scale * scale)).sum()
    return total
