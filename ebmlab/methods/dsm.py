"""Denoising score matching for an energy: the MCMC-free baseline.

Papers: P. Vincent, "A Connection Between Score Matching and Denoising Autoencoders", Neural
Computation 2011; for energy networks, S. Saremi, A. Mehrjou, B. Schoelkopf and A. Hyvaerinen,
"Deep Energy Estimator Networks", 2018.

Notation (paper -> code)
    E_theta(x)                      self.energy_net, public `energy(x)`
    sigma                           cfg.sigma (the noise level)
    sigma', b                       cfg.bridge_sigma, cfg.bridge_share (off by default)
    sigma_i                         noise_levels(x): sigma, or sigma' with probability b
    x~ = x + sigma_i * eps          x_noisy
    s_theta(x~) = -grad_x~ E(x~)    score (create_graph=True: the loss differentiates it)
    grad log q_sigma(x~ | x)        -(x~ - x) / sigma_i^2 = -eps / sigma_i
    p_sigma                         the data density smoothed by N(0, sigma^2 I)

One call of `train_step` (Vincent 2011, Eq. 8, times the constant sigma^2):
    eps ~ N(0, I);  sigma_i = sigma' with probability b, else sigma;  x~ = x + sigma_i * eps
    L = 1/2 * mean_i || sigma * s_theta(x~_i) + (sigma / sigma_i) * eps_i ||^2
    theta <- Adam(theta, grad L)

No sample is drawn during training. With one level (b = 0) the model learns p_sigma. With the
bridge, L is the unweighted Fisher loss over the two levels, whose minimiser is the score of the
mixture (1 - b) p_sigma + b p_sigma' (the levels' terms add, each weighted by its own density):
a proper density, close to p_sigma where the data are, whose broad part covers the gaps between
separated modes, where one small level leaves the score, and so the modes' relative depths,
unconstrained (Wenliang & Kanagawa 2020, "Blindness of score-based methods to isolated
components and mixing proportions"). Weighting each level by its own sigma_i^2 instead, as
Song & Ermon 2019 do for sampling, would weight the mixture towards the largest level.

Sampling a trained model (`sample`) runs unadjusted Langevin on E at temperature 1 (noise
sqrt(2 * step_size)) from the uniform initial distribution: samples of p_sigma, the data plus
noise. With `sample_denoise` the chains' ends then take the "jump" of walk-jump sampling
(S. Saremi and A. Hyvaerinen, "Neural Empirical Bayes", JMLR 2019, Eq. 7), Tweedie's estimate
of the clean point that the noisy one came from:
    x^(y) = E[x | y] = y + sigma^2 grad log p_sigma(y) = y - sigma^2 grad_y E(y)
It removes the noise (images); it also shrinks each mode by s^2 / (s^2 + sigma^2) in variance
(for data N(m, s^2) the jumped points are N(m, s^4 / (s^2 + sigma^2))), so it is off for points.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from ebmlab.config import check_at_least, check_open_unit, check_positive
from ebmlab.methods.base import Method, data_box, detached
from ebmlab.nets import build_energy
from ebmlab.samplers import Langevin, energy_grad, frozen_params


@dataclass(frozen=True)
class Config:
    energy_net: dict[str, Any] = field(default_factory=lambda: {"kind": "auto"})
    lr: float = 1e-3
    betas: tuple[float, float] = (0.9, 0.999)
    sigma: float = 0.1  # the noise level, in model units
    bridge_sigma: float | None = None  # sigma', a second, wider level that bridges modes
    bridge_share: float = 0.1  # b, the probability of sigma' per example
    grad_clip: float | None = None  # clip of the parameters' gradient norm
    sample_steps: int = 500  # Langevin chain length for `sample`
    sample_step_size: float = 1e-3
    init_low: float = -1.0  # chains for `sample` start from U[init_low, init_high]^D
    init_high: float = 1.0
    sample_denoise: bool = False  # end `sample` with Tweedie's jump y - sigma^2 grad E(y)

    def __post_init__(self):
        check_positive(sigma=self.sigma, sample_step_size=self.sample_step_size)
        if self.bridge_sigma is not None:
            check_positive(bridge_sigma=self.bridge_sigma)
            check_open_unit(bridge_share=self.bridge_share)
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
        sigma_i = self.noise_levels(x)
        x_noisy = x + sigma_i * eps
        _, grad_e = energy_grad(self.energy_net, x_noisy, create_graph=True)
        score = -grad_e  # s_theta(x~) = -grad E
        sigma = self.cfg.sigma
        per_example = (sigma * score + (sigma / sigma_i) * eps).flatten(1).pow(2).sum(1)
        loss = 0.5 * per_example.mean()  # Eq. 8 over the levels, times the constant sigma^2
        self.update("energy", loss, clip=self.cfg.grad_clip)
        return detached(loss=loss)

    def noise_levels(self, x: Tensor) -> Tensor:
        """sigma_i per example, shaped to broadcast over x: sigma, or sigma' with probability b."""
        shape = (len(x),) + (1,) * (x.ndim - 1)
        sigma_i = torch.full(shape, self.cfg.sigma, device=x.device)
        if self.cfg.bridge_sigma is None:
            return sigma_i
        bridged = torch.rand(shape, device=x.device) < self.cfg.bridge_share
        return sigma_i.masked_fill(bridged, self.cfg.bridge_sigma)

    def sample(self, n: int) -> Tensor:
        low, high = self.cfg.init_low, self.cfg.init_high
        x0 = torch.rand(n, *self.data_shape, device=self.device) * (high - low) + low
        box = data_box(self.data_shape)
        langevin = Langevin(
            steps=self.cfg.sample_steps, step_size=self.cfg.sample_step_size, clamp=box
        )
        with frozen_params(self.energy_net):
            noisy = langevin(self.energy_net, x0)[0]
            if not self.cfg.sample_denoise:
                return noisy
            jumped = noisy - self.cfg.sigma**2 * energy_grad(self.energy_net, noisy)[1]
            return jumped if box is None else jumped.clamp(*box)  # in the chains' box
