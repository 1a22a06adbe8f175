"""Exact density metrics for 1D and 2D models: normalise exp(-E) on a fine grid over a box.

In one or two dimensions the partition function is a sum over grid cells, so KL(p_data ||
p_model) and the model's NLL are exact up to the grid's quadrature error (about 1e-9 for a smooth
density on a 400 x 400 grid, or 4,000 cells in 1D, whose features span a few cells or more) and
the mass outside the box, which the datasets keep below 1e-4. For data without a known density
(a user's table), `held_out_nll` scores test points under exp(-E) / Z normalised on `data_box`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np
import torch
from torch import Tensor

from ebmlab.errors import EbmlabError
from ebmlab.metrics._common import Energy, model_device, model_dtype

LogDensity = Callable[[Tensor], Tensor]
#: (low, high) of a square 2D box, or one (low, high) per dimension
Bounds = tuple[float, float] | Sequence[tuple[float, float]]

DEFAULT_RESOLUTION = {1: 4000, 2: 400}
#: `data_box` widens the data's range by this share of it on each side
DATA_BOX_MARGIN = 0.25


def grid_density_metrics(
    energy: Energy,
    log_density: LogDensity | None,
    bounds: Bounds,
    resolution: int | None = None,
    chunk: int = 65_536,
) -> dict[str, float]:
    """Normalise a 1D or 2D energy on a grid and compare it with the data's log-density.

    The model density is q(x) = exp(-E(x)) / Z with
    log Z = logsumexp(-E(grid)) + log(cell volume) over the box, taken at cell centres. The
    data density is renormalised over the same cells, so the KL is that of two distributions on
    one grid (never negative, and an unnormalised `log_density` works too). Cells where
    log p = -inf carry no data mass and add nothing to the KL. Sums run in float64.

    Args:
        energy: Maps points (B, D) to energies (B,); lower is more likely. Evaluated without
            autograd, on its parameters' device when it has parameters.
        log_density: Data log-density (B, D) -> (B,), or None to get only `log_z`.
        bounds: The box holding all but a negligible share of the mass: (low, high) for the
            square [low, high]^2, or one (low, high) per dimension (D = 1 or 2).
        resolution: Cells per side; default 4,000 in 1D, 400 in 2D.
        chunk: Grid points per energy call, to bound memory.

    Returns:
        `log_z`: log partition function of exp(-E) over the box. With a log-density also
        `kl`: KL(p_data || p_model) in nats; `nll`: cross-entropy E_p[-log q(x)] in nats;
        `data_entropy`: E_p[-log p(x)] in nats (so kl = nll - data_entropy).

    Raises:
        EbmlabError: If the bounds or resolution cannot form a grid.
    """
    points, volume = _grid(bounds, resolution)
    log_q_unnorm = -_evaluate(energy, points, chunk)
    log_z = torch.logsumexp(log_q_unnorm, 0) + math.log(volume)
    metrics = {"log_z": float(log_z)}
    if log_density is None:
        return metrics
    log_q = log_q_unnorm - log_z
    log_p = _evaluate(log_density, points, chunk)
    log_p = log_p - (torch.logsumexp(log_p, 0) + math.log(volume))
    weight = torch.exp(log_p) * volume
    supported = weight > 0
    # where p = 0 the term is 0 * (-inf); select instead of multiplying to keep it 0, not NaN
    nll = -torch.where(supported, weight * log_q, 0.0).sum()
    entropy = -torch.where(supported, weight * log_p, 0.0).sum()
    kl = torch.where(supported, weight * (log_p - log_q), 0.0).sum()
    metrics.update(kl=float(kl), nll=float(nll), data_entropy=float(entropy))
    return metrics


def held_out_nll(
    energy: Energy,
    points: Tensor,
    bounds: Bounds,
    resolution: int | None = None,
    chunk: int = 65_536,
) -> float:
    """-mean(log q(x)) over `points` (B, D), with q = exp(-E) / Z and Z summed on the grid over
    the box (see `grid_density_metrics`): an honest score for data without a known density.

    q is a density on the box, so the score is exact when the model keeps its mass there; mass
    it puts outside is dropped from Z and makes the score look better by -log(1 - that mass).
    `data_box` gives a box that holds the points with room to spare.
    """
    log_z = grid_density_metrics(energy, None, bounds, resolution, chunk)["log_z"]
    return float(_evaluate(energy, points.double(), chunk).mean()) + log_z


def data_box(points: Tensor, margin: float = DATA_BOX_MARGIN) -> tuple[tuple[float, float], ...]:
    """Per dimension the range of `points` (B, D), widened by `margin` times that range on
    each side (a range of 0, a constant column, counts as 1)."""
    low, high = points.double().min(0).values, points.double().max(0).values
    span = torch.where(high > low, high - low, torch.ones_like(low))
    return tuple(
        (float(lo), float(hi))
        for lo, hi in zip(low - margin * span, high + margin * span, strict=True)
    )


def density_grid(
    fn: Callable[[Tensor], Tensor],
    bounds: Bounds,
    resolution: int = 200,
    chunk: int = 65_536,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Evaluate a 2D function at cell centres of a grid, for contour and image plots.

    Args:
        fn: Maps points (B, 2) to values (B,), e.g. an energy or a log-density.
        bounds: (low, high) of the square box, or ((x_low, x_high), (y_low, y_high)).
        resolution: Cells per side.
        chunk: Grid points per call of `fn`.

    Returns:
        (xs, ys, values): cell-centre coordinates (resolution,) per axis and values of shape
        (resolution, resolution) with values[i, j] = fn((xs[j], ys[i])), the row-is-y layout
        that matplotlib's imshow and contour expect.
    """
    box = per_dimension(bounds)
    if len(box) != 2:
        raise EbmlabError(f"density_grid draws 2D functions, got a box of {len(box)} dimensions")
    (xs, _), (ys, _) = (_axis(side, resolution) for side in box)
    values = _evaluate(fn, _grid_points(xs, ys), chunk).reshape(resolution, resolution)
    return xs.cpu().numpy(), ys.cpu().numpy(), values.cpu().numpy()


def per_dimension(bounds: Bounds) -> tuple[tuple[float, float], ...]:
    """The box as one (low, high) per dimension; a bare (low, high) is the square 2D box."""
    if len(bounds) == 2 and all(np.ndim(b) == 0 for b in bounds):
        return (tuple(bounds),) * 2
    return tuple(tuple(side) for side in bounds)


def _grid(bounds: Bounds, resolution: int | None) -> tuple[Tensor, float]:
    """Cell centres (N, D) of the grid over the box, row by row in y for 2D, and the cell
    volume, in float64."""
    box = per_dimension(bounds)
    if len(box) not in DEFAULT_RESOLUTION:
        raise EbmlabError(f"grid metrics need 1 or 2 dimensions, got a box of {len(box)}")
    axes = [_axis(side, resolution or DEFAULT_RESOLUTION[len(box)]) for side in box]
    volume = math.prod(step for _, step in axes)
    if len(axes) == 1:
        return axes[0][0][:, None], volume
    return _grid_points(axes[0][0], axes[1][0]), volume


def _axis(side: tuple[float, float], resolution: int) -> tuple[Tensor, float]:
    """Cell-centre coordinates along one axis and the cell width, in float64."""
    if len(side) != 2:
        raise EbmlabError(f"grid bounds must be (low, high) per dimension, got {side!r}")
    low, high = (float(b) for b in side)
    if not (math.isfinite(low) and math.isfinite(high) and low < high):
        raise EbmlabError(f"grid bounds must be finite with low < high, got {side!r}")
    if resolution < 2:
        raise EbmlabError(f"grid resolution must be at least 2 cells per side, got {resolution}")
    step = (high - low) / resolution
    return low + step * (torch.arange(resolution, dtype=torch.float64) + 0.5), step


def _grid_points(xs: Tensor, ys: Tensor) -> Tensor:
    """All (x, y) cell centres, row by row in y, as a (len(ys) * len(xs), 2) tensor."""
    grid_y, grid_x = torch.meshgrid(ys, xs, indexing="ij")
    return torch.stack([grid_x.reshape(-1), grid_y.reshape(-1)], dim=1)


def _evaluate(fn: Callable[[Tensor], Tensor], points: Tensor, chunk: int) -> Tensor:
    """fn over float64 points in chunks, fed in the fn's own device and dtype.

    Returns float64 values on the points' device, so the reductions after it are done in double
    precision.
    """
    device = model_device(fn) or points.device
    dtype = model_dtype(fn)
    parts = []
    with torch.no_grad():
        for start in range(0, len(points), chunk):
            batch = points[start : start + chunk].to(device=device, dtype=dtype)
            parts.append(fn(batch).reshape(-1).to(points.device, torch.float64))
    return torch.cat(parts)
