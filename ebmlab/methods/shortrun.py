"""Non-persistent short-run MCMC toward an EBM.

Paper: E. Nijkamp, M. Hill, S.-C. Zhu and Y. N. Wu, "Learning Non-Convergent Non-Persistent
Short-Run MCMC Toward Energy-Based Model", NeurIPS 2019.

Notation (paper -> code; the paper writes f = -E)
    f_theta(x) = -E(x)    -self.energy_net, public `energy(x)`
    x_i^+                 x, plus N(0, data_noise^2) as in the authors' code
    x~_0 ~ U[-1, 1]^D     x0 (fresh noise every iteration: no buffer, no persistence)
    K                     cfg.langevin_steps
    s                     cfg.step_size and cfg.noise (the code absorbs s^2/2 into f's scale:
                          x <- x + grad f(x) + 0.01 * xi, i.e. step_size 1, noise 0.01)

Algorithm 1 (short-run MCMC learning), one call of `train_step`:
    x~_0 ~ U                                                    # l. 3: initialise from noise
    for k = 1..K:  x~_k = x~_{k-1} - step * grad_x E(x~_{k-1}) + noise * xi    # l. 4-5, Eq. 5
    Delta theta = mean grad_theta f(x^+) - mean grad_theta f(x~_K)             # l. 6, Eq. 3
    i.e. minimise L = mean E(x^+) - mean E(sg(x~_K)) with Adam                 # l. 7

Sampling a trained model (`sample`) is the same K-step chain from fresh noise: the short-run
chain itself is the generator the paper learns.

Image chains are clamped to the pixel box [-1, 1] after each step (`clamp_chains`), which keeps
every sample a valid image; the authors' script does not clamp (`clamp_chains: false`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from ebmlab.config import check_at_least, check_positive
from ebmlab.methods.base import Method, data_box, detached
from ebmlab.nets import build_energy
from ebmlab.samplers import DataChain, chain_logs, check_chain, frozen_params


@dataclass(frozen=True)
class Config:
    """Defaults of the authors' minimal CIFAR-10 script (data in [-1, 1])."""

    energy_net: dict[str, Any] = field(default_factory=lambda: {"kind": "auto"})
    lr: float = 1e-4
    betas: tuple[float, float] = (0.9, 0.999)
    langevin_steps: int = 100  # K
    step_size: float = 1.0
    noise: float | None = 0.01  # None: sqrt(2 * step_size), Langevin at temperature 1
    data_noise: float = 0.03  # std of the Gaussian noise added to each data batch
    init_low: float = -1.0  # x~_0 ~ U[init_low, init_high]^D
    init_high: float = 1.0
    grad_clip: float | None = None  # clip of the parameters' gradient norm
    clamp_chains: bool = True  # clamp image chains to [-1, 1] (the authors' script: false)
    # the chain on points and tables (ebmlab.samplers.chain): MALA, its step adapted toward
    # target_accept, and global moves from the data batch; the script's Langevin when "langevin"
    sampler: str = "langevin"
    target_accept: float | None = None
    global_moves: int = 0
    global_broad_share: float = 0.0  # share of the moves' proposals from a broad Gaussian

    def __post_init__(self):
        check_at_least(
            langevin_steps=(self.langevin_steps, 0),
            noise=(self.noise, 0),
            global_moves=(self.global_moves, 0),
        )
        check_positive(step_size=self.step_size)
        check_chain(self.sampler, self.target_accept, self.global_broad_share)


class ShortRun(Method):
    """Short-run, non-persistent MCMC: every negative chain starts from uniform noise."""

    Config = Config
    ema_modules = ("energy_net",)

    def __init__(self, cfg: Config, data_shape: tuple[int, ...]):
        super().__init__(cfg, data_shape)
        self.energy_net = build_energy(self.data_shape, **cfg.energy_net)
        self.chain = DataChain(
            cfg.sampler,
            cfg.step_size,
            noise=cfg.noise,
            clamp=data_box(self.data_shape) if cfg.clamp_chains else None,
            target_accept=cfg.target_accept,
            global_moves=cfg.global_moves,
            broad_share=cfg.global_broad_share,
        )
        self.optimizers["energy"] = torch.optim.Adam(
            self.energy_net.parameters(), lr=cfg.lr, betas=cfg.betas
        )

    def energy(self, x: Tensor) -> Tensor:
        return self.energy_net(x)

    def _short_run(
        self, n: int, reference: Tensor | None = None, adapt: bool = False
    ) -> tuple[Tensor, dict]:
        low, high = self.cfg.init_low, self.cfg.init_high
        x0 = torch.rand(n, *self.data_shape, device=self.device) * (high - low) + low  # l. 3
        with frozen_params(self.energy_net):  # l. 4-5
            return self.chain(
                self.energy_net, x0, self.cfg.langevin_steps, reference=reference, adapt=adapt
            )

    def train_step(self, x: Tensor, step: int) -> dict[str, Tensor]:
        x_pos = x + self.cfg.data_noise * torch.randn_like(x)
        x_neg, info = self._short_run(x.shape[0], reference=x, adapt=True)
        e_pos, e_neg = self.energy_net(x_pos), self.energy_net(x_neg)
        loss = e_pos.mean() - e_neg.mean()  # Eq. 3 as a loss
        self.update("energy", loss, clip=self.cfg.grad_clip)  # l. 7
        return detached(
            loss=loss,
            e_pos=e_pos.mean(),
            e_neg=e_neg.mean(),
            **chain_logs(info),
        )

    def sample(self, n: int) -> Tensor:
        return self._short_run(n)[0]
