"""Hamiltonian Monte Carlo with a leapfrog integrator and a per-chain Metropolis correction.

With momentum p ~ N(0, m I) and H(x, p) = E(x) + |p|^2 / (2m), each transition runs L leapfrog
steps of size eps,

    p <- p - eps/2 grad E(x);  x <- x + eps p / m;  p <- p - eps/2 grad E(x)

and accepts the end point with probability min(1, exp(H(x, p) - H(x', p'))).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from ebmlab.samplers.langevin import Energy, energy_grad
from ebmlab.samplers.mala import _accept, _where


def _kinetic(p: Tensor, mass: float) -> Tensor:
    return p.flatten(1).pow(2).sum(1) / (2 * mass)


@dataclass(frozen=True)
class HMC:
    """`steps` HMC transitions of `leapfrog_steps` leapfrog steps each."""

    steps: int
    step_size: float
    leapfrog_steps: int = 10
    mass: float = 1.0

    def _leapfrog(self, energy: Energy, x: Tensor, p: Tensor, grad: Tensor):
        eps = self.step_size
        for _ in range(self.leapfrog_steps):
            p = p - 0.5 * eps * grad
            x = x + eps * p / self.mass
            e, grad = energy_grad(energy, x)
            p = p - 0.5 * eps * grad
        return x.detach(), p, e.detach(), grad

    def __call__(
        self, energy: Energy, x: Tensor, *, generator: torch.Generator | None = None
    ) -> tuple[Tensor, dict]:
        x = x.detach()
        e, grad = energy_grad(energy, x)
        accepted = x.new_zeros(())
        for _ in range(self.steps):
            p = math.sqrt(self.mass) * torch.randn(
                x.shape, generator=generator, device=x.device, dtype=x.dtype
            )
            x_new, p_new, e_new, grad_new = self._leapfrog(energy, x, p, grad)
            log_ratio = e.detach() + _kinetic(p, self.mass) - e_new - _kinetic(p_new, self.mass)
            keep = _accept(log_ratio, generator)
            x = _where(keep, x_new, x)
            e, grad = torch.where(keep, e_new, e.detach()), _where(keep, grad_new, grad)
            accepted = accepted + keep.float().mean()
        return x, {"accept_rate": float(accepted) / max(self.steps, 1)}
