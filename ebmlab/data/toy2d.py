"""The 2D densities of EBM papers, sampleable, with exact log-densities where closed forms exist.

Scales follow the FFJORD data generators that most EBM papers reuse; where ebmlab departs from
them, the table says so. N(m, s) is an isotropic Gaussian with standard deviation s.

| name         | box           | how a point is drawn                                           |
|--------------|---------------|----------------------------------------------------------------|
| 8gaussians   | [-4.5, 4.5]^2 | N(c, 0.5/1.414), c one of 8 unit directions times 4/1.414      |
| 25gaussians  | [-3, 3]^2     | N(c, 0.1), c on the grid {-2..2}^2 (FFJORD's std 0.01/2.828    |
|              |               | would need a far finer grid than the KL metrics use)           |
| checkerboard | [-4, 4]^2     | uniform on the 8 side-2 squares of [-4, 4]^2, even index sum   |
| rings        | [-4, 4]^2     | radius N(r, 0.1), r in {1, 2, 3}; angle uniform (FFJORD's      |
|              |               | uniform-noise rings have no smooth density)                    |
| thinrings    | [-4, 4]^2     | the same with radius N(r, 0.03): near a 1D curve, GEBM's case  |
| 2spirals     | [-4.5, 4.5]^2 | t = 3 pi sqrt(u); arms +-((-t cos t, t sin t) + U[0, 0.5]^2)   |
|              |               | / 3, plus N(0, 0.1)                                            |
| pinwheel     | [-4.5, 4.5]^2 | 5 arms, radial std 0.3, tangential std 0.1, rate 0.25, times 2 |
| swissroll    | [-4, 4]^2     | sklearn's roll (t in [1.5 pi, 4.5 pi], noise 1) along its axis |
|              |               | divided by 5                                                   |
| moons        | [-4, 4]^2     | sklearn's two moons (noise 0.1), centred, doubled; the arc     |
|              |               | position is uniform instead of evenly spaced, so draws are iid |

Each box holds all but < 1e-4 of the mass (tests/test_data.py measures it with 10^6 draws).
Seven densities have exact log-densities: the Gaussian mixtures by logsumexp; the checkerboard as
log(1/32) on its squares and -inf elsewhere; both rings as p_r(|x|) / (2 pi |x|), where p_r is
the radial mixture (its mass below r = 0, 10 std away, is ignored); moons and swissroll as a
curve blurred by a Gaussian, whose integral over the curve parameter is a Gauss-Legendre sum
accurate to 1e-9 in log p. 2spirals (uniform jitter) and pinwheel (a warped Gaussian without a
closed-form inverse) get a reference instead: the log of a 200 x 200 histogram of 10^6 draws
over the box (`exact=False`), built once per process; it is noisy by several percent per bin.

The two mixtures have classes: a point's label is the component that drew it. `with_classes(name,
classes)` keeps only some components, with the exact log-density of that smaller mixture: the
class-conditional densities that ICD composes (Sec. 3.4). 8gaussians' components 0..7 lie
towards E, W, N, S, NE, SE, NW, SW; 25gaussians' component 5 i + j is at (i - 2, j - 2).
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
LabelledSampler = Callable[[int, torch.Generator], tuple[Tensor, Tensor]]

REFERENCE_SAMPLES = 1_000_000
REFERENCE_BINS = 200
MIXTURE_CHUNK = 4096


@dataclass(frozen=True)
class Toy2D:
    """One named density: how to draw from it, its box, and its log-density if known exactly."""

    description: str
    draw: Sampler
    bounds: tuple[float, float]
    log_density: LogDensity | None = None
    draw_labelled: LabelledSampler | None = None  # (points, classes), for the mixtures


def _randn(n: int, g: torch.Generator) -> Tensor:
    return torch.randn(n, 2, generator=g)


def _gaussian_mixture_log_density(
    centres: Tensor, std: float, weights: Tensor | None = None
) -> LogDensity:
    """log sum_k w_k N(x; c_k, std^2 I), equal weights unless given.

    Evaluated in float64 as -|x|^2 / 2s^2 + logsumexp_k(log w_k - |c_k|^2 / 2s^2 + x.c_k / s^2):
    one matrix product per chunk of points, so hundreds of components stay cheap.
    """
    centres = centres.double()
    log_weights = (
        torch.full((len(centres),), -math.log(len(centres)), dtype=torch.float64)
        if weights is None
        else weights.double().log()
    )
    offsets = log_weights - centres.pow(2).sum(1) / (2 * std**2)
    log_norm = math.log(2 * math.pi * std**2)

    def log_density(x: Tensor) -> Tensor:
        c, b = centres.to(x.device), offsets.to(x.device)
        parts = []
        for chunk in x.double().split(MIXTURE_CHUNK):  # bounds the (points, components) table
            scores = b + chunk @ c.T / std**2
            parts.append(torch.logsumexp(scores, dim=1) - chunk.pow(2).sum(1) / (2 * std**2))
        return (torch.cat(parts) - log_norm).to(x.dtype)

    return log_density


def _blurred_curve_log_density(
    curve: Callable[[Tensor], Tensor], turns: tuple[float, float], nodes: int, std: float
) -> LogDensity:
    """Density of curve(t) + N(0, std^2 I) with t uniform on `turns`.

    `curve` maps n values of t to n points, or to several equally likely branches stacked as
    rows [branch 1; branch 2; ...]. The integral over t is a Gauss-Legendre sum: a Gaussian
    mixture with one component per node and branch. `nodes` is chosen so that the sum matches
    adaptive quadrature to 1e-9 (tests/test_data.py checks it).
    """
    low, high = turns
    t, w = np.polynomial.legendre.leggauss(nodes)
    centres = curve(torch.as_tensor(low + (t + 1) * (high - low) / 2))
    branches = len(centres) // nodes
    weights = torch.as_tensor(np.tile(w / 2, branches) / branches)
    return _gaussian_mixture_log_density(centres, std, weights)


def _mixture_sampler(centres: Tensor, std: float, classes: Tensor | None = None) -> LabelledSampler:
    """Draws with their component's class (`classes[k]` for component k, default k)."""
    centres = centres.float()  # draws are float32; the log-density keeps float64 centres
    classes = torch.arange(len(centres)) if classes is None else classes

    def draw_labelled(n: int, g: torch.Generator) -> tuple[Tensor, Tensor]:
        idx = torch.randint(len(centres), (n,), generator=g)
        return centres[idx] + std * _randn(n, g), classes[idx]

    return draw_labelled


def _points_only(draw_labelled: LabelledSampler) -> Sampler:
    return lambda n, g: draw_labelled(n, g)[0]


EIGHT_STD = 0.5 / 1.414
GRID_STD = 0.1


def _eight_centres() -> Tensor:
    s = 1 / math.sqrt(2)
    unit = [(1, 0), (-1, 0), (0, 1), (0, -1), (s, s), (s, -s), (-s, s), (-s, -s)]
    return torch.tensor(unit, dtype=torch.float64) * 4.0 / 1.414


def _grid_centres() -> Tensor:
    axis = torch.arange(-2.0, 3.0, dtype=torch.float64)
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
THIN_RING_STD = 0.03


def _rings(std: float) -> tuple[Sampler, LogDensity]:
    """Draw and exact log-density of three concentric rings with radial noise `std`."""

    def draw(n: int, g: torch.Generator) -> Tensor:
        radius = torch.tensor(RING_RADII)[torch.randint(len(RING_RADII), (n,), generator=g)]
        radius = radius + std * torch.randn(n, generator=g)
        angle = torch.rand(n, generator=g) * 2 * math.pi
        return torch.stack([radius * torch.cos(angle), radius * torch.sin(angle)], 1)

    def log_density(x: Tensor) -> Tensor:
        """Angle uniform, radius a Gaussian mixture: p(x) = p_r(|x|) / (2 pi |x|). The radial
        Gaussians' mass below r = 0 (at least 10 std away) is negligible and ignored."""
        r = x.norm(dim=1).clamp_min(1e-12)
        radii = torch.tensor(RING_RADII).to(x)
        log_pr = torch.logsumexp(-(r.unsqueeze(1) - radii).pow(2) / (2 * std**2), dim=1)
        log_pr = log_pr - 0.5 * math.log(2 * math.pi * std**2) - math.log(len(RING_RADII))
        return log_pr - torch.log(2 * math.pi * r)

    return draw, log_density


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


MOONS_STD = 0.2
ROLL_STD = 0.2
ROLL_TURNS = (1.5 * math.pi, 4.5 * math.pi)


def _upper_moon(t: Tensor) -> Tensor:
    """sklearn's upper moon (cos t, sin t), t in [0, pi], shifted by -(0.5, 0.25) and doubled.

    sklearn's lower moon (1 - cos t, 0.5 - sin t) becomes this one mirrored through the origin.
    """
    return torch.stack([2 * torch.cos(t) - 1, 2 * torch.sin(t) - 0.5], 1)


def _moons(t: Tensor) -> Tensor:
    upper = _upper_moon(t)
    return torch.cat([upper, -upper])


def _moons_draw(n: int, g: torch.Generator) -> Tensor:
    t = torch.rand(n, generator=g) * math.pi
    sign = torch.randint(0, 2, (n, 1), generator=g) * 2.0 - 1
    return sign * _upper_moon(t) + MOONS_STD * _randn(n, g)


def _roll(t: Tensor) -> Tensor:
    """sklearn's swiss roll seen along its axis, divided by 5."""
    return torch.stack([t * torch.cos(t), t * torch.sin(t)], 1) / 5


def _swissroll_draw(n: int, g: torch.Generator) -> Tensor:
    low, high = ROLL_TURNS
    t = low + (high - low) * torch.rand(n, generator=g)
    return _roll(t) + ROLL_STD * _randn(n, g)


def _ring_toy(description: str, std: float) -> Toy2D:
    draw, log_density = _rings(std)
    return Toy2D(description, draw, (-4.0, 4.0), log_density)


def _mixture(
    description: str,
    centres: Tensor,
    std: float,
    bounds: tuple[float, float],
    classes: Tensor | None = None,
) -> Toy2D:
    draw_labelled = _mixture_sampler(centres, std, classes)
    return Toy2D(
        description,
        _points_only(draw_labelled),
        bounds,
        _gaussian_mixture_log_density(centres, std),
        draw_labelled,
    )


MIXTURES = {  # name -> (centres, std, box)
    "8gaussians": (_eight_centres(), EIGHT_STD, (-4.5, 4.5)),
    "25gaussians": (_grid_centres(), GRID_STD, (-3.0, 3.0)),
}

TOY2D: dict[str, Toy2D] = {
    "8gaussians": _mixture(
        "8 Gaussians on a circle (exact density; 8 classes)", *MIXTURES["8gaussians"]
    ),
    "25gaussians": _mixture(
        "5x5 grid of Gaussians, std 0.1 (exact density; 25 classes)", *MIXTURES["25gaussians"]
    ),
    "checkerboard": Toy2D(
        "uniform on 8 squares of a 4x4 board (exact density)",
        _checkerboard_draw,
        (-4.0, 4.0),
        _checkerboard_log_density,
    ),
    "rings": _ring_toy("3 concentric rings (exact density)", RING_STD),
    "thinrings": _ring_toy(
        "3 concentric rings of radial std 0.03: a 1D support blurred a little (exact density)",
        THIN_RING_STD,
    ),
    "2spirals": Toy2D("two interleaved spirals (reference density)", _spirals_draw, (-4.5, 4.5)),
    "pinwheel": Toy2D("5-armed pinwheel (reference density)", _pinwheel_draw, (-4.5, 4.5)),
    "swissroll": Toy2D(
        "2D swiss roll (exact density, by quadrature)",
        _swissroll_draw,
        (-4.0, 4.0),
        _blurred_curve_log_density(_roll, ROLL_TURNS, 256, ROLL_STD),
    ),
    "moons": Toy2D(
        "two half moons (exact density, by quadrature)",
        _moons_draw,
        (-4.0, 4.0),
        _blurred_curve_log_density(_moons, (0.0, math.pi), 128, MOONS_STD),
    ),
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


def with_classes(name: str, classes: tuple[int, ...]) -> Toy2D:
    """The mixture `name` restricted to the components `classes`, with its exact log-density.

    Labels keep the full mixture's numbering.

    Raises:
        ValueError: If `name` has no classes or a class is out of range.
    """
    if name not in MIXTURES:
        raise ValueError(f"{name} has no classes; the mixtures {', '.join(MIXTURES)} do")
    centres, std, bounds = MIXTURES[name]
    chosen = sorted(set(classes))
    if not chosen or chosen[0] < 0 or chosen[-1] >= len(centres):
        raise ValueError(f"{name}'s classes are 0..{len(centres) - 1}, got {list(classes)}")
    return _mixture(
        f"{name} components {chosen}", centres[chosen], std, bounds, torch.tensor(chosen)
    )
