"""The 2D densities of EBM papers, sampleable, with exact log-densities where closed forms exist.

Scales follow the FFJORD conventions most EBM papers reuse (8gaussians, checkerboard, spirals,
pinwheel); 25gaussians and rings use a wider noise so their exact KL can be resolved on a grid.
Densities without a closed form (2spirals, pinwheel, swissroll, moons) get a reference: a
histogram of 10^6 samples on a fine grid over their box (`exact=False`).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache

import numpy as np
import torch
from torch import Tensor

Sampler = Callable[[int, torch.Generator], Tensor]
LogDensity = Callable[[Tensor], Tensor]

REFERENCE_SAMPLES = 1_000_000
REFERENCE_BINS = 200


@dataclass(frozen=True)
class Toy2D:
    """One named density: how to draw from it, its box, and its log-density if known exactly."""

    description: str
    draw: Sampler
    bounds: tuple[float, float]
    log_density: LogDensity | None = None


def _randn(n: int, g: torch.Generator) -> Tensor:
    return torch.randn(n, 2, generator=g)


def _gaussian_mixture_log_density(centres: Tensor, std: float) -> LogDensity:
    def log_density(x: Tensor) -> Tensor:
        sq = (x.unsqueeze(1) - centres.to(x)).pow(2).sum(-1)  # (B, K)
        log_norm = -math.log(2 * math.pi * std**2) - math.log(len(centres))
        return torch.logsumexp(-sq / (2 * std**2), dim=1) + log_norm

    return log_density


def _mixture_sampler(centres: Tensor, std: float) -> Sampler:
    def draw(n: int, g: torch.Generator) -> Tensor:
        idx = torch.randint(len(centres), (n,), generator=g)
        return centres[idx] + std * _randn(n, g)

    return draw


def _eight_centres() -> Tensor:
    s = 1 / math.sqrt(2)
    unit = [(1, 0), (-1, 0), (0, 1), (0, -1), (s, s), (s, -s), (-s, s), (-s, -s)]
    return torch.tensor(unit) * 4.0 / 1.414


def _grid_centres() -> Tensor:
    axis = torch.arange(-2.0, 3.0)
    return torch.cartesian_prod(axis, axis)


# checkerboard: 8 of the 16 squares of side 2 in [-4, 4]^2, those with even index sum
def _checkerboard_draw(n: int, g: torch.Generator) -> Tensor:
    x1 = torch.rand(n, generator=g) * 4 - 2
    x2 = torch.rand(n, generator=g) - torch.randint(0, 2, (n,), generator=g) * 2.0
    x2 = x2 + torch.floor(x1) % 2
    return torch.stack([x1, x2], 1) * 2


def _checkerboard_log_density(x: Tensor) -> Tensor:
    inside = (x.abs() <= 4).all(dim=1)
    cells = torch.floor(x / 2).sum(dim=1) % 2 == 0
    return torch.where(inside & cells, math.log(1 / 32), -math.inf).to(x)


RING_RADII = (1.0, 2.0, 3.0)
RING_STD = 0.1


def _rings_draw(n: int, g: torch.Generator) -> Tensor:
    radius = torch.tensor(RING_RADII)[torch.randint(len(RING_RADII), (n,), generator=g)]
    radius = radius + RING_STD * torch.randn(n, generator=g)
    angle = torch.rand(n, generator=g) * 2 * math.pi
    return torch.stack([radius * torch.cos(angle), radius * torch.sin(angle)], 1)


def _rings_log_density(x: Tensor) -> Tensor:
    """Angle uniform, radius a Gaussian mixture: p(x) = p_r(|x|) / (2 pi |x|). The radial
    Gaussians' mass below r = 0 (10 std away) is negligible and ignored."""
    r = x.norm(dim=1).clamp_min(1e-12)
    radii = torch.tensor(RING_RADII).to(x)
    log_pr = torch.logsumexp(-(r.unsqueeze(1) - radii).pow(2) / (2 * RING_STD**2), dim=1)
    log_pr = log_pr - 0.5 * math.log(2 * math.pi * RING_STD**2) - math.log(len(RING_RADII))
    return log_pr - torch.log(2 * math.pi * r)


def _spirals_draw(n: int, g: torch.Generator) -> Tensor:
    half = n // 2 + 1
    t = torch.sqrt(torch.rand(half, generator=g)) * 3 * math.pi
    arm = torch.stack([-torch.cos(t) * t, torch.sin(t) * t], 1)
    arm = arm + torch.rand(half, 2, generator=g) * 0.5
    x = torch.cat([arm, -arm])[torch.randperm(2 * half, generator=g)[:n]]
    return x / 3 + 0.1 * _randn(n, g)


def _pinwheel_draw(n: int, g: torch.Generator) -> Tensor:
    arms, radial_std, tangential_std, rate = 5, 0.3, 0.1, 0.25
    features = _randn(n, g) * torch.tensor([radial_std, tangential_std]) + torch.tensor([1.0, 0])
    labels = torch.randint(arms, (n,), generator=g)
    angles = labels * 2 * math.pi / arms + rate * torch.exp(features[:, 0])
    cos, sin = torch.cos(angles), torch.sin(angles)
    rotation = torch.stack([cos, -sin, sin, cos], 1).view(n, 2, 2)
    return 2 * torch.einsum("ti,tij->tj", features, rotation)


def _numpy_seed(g: torch.Generator) -> int:
    return int(torch.randint(0, 2**31 - 1, (1,), generator=g))


def _swissroll_draw(n: int, g: torch.Generator) -> Tensor:
    from sklearn.datasets import make_swiss_roll

    x, _ = make_swiss_roll(n, noise=1.0, random_state=_numpy_seed(g))
    return torch.as_tensor(x[:, [0, 2]] / 5.0, dtype=torch.float32)


def _moons_draw(n: int, g: torch.Generator) -> Tensor:
    from sklearn.datasets import make_moons

    x, _ = make_moons(n, noise=0.1, random_state=_numpy_seed(g))
    return torch.as_tensor((x - np.array([0.5, 0.25])) * 2, dtype=torch.float32)


TOY2D: dict[str, Toy2D] = {
    "8gaussians": Toy2D(
        "8 Gaussians on a circle (exact density)",
        _mixture_sampler(_eight_centres(), 0.5 / 1.414),
        (-4.5, 4.5),
        _gaussian_mixture_log_density(_eight_centres(), 0.5 / 1.414),
    ),
    "25gaussians": Toy2D(
        "5x5 grid of Gaussians, std 0.1 (exact density)",
        _mixture_sampler(_grid_centres(), 0.1),
        (-3.0, 3.0),
        _gaussian_mixture_log_density(_grid_centres(), 0.1),
    ),
    "checkerboard": Toy2D(
        "uniform on 8 squares of a 4x4 board (exact density)",
        _checkerboard_draw,
        (-4.0, 4.0),
        _checkerboard_log_density,
    ),
    "rings": Toy2D(
        "3 concentric rings (exact density)", _rings_draw, (-4.0, 4.0), _rings_log_density
    ),
    "2spirals": Toy2D("two interleaved spirals (reference density)", _spirals_draw, (-4.5, 4.5)),
    "pinwheel": Toy2D("5-armed pinwheel (reference density)", _pinwheel_draw, (-4.5, 4.5)),
    "swissroll": Toy2D("2D swiss roll (reference density)", _swissroll_draw, (-4.0, 4.0)),
    "moons": Toy2D("two half moons (reference density)", _moons_draw, (-4.0, 4.0)),
}


@cache
def _reference_histogram(name: str) -> Tensor:
    """log density per bin from 10^6 samples (fixed seed), -inf where a bin is empty."""
    toy = TOY2D[name]
    low, high = toy.bounds
    x = toy.draw(REFERENCE_SAMPLES, torch.Generator().manual_seed(12345)).double()
    counts, _, _ = np.histogram2d(
        x[:, 0].numpy(), x[:, 1].numpy(), bins=REFERENCE_BINS, range=[[low, high], [low, high]]
    )
    cell_area = ((high - low) / REFERENCE_BINS) ** 2
    with np.errstate(divide="ignore"):
        return torch.as_tensor(np.log(counts / (REFERENCE_SAMPLES * cell_area)))


def _reference_log_density(name: str) -> LogDensity:
    low, high = TOY2D[name].bounds

    def log_density(x: Tensor) -> Tensor:
        table = _reference_histogram(name).to(x.device)
        idx = torch.floor((x.double() - low) / (high - low) * REFERENCE_BINS).long()
        inside = ((idx >= 0) & (idx < REFERENCE_BINS)).all(dim=1)
        idx = idx.clamp(0, REFERENCE_BINS - 1)
        values = table[idx[:, 0], idx[:, 1]]
        return torch.where(inside, values, -math.inf).to(x.dtype)

    return log_density


def log_density(name: str) -> tuple[LogDensity, bool]:
    """(log p, exact?) for a named density: the closed form, or the histogram reference."""
    toy = TOY2D[name]
    if toy.log_density is not None:
        return toy.log_density, True
    return _reference_log_density(name), False
