"""Denoising score matching for an energy: the MCMC-free baseline.

Papers: P. Vincent, "A Connection Between Score Matching and Denoising Autoencoders", Neural
Computation 2011; for energy networks, S. Saremi, A. Mehrjou, B. Schoelkopf and A. Hyvaerinen,
"Deep Energy Estimator Networks", 2018.

Notation (paper -> code)
    E_theta(x)                      self.energy_net, public `energy(x)`
    sigma                           cfg.sigma (the one noise level)
    x~ = x + sigma * eps            x_noisy
    s_theta(x~) = -grad_x~ E(x~)    score (create_graph=True: the loss differentiates it)
    grad log q_sigma(x~ | x)        -(x~ - x) / sigma^2 = -eps / sigma

One call of `train_step` (Vincent 2011, Eq. 8, weighted by sigma^2 as in Song & Ermon 2019):
    eps ~ N(0, I);  x~ = x + sigma * eps
    L = 1/2 * mean || sigma * s_theta(x~) + eps ||^2
    theta <- Adam(theta, grad L)

No sample is drawn during training. The model learns the data density smoothed by
N(0, sigma^2 I). Sampling a trained model (`sample`) runs unadjusted Langevin on E at temperature 1
(noise sqrt(2 * step_size)) from the uniform initial distribution.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from ebmlab.config import check_at_least, check_positive
from ebmlab.methods.base import Method, data_box, detached
from ebmlab.nets import build_energy
from ebmlab.samplers import Langevin, energy_grad, frozen_params


@dataclass(frozen=True)
class Config:
    energy_net: dict[str, Any] = field(default_factory=lambda: {"kind": "auto"})
    lr: float = 1e-3
    betas: tuple[float, float] = (0.9, 0.999)
    sigma: float = 0.1  # the noise level, in model units
    grad_clip: float | None = None  # clip of the parameters' gradient norm
    sample_steps: int = 500  # Langevin chain length for `sample`
    sample_step_size: float = 1e-3
    init_low: float = -1.0  # chains for `sample` start from U[init_low, init_high]^D
    init_high: float = 1.0

    def __post_init__(self):
        check_positive(sigma=self.sigma, sample_step_size=self.sample_step_size)
        check_at_least(sample_steps=(self.sample_steps, 0))


class DSM(Method):
    """Denoising score matching with the score taken as -grad_x E."""

    Config = Config
    ema_modules = ("energy_net",)

    def __init__(self, cfg: Config, data_shape: tuple[int, ...]):
        super().__init__(cfg, data_shape)
        self.energy_net = build_energy(self.data_shape, **cfg.energy_net)
        self.optimizers["energy"] = torch.optim.Adam(
            self.energy_net.parameters(), lr=cfg.lr, betas=cfg.betas
        )

    def energy(self, x: Tensor) -> Tensor:
        return self.energy_net(x)

    def train_step(self, x: Tensor, step: int) -> dict[str, Tensor]:
        eps = torch.randn_like(x)
        x_noisy = x + self.cfg.sigma * eps
        _, grad_e = energy_grad(self.energy_net, x_noisy, create_graph=True)
        score = -grad_e  # s_theta(x~) = -grad E
        per_example = (self.cfg.sigma * score + eps).flatten(1).pow(2).sum(1)
        loss = 0.5 * per_example.mean()  # Eq. 8, sigma^2-weighted
        self.update("energy", loss, clip=self.cfg.grad_clip)
        return detached(loss=loss)

    def sample(self, n: int) -> Tensor:
        low, high = self.cfg.init_low, self.cfg.init_high
        x0 = torch.rand(n, *self.data_shape, device=self.device) * (high - low) + low
        langevin = Langevin(
            steps=self.cfg.sample_steps,
            step_size=self.cfg.sample_step_size,
            clamp=data_box(self.data_shape),
        )
        with frozen_params(self.energy_net):
            return langevin(self.energy_net, x0)[0]
