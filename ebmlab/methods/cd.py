"""Persistent contrastive divergence with a replay buffer, as in IGEBM.

Paper: Y. Du and I. Mordatch, "Implicit Generation and Generalization in Energy-Based Models",
NeurIPS 2019 (IGEBM). The baseline that ICD, BiDVL and Dual-MCMC measure themselves against.

Notation (paper -> code)
    E_theta(x)          self.energy_net, public `energy(x)`
    x^+ ~ p_D           x          (a data batch, model units)
    B                   self.buffer (ReplayBuffer: persistent chains)
    x~^0                x0         (95% from B, 5% fresh uniform noise)
    x^-  = Omega(x~^K)  x_neg      (K Langevin steps, stop-gradient)
    lambda, omega       cfg.step_size, cfg.noise (the step and the noise std are separate)
    alpha               cfg.alpha  (energy-magnitude regulariser)

Algorithm 1 (IGEBM), one call of `train_step`:
    x0 ~ B with prob. 1 - reinit_prob, else U                             # Alg. 1, l. 4
    for k = 1..K:  x~^k = x~^{k-1} - lambda * clip(grad_x E(x~^{k-1})) + omega * xi   # l. 5-6
    x^- = stop_gradient(x~^K)                                             # l. 7
    L = mean E(x^+) - mean E(x^-) + alpha * mean(E(x^+)^2 + E(x^-)^2)     # l. 8 (Eq. 2 + reg.)
    theta <- Adam(theta, grad L)                                          # l. 9
    B <- B with x^- written back                                         # l. 10

The replay buffer here keeps fixed slots that chains are read from and written back to (the
JEM-style buffer), rather than IGEBM's growing FIFO; both keep chains persistent across steps.

Sampling a trained model (`sample`): chains start from the buffer's initial distribution and run
`sample_steps` steps of the same Langevin sampler.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from ebmlab.config import check_at_least, check_positive
from ebmlab.methods.base import Method, data_box, detached
from ebmlab.nets import build_energy
from ebmlab.samplers import DataChain, Energy, ReplayBuffer, chain_logs, check_chain, frozen_params


@dataclass(frozen=True)
class Config:
    """IGEBM's sampler, x - 10 clip(grad_x E, 0.01) + 0.005 xi on [0, 1] pixels, in our [-1, 1]
    units y = 2x - 1: grad_y E = grad_x E / 2 and every move doubles, so the step is 4 x 10,
    the clip 0.01 / 2 and the noise 2 x 0.005 (a clipped move is 0.2 pixels either way)."""

    energy_net: dict[str, Any] = field(
        default_factory=lambda: {"kind": "auto", "spectral_norm": True}
    )
    lr: float = 3e-4
    betas: tuple[float, float] = (0.0, 0.999)
    langevin_steps: int = 60  # K
    step_size: float = 40.0  # lambda (10 on [0, 1] pixels)
    noise: float | None = 0.01  # omega's std (0.005 on [0, 1] data); None: sqrt(2*lambda)
    langevin_grad_clip: float | None = 0.005  # per-element clip of grad_x E (0.01 on [0, 1])
    alpha: float = 1.0  # weight of E(x+)^2 + E(x-)^2
    buffer_size: int = 10_000
    reinit_prob: float = 0.05
    init_low: float = -1.0  # uniform initial distribution of the chains, per coordinate
    init_high: float = 1.0
    grad_clip: float | None = None  # clip of the parameters' gradient norm
    sample_steps: int = 200  # chain length for `sample`
    # the chain on points and tables (ebmlab.samplers.chain): MALA, its step adapted toward
    # target_accept, and global moves from the data batch; IGEBM's Langevin when "langevin"
    sampler: str = "langevin"
    target_accept: float | None = None
    global_moves: int = 0

    def __post_init__(self):
        check_at_least(
            langevin_steps=(self.langevin_steps, 0),
            sample_steps=(self.sample_steps, 0),
            noise=(self.noise, 0),
            global_moves=(self.global_moves, 0),
        )
        check_positive(step_size=self.step_size)
        check_chain(self.sampler, self.target_accept)


class CD(Method):
    """IGEBM: persistent CD with replay buffer and energy-magnitude regulariser."""

    Config = Config
    ema_modules = ("energy_net",)

    def __init__(self, cfg: Config, data_shape: tuple[int, ...]):
        super().__init__(cfg, data_shape)
        self.energy_net = build_energy(self.data_shape, **cfg.energy_net)
        self.buffer = ReplayBuffer(
            cfg.buffer_size,
            self.data_shape,
            reinit_prob=cfg.reinit_prob,
            low=cfg.init_low,
            high=cfg.init_high,
        )
        self.chain = DataChain(
            cfg.sampler,
            cfg.step_size,
            noise=cfg.noise,
            grad_clip=cfg.langevin_grad_clip,
            clamp=data_box(self.data_shape),
            target_accept=cfg.target_accept,
            global_moves=cfg.global_moves,
        )
        self.optimizers["energy"] = torch.optim.Adam(
            self.energy_net.parameters(), lr=cfg.lr, betas=cfg.betas
        )

    def energy(self, x: Tensor) -> Tensor:
        return self.energy_net(x)

    def train_step(self, x: Tensor, step: int) -> dict[str, Tensor]:
        x0, idx, _ = self.buffer.sample(x.shape[0])  # Alg. 1, l. 4
        with frozen_params(self.energy_net):  # l. 5-7, the step adapted after the chain
            x_neg, info = self.chain(
                self.energy_net, x0, self.cfg.langevin_steps, reference=x, adapt=True
            )
        e_pos, e_neg = self.energy_net(x), self.energy_net(x_neg)
        loss_cd = e_pos.mean() - e_neg.mean()  # Eq. 2, the ML gradient's two terms
        loss_reg = self.cfg.alpha * (e_pos.pow(2).mean() + e_neg.pow(2).mean())
        self.update("energy", loss_cd + loss_reg, clip=self.cfg.grad_clip)  # l. 9
        self.buffer.update(idx, x_neg)  # l. 10
        return detached(
            loss=loss_cd + loss_reg,
            loss_cd=loss_cd,
            e_pos=e_pos.mean(),
            e_neg=e_neg.mean(),
            **chain_logs(info),
        )

    def sample(self, n: int) -> Tensor:
        with frozen_params(self.energy_net):
            return self.sample_from(self.energy_net, n)

    def sample_from(self, energy: Energy, n: int) -> Tensor:
        """This method's sampler on any energy in model units (for composed energies)."""
        x0 = self.buffer.initial(n)
        return self.chain(energy, x0, self.cfg.sample_steps)[0]
