"""Dual-MCMC teaching: an EBM, a generator and an inference model, each revised by Langevin.

Paper: J. Cui and T. Han, "Learning Energy-based Model via Dual-MCMC Teaching", NeurIPS 2023
(the supplement; methods.md §2 restates the main paper's joint KLs from it and from the
authors' code, jcui1224/dual-MCMC).

Three models: the EBM pi_alpha(x) ∝ exp(f_alpha(x)) = exp(-E(x)); the generator p_theta(x, z) =
N(z; 0, I_d) N(x; g_theta(z), sigma^2 I); the inference model q_phi(z|x) = N(mu(x), diag e^l(x)).
The generator initialises the EBM's Langevin chain (MCMC sampling, T^x_alpha), the inference
model the chain on the generator's posterior (MCMC inference, T^z_theta); the revised samples
teach the models that initialised them.

Notation (paper -> code)
    f_alpha = -E               self.energy_net; public `energy(x)`
    g_theta, sigma             self.generator, cfg.sigma
    q_phi(z|x)                 self.encoder -> (mu, log_var)
    T^x_alpha                  Langevin on E from x_hat = g(z), z ~ N(0, I)  (Eq. 5)
    T^z_theta                  Langevin on U(z|x) = |x - g(z)|^2 / (2 sigma^2) + |z|^2 / 2 =
                               -log p_theta(z|x) + const, from z_hat ~ q_phi(z|x)  (Eq. 6)

Algorithm 1 of the supplement (one `train_step`; parameters frozen while chains run)
    z ~ N(0, I);  x_hat = g(z);  x_tilde = T^x(x_hat)                       # MCMC sampling
        (one forward of g in training mode: the chain starts from the x_hat that Eq. 3's
        (x_tilde, z) term fits, as in the authors' code, BatchNorm statistics included)
    z_hat ~ q(z|x);  z_tilde = T^z(z_hat; x)                               # MCMC inference
    alpha <- Adam on  mean E(x) - mean E(x_tilde)                           # Eq. 2
    theta <- Adam on  mean |x - g(z_tilde)|^2 / (2 sigma^2)
                    + w_s mean |x_tilde - x_hat|^2 / (2 sigma^2)            # Eq. 3 (w_s = 1)
    phi   <- Adam on  mean -log q(z_tilde|x) + w_q mean -log q(z|x_tilde)   # Eq. 4 (w_q = 1)

The authors' code departs from it (methods.md §2.3), each a named option: `order: code` updates
theta, then phi, then alpha on negatives regenerated from the updated generator with the same
z; `sampling_weight` 50 and `inference_sample_weight` 0.1 weight the teaching terms; their
x-chain is tempered (noise 0.001 for a step of 0.125: `x_noise`), and `temper_energy_loss`
divides the EBM loss by the chain's temperature T = noise^2 / (2 step); weight decay on G and q;
every learning rate x 0.998 per epoch (`train.lr_schedule: exponential`, on in the image presets).

On points and tables (`x_sampler: mala`, the tabular preset) T^x is the chain that cd and icd
run there (`ebmlab.samplers.DataChain`): MALA, its step adapted toward `x_target_accept`, and
`x_global_moves` independence moves from a kernel density of the data batch before the local
steps. Plain Langevin at a step that fits the narrowest mode barely moves g(z) in 20 steps, so
the energy only ever saw where the generator was and ran off elsewhere: on a 1D two-mode set,
exact KL 232 after 3,000 steps, 2.1 with MALA and one move, 0.063 with five.

Sampling (`sample`): x_hat = g(z), then `sample_steps` Langevin steps on E (the paper's Fig. 2).
`encode` (posterior mean of q), `decode` (g), and `inpaint(x, mask)`: the supplement's three
recoveries, (i) q then g, (ii) + Langevin on the posterior of the observed pixels, (iii) +
Langevin on the EBM with the observed pixels clamped.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from ebmlab.config import check_at_least, check_choices
from ebmlab.errors import EbmlabError
from ebmlab.methods.base import Method, data_box, detached
from ebmlab.nets import build_encoder, build_energy, build_generator, eval_mode, reparameterise
from ebmlab.samplers import DataChain, Energy, Langevin, chain_logs, check_chain, frozen_params

ORDERS = ("supplement", "code")


@dataclass(frozen=True)
class Config:
    """Algorithm 1 of the supplement; the authors' CIFAR-10 settings (methods.md §2.4) where it
    gives none."""

    z_dim: int = 128
    energy_net: dict[str, Any] = field(
        default_factory=lambda: {"kind": "auto", "spectral_norm": True}
    )
    generator: dict[str, Any] = field(default_factory=lambda: {"kind": "auto"})
    encoder: dict[str, Any] = field(default_factory=lambda: {"kind": "auto"})
    sigma: float = 0.3  # the generator's observation noise
    x_steps: int = 30  # T^x: Langevin steps on the EBM
    x_step_size: float = 0.125  # s in x + s grad f + noise (code: 0.5^2 / 2)
    x_noise: float | None = None  # None: sqrt(2 s), the paper's; code: 0.001 (tempered)
    z_steps: int = 10  # T^z: Langevin steps on the generator's posterior
    z_step_size: float = 0.005  # code: 0.1^2 / 2, noise 0.1 = sqrt(2 s)
    sample_steps: int | None = None  # Langevin steps of `sample` (None: x_steps; code: 70)
    # T^x on points and tables (ebmlab.samplers.chain): "mala", its step adapted toward
    # x_target_accept, with x_global_moves moves from the data batch; the paper's Langevin
    # when "langevin"
    x_sampler: str = "langevin"
    x_target_accept: float | None = None
    x_global_moves: int = 0
    order: str = "supplement"  # "code": G, q, then E on regenerated negatives
    sampling_weight: float = 1.0  # w_s on the generator's (x_tilde, z) term (code: 50)
    inference_sample_weight: float = 1.0  # w_q on q's (x_tilde, z) term (code: 0.1)
    temper_energy_loss: bool = False  # divide the EBM loss by T = noise^2 / (2 step) (code)
    lr_energy: float = 1e-4
    lr_generator: float = 3e-4
    lr_inference: float = 1e-4
    betas: tuple[float, float] = (0.0, 0.9)
    weight_decay: float = 5e-4  # on the generator and the inference model (code)


class DualMCMC(Method):
    """EBM, generator and inference model, taught by Langevin in x and in z."""

    Config = Config
    ema_modules = ("energy_net", "generator", "encoder")

    def __init__(self, cfg: Config, data_shape: tuple[int, ...]):
        super().__init__(cfg, data_shape)
        _check(cfg)
        self.energy_net = build_energy(self.data_shape, **cfg.energy_net)
        self.generator = build_generator(cfg.z_dim, self.data_shape, **cfg.generator)
        self.encoder = build_encoder(self.data_shape, cfg.z_dim, **cfg.encoder)
        self.chain = DataChain(
            cfg.x_sampler,
            cfg.x_step_size,
            noise=cfg.x_noise,
            clamp=data_box(self.data_shape),
            target_accept=cfg.x_target_accept,
            global_moves=cfg.x_global_moves,
        )
        adam = {"betas": cfg.betas}
        self.optimizers["energy"] = torch.optim.Adam(
            self.energy_net.parameters(), lr=cfg.lr_energy, **adam
        )
        self.optimizers["generator"] = torch.optim.Adam(
            self.generator.parameters(), lr=cfg.lr_generator, weight_decay=cfg.weight_decay, **adam
        )
        self.optimizers["inference"] = torch.optim.Adam(
            self.encoder.parameters(), lr=cfg.lr_inference, weight_decay=cfg.weight_decay, **adam
        )

    # ---------------------------------------------------------------- the models

    def energy(self, x: Tensor) -> Tensor:
        return self.energy_net(x)

    def prior(self, n: int) -> Tensor:
        return torch.randn(n, self.cfg.z_dim, device=self.device)

    def posterior_energy(self, x: Tensor, mask: Tensor | None = None) -> Energy:
        """U(z) = |m (x - g(z))|^2 / (2 sigma^2) + |z|^2 / 2 = -log p_theta(z | x) + const,
        over the pixels where `mask` is 1 (all of them without a mask)."""

        def potential(z: Tensor) -> Tensor:
            residual = x - self.generator(z)
            if mask is not None:
                residual = residual * mask
            likelihood = residual.flatten(1).pow(2).sum(1) / (2 * self.cfg.sigma**2)
            return likelihood + 0.5 * z.pow(2).sum(1)

        return potential

    def generator_nll(self, x: Tensor, x_mean: Tensor) -> Tensor:
        """mean -log p_theta(x | z) up to a constant, x_mean = g(z): |x - g(z)|^2 / (2 sigma^2)."""
        return (x - x_mean).flatten(1).pow(2).sum(1).mean() / (2 * self.cfg.sigma**2)

    def inference_nll(self, z: Tensor, x: Tensor) -> Tensor:
        """mean -log q_phi(z | x) up to a constant."""
        mu, log_var = self.encoder(x)
        return (0.5 * (log_var + (z - mu).pow(2) * torch.exp(-log_var))).sum(1).mean()

    # ---------------------------------------------------------------- the two MCMC revisions

    def x_chain(self, steps: int, **options: Any) -> Langevin:
        """The EBM's Langevin chain (Eq. 5): the configured step and noise, clamped for images;
        inpainting's chain (which clamps the observed pixels)."""
        return Langevin(
            steps=steps,
            step_size=self.cfg.x_step_size,
            noise=self.cfg.x_noise,
            clamp=data_box(self.data_shape),
            **options,
        )

    def revise_x(
        self, x: Tensor, reference: Tensor | None = None, adapt: bool = False
    ) -> tuple[Tensor, dict]:
        """T^x from x (Eq. 5), parameters frozen: (chains, the chain's info). `reference`: the
        data batch of the global moves; `adapt`: update an adapted step from this chain."""
        with frozen_params(self):
            return self.chain(
                self.energy, x.detach(), self.cfg.x_steps, reference=reference, adapt=adapt
            )

    def revise_z(self, z: Tensor, x: Tensor, mask: Tensor | None = None) -> Tensor:
        """T^z: Langevin on the generator's posterior p_theta(z | x) from z (Eq. 6)."""
        langevin = Langevin(steps=self.cfg.z_steps, step_size=self.cfg.z_step_size)
        with frozen_params(self), eval_mode(self.generator):
            return langevin(self.posterior_energy(x.detach(), mask), z.detach())[0]

    # ---------------------------------------------------------------- training

    def train_step(self, x: Tensor, step: int) -> dict[str, Tensor]:
        z = self.prior(x.shape[0])
        x_hat = self.generator(z)  # the one forward: the chain's start and Eq. 3's mean
        x_tilde, info = self.revise_x(x_hat, reference=x, adapt=True)  # MCMC sampling
        with torch.no_grad():
            z_hat = reparameterise(*self.encoder(x))
        z_tilde = self.revise_z(z_hat, x)  # MCMC inference
        if self.cfg.order == "code":
            logs = self._teach(x, z, x_hat, x_tilde, z_tilde)
            with torch.no_grad():  # negatives from the updated generator, the same z
                x_tilde, _ = self.revise_x(self.generator(z), reference=x)
            return detached(**self._learn_energy(x, x_tilde), **logs, **chain_logs(info))
        logs = self._learn_energy(x, x_tilde)
        return detached(**logs, **self._teach(x, z, x_hat, x_tilde, z_tilde), **chain_logs(info))

    @torch.no_grad()
    def _generate(self, z: Tensor) -> Tensor:
        with eval_mode(self.generator):
            return self.generator(z)

    def _learn_energy(self, x: Tensor, x_tilde: Tensor) -> dict[str, Tensor]:
        """alpha <- Adam on mean E(x) - mean E(x_tilde) (Eq. 2), / T with temper_energy_loss."""
        e_data, e_sample = self.energy(x), self.energy(x_tilde)
        gap = e_data.mean() - e_sample.mean()
        temperature = self.x_chain(self.cfg.x_steps).temperature  # noise^2 / (2 step)
        self.update("energy", gap / temperature if self.cfg.temper_energy_loss else gap)
        return {"loss": gap, "e_data": e_data.mean(), "e_sample": e_sample.mean()}

    def _teach(
        self, x: Tensor, z: Tensor, x_hat: Tensor, x_tilde: Tensor, z_tilde: Tensor
    ) -> dict[str, Tensor]:
        """theta by Eq. 3 on (x, z_tilde) and (x_tilde, z), x_hat = g(z) with its graph; phi by
        Eq. 4 on the same pairs."""
        cfg = self.cfg
        gen_data = self.generator_nll(x, self.generator(z_tilde))
        gen_sample = self.generator_nll(x_tilde, x_hat)
        self.update("generator", gen_data + cfg.sampling_weight * gen_sample)
        inf_data, inf_sample = self.inference_nll(z_tilde, x), self.inference_nll(z, x_tilde)
        self.update("inference", inf_data + cfg.inference_sample_weight * inf_sample)
        return {
            "generator_data": gen_data,
            "generator_sample": gen_sample,
            "inference_data": inf_data,
            "inference_sample": inf_sample,
        }

    # ---------------------------------------------------------------- inference and sampling

    def sample(self, n: int) -> Tensor:
        """g(z), z ~ N(0, I), then Langevin on the EBM (the paper's Fig. 2)."""
        return self.sample_from(self.energy, n)

    def sample_from(self, energy: Energy, n: int) -> Tensor:
        """Generator draws refined by Langevin on any energy (for composed energies)."""
        steps = self.cfg.sample_steps if self.cfg.sample_steps is not None else self.cfg.x_steps
        with frozen_params(self):
            return self.chain(energy, self._generate(self.prior(n)), steps)[0]

    @torch.no_grad()
    def encode(self, x: Tensor) -> Tensor:
        """The posterior mean of q_phi(z | x)."""
        with eval_mode(self.encoder):
            return self.encoder(x)[0]

    def decode(self, z: Tensor) -> Tensor:
        return self._generate(z)

    def reconstruct(self, x: Tensor) -> Tensor:
        return self.decode(self.encode(x))

    def inpaint(self, x: Tensor, mask: Tensor) -> dict[str, Tensor]:
        """The supplement's three recoveries of x where `mask` (1 = observed, shaped like x or
        with one channel) is 0; observed pixels are kept in each.

        Returns "inference" (z = mean of q(z | masked x), then g(z)), "z_langevin" (+ T^z on
        the posterior of the observed pixels) and "x_langevin" (+ T^x on the EBM with the
        observed pixels clamped), each in model units.
        """
        mask = mask.to(x).expand_as(x)
        observed = x * mask
        keep: Callable[[Tensor], Tensor] = lambda v: observed + (1 - mask) * v  # noqa: E731
        z = self.encode(observed)
        first = keep(self.decode(z))
        second = keep(self.decode(self.revise_z(z, observed, mask)))
        with frozen_params(self):
            third = keep(
                self.x_chain(self.cfg.x_steps, transition=keep, every=1)(self.energy, second)[0]
            )
        return {"inference": first, "z_langevin": second, "x_langevin": third}

    def sampling_procedure(self) -> str:
        steps = self.cfg.sample_steps if self.cfg.sample_steps is not None else self.cfg.x_steps
        chain = "MALA" if self.cfg.x_sampler == "mala" else "Langevin"
        return f"a generator draw g(z), then {steps} {chain} steps on the energy"


def _check(cfg: Config) -> None:
    check_choices(order=(cfg.order, ORDERS))
    if cfg.sigma <= 0 or cfg.x_step_size <= 0 or cfg.z_step_size <= 0:
        raise EbmlabError("sigma, x_step_size and z_step_size must be positive")
    if cfg.x_steps < 1 or cfg.z_steps < 0:
        raise EbmlabError("x_steps must be at least 1 and z_steps not negative")
    check_at_least(
        sample_steps=(cfg.sample_steps, 0),
        x_noise=(cfg.x_noise, 0),
        x_global_moves=(cfg.x_global_moves, 0),
    )
    check_chain(cfg.x_sampler, cfg.x_target_accept)
