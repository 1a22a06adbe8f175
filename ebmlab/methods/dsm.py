"""Denoising score matching for an energy: the MCMC-free baseline.

Papers: P. Vincent, "A Connection Between Score Matching and Denoising Autoencoders", Neural
Computation 2011; for energy networks, S. Saremi, A. Mehrjou, B. Schoelkopf and A. Hyvaerinen,
"Deep Energy Estimator Networks", 2018; for many noise levels and annealed Langevin,
Y. Song and S. Ermon, "Generative Modeling by Estimating Gradients of the Data Distribution",
NeurIPS 2019, and "Improved Techniques for Training Score-Based Generative Models", NeurIPS 2020.

Notation (paper -> code)
    E_theta(x)                      self.energy_net, public `energy(x)`
    sigma                           cfg.sigma (the noise level)
    sigma', b                       cfg.bridge_sigma, cfg.bridge_share (off by default)
    sigma_1 > ... > sigma_L = sigma cfg.sigma_max, cfg.levels: annealed levels (off by default)
    sigma_i                         noise_levels(x): sigma; sigma' with probability b (bridge);
                                    one of the L levels, uniformly (annealed)
    x~ = x + sigma_i * eps          x_noisy
    s_theta(x~) = -grad_x~ E(x~)    score (create_graph=True: the loss differentiates it)
    grad log q_sigma(x~ | x)        -(x~ - x) / sigma_i^2 = -eps / sigma_i
    p_sigma                         the data density smoothed by N(0, sigma^2 I)

One call of `train_step` (Vincent 2011, Eq. 8, times the constant sigma^2):
    eps ~ N(0, I);  sigma_i = sigma' with probability b, else sigma;  x~ = x + sigma_i * eps
    L = 1/2 * mean_i || sigma * s_theta(x~_i) + (sigma / sigma_i) * eps_i ||^2
    (annealed: sigma_i uniform over the L levels and the weight sigma / sigma_i becomes 1, below)
    theta <- Adam(theta, grad L)

No sample is drawn during training, so L on held-out rows (`validation_loss`) measures how
well the energy generalises: the scikit-learn estimators stop training on it. With one level
(b = 0) the model learns p_sigma. With the bridge, L is the unweighted Fisher loss over the two
levels, whose minimiser is the score of the mixture (1 - b) p_sigma + b p_sigma' (the levels'
terms add, each weighted by its own density): a proper density, close to p_sigma where the data
are, whose broad part covers the gaps between separated modes, where one small level leaves the
score, and so the modes' relative depths, unconstrained (Wenliang & Kanagawa 2020, "Blindness
of score-based methods to isolated components and mixing proportions"). Weighting each level by
its own sigma_i^2 instead, as Song & Ermon 2019 do for sampling, would weight the mixture
towards the largest level.

Annealed (`sigma_max` set; images): L levels, geometric from sigma_1 = sigma_max down to
sigma_L = sigma, one drawn uniformly per example. One net serves every level: the energy at
sigma_i is (sigma / sigma_i) E(x), the score divided by the level (Song & Ermon 2020, technique
3), so E itself models p_sigma. Weighted by sigma_i^2 (Song & Ermon 2019, Eq. 6), each level's
loss 1/2 sigma_i^2 || (sigma / sigma_i) s_theta(x~) + eps / sigma_i ||^2 takes the same form:
    L = 1/2 * mean_i || sigma * s_theta(x~_i) + eps_i ||^2
The wide levels carry the data's large-scale layout (the classes' weights, which one small
level leaves unconstrained, as above) into E at the small one.

Sampling a trained model (`sample`) runs unadjusted Langevin on E at temperature 1 (noise
sqrt(2 * step_size)) from the uniform initial distribution: samples of p_sigma, the data plus
noise. Annealed, it is Song & Ermon's annealed Langevin (2019, Algorithm 1): sample_steps steps
per level from sigma_1 down, each of step alpha_i = step_size (sigma_i / sigma)^2 on the level's
energy, that is Langevin on E with the step step_size sigma_i / sigma at the temperature
sigma_i / sigma: the wide levels are E tempered, the last is exp(-E) itself. As in Algorithm 1
the annealed chains are not clamped to the images' box [-1, 1] (p_sigma_i reaches sigma_i past
it; on MNIST, clamped chains piled up at +1 and ended as white blobs); their ends are.

With `sample_denoise` the chains' ends then take the "jump" of walk-jump sampling (S. Saremi
and A. Hyvaerinen, "Neural Empirical Bayes", JMLR 2019, Eq. 7), Tweedie's estimate of the
clean point that the noisy one came from:
    x^(y) = E[x | y] = y + sigma^2 grad log p_sigma(y) = y - sigma^2 grad_y E(y)
It removes the noise (images); it also shrinks each mode by s^2 / (s^2 + sigma^2) in variance
(for data N(m, s^2) the jumped points are N(m, s^4 / (s^2 + sigma^2))), so it is off for points.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import Tensor

from ebmlab.config import check_at_least, check_open_unit, check_positive
from ebmlab.errors import EbmlabError
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
    sigma_max: float | None = None  # sigma_1: with it, training and sampling anneal
    levels: int = 10  # L, the annealed levels from sigma_max down to sigma
    grad_clip: float | None = None  # clip of the parameters' gradient norm
    sample_steps: int = 500  # Langevin chain length for `sample` (per level when annealed)
    sample_step_size: float = 1e-3
    init_low: float = -1.0  # chains for `sample` start from U[init_low, init_high]^D
    init_high: float = 1.0
    sample_denoise: bool = False  # end `sample` with Tweedie's jump y - sigma^2 grad E(y)

    def __post_init__(self):
        check_positive(sigma=self.sigma, sample_step_size=self.sample_step_size)
        if self.bridge_sigma is not None:
            check_positive(bridge_sigma=self.bridge_sigma)
            check_open_unit(bridge_share=self.bridge_share)
        if self.sigma_max is not None:
            check_at_least(levels=(self.levels, 2))
            if not self.sigma_max > self.sigma:
                raise EbmlabError(f"sigma_max {self.sigma_max} must exceed sigma {self.sigma}")
            if self.bridge_sigma is not None:
                raise EbmlabError("bridge_sigma and sigma_max exclude each other: pick one")
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
        loss = self.denoising_loss(x)
        self.update("energy", loss, clip=self.cfg.grad_clip)
        return detached(loss=loss)

    def validation_loss(self, x: Tensor, generator: torch.Generator) -> Tensor:
        """The loss L of `train_step` on held-out rows x, its noise drawn from `generator` (on
        x's device), so that a generator seeded alike draws the same noise at every call; no
        parameter gets a gradient. The estimators stop training early on it."""
        return self.denoising_loss(x, generator, create_graph=False)

    def denoising_loss(
        self, x: Tensor, generator: torch.Generator | None = None, create_graph: bool = True
    ) -> Tensor:
        """L for the rows x, with eps and the levels sigma_i drawn from `generator`; with
        `create_graph` differentiable in the parameters, else a plain number."""
        eps = torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
        sigma_i = self.noise_levels(x, generator)
        x_noisy = x + sigma_i * eps
        _, grad_e = energy_grad(self.energy_net, x_noisy, create_graph=create_graph)
        score = -grad_e  # s_theta(x~) = -grad E
        sigma = self.cfg.sigma
        eps_weight = 1.0 if self.annealed else sigma / sigma_i  # sigma_i^2-weighted, or unweighted
        per_example = (sigma * score + eps_weight * eps).flatten(1).pow(2).sum(1)
        return 0.5 * per_example.mean()  # Eq. 8 over the levels, times the constant sigma^2

    @property
    def annealed(self) -> bool:
        return self.cfg.sigma_max is not None

    def annealed_levels(self) -> list[float]:
        """sigma_1 > ... > sigma_L = sigma, geometric; [sigma] alone when not annealed."""
        if not self.annealed:
            return [self.cfg.sigma]
        return np.geomspace(self.cfg.sigma_max, self.cfg.sigma, self.cfg.levels).tolist()

    def noise_levels(self, x: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """sigma_i per example, shaped to broadcast over x: sigma; sigma' with probability b
        (bridge); one of the annealed levels, uniformly. Drawn from `generator` (None: torch's
        global RNG)."""
        shape = (len(x),) + (1,) * (x.ndim - 1)
        if self.annealed:
            levels = torch.tensor(self.annealed_levels(), device=x.device)
            return levels[torch.randint(len(levels), shape, generator=generator, device=x.device)]
        sigma_i = torch.full(shape, self.cfg.sigma, device=x.device)
        if self.cfg.bridge_sigma is None:
            return sigma_i
        bridged = torch.rand(shape, generator=generator, device=x.device) < self.cfg.bridge_share
        return sigma_i.masked_fill(bridged, self.cfg.bridge_sigma)

    def sample(self, n: int) -> Tensor:
        low, high = self.cfg.init_low, self.cfg.init_high
        x0 = torch.rand(n, *self.data_shape, device=self.device) * (high - low) + low
        box = data_box(self.data_shape)
        with frozen_params(self.energy_net):
            x = x0
            for langevin in self.chains_per_level(box):
                x = langevin(self.energy_net, x)[0]
            if self.cfg.sample_denoise:
                x = x - self.cfg.sigma**2 * energy_grad(self.energy_net, x)[1]  # Tweedie's jump
            return x if box is None else x.clamp(*box)

    def chains_per_level(self, box: tuple[float, float] | None) -> list[Langevin]:
        """Langevin on E per level, widest first: step step_size * r at temperature r, where
        r = sigma_i / sigma (alpha_i = step_size r^2 on the level's energy E / r). Annealed
        chains run unclamped: level i's target p_sigma_i reaches sigma_i past the data's box."""
        step = self.cfg.sample_step_size
        ratios = [level / self.cfg.sigma for level in self.annealed_levels()]
        return [
            Langevin(
                steps=self.cfg.sample_steps,
                step_size=step * r,
                noise=math.sqrt(2 * step) * r,
                clamp=None if self.annealed else box,
            )
            for r in ratios
        ]
