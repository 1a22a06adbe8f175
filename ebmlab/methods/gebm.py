"""Generalized Energy-Based Models (GEBM): a generator's distribution re-weighted by an energy.

Paper: M. Arbel, L. Zhou and A. Gretton, "Generalized Energy Based Models", ICLR 2021 (the
talk's slides; methods.md §5 restates the authors' code, MichaelArbel/GeneralizedEBM).

A GEBM has two parts: a base B_theta, the law of G_theta(z), z ~ eta = N(0, I_d), which learns
the low-dimensional support of the data, and an energy E that re-weights mass on that support:
dQ(x) ∝ exp(-E(x)) dB_theta(x). Equivalently, z is drawn from the latent posterior
nu(z) ∝ eta(z) exp(-E(G_theta(z))) and mapped through G_theta.

Notation (paper -> code)
    eta = N(0, I_d)               latent prior, d = cfg.z_dim
    G_theta, B_theta              self.generator, its push-forward of eta
    E                             self.energy_net; public `energy(x)` (with cfg.energy_floor)
    c                             self.log_partition, a learned scalar tracking log Z_{theta,E}
    Z_{theta,E}                   E_{B_theta}[exp(-E(X))]
    F(E + c)                      the lower bound below; KALE(P || B) = sup_{E,c} F(E + c)
    nu_{theta,E}(z)               ∝ eta(z) exp(-E(G_theta(z))), sampled by ULA, MALA or HMC
    T                             cfg.sample_temperature (1: nu itself; authors' code: 100)

Objectives (slides)
    L_{P,B}(E) = -E_P[E(X)] - log Z_{theta,E}                      generalised log-likelihood
    F(E + c)   = -E_P[E(X) + c] - E_B[exp(-(E(X) + c))] + 1 <= L   tight at c = log Z
    KALE(P||B) = F(E* + c*)
    grad_theta KALE = E_{z~eta}[exp(-(E*(G(z)) + c*)) grad_x E*(G(z)) dG_theta(z)/dtheta]
                    = E_{z~nu}[grad_x E*(G(z)) dG/dtheta]   (envelope theorem, c* = log Z)

Algorithm (one `train_step` is one energy step or one base step)
    if no base step yet and cfg.init_log_partition_batches:        # code: initialisation
        c <- log mean exp(-E(G(z))) over that many batches of z
    n_E = cfg.warmup_energy_steps before base steps 1 and 2 and every cfg.warmup_every-th one,
          else cfg.energy_steps                                     # code: 100, else 5
    if n_E energy steps have run since the last base step
       and step < cfg.fit_energy_from (if set):                     # base step
        z ~ eta;  theta <- Adam(theta, grad_theta L_B), E and c held fixed, where
        L_B = -mean exp(-(E(G(z)) + c))                 ("kale": F with E, c fixed; paper)
            = -(logsumexp_i(-E(G(z_i))) - log b)         ("snis": the authors' code, §5.3)
    else:                                                           # energy step
        z ~ eta; x_B = G(z) with G fixed (eval mode, no gradient)
        L_E = mean(E(x) + c) + mean(exp(-(E(x_B) + c))) - 1 [+ lambda mean |grad E(x_hat)|^2]
        (psi, c) <- Adam(grad L_E) [after the code's gradient transforms]

`fit_energy_from` ends training with energy steps only: the base is fixed and the energy fitted
to it, i.e. E* of the generalised likelihood for the final base, which is the energy the GEBM's
definition and KALE(P, Q) <= 2 KALE(P, B) assume (the talk's two stages). An energy that lags
the last base steps re-weights the base less well (the README's GEBM results measure by how
much).

The guards of the authors' code are options, all off by default: the gradient penalty lambda on
interpolates x_hat = a x + (1 - a) x_B, the soft clipping g <- 2g / (1 + g^2) of the energy's
gradient, the Newton-like step of c (its gradient 1 - m, m = mean exp(-(E(x_B) + c)), becomes
g / (1 - g) = 1/m - 1), the initialisation of c, and the floor E <- max(E, -10).

Logs: `kale` is F(E + c) on the batch (the energy step raises it, the base step lowers it),
`log_partition` is c and `log_z_naive` the batch estimate log mean exp(-E(G(z))), whose noise
is why c is learned instead (slides, "Amortized estimation").

Sampling (`sample`): z_0 ~ eta, `latent_steps` steps of the latent sampler on the potential
U(z) = |z|^2 / 2 + T E(G(z)), then x = G(z). `sample(n, from_base=True)` returns G(z_0).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from ebmlab import distributed
from ebmlab.config import check_at_least, check_choices, check_positive
from ebmlab.errors import EbmlabError
from ebmlab.methods.base import Method, detached
from ebmlab.nets import build_energy, build_generator, eval_mode
from ebmlab.samplers import HMC, MALA, Energy, Langevin, energy_grad, frozen_params

LATENT_SAMPLERS = ("ula", "mala", "hmc")
BASE_LOSSES = ("kale", "snis")


@dataclass(frozen=True)
class Config:
    """The paper's objectives; the authors' CIFAR-10 settings (methods.md §5.5) elsewhere."""

    z_dim: int = 100
    generator: dict[str, Any] = field(default_factory=lambda: {"kind": "auto"})
    energy_net: dict[str, Any] = field(default_factory=lambda: {"kind": "auto"})
    lr_energy: float = 1e-4
    lr_generator: float = 1e-4
    betas: tuple[float, float] = (0.5, 0.999)
    energy_steps: int = 5  # energy steps per base step
    warmup_energy_steps: int = 100  # before base steps 1, 2 and every `warmup_every`-th
    warmup_every: int = 500
    fit_energy_from: int | None = None  # from this step on, energy steps only (base fixed)
    base_loss: str = "kale"  # "kale": envelope gradient (paper); "snis": the code's
    gradient_penalty: float = 0.0  # lambda on interpolates (code: 1)
    soft_grad_clip: bool = False  # g <- 2g / (1 + g^2) on the energy (code: on)
    newton_log_partition: bool = False  # c's gradient g <- g / (1 - g) (code: on)
    init_log_partition_batches: int = 0  # c <- log mean exp(-E(G(z))) first (code: 100)
    energy_floor: float | None = None  # E <- max(E, floor) (code: -10)
    latent_sampler: str = "ula"  # "ula", "mala" or "hmc"
    latent_steps: int = 100
    latent_step_size: float = 1e-2  # eps in z - eps grad U + sqrt(2 eps) xi
    hmc_step_size: float = 0.1  # HMC's leapfrog step (ULA and MALA use latent_step_size)
    leapfrog_steps: int = 10
    step_decay: float = 1.0  # the step is multiplied by this every `step_decay_every` steps
    step_decay_every: int = 0  # code: x0.1 every 200 steps
    sample_temperature: float = 1.0  # T (code: 100)


class GEBM(Method):
    """Base generator + energy, trained by KALE; sampled by latent-space MCMC."""

    Config = Config
    ema_modules = ("energy_net", "generator")
    energy_is_density = False  # exp(-E) re-weights the base; it is not a density on x

    def __init__(self, cfg: Config, data_shape: tuple[int, ...]):
        super().__init__(cfg, data_shape)
        _check(cfg)
        self.generator = build_generator(cfg.z_dim, self.data_shape, **cfg.generator)
        self.energy_net = build_energy(self.data_shape, **cfg.energy_net)
        self.log_partition = nn.Parameter(torch.zeros(()))  # c
        self.optimizers["energy"] = torch.optim.Adam(
            [*self.energy_net.parameters(), self.log_partition], lr=cfg.lr_energy, betas=cfg.betas
        )
        self.optimizers["generator"] = torch.optim.Adam(
            self.generator.parameters(), lr=cfg.lr_generator, betas=cfg.betas
        )
        self.base_steps = 0
        self.energy_steps_since_base = 0

    # ---------------------------------------------------------------- the model

    def energy(self, x: Tensor) -> Tensor:
        e = self.energy_net(x)
        return e if self.cfg.energy_floor is None else e.clamp_min(self.cfg.energy_floor)

    def prior(self, n: int) -> Tensor:
        """n draws of z ~ eta = N(0, I_d)."""
        return torch.randn(n, self.cfg.z_dim, device=self.device)

    def bound(self, e_data: Tensor, e_base: Tensor, c: Tensor) -> Tensor:
        """F(E + c) = -E_P[E + c] - E_B[exp(-(E + c))] + 1 from energies of data and base."""
        return -(e_data + c).mean() - torch.exp(-(e_base + c)).mean() + 1

    # ---------------------------------------------------------------- training

    def train_step(self, x: Tensor, step: int) -> dict[str, Tensor]:
        if self.base_steps == 0 and self.energy_steps_since_base == 0:
            self._initialise_log_partition(x.shape[0])
        fitting_energy = self.cfg.fit_energy_from is not None and step >= self.cfg.fit_energy_from
        if not fitting_energy and self.energy_steps_since_base >= self._energy_steps_due():
            logs = self._base_step(x)
            self.base_steps += 1
            self.energy_steps_since_base = 0
        else:
            logs = self._energy_step(x)
            self.energy_steps_since_base += 1
        return logs

    def _energy_steps_due(self) -> int:
        """n_E before the next base step: the warm-up count before base steps 1, 2 and every
        `warmup_every`-th, else `energy_steps` (the code's schedule, methods.md §5.3)."""
        upcoming = self.base_steps + 1
        warm = upcoming <= 2 or (self.cfg.warmup_every and upcoming % self.cfg.warmup_every == 0)
        return self.cfg.warmup_energy_steps if warm else self.cfg.energy_steps

    @torch.no_grad()
    def _initialise_log_partition(self, batch: int) -> None:
        """c <- log mean exp(-E(G(z))) over `init_log_partition_batches` batches (code)."""
        batches = self.cfg.init_log_partition_batches
        if not batches:
            return
        with eval_mode(self.generator):
            neg_e = torch.cat(
                [-self.energy(self.generator(self.prior(batch))) for _ in range(batches)]
            )
        # under torchrun, every process's draws: c is a weight, so all must start from one value
        neg_e = distributed.concatenated(neg_e)
        self.log_partition.copy_(torch.logsumexp(neg_e, 0) - math.log(len(neg_e)))

    def _energy_step(self, x: Tensor) -> dict[str, Tensor]:
        """Maximise F(E + c) over the energy and c with the base fixed (slides, amortised)."""
        with torch.no_grad(), eval_mode(self.generator):
            x_base = self.generator(self.prior(x.shape[0]))
        e_data, e_base = self.energy(x), self.energy(x_base)
        bound = self.bound(e_data, e_base, self.log_partition)
        penalty = (
            self._gradient_penalty(x, x_base) if self.cfg.gradient_penalty else x.new_zeros(())
        )
        loss = -bound + self.cfg.gradient_penalty * penalty
        self.update("energy", loss, before_step=self._transform_energy_grads)
        return self._logs(bound, e_data, e_base, penalty, is_base_step=False)

    def _gradient_penalty(self, x: Tensor, x_base: Tensor) -> Tensor:
        """mean |grad_x E(x_hat)|^2 at x_hat = a x + (1 - a) x_B, a ~ U[0, 1] (code, §5.3)."""
        a = torch.rand(x.shape[0], *([1] * (x.dim() - 1)), device=x.device)
        _, grad = energy_grad(self.energy, a * x + (1 - a) * x_base, create_graph=True)
        return grad.flatten(1).pow(2).sum(1).mean()

    def _transform_energy_grads(self) -> None:
        """The code's gradient transforms, between backward and the Adam step, if switched on."""
        if self.cfg.soft_grad_clip:
            for param in self.energy_net.parameters():
                if param.grad is not None:
                    param.grad = 2 * param.grad / (1 + param.grad.pow(2))
        if self.cfg.newton_log_partition and self.log_partition.grad is not None:
            g = self.log_partition.grad  # = 1 - m, m = mean exp(-(E(x_B) + c)) in (0, inf)
            m = (1 - g).clamp_min(torch.finfo(g.dtype).tiny)  # m underflowing to 0 would be inf
            self.log_partition.grad = g / m  # = 1/m - 1, Newton's step on c for fixed E

    def _base_step(self, x: Tensor) -> dict[str, Tensor]:
        """Minimise KALE(P || B_theta) through G with E and c fixed (envelope theorem)."""
        c = self.log_partition.detach()
        with frozen_params(self.energy_net):
            e_base = self.energy(self.generator(self.prior(x.shape[0])))
            if self.cfg.base_loss == "kale":
                loss = -torch.exp(-(e_base + c)).mean()  # the theta-dependent part of F
            else:
                loss = -(torch.logsumexp(-e_base, 0) - math.log(e_base.shape[0]))
            self.update("generator", loss)
        with torch.no_grad():
            e_data = self.energy(x)
        bound = self.bound(e_data, e_base.detach(), c)
        return self._logs(bound, e_data, e_base, x.new_zeros(()), is_base_step=True)

    def _logs(
        self, bound: Tensor, e_data: Tensor, e_base: Tensor, penalty: Tensor, is_base_step: bool
    ) -> dict[str, Tensor]:
        naive = torch.logsumexp(-e_base.detach(), 0) - math.log(e_base.shape[0])
        return detached(
            loss=bound,
            kale=bound,
            log_partition=self.log_partition,
            log_z_naive=naive,
            e_data=e_data.mean(),
            e_base=e_base.mean(),
            gradient_penalty=penalty,
            base_step=e_data.new_tensor(float(is_base_step)),
        )

    def get_extra_state(self) -> Tensor:
        """The schedule's counters travel in state_dict, so a resumed run keeps its rhythm."""
        return torch.tensor([self.base_steps, self.energy_steps_since_base])

    def set_extra_state(self, state: Tensor) -> None:
        self.base_steps, self.energy_steps_since_base = (int(v) for v in state)

    # ---------------------------------------------------------------- sampling

    def sample(self, n: int, *, from_base: bool = False, sampler: str | None = None) -> Tensor:
        """n samples: x = G(z) for z from the latent sampler (or from eta with `from_base`)."""
        z = self.prior(n)
        if not from_base:
            z, _ = self.sample_latent(z, self.energy, sampler)
        return self.decode(z)

    def sample_from(self, energy: Energy, n: int) -> Tensor:
        """Latent MCMC on |z|^2 / 2 + T energy(G(z)) for any energy (for composed energies)."""
        z, _ = self.sample_latent(self.prior(n), energy)
        return self.decode(z)

    @torch.no_grad()
    def decode(self, z: Tensor) -> Tensor:
        with eval_mode(self.generator):
            return self.generator(z)

    def latent_potential(self, energy: Energy | None = None) -> Energy:
        """U(z) = -log eta(z) + T E(G(z)) up to a constant: -log nu(z) at T = 1."""
        energy = energy or self.energy
        temperature = self.cfg.sample_temperature
        return lambda z: 0.5 * z.pow(2).sum(1) + temperature * energy(self.generator(z))

    def sample_latent(
        self,
        z: Tensor,
        energy: Energy | None = None,
        sampler: str | None = None,
        *,
        record: bool = False,
    ) -> tuple[Tensor, dict[str, Any]]:
        """Run the latent sampler from z; with `record`, info["path"] is (steps + 1, n, d).

        Returns (z_K, info) with info["accept_rate"] for MALA and HMC (mean over segments).
        """
        kind = sampler or self.cfg.latent_sampler
        if kind not in LATENT_SAMPLERS:
            raise EbmlabError(
                f"unknown latent sampler {kind!r}; choose {', '.join(LATENT_SAMPLERS)}"
            )
        potential = self.latent_potential(energy)
        path, rates = [z.detach()], []
        with frozen_params(self), eval_mode(self.generator):
            for steps, step_size in self._segments(kind, record):
                z, info = self._latent_sampler(kind, steps, step_size)(potential, z)
                rates += [info["accept_rate"]] if "accept_rate" in info else []
                path += [z] if record else []
        info = {"accept_rate": sum(rates) / len(rates)} if rates else {}
        return z.detach(), info | ({"path": torch.stack(path)} if record else {})

    def _segments(self, kind: str, one_step_each: bool) -> list[tuple[int, float]]:
        """(steps, step size) pieces of the chain: the step decays by `step_decay` every
        `step_decay_every` steps; `one_step_each` splits them into single steps."""
        total, every = self.cfg.latent_steps, self.cfg.step_decay_every or self.cfg.latent_steps
        first = self.cfg.hmc_step_size if kind == "hmc" else self.cfg.latent_step_size
        pieces = []
        for start in range(0, total, every):
            size = first * self.cfg.step_decay ** (start // every)
            length = min(every, total - start)
            pieces += [(1, size)] * length if one_step_each else [(length, size)]
        return pieces

    def _latent_sampler(self, kind: str, steps: int, step_size: float) -> Callable:
        if kind == "ula":
            return Langevin(steps=steps, step_size=step_size)  # noise sqrt(2 eps): exact T = 1
        if kind == "mala":
            return MALA(steps=steps, step_size=step_size)
        return HMC(steps=steps, step_size=step_size, leapfrog_steps=self.cfg.leapfrog_steps)


def _check(cfg: Config) -> None:
    check_choices(
        latent_sampler=(cfg.latent_sampler, LATENT_SAMPLERS), base_loss=(cfg.base_loss, BASE_LOSSES)
    )
    if cfg.energy_steps < 1 or cfg.warmup_energy_steps < 1:
        raise EbmlabError("energy_steps and warmup_energy_steps must be at least 1")
    check_at_least(latent_steps=(cfg.latent_steps, 0), leapfrog_steps=(cfg.leapfrog_steps, 1))
    check_positive(latent_step_size=cfg.latent_step_size, hmc_step_size=cfg.hmc_step_size)
