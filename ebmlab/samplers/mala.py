"""Metropolis-adjusted Langevin (MALA): Langevin proposals corrected by an accept/reject step.

Proposal and acceptance, per chain (tau = step_size):

    x' = x - tau * grad E(x) + sqrt(2 tau) * xi
    log q(x' | x) = -|x' - x + tau grad E(x)|^2 / (4 tau)
    accept with probability min(1, exp(E(x) - E(x') + log q(x | x') - log q(x' | x)))

Exact for exp(-E) at any step size; `info["accept_rate"]` is the mean acceptance (a 0-dim
tensor, so a GPU chain is not synchronised with the host for it).

`mala_step` is one transition whose proposal may keep its graph to the energy's parameters
(`create_graph=True`): ICD's differentiable last step on MALA chains. The accept test uses
detached values, so an accepted row is the proposal with its graph and a rejected row is the
state as given; either way the row is an exact draw from the transition.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from ebmlab.samplers.langevin import Energy, energy_grad


def _log_proposal(x_to: Tensor, x_from: Tensor, grad_from: Tensor, tau: float) -> Tensor:
    return -(x_to - x_from + tau * grad_from).flatten(1).pow(2).sum(1) / (4 * tau)


def _log_ratio(
    x: Tensor,
    e: Tensor,
    grad: Tensor,
    proposal: Tensor,
    e_new: Tensor,
    grad_new: Tensor,
    tau: float,
) -> Tensor:
    """log of the Metropolis-Hastings ratio of a move from x to the proposal."""
    return (
        e
        - e_new
        + _log_proposal(x, proposal, grad_new, tau)
        - _log_proposal(proposal, x, grad, tau)
    )


def _accept(log_ratio: Tensor, generator: torch.Generator | None) -> Tensor:
    uniform = torch.rand(log_ratio.shape, generator=generator, device=log_ratio.device)
    return torch.log(uniform) < log_ratio


def _where(mask: Tensor, a: Tensor, b: Tensor) -> Tensor:
    return torch.where(mask.view(-1, *([1] * (a.dim() - 1))), a, b)


@dataclass(frozen=True)
class MALA:
    """`steps` MALA transitions with step size `step_size` (see the module docstring)."""

    steps: int
    step_size: float

    def __call__(
        self, energy: Energy, x: Tensor, *, generator: torch.Generator | None = None
    ) -> tuple[Tensor, dict]:
        tau, x = self.step_size, x.detach()
        e, grad = energy_grad(energy, x)
        accepted = x.new_zeros(())
        for _ in range(self.steps):
            xi = torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
            proposal = x - tau * grad + math.sqrt(2 * tau) * xi
            e_new, grad_new = energy_grad(energy, proposal)
            log_ratio = _log_ratio(x, e, grad, proposal, e_new, grad_new, tau)
            keep = _accept(log_ratio.detach(), generator)
            x = _where(keep, proposal, x).detach()
            e, grad = torch.where(keep, e_new, e).detach(), _where(keep, grad_new, grad)
            accepted = accepted + keep.float().mean()
        return x, {"accept_rate": accepted / max(self.steps, 1)}  # a tensor: no host sync


def mala_step(
    energy: Energy,
    x: Tensor,
    step_size: float,
    *,
    create_graph: bool = False,
    generator: torch.Generator | None = None,
) -> tuple[Tensor, Tensor]:
    """One MALA transition of every chain: (next state, accepted mask).

    With `create_graph=True` the proposal x - tau grad E(x) + sqrt(2 tau) xi keeps its graph
    (grad E through the energy's parameters, and through x when x carries one), and so do the
    accepted rows of the next state; the accept test is computed on detached values."""
    tau = step_size
    e, grad = energy_grad(energy, x, create_graph=create_graph)
    xi = torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
    proposal = x - tau * grad + math.sqrt(2 * tau) * xi
    e_new, grad_new = energy_grad(energy, proposal)
    log_ratio = _log_ratio(
        x.detach(), e.detach(), grad.detach(), proposal.detach(), e_new, grad_new, tau
    )
    keep = _accept(log_ratio, generator)
    return _where(keep, proposal, x), keep
