"""Independence Metropolis moves from a kernel density of data points: chains that jump
between modes.

Local moves (Langevin, MALA, HMC) with a step that fits the narrowest mode take thousands of
steps to cross between distant modes, so persistent chains keep the share of each mode they
started with, and the energy gradient of CD cannot see the modes' relative depths: it digs the
under-visited modes deeper forever. An independence proposal from a kernel density estimate of
data points (any reference points, e.g. the current data batch),

    q(x) = 1/M sum_j N(x; c_j, h_j^2 I),   h_j = bandwidth_factor * |c_j - c_(k)|

(c_(k) the k-th nearest other centre), accepted with probability

    min(1, exp(E(x) - E(x')) q(x) / q(x')),

leaves exp(-E) invariant for any q that does not depend on the chain (Tierney 1994), and lands
chains in each mode in proportion to its mass once the model is close to the data.

A chain far from every data point (short-run MCMC's chains start from uniform noise) sits where
q is nearly zero, so q(x) / q(x') rejects its every move. A defensive mixture (Hesterberg 1995)
keeps a share w of the proposal broad:

    q_w(x) = (1 - w) q(x) + w N(x; mean, (2 std)^2)

with the mean and per-coordinate std of the centres, so such chains are accepted into the data
once exp(-E) favours it there.

Each move costs one energy evaluation and an M x B distance matrix, which suits points and
low-dimensional tables; in high dimension its acceptance falls towards zero and it is best
switched off.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from ebmlab.samplers.langevin import Energy
from ebmlab.samplers.mala import _accept, _where


def kde_bandwidths(centres: Tensor, k: int = 5, factor: float = 0.5) -> Tensor:
    """h_j: `factor` times the distance of each centre to its k-th nearest other centre."""
    flat = centres.flatten(1)
    k = min(k, len(flat) - 1)
    distances = torch.cdist(flat, flat)
    kth = distances.topk(k + 1, dim=1, largest=False).values[:, -1]  # +1: itself at distance 0
    floor = kth[kth > 0].min() if (kth > 0).any() else kth.new_tensor(1.0)
    return factor * torch.where(kth > 0, kth, floor)  # duplicated centres keep a real kernel


def kde_log_density(x: Tensor, centres: Tensor, bandwidths: Tensor) -> Tensor:
    """log q(x) of the Gaussian mixture with one component per centre, (B,)."""
    dim = x[0].numel()
    sq = torch.cdist(x.flatten(1), centres.flatten(1)).pow(2)  # (B, M)
    log_h = bandwidths.log()
    log_kernels = -sq / (2 * bandwidths.pow(2)) - dim * log_h - 0.5 * dim * math.log(2 * math.pi)
    return torch.logsumexp(log_kernels, dim=1) - math.log(len(centres))


def broad_gaussian(centres: Tensor, bandwidths: Tensor) -> torch.distributions.Distribution:
    """The defensive component: N(mean, (2 std)^2) of the centres per coordinate (a constant
    coordinate gets the smallest bandwidth as its std)."""
    spread = centres.std(0) if len(centres) > 1 else torch.zeros_like(centres[0])
    std = 2 * torch.where(spread > 0, spread, bandwidths.min())
    normal = torch.distributions.Normal(centres.mean(0), std)
    return torch.distributions.Independent(normal, centres.dim() - 1)


def proposal_log_density(
    x: Tensor, centres: Tensor, bandwidths: Tensor, broad_share: float = 0.0
) -> Tensor:
    """log q_w(x): the kernel density, mixed with the broad Gaussian at share w, (B,)."""
    log_kde = kde_log_density(x, centres, bandwidths)
    if not broad_share:
        return log_kde
    log_broad = broad_gaussian(centres, bandwidths).log_prob(x)
    return torch.logaddexp(log_kde + math.log(1 - broad_share), log_broad + math.log(broad_share))


def independence_move(
    energy: Energy,
    x: Tensor,
    centres: Tensor,
    *,
    bandwidths: Tensor | None = None,
    broad_share: float = 0.0,
    generator: torch.Generator | None = None,
) -> tuple[Tensor, Tensor]:
    """One independence Metropolis move of every chain; returns (chains, acceptance rate).
    `bandwidths`: the centres' `kde_bandwidths`, when several moves share one kernel density;
    `broad_share`: w, the share of proposals from the broad Gaussian."""
    x, centres = x.detach(), centres.detach().to(x.dtype)
    bandwidths = kde_bandwidths(centres) if bandwidths is None else bandwidths
    pick = torch.randint(len(centres), (len(x),), generator=generator, device=x.device)
    xi = torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
    scale = bandwidths[pick].view(-1, *([1] * (x.dim() - 1)))
    proposal = centres[pick] + scale * xi
    if broad_share:
        broad = broad_gaussian(centres, bandwidths)
        wide = torch.rand(len(x), generator=generator, device=x.device) < broad_share
        proposal = _where(wide, broad.mean + broad.stddev * xi, proposal)
    with torch.no_grad():
        log_ratio = (
            energy(x)
            - energy(proposal)
            + proposal_log_density(x, centres, bandwidths, broad_share)
            - proposal_log_density(proposal, centres, bandwidths, broad_share)
        )
    keep = _accept(log_ratio, generator)
    return _where(keep, proposal, x), keep.float().mean()
