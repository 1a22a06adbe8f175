"""Denoising score matching as a held-out score for any energy, normalised or not.

Hyvärinen's score compares the model's score s(x) = -grad_x E(x) with the data's and needs no
normalising constant, so it ranks energies trained by any method on rows they have not seen.
In its denoising form (Vincent 2011), for rows x, eps ~ N(0, I) and x~ = x + sigma eps,

    L(E) = 1/2 E || sigma s(x~) + eps ||^2,

which over all score fields is least at the score of the data smoothed by N(0, sigma^2 I), and
differs from sigma^2 / 2 times the Fisher divergence to that smoothed density by a constant of
the data alone. An energy that has carved narrow wells at its training rows has a score that
points at them from the held-out rows, and L on those rows rises: the estimators stop early on
it (`ebmlab.estimator`).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from ebmlab.samplers.langevin import energy_grad


def denoising_score_matching(
    energy: Callable[[Tensor], Tensor],
    x: Tensor,
    sigma: float,
    generator: torch.Generator | None = None,
) -> Tensor:
    """L(E) above on the rows x (B, ...), the noise drawn from `generator` (on x's device), so
    that a generator seeded alike draws the same noise at every call. A scalar with no graph;
    no parameter gets a gradient."""
    eps = torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
    _, grad_e = energy_grad(energy, x + sigma * eps)
    residual = eps - sigma * grad_e  # sigma s(x~) + eps, s = -grad E
    return 0.5 * residual.flatten(1).pow(2).sum(1).mean()
