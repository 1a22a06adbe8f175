"""Step-size adaptation by dual averaging (Nesterov 2009; Hoffman & Gelman 2014, Sec. 3.2.1),
the scheme Stan's and blackjax's warm-up use, here run for the whole of training.

After each chain with mean acceptance a_t, with H_t = target - a_t:

    H_bar_t   = (1 - 1/(t + t0)) H_bar_{t-1} + H_t / (t + t0)
    log eps_t = mu - sqrt(t) / gamma * H_bar_t
    log eps_bar_t = t^-kappa log eps_t + (1 - t^-kappa) log eps_bar_{t-1}

with mu = log(10 eps_0). Training moves the energy under the chains, so the iterate eps_t is the
step the next chain uses (it keeps following a changing target), and the averaged eps_bar_t is
kept beside it. The state is module buffers: checkpoints carry it and a resumed run continues
with the same steps. Updates are tensor operations, so a GPU run takes no host sync for them.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn


class DualAveraging(nn.Module):
    """The adapted step size of one chain, toward a target acceptance rate.

    Args:
        step_size: eps_0, the first step (derived from the data's scale, see `ebmlab.defaults`).
        target_accept: the acceptance rate to reach (0.574 is optimal for MALA in high
            dimension; higher keeps each step closer to exact).
        gamma, t0, kappa: the dual averaging constants, Stan's defaults.
    """

    def __init__(
        self,
        step_size: float,
        target_accept: float,
        gamma: float = 0.05,
        t0: float = 10.0,
        kappa: float = 0.75,
    ):
        super().__init__()
        if not 0 < target_accept < 1:
            raise ValueError(f"target_accept must lie in (0, 1), got {target_accept}")
        self.target, self.gamma, self.t0, self.kappa = target_accept, gamma, t0, kappa
        log_step = torch.tensor(math.log(step_size), dtype=torch.float64)
        self.register_buffer("mu", log_step + math.log(10.0))
        self.register_buffer("log_step", log_step.clone())
        self.register_buffer("log_step_avg", log_step.clone())
        self.register_buffer("h_avg", torch.zeros((), dtype=torch.float64))
        self.register_buffer("count", torch.zeros((), dtype=torch.float64))

    @property
    def step_size(self) -> Tensor:
        """eps_t, as a 0-dim tensor on the buffers' device."""
        return self.log_step.exp()

    @property
    def averaged_step_size(self) -> Tensor:
        return self.log_step_avg.exp()

    @torch.no_grad()
    def update(self, accept_rate: Tensor | float) -> None:
        """One dual-averaging step after a chain whose mean acceptance was `accept_rate`."""
        rate = torch.as_tensor(accept_rate, dtype=torch.float64, device=self.count.device)
        self.count += 1
        t = self.count
        weight = 1.0 / (t + self.t0)
        self.h_avg.mul_(1 - weight).add_(weight * (self.target - rate))
        self.log_step.copy_(self.mu - t.sqrt() / self.gamma * self.h_avg)
        eta = t.pow(-self.kappa)
        self.log_step_avg.mul_(1 - eta).add_(eta * self.log_step)
