"""Exact density metrics for 2D models: normalise exp(-E) on a fine grid over a bounding box.

In two dimensions the partition function is a sum over grid cells, so KL(p_data || p_model) and
the model's NLL are exact up to the grid's quadrature error (about 1e-9 for a smooth density on a
400 x 400 grid) and the mass outside the box, which the datasets keep below 1e-4.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import torch
from torch import Tensor

from ebmlab.errors import EbmlabError
from ebmlab.metrics._common import Energy, model_device, model_dtype

LogDensity = Callable[[Tensor], Tensor]


def grid_density_metrics(
    energy: Energy,
    log_density: LogDensity | None,
    bounds: tuple[float, float],
    resolution: int = 400,
    chunk: int = 65_536,
) -> dict[str, float]:
    """Normalise a 2D energy on a grid and compare it with the data's log-density.

    The model density is q(x) = exp(-E(x)) / Z with
    log Z = logsumexp(-E(grid)) + log(cell area) over the square box `bounds` x `bounds`, taken
    at cell centres. The data density is renormalised over the same cells, so the KL is that of
    two distributions on one grid (never negative, and an unnormalised `log_density` works
    too). Cells where log p = -inf carry no data mass and add nothing to the KL. Sums run in
    float64.

    Args:
        energy: Maps points (B, 2) to energies (B,); lower is more likely. Evaluated without
            autograd, on its parameters' device when it has parameters.
        log_density: Data log-density (B, 2) -> (B,), or None to get only `log_z`.
        bounds: (low, high) of the square box holding all but a negligible share of the mass.
        resolution: Cells per side.
        chunk: Grid points per energy call, to bound memory.

    Returns:
        `log_z`: log partition function of exp(-E) over the box. With a log-density also
        `kl`: KL(p_data || p_model) in nats; `nll`: cross-entropy E_p[-log q(x)] in nats;
        `data_entropy`: E_p[-log p(x)] in nats (so kl = nll - data_entropy).

    Raises:
        EbmlabError: If the bounds or resolution cannot form a grid.
    """
    xs, ys, area = _grid_axes(bounds, resolution)
    points = _grid_points(xs, ys)
    log_q_unnorm = -_evaluate(energy, points, chunk)
    log_z = torch.logsumexp(log_q_unnorm, 0) + math.log(area)
    metrics = {"log_z": float(log_z)}
    if log_density is None:
        return metrics
    log_q = log_q_unnorm - log_z
    log_p = _evaluate(log_density, points, chunk)
    log_p = log_p - (torch.logsumexp(log_p, 0) + math.log(area))
    weight = torch.exp(log_p) * area
    supported = weight > 0
    # where p = 0 the term is 0 * (-inf); select instead of multiplying to keep it 0, not NaN
    nll = -torch.where(supported, weight * log_q, 0.0).sum()
    entropy = -torch.where(supported, weight * log_p, 0.0).sum()
    kl = torch.where(supported, weight * (log_p - log_q), 0.0).sum()
    metrics.update(kl=float(kl), nll=float(nll), data_entropy=float(entropy))
    return metrics


def density_grid(
    fn: Callable[[Tensor], Tensor],
    bounds: tuple[float, float],
    resolution: int = 200,
    chunk: int = 65_536,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Evaluate a 2D function at cell centres of a square grid, for contour and image plots.

    Args:
        fn: Maps points (B, 2) to values (B,), e.g. an energy or a log-density.
        bounds: (low, high) of the square box.
        resolution: Cells per side.
        chunk: Grid points per call of `fn`.

    Returns:
        (xs, ys, values): cell-centre coordinates (resolution,) per axis and values of shape
        (resolution, resolution) with values[i, j] = fn((xs[j], ys[i])), the row-is-y layout
        that matplotlib's imshow and contour expect.
    """
    xs, ys, _ = _grid_axes(bounds, resolution)
    values = _evaluate(fn, _grid_points(xs, ys), chunk).reshape(resolution, resolution)
    return xs.cpu().numpy(), ys.cpu().numpy(), values.cpu().numpy()


def _grid_axes(bounds: tuple[float, float], resolution: int) -> tuple[Tensor, Tensor, float]:
    """Cell-centre coordinates along each axis and the cell area, in float64."""
    low, high = (float(b) for b in bounds)
    if not (math.isfinite(low) and math.isfinite(high) and low < high):
        raise EbmlabError(f"grid bounds must be finite with low < high, got {bounds!r}")
    if resolution < 2:
        raise EbmlabError(f"grid resolution must be at least 2 cells per side, got {resolution}")
    step = (high - low) / resolution
    centres = low + step * (torch.arange(resolution, dtype=torch.float64) + 0.5)
    return centres, centres.clone(), step * step


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
