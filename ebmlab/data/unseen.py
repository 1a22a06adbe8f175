"""Random densities with exact log-densities: data that no method or preset was tuned on.

`unseen_density(seed)` draws one density from its seed alone (the same on every machine: every
choice comes from `numpy.random.default_rng(seed).random()`, whose stream numpy keeps stable).
A density is built in a unit frame, where its features span about [-1, 1], and then placed by a
per-axis scale and an offset: x = offset + scale * aspect * u. The overall scale is log-uniform
on [1e-3, 1e3], the 2D aspect log-uniform on [1/2, 2], and each coordinate of the offset is
1 to 30 times the scale, of either sign. The change of variables is exact:
log p(x) = log p_u(u) - sum(log(scale * aspect)).

| kind        | share | unit frame                                                          |
|-------------|-------|---------------------------------------------------------------------|
| 1D mixture  | 30%   | 2-12 Gaussians, std 0.02-0.2                                        |
| 2D mixture  | 40%   | 2-12 Gaussians, major std 0.05-0.25, axis ratio 1-3, any rotation   |
| rings       | 15%   | 1-3 concentric rings, radii up to 1, radial std 0.015-0.06          |
| spiral      | 15%   | 1-2 arms of r = r0 + (1 - r0) t, 0.75-2 turns, std 0.1-0.2 of the   |
|             |       | gap between windings (at most 0.1)                                  |

Mixture means are placed one by one, uniformly in [-L, L]^D, each at least 1.25 (s_i + s_j)
from the others (s: the largest std of a component), L growing by 10% after 100 misses: the
modes are distinct. Weights are 0.75 Dirichlet(1) + 0.25 / K: unequal, none below 0.25 / K.

Normalisation, exactly:
- mixtures: each Gaussian is normalised and the weights sum to 1.
- rings: the radius is a mixture of Gaussians truncated to r > 0, each divided by its mass
  Phi(R / s) above 0, the angle is uniform: p(u) = p_r(|u|) / (2 pi |u|). Every ring keeps
  R >= 6 s, so the density at the centre is negligible (p_r(0) / p_r(R) < 2e-8).
- spirals: u = c(t) + N(0, s^2 I) with t uniform on [0, 1] (and the arm uniform), so
  p(u) = int_0^1 N(u; c(t), s^2 I) dt. The integral is a composite Gauss-Legendre sum (8 nodes
  on each panel of 3 s of arc length): a mixture of Gaussians whose weights sum to 1 exactly,
  and within 2e-7 of adaptive quadrature of the integral (tests/test_unseen.py checks it).

`bounds` is a box per dimension with all but < 1e-4 of the mass: 4.5 std past the extreme
means (mixtures), radii (rings) or curve points (spirals) along each axis, so at most
2 D (1 - Phi(4.5)) < 1.4e-5 lies outside.

`UNSEEN_SUITE` holds 12 seeds, chosen once (by reading the descriptions of seeds 0..299) to
cover 1D mixtures, 2D mixtures of few and many components, scales near 1e-3 and 1e3 with
offsets, rotated anisotropic components, rings and spirals; `ebmlab bench --suite unseen` runs
them, and `ebmlab.data.load_dataset("unseen-<seed>")` loads any seed as a user's table.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from ebmlab.data.toy2d import _gaussian_mixture_log_density

F64 = torch.float64
PREFIX = "unseen-"
#: std past the extreme means / radii / curve points that the box keeps on each side
BOX_STDS = 4.5
SCALE_RANGE = (1e-3, 1e3)
OFFSET_RANGE = (1.0, 30.0)  # |offset| per coordinate, in units of the scale
ASPECT_RANGE = (0.5, 2.0)
KINDS = (("1D mixture", 0.3), ("2D mixture", 0.7), ("rings", 0.85), ("spiral", 1.0))
COMPONENTS = (2, 12)
SEPARATION = 1.25  # distance between two means, in units of the sum of their largest stds
PLACEMENT_TRIES = 100
#: Gauss-Legendre nodes per panel, and a panel's arc length in units of the std
SPIRAL_NODES, SPIRAL_PANEL = 8, 3.0

#: 12 seeds, each with what it covers (its description in full: `unseen_density(seed)`)
UNSEEN_SUITE = (
    25,  # 1D mixture of 2 Gaussians, weights 0.24/0.76; scale 1e-3
    65,  # 1D mixture of 12 Gaussians; scale 1.3
    12,  # 1D mixture of 5 Gaussians; scale 4.8e2, offset 882
    24,  # 2D mixture of 2 Gaussians, weights 0.34/0.66; scale 0.27
    26,  # 2D mixture of 3 rotated Gaussians, axis ratios up to 2.9; scale 0.025
    8,  # 2D mixture of 6 Gaussians; scale 8.4e2, offset (-1.6e4, 3.7e3)
    60,  # 2D mixture of 12 Gaussians; scale 1.5e-3
    59,  # 2D mixture of 12 Gaussians; scale 90
    141,  # one ring; scale 9.6e2, offset (6e3, -3.6e3)
    14,  # 3 concentric rings; scale 0.15
    13,  # 1-arm spiral, 1.89 turns; scale 1.4e2
    46,  # 2-arm spiral, 1.39 turns; scale 2.9e-3
)


@dataclass(frozen=True)
class GaussianComponents:
    """A Gaussian mixture's parts: means (K, D), covariances (K, D, D), weights (K,), float64."""

    means: Tensor
    covariances: Tensor
    weights: Tensor

    def affine(self, shift: Tensor, scale: Tensor) -> GaussianComponents:
        """The components of (x - shift) / scale (per dimension) when x has these."""
        shift, scale = shift.double(), scale.double()
        return GaussianComponents(
            (self.means - shift) / scale,
            self.covariances / (scale[:, None] * scale[None, :]),
            self.weights,
        )


@dataclass(frozen=True)
class BlurredCurve:
    """A spiral in its unit frame: u = curve(t)[arm] + N(0, std^2 I), t ~ U[0, 1]. `curve` maps
    n values of t to (arms * n, 2) points, arm by arm."""

    curve: Callable[[Tensor], Tensor]
    std: float
    arms: int


@dataclass(frozen=True)
class UnseenDensity:
    """One density of the generator: exact `log_density`, `draw`, box, and what it is."""

    seed: int
    kind: str  # "1D mixture" | "2D mixture" | "rings" | "spiral"
    description: str
    scale: float  # the overall scale of the unit frame
    offset: Tensor  # (D,) float64
    axis_scales: Tensor  # (D,) float64: scale * aspect per coordinate
    bounds: tuple[tuple[float, float], ...]  # per dimension, all but < 1e-4 of the mass
    unit_log_density: Callable[[Tensor], Tensor]
    unit_draw: Callable[[int, torch.Generator], Tensor]
    components: GaussianComponents | None = None  # mixtures only, in the user's units
    curve: BlurredCurve | None = None  # spirals only: what the quadrature integrates

    @property
    def dim(self) -> int:
        return len(self.offset)

    def log_density(self, x: Tensor) -> Tensor:
        """log p(x) for points (B, D) in the user's units, computed in float64, returned in
        x's dtype."""
        offset, scales = self.offset.to(x.device), self.axis_scales.to(x.device)
        u = (x.double() - offset) / scales
        return (self.unit_log_density(u) - scales.log().sum()).to(x.dtype)

    def draw(self, n: int, generator: torch.Generator) -> Tensor:
        """n independent points (n, D), float64, in the user's units."""
        return self.offset + self.axis_scales * self.unit_draw(n, generator)


def parse_name(name: str) -> int | None:
    """The seed of a name `unseen-<seed>`, or None for any other name."""
    digits = name.removeprefix(PREFIX)
    return int(digits) if name.startswith(PREFIX) and digits.isdigit() else None


def unseen_density(seed: int) -> UnseenDensity:
    """The density of `seed` (a whole number >= 0): the same one on every call and machine."""
    rng = _Draws(seed)
    pick = rng.uniform(0, 1)
    kind = next(name for name, cumulative in KINDS if pick < cumulative)
    dim = 1 if kind == "1D mixture" else 2
    scale = rng.log_uniform(*SCALE_RANGE)
    aspect = [1.0] if dim == 1 else [1.0, rng.log_uniform(*ASPECT_RANGE)]
    axis_scales = torch.tensor(aspect, dtype=F64) * scale
    offset = torch.tensor(
        [rng.sign() * scale * rng.log_uniform(*OFFSET_RANGE) for _ in range(dim)],
        dtype=F64,
    )
    build = {"1D mixture": _mixture, "2D mixture": _mixture, "rings": _rings, "spiral": _spiral}
    part = build[kind](rng, dim)
    low = offset + axis_scales * part.unit_box[:, 0]
    high = offset + axis_scales * part.unit_box[:, 1]
    components = None
    if part.components is not None:  # the unit frame's mixture placed in the user's units
        components = part.components.affine(-offset / axis_scales, 1 / axis_scales)
    placed = f"scale {scale:.2g}, offset ({', '.join(f'{o:.3g}' for o in offset.tolist())})"
    return UnseenDensity(
        seed=seed,
        kind=kind,
        description=f"{part.description}; {placed}",
        scale=scale,
        offset=offset,
        axis_scales=axis_scales,
        bounds=tuple((float(lo), float(hi)) for lo, hi in zip(low, high, strict=True)),
        unit_log_density=part.log_density,
        unit_draw=part.draw,
        components=components,
        curve=part.curve,
    )


class _Draws:
    """Every random choice of the generator, from uniform doubles only (a stable stream)."""

    def __init__(self, seed: int):
        self._rng = np.random.default_rng(seed)

    def uniform(self, low: float, high: float) -> float:
        return low + (high - low) * float(self._rng.random())

    def log_uniform(self, low: float, high: float) -> float:
        return math.exp(self.uniform(math.log(low), math.log(high)))

    def integer(self, low: int, high: int) -> int:
        """A whole number in [low, high], both included."""
        return min(high, low + int(self.uniform(0, high - low + 1)))

    def sign(self) -> float:
        return 1.0 if self.uniform(0, 1) < 0.5 else -1.0

    def weights(self, k: int) -> Tensor:
        """0.75 Dirichlet(1, ..., 1) + 0.25 / k, from normalised exponentials."""
        exponentials = torch.tensor(
            [-math.log(1 - self.uniform(0, 1)) for _ in range(k)], dtype=F64
        )
        return 0.75 * exponentials / exponentials.sum() + 0.25 / k


@dataclass(frozen=True)
class _UnitPart:
    """A density in the unit frame: its log-density, sampler, box (D, 2) and description."""

    description: str
    log_density: Callable[[Tensor], Tensor]
    draw: Callable[[int, torch.Generator], Tensor]
    unit_box: Tensor
    components: GaussianComponents | None = None
    curve: BlurredCurve | None = None


def _mixture(rng: _Draws, dim: int) -> _UnitPart:
    k = rng.integer(*COMPONENTS)
    if dim == 1:
        stds = torch.tensor([[rng.log_uniform(0.02, 0.2)] for _ in range(k)], dtype=F64)
        rotations = torch.ones(k, 1, 1, dtype=F64)
    else:
        majors = [rng.log_uniform(0.05, 0.25) for _ in range(k)]
        ratios = [rng.log_uniform(1.0, 3.0) for _ in range(k)]
        stds = torch.tensor([[s, s / a] for s, a in zip(majors, ratios, strict=True)], dtype=F64)
        angles = torch.tensor([rng.uniform(0, math.pi) for _ in range(k)], dtype=F64)
        cos, sin = angles.cos(), angles.sin()
        rotations = torch.stack([cos, -sin, sin, cos], 1).view(k, 2, 2)
    covariances = rotations @ torch.diag_embed(stds.square()) @ rotations.transpose(1, 2)
    means = _separated_means(rng, stds.max(1).values, dim)
    components = GaussianComponents(means, covariances, rng.weights(k))
    marginal = covariances.diagonal(dim1=1, dim2=2).sqrt()
    box = torch.stack(
        [
            (means - BOX_STDS * marginal).min(0).values,
            (means + BOX_STDS * marginal).max(0).values,
        ],
        1,
    )
    ratios = (stds.max(1).values / stds.min(1).values).max()
    shape = "" if dim == 1 else f" (axis ratios up to {ratios:.2g}, rotated)"
    weights = components.weights
    description = (
        f"{dim}D mixture of {k} Gaussians{shape}, weights {weights.min():.2f}-{weights.max():.2f}"
    )
    return _UnitPart(
        description,
        _mixture_log_density(components),
        _mixture_draw(components),
        box,
        components,
    )


def _separated_means(rng: _Draws, largest_stds: Tensor, dim: int) -> Tensor:
    """One mean per component, uniform in a growing cube, apart by SEPARATION (s_i + s_j)."""
    half_width, means = 1.0, []
    for std in largest_stds.tolist():
        misses = 0
        while True:
            candidate = torch.tensor(
                [rng.uniform(-half_width, half_width) for _ in range(dim)], dtype=F64
            )
            gaps = [
                float((candidate - mean).norm()) - SEPARATION * (std + other)
                for mean, other in means
            ]
            if all(gap >= 0 for gap in gaps):
                means.append((candidate, std))
                break
            misses += 1
            if misses % PLACEMENT_TRIES == 0:
                half_width *= 1.1
    return torch.stack([mean for mean, _ in means])


def _mixture_log_density(components: GaussianComponents) -> Callable[[Tensor], Tensor]:
    """log sum_k w_k N(u; m_k, C_k) in float64, by the Cholesky factors of the C_k."""
    cholesky = torch.linalg.cholesky(components.covariances)
    inverse = torch.linalg.inv(cholesky)  # (K, D, D), lower triangular
    dim = components.means.shape[1]
    log_norms = (
        components.weights.log()
        - cholesky.diagonal(dim1=1, dim2=2).log().sum(1)
        - 0.5 * dim * math.log(2 * math.pi)
    )

    def log_density(u: Tensor) -> Tensor:
        means, inv, norms = (t.to(u.device) for t in (components.means, inverse, log_norms))
        diff = u.double()[:, None, :] - means  # (B, K, D)
        whitened = torch.einsum("kde,bke->bkd", inv, diff)
        return torch.logsumexp(norms - 0.5 * whitened.square().sum(2), dim=1)

    return log_density


def _mixture_draw(components: GaussianComponents) -> Callable[[int, torch.Generator], Tensor]:
    cholesky = torch.linalg.cholesky(components.covariances)

    def draw(n: int, generator: torch.Generator) -> Tensor:
        which = torch.multinomial(components.weights, n, replacement=True, generator=generator)
        noise = torch.randn(n, components.means.shape[1], 1, generator=generator, dtype=F64)
        return components.means[which] + (cholesky[which] @ noise)[..., 0]

    return draw


def _rings(rng: _Draws, dim: int) -> _UnitPart:
    count = rng.integer(1, 3)
    radii = torch.tensor([rng.uniform(0.25, 0.5) for _ in range(count)], dtype=F64).cumsum(0)
    radii = radii / radii[-1]
    stds = torch.tensor([min(rng.uniform(0.015, 0.06), r / 6) for r in radii.tolist()], dtype=F64)
    weights = rng.weights(count)
    log_mass = torch.special.log_ndtr(radii / stds)  # each radial Gaussian's mass above r = 0
    reach = float((radii + BOX_STDS * stds).max())

    def log_density(u: Tensor) -> Tensor:
        r = u.double().norm(dim=1).clamp_min(1e-300)[:, None]
        centres, widths = radii.to(u.device), stds.to(u.device)
        radial = (
            weights.to(u.device).log()
            - 0.5 * ((r - centres) / widths).square()
            - widths.log()
            - 0.5 * math.log(2 * math.pi)
            - log_mass.to(u.device)
        )
        return torch.logsumexp(radial, dim=1) - torch.log(2 * math.pi * r[:, 0])

    def draw(n: int, generator: torch.Generator) -> Tensor:
        which = torch.multinomial(weights, n, replacement=True, generator=generator)
        centre, width = radii[which], stds[which]
        # inverse CDF of the Gaussian truncated to r > 0, from its upper tail: the level is in
        # (0, Phi(R / s)], never 0, so r is finite and positive
        above = torch.special.ndtr(centre / width)
        level = above * (1 - torch.rand(n, generator=generator, dtype=F64))
        r = centre - width * torch.special.ndtri(level)
        angle = 2 * math.pi * torch.rand(n, generator=generator, dtype=F64)
        return torch.stack([r * angle.cos(), r * angle.sin()], 1)

    radii_text = ", ".join(f"{r:.2f}" for r in radii.tolist())
    widths = ", ".join(f"{s:.3f}" for s in stds.tolist())
    rings = "one ring" if count == 1 else f"{count} concentric rings"
    description = f"{rings} (radii {radii_text}, radial std {widths})"
    box = torch.tensor([[-reach, reach], [-reach, reach]], dtype=F64)
    return _UnitPart(description, log_density, draw, box)


def _spiral(rng: _Draws, dim: int) -> _UnitPart:
    arms = rng.integer(1, 2)
    turns = rng.uniform(0.75, 2.0)
    inner = rng.uniform(0.05, 0.3)
    std = min(0.1, rng.uniform(0.1, 0.2) * (1 - inner) / (turns * arms))
    phase = rng.uniform(0, 2 * math.pi)
    handed = rng.sign()

    def curve(t: Tensor) -> Tensor:
        """Every arm's point at each t, stacked arm by arm: (arms * len(t), 2)."""
        r = inner + (1 - inner) * t
        points = []
        for arm in range(arms):
            angle = phase + handed * 2 * math.pi * turns * t + 2 * math.pi * arm / arms
            points.append(torch.stack([r * angle.cos(), r * angle.sin()], 1))
        return torch.cat(points)

    nodes, node_weights = _composite_gauss_legendre(_panel_edges(inner, turns, std))
    centres = curve(nodes)
    weights = node_weights.repeat(arms) / arms
    log_density = _gaussian_mixture_log_density(centres, std, weights)

    def draw(n: int, generator: torch.Generator) -> Tensor:
        t = torch.rand(n, generator=generator, dtype=F64)
        arm = torch.randint(arms, (n,), generator=generator)
        on_curve = curve(t).view(arms, n, 2)[arm, torch.arange(n)]
        return on_curve + std * torch.randn(n, 2, generator=generator, dtype=F64)

    dense = curve(torch.linspace(0, 1, 100_000, dtype=F64))
    box = torch.stack(
        [dense.min(0).values - BOX_STDS * std, dense.max(0).values + BOX_STDS * std], 1
    )
    description = (
        f"{arms}-arm spiral ({turns:.2f} turns, inner radius {inner:.2f}, std {std:.3f}, "
        f"{len(centres)} quadrature nodes)"
    )
    return _UnitPart(description, log_density, draw, box, curve=BlurredCurve(curve, std, arms))


def _panel_edges(inner: float, turns: float, std: float) -> np.ndarray:
    """Edges in t of panels SPIRAL_PANEL std of arc length each (the integrand's width along
    t is std / |c'(t)|, so equal arc length keeps the nodes per width the same everywhere)."""
    t = np.linspace(0.0, 1.0, 10_001)
    speed = np.hypot(1 - inner, 2 * math.pi * turns * (inner + (1 - inner) * t))  # |c'(t)|
    arc = np.concatenate([[0.0], np.cumsum((speed[1:] + speed[:-1]) / 2 * np.diff(t))])
    panels = math.ceil(arc[-1] / (SPIRAL_PANEL * std))
    return np.interp(np.linspace(0.0, arc[-1], panels + 1), arc, t)


def _composite_gauss_legendre(edges: np.ndarray) -> tuple[Tensor, Tensor]:
    """Nodes and weights on [0, 1]: SPIRAL_NODES-point Gauss-Legendre on each panel between
    `edges`. The weights sum to 1, so the mixture they define is exactly normalised."""
    x, w = np.polynomial.legendre.leggauss(SPIRAL_NODES)
    low, width = edges[:-1, None], np.diff(edges)[:, None]
    nodes = (low + (x + 1) / 2 * width).ravel()
    weights = (w / 2 * width).ravel()
    return torch.as_tensor(nodes), torch.as_tensor(weights / weights.sum())
