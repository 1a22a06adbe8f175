"""Bi-level Doubly Variational Learning (BiDVL): an MCMC-free EBM with an encoder and a generator.

Paper: G. Kan, J. Lü, T. Wang, B. Zhang, A. Zhu, L. Huang, G. Guo and H. Snoussi, "Bi-level
Doubly Variational Learning for Energy-based Latent Variable Models", CVPR 2022 (methods.md §3
restates it beside the authors' code, gekanFAE/BiDVL).

The decoupled EBLVM (Eq. 8) is p(v, h) = p_psi'(v) q_w1(h|v): a marginal energy on data and the
encoder as its structural posterior. Two variational models stand in for the intractable
posterior and joint: the encoder q_w1(h|v) and an implicit generator p_w2(v, h), v = G_w2(h),
h ~ N(0, I). The generator chases the EBM (lower level); the EBM moves from the generator to the
data (upper level). No MCMC: the EBM's negatives are generator samples.

Notation (paper -> code)
    v, h                      data x, latent z (d = cfg.z_dim)
    E_psi'(v)                 self.energy_net; public `energy(x)` (softplus on with
                              cfg.energy_output = "softplus", the authors' DCGAN nets)
    q_w1(h|v)                 self.encoder -> (mu, log_var); log_var = -softplus(.) <= 0 with
                              cfg.bounded_log_var, so the variance lies in (0, 1) (App. B)
    p_w2(v, h), G_w2          self.generator, h ~ p(h) = N(0, I)
    r(v) = p_psi'(v) / q(v)   the importance ratio (Eq. 15): the basic ratio r' = cfg.basic_ratio,
                              times Sigmoid(E_q[E] - E(v)) with cfg.ratio_bias
    D_r(q q_w1 || p_w2)       importance-weighted VAE loss: r(v) (|G(h) - v|^2 + KL(q_w1 || p(h)))
                              per example, h ~ q_w1(h|v) (a Gaussian decoder of variance 1/2)
    KL(p_w2(v,h) || q_w1)     the latent cycle: -log q_w1(h | G(h)), h ~ p(h) (cfg.cycle_loss)

Algorithm 1 (one `train_step`; cfg.order = "upper_first" runs step 2 before step 1, as the code)
    v ~ data
    1. repeat cfg.lower_steps times (N; paper: 1), lower level, Eq. 13 (offset, default):
         h ~ q_w1(h|v) (reparameterised); h' ~ p(h); v' = G(h')
         L_LL = mean_i r_i (|G(h_i) - v_i|^2 + KL(q_w1(h|v_i) || p(h)))      # D_r, w1 and w2
              + mean E(v')                                  # E_{p_w2}[E], w2 only (psi' fixed)
              + cycle_weight * mean -log q_w1(h' | v')      # cycle, w2 only (w1 fixed)
         (w1, w2) <- Adam(L_LL)
    2. upper level, Eq. 14: v' = G(h'), h' ~ p(h), without gradient to G
         L_UL = mean E(v) - mean E(v')                      # cfg.upper_loss = "difference"
              = mean ReLU(1 + E(v)) + mean ReLU(1 - E(v'))  # "hinge", App. B Eq. 23
         psi' <- Adam(L_UL)

The variants of the opposite terms (Sec. 5.4, Table 6; cfg.opposite_terms):
    "offset"      Eqs. 13-14 above: the cycle term trains G only (the default, the paper's)
    "not_offset"  Eqs. 11-12 as Sec. 4.4 implements them: the cycle term trains w1 too, and the
                  upper level also moves w1 by Adam on mean KL(q_w1(h|sg(v')) || p(h)) (the
                  stable stand-in for maximising the cycle KL there)
    "none"        no cycle term in either level ("w/o" in Table 6)

The authors' code multiplies every learning rate by 0.998 after each epoch: the Trainer's
`train.lr_schedule: exponential` (on in the image presets).

Sampling (`sample`): v = G(h), h ~ p(h), one generator pass; with cfg.sample_langevin_steps > 0,
that many Langevin steps on the energy refine it (clamped to [-1, 1] for images).
`encode(x)` is the posterior mean, `decode(z)` the generator, `reconstruct(x)` both.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor
from torch.nn import functional as F

from ebmlab.config import check_at_least, check_choices, check_positive
from ebmlab.errors import EbmlabError
from ebmlab.methods.base import Method, data_box, detached
from ebmlab.nets import build_encoder, build_energy, build_generator, eval_mode, reparameterise
from ebmlab.samplers import Energy, Langevin, frozen_params

OPPOSITE_TERMS = ("offset", "not_offset", "none")
UPPER_LOSSES = ("difference", "hinge")
CYCLE_LOSSES = ("nll", "squared_error")
ENERGY_OUTPUTS = ("linear", "softplus")
ORDERS = ("lower_first", "upper_first")


@dataclass(frozen=True)
class Config:
    """The paper's objectives (offset version, Eqs. 13-14); the authors' CIFAR-10 DCGAN settings
    (methods.md §3.4) where the paper gives none."""

    z_dim: int = 100
    energy_net: dict[str, Any] = field(
        default_factory=lambda: {"kind": "auto", "spectral_norm": True}
    )
    encoder: dict[str, Any] = field(default_factory=lambda: {"kind": "auto"})
    generator: dict[str, Any] = field(default_factory=lambda: {"kind": "auto"})
    bounded_log_var: bool = True  # log_var = -softplus(.): variance in (0, 1)
    energy_output: str = "linear"  # "softplus": E >= 0, the authors' DCGAN energy
    basic_ratio: float = 0.05  # r' (paper: 0.05 for 32x32, 0.1 for 64x64)
    ratio_bias: bool = False  # r(v) = r' Sigmoid(E_q[E] - E(v)) (Eq. 15's bias term)
    opposite_terms: str = "offset"  # "offset", "not_offset" or "none" (Table 6)
    cycle_loss: str = "nll"  # "nll": -log q(h|G(h)) (paper); "squared_error": |mu - h|^2 (code)
    cycle_weight: float = 1.0  # code: 1 / z_dim with squared_error
    upper_loss: str = "difference"  # "hinge": ReLU-clipped, App. B Eq. 23
    lower_steps: int = 1  # N lower-level steps per upper-level step
    order: str = "lower_first"  # Algorithm 1; "upper_first": the authors' code
    lr_energy: float = 1e-4
    lr_lower: float = 3e-4  # encoder and generator, one Adam
    betas: tuple[float, float] = (0.0, 0.9)
    weight_decay_lower: float = 1e-4
    sample_langevin_steps: int = 0  # refine generator samples by Langevin on the energy
    sample_step_size: float = 1e-3
    sample_noise: float | None = None  # None: sqrt(2 * step) (temperature 1)


class BiDVL(Method):
    """Energy, encoder and generator, trained by bi-level doubly variational learning."""

    Config = Config
    ema_modules = ("energy_net", "encoder", "generator")

    def __init__(self, cfg: Config, data_shape: tuple[int, ...]):
        super().__init__(cfg, data_shape)
        _check(cfg)
        self.energy_net = build_energy(self.data_shape, **cfg.energy_net)
        self.encoder = build_encoder(
            self.data_shape, cfg.z_dim, bounded_log_var=cfg.bounded_log_var, **cfg.encoder
        )
        self.generator = build_generator(cfg.z_dim, self.data_shape, **cfg.generator)
        self.optimizers["energy"] = torch.optim.Adam(
            self.energy_net.parameters(), lr=cfg.lr_energy, betas=cfg.betas
        )
        self.optimizers["lower"] = torch.optim.Adam(
            [*self.encoder.parameters(), *self.generator.parameters()],
            lr=cfg.lr_lower,
            betas=cfg.betas,
            weight_decay=cfg.weight_decay_lower,
        )

    # ---------------------------------------------------------------- the model

    def energy(self, x: Tensor) -> Tensor:
        e = self.energy_net(x)
        return F.softplus(e) if self.cfg.energy_output == "softplus" else e

    def prior(self, n: int) -> Tensor:
        """n draws of h ~ p(h) = N(0, I_d)."""
        return torch.randn(n, self.cfg.z_dim, device=self.device)

    @torch.no_grad()
    def importance_ratio(self, x: Tensor) -> Tensor:
        """r(v) of Eq. 15 per example: r', times Sigmoid(E_q[E] - E(v)) with `ratio_bias`."""
        ratio = x.new_full((x.shape[0],), self.cfg.basic_ratio)
        if self.cfg.ratio_bias:
            e_data = self.energy(x)
            ratio = ratio * torch.sigmoid(e_data.mean() - e_data)
        return ratio

    def weighted_vae_loss(self, x: Tensor, ratio: Tensor) -> dict[str, Tensor]:
        """D_r(q(v) q_w1(h|v) || p_w2(v, h)) per example (Eq. 11): r (recon + KL to the prior).

        Returns the batch means of `loss` (the weighted sum), `recon` (|G(h) - v|^2, the
        Gaussian decoder of variance 1/2 up to a constant) and `kl_prior` (KL(q_w1 || p(h))).
        """
        mu, log_var = self.encoder(x)
        recon = (self.generator(reparameterise(mu, log_var)) - x).flatten(1).pow(2).sum(1)
        kl_prior = gaussian_kl_to_prior(mu, log_var)
        loss = (ratio * (recon + kl_prior)).mean()
        return {"loss": loss, "recon": recon.mean(), "kl_prior": kl_prior.mean()}

    def cycle_loss(self, h: Tensor, v_gen: Tensor) -> Tensor:
        """KL(p_w2(v, h) || q_w1(h|v)) up to a constant: mean -log q_w1(h | G(h)) (paper), or
        the code's |mu(G(h)) - h|^2."""
        mu, log_var = self.encoder(v_gen)
        if self.cfg.cycle_loss == "squared_error":
            return (mu - h).pow(2).sum(1).mean()
        nll = 0.5 * ((h - mu).pow(2) * torch.exp(-log_var) + log_var + math.log(2 * math.pi))
        return nll.sum(1).mean()

    # ---------------------------------------------------------------- training

    def train_step(self, x: Tensor, step: int) -> dict[str, Tensor]:
        if self.cfg.order == "upper_first":
            upper = self._upper_step(x)
            lower = self._lower_steps(x)
        else:
            lower = self._lower_steps(x)
            upper = self._upper_step(x)
        return detached(loss=upper["loss_upper"], **upper, **lower)

    def _lower_steps(self, x: Tensor) -> dict[str, Tensor]:
        for _ in range(self.cfg.lower_steps):
            logs = self._lower_step(x)
        return logs

    def _lower_step(self, x: Tensor) -> dict[str, Tensor]:
        """One Adam step of (w1, w2) on the lower level, Eq. 13 (Eq. 11 for not_offset)."""
        ratio = self.importance_ratio(x)
        vae = self.weighted_vae_loss(x, ratio)
        h = self.prior(x.shape[0])
        v_gen = self.generator(h)
        with frozen_params(self.energy_net):
            e_gen = self.energy(v_gen)
        cycle = self._cycle_term(h, v_gen)
        loss = vae["loss"] + e_gen.mean() + self.cfg.cycle_weight * cycle
        self.update("lower", loss)
        return {
            "loss_lower": loss,
            "recon": vae["recon"],
            "kl_prior": vae["kl_prior"],
            "cycle": cycle,
            "ratio": ratio.mean(),
        }

    def _cycle_term(self, h: Tensor, v_gen: Tensor) -> Tensor:
        """The cycle: trains G alone when offset (w1 frozen, Eq. 13), G and w1 when not."""
        if self.cfg.opposite_terms == "none":
            return v_gen.new_zeros(())
        if self.cfg.opposite_terms == "offset":
            with frozen_params(self.encoder):
                return self.cycle_loss(h, v_gen)
        return self.cycle_loss(h, v_gen)

    def _upper_step(self, x: Tensor) -> dict[str, Tensor]:
        """One Adam step of psi' on the upper level, Eq. 14 (Eq. 23 with the hinge); and for
        not_offset, one of w1 on KL(q_w1(h|v') || p(h)) at generated v' (Sec. 4.4)."""
        with torch.no_grad():
            v_gen = self.generator(self.prior(x.shape[0]))
        e_data, e_gen = self.energy(x), self.energy(v_gen)
        if self.cfg.upper_loss == "hinge":
            loss = F.relu(1 + e_data).mean() + F.relu(1 - e_gen).mean()
        else:
            loss = e_data.mean() - e_gen.mean()
        self.update("energy", loss)
        encoder_kl = v_gen.new_zeros(())
        if self.cfg.opposite_terms == "not_offset":
            encoder_kl = gaussian_kl_to_prior(*self.encoder(v_gen)).mean()
            self.update("lower", encoder_kl)
        return {
            "loss_upper": loss,
            "e_data": e_data.mean(),
            "e_gen": e_gen.mean(),
            "encoder_kl_generated": encoder_kl,
        }

    # ---------------------------------------------------------------- inference and sampling

    @torch.no_grad()
    def encode(self, x: Tensor) -> Tensor:
        """The posterior mean E[h | v] of q_w1 for model-unit inputs."""
        with eval_mode(self.encoder):
            return self.encoder(x)[0]

    @torch.no_grad()
    def decode(self, z: Tensor) -> Tensor:
        """G(z) in model units."""
        with eval_mode(self.generator):
            return self.generator(z)

    def reconstruct(self, x: Tensor) -> Tensor:
        """G(E[h | v]): encode to the posterior mean, decode (the paper's Sec. 5.2)."""
        return self.decode(self.encode(x))

    def sample(self, n: int) -> Tensor:
        """G(h), h ~ N(0, I); refined by `sample_langevin_steps` Langevin steps on the energy."""
        return self.sample_from(self.energy, n)

    def sample_from(self, energy: Energy, n: int) -> Tensor:
        """Generator samples refined by Langevin on any energy (for composed energies)."""
        v = self.decode(self.prior(n))
        if not self.cfg.sample_langevin_steps:
            return v
        langevin = Langevin(
            steps=self.cfg.sample_langevin_steps,
            step_size=self.cfg.sample_step_size,
            noise=self.cfg.sample_noise,
            clamp=data_box(self.data_shape),
        )
        with frozen_params(self):
            return langevin(energy, v)[0]

    def sampling_procedure(self) -> str:
        """How `sample` draws, in words, for the report."""
        steps = self.cfg.sample_langevin_steps
        refined = f", then {steps} Langevin steps on the energy" if steps else " (no MCMC)"
        return f"one generator pass v = G(h), h ~ N(0, I){refined}"


def gaussian_kl_to_prior(mu: Tensor, log_var: Tensor) -> Tensor:
    """KL(N(mu, diag exp(log_var)) || N(0, I)) per row."""
    return 0.5 * (mu.pow(2) + log_var.exp() - log_var - 1).sum(1)


def _check(cfg: Config) -> None:
    check_choices(
        opposite_terms=(cfg.opposite_terms, OPPOSITE_TERMS),
        upper_loss=(cfg.upper_loss, UPPER_LOSSES),
        cycle_loss=(cfg.cycle_loss, CYCLE_LOSSES),
        energy_output=(cfg.energy_output, ENERGY_OUTPUTS),
        order=(cfg.order, ORDERS),
    )
    if cfg.basic_ratio <= 0:
        raise EbmlabError(f"basic_ratio must be positive, got {cfg.basic_ratio}")
    if cfg.lower_steps < 1:
        raise EbmlabError(f"lower_steps must be at least 1, got {cfg.lower_steps}")
    check_at_least(
        sample_langevin_steps=(cfg.sample_langevin_steps, 0), sample_noise=(cfg.sample_noise, 0)
    )
    check_positive(sample_step_size=cfg.sample_step_size)
    if "bounded_log_var" in cfg.encoder:
        raise EbmlabError("set bounded_log_var as a method option, not inside encoder")
