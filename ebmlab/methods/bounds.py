"""Bounds all around (EBM-BB): an energy and a generator trained between two bounds of the NLL.

Paper: C. Geng, J. Wang, Z. Gao, J. Frellsen and S. Hauberg, "Bounds all around: training
energy-based models with bidirectional bounds", NeurIPS 2021 (the supplement; methods.md §1
restates the main paper's Eqs. 15-20 from it and from the authors' code, gengcong940126/EBM-BB).

The negative log-likelihood L(theta) = E_data[E(x)] + log Z is squeezed between two bounds that
both go through a generator G: R^d -> R^D, z ~ N(0, I_d), whose density on its d-dimensional
manifold is p_g(G(z)) = N(z; 0, I) det(J_z^T J_z)^(-1/2):

    lower:  log Z >= -E_{p_g}[E(x)] + H(p_g)                    (Jensen; G maximises it)
    upper:  L <= E_data[E] - E_{p_g}[E] + H(p_g)
                 + M (E_{p_g} |grad_x E(x) + grad_x log p_g(x)|^p + m)^(1/p)   (supp. Thm. 1)

Notation (paper -> code)
    E_theta                 self.energy_net (`energy(x)`); exp(-E) is the model's density
    G, z ~ N(0, I_d)        self.generator, d = cfg.z_dim
    J_z = dG/dz (D x d)     never formed for images: products in ebmlab.nets.jacobian
    s_1(J_z)                smallest singular value, by Rayleigh-Ritz / LOBPCG (cfg.ssv_iters)
    H(p_g)                  H(N(0, I)) + E_z[1/2 log det(J_z^T J_z)] >= const + d E_z[log s_1]
    u                       grad_x E(G(z)) + grad_x log p_g(G(z)), the score mismatch
    u J_z v                 = a . (J_z v) + grad_z log p_g(G(z)) . v, a = grad_x E(G(z))
    M / s_1^2               cfg.penalty_weight / z_dim (paper: 0.001; 0.1 for OOD / density)

Eq. 18: |u| <= |u J_z| / s_1; Eq. 19: |u J_z|^2 = E_{v ~ N(0, I_d)} (u J_z v)^2; Eq. 20 (p = 2)
turns the upper bound into a gradient penalty on generator samples.

Algorithm (one `train_step`, energy then generator, 1:1 as the code)
    z ~ N(0, I_d);  with G in eval mode (per-sample Jacobians):
        h(z) = entropy term: d log s_1(J_z) ("lobpcg", default; "svd": exact s_1 for small d;
               "logdet": the exact 1/2 log det(J_z^T J_z)), with its graph to G
        b    = sg(grad_z [log N(z; 0, I) - h(z)])           = grad_z log p_g(G(z))
        v ~ N(0, I_d);  x_g, Jv = sg(G(z)), sg(J_z v)
    energy:    P = mean_i (grad_x E(x_g)_i . Jv_i + b_i . v_i)^2 / z_dim      (Eq. 20)
               L_E = mean E(x) - mean E(sg G(z)) + ReLU(w P - threshold)
               theta <- Adam(L_E)       (only theta: the G-side factors are stopped)
    generator: L_G = mean E(G(z)) - lambda_H mean h(z),  theta fixed
               G <- Adam(L_G)           (maximises the lower bound)

Options beside the paper's version: `penalty_scale` "v_norm" divides each (u J v)^2 by |v|^2
instead of z_dim (the supplement's variant for high dimensions), "none" divides by nothing (the
authors' code, which also halves P: use half the weight); `penalty_threshold` is the code's gate
(1 on its toys); `upper_bound: zero_centred` replaces the penalty by w mean |grad_x E(x)|^2 on
data, the code's EBM-0GP baseline that the paper grounds; `entropy_weight` (code, images: 1e-4).

Sampling (`sample`): x = G(z), one generator pass; the density is exp(-E).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor
from torch.nn import functional as F

from ebmlab.config import check_choices
from ebmlab.errors import EbmlabError
from ebmlab.methods.base import Method, detached
from ebmlab.nets import build_energy, build_generator, eval_mode
from ebmlab.nets.jacobian import jacobian, jvp, smallest_singular_value
from ebmlab.samplers import energy_grad, frozen_params

UPPER_BOUNDS = ("score_mismatch", "zero_centred", "none")
PENALTY_SCALES = ("z_dim", "v_norm", "none")
ENTROPIES = ("lobpcg", "svd", "logdet")


@dataclass(frozen=True)
class Config:
    """The paper's Eq. 20 with p = 2 and M / s_1^2 = 0.001 / z_dim; Table 6's optimiser."""

    z_dim: int = 128
    energy_net: dict[str, Any] = field(default_factory=lambda: {"kind": "auto"})
    generator: dict[str, Any] = field(default_factory=lambda: {"kind": "auto"})
    lr_energy: float = 2e-4
    lr_generator: float = 2e-4
    betas: tuple[float, float] = (0.0, 0.9)
    adam_eps: float = 1e-6
    upper_bound: str = "score_mismatch"  # "zero_centred": the code's EBM-0GP; "none"
    penalty_weight: float = 1e-3  # M / s_1^2 = penalty_weight / z_dim
    penalty_scale: str = "z_dim"  # "v_norm": / |v|^2 (supp.); "none": the code's
    penalty_threshold: float = 0.0  # ReLU(w P - threshold) (code: 1 on toys)
    entropy: str = "lobpcg"  # "svd": exact d log s_1; "logdet": exact 1/2 log det(J^T J)
    entropy_weight: float = 1.0  # lambda_H (code, images: 1e-4)
    ssv_iters: int = 2  # Rayleigh-Ritz iterations for s_1


class Bounds(Method):
    """Energy and generator, trained by the upper (energy) and lower (generator) bounds."""

    Config = Config
    ema_modules = ("energy_net", "generator")

    def __init__(self, cfg: Config, data_shape: tuple[int, ...]):
        super().__init__(cfg, data_shape)
        _check(cfg, data_shape)
        self.energy_net = build_energy(self.data_shape, **cfg.energy_net)
        self.generator = build_generator(cfg.z_dim, self.data_shape, **cfg.generator)
        _check_generator_widths(self.generator, cfg.z_dim)
        adam = {"betas": cfg.betas, "eps": cfg.adam_eps}
        self.optimizers["energy"] = torch.optim.Adam(
            self.energy_net.parameters(), lr=cfg.lr_energy, **adam
        )
        self.optimizers["generator"] = torch.optim.Adam(
            self.generator.parameters(), lr=cfg.lr_generator, **adam
        )

    # ---------------------------------------------------------------- the model

    def energy(self, x: Tensor) -> Tensor:
        return self.energy_net(x)

    def prior(self, n: int) -> Tensor:
        """n draws of z ~ N(0, I_d)."""
        return torch.randn(n, self.cfg.z_dim, device=self.device)

    def entropy_term(self, z: Tensor) -> Tensor:
        """h(z) per sample, with its graph: the part of H(p_g) the generator controls,
        d log s_1(J_z) (a lower bound) or 1/2 log det(J_z^T J_z) (exact). G in eval mode."""
        with eval_mode(self.generator):
            if self.cfg.entropy == "lobpcg":
                s_1 = smallest_singular_value(self.generator, z, self.cfg.ssv_iters)
                return self.cfg.z_dim * torch.log(s_1)
            singular_values = torch.linalg.svdvals(jacobian(self.generator, z))
            if self.cfg.entropy == "svd":
                return self.cfg.z_dim * torch.log(singular_values[:, -1])
            # 1/2 log det(J^T J) = sum_i log s_i(J): J^T J would square J's condition number
            return torch.log(singular_values).sum(1)

    def log_density_gradient(self, z: Tensor, entropy: Tensor) -> Tensor:
        """b = grad_z log p_g(G(z)) = grad_z [log N(z; 0, I) - h(z)], detached."""
        (grad_h,) = torch.autograd.grad(
            entropy.sum(), z, retain_graph=True, allow_unused=True, materialize_grads=True
        )  # zero where h does not depend on z (a linear G)
        return (-z - grad_h).detach()

    def score_mismatch_penalty(self, z: Tensor, log_density_grad: Tensor) -> Tensor:
        """P = mean_i (u_i J_i v_i)^2 / scale_i (Eq. 20); only the energy keeps a graph."""
        v = torch.randn_like(z)
        with torch.no_grad(), eval_mode(self.generator):
            x_g, jv = jvp(self.generator, z, v)
        _, a = energy_grad(self.energy, x_g.view(-1, *self.data_shape), create_graph=True)
        projection = (a.flatten(1) * jv).sum(1) + (log_density_grad * v).sum(1)  # u J v
        scale = {"z_dim": self.cfg.z_dim, "v_norm": v.pow(2).sum(1), "none": 1.0}
        return (projection.pow(2) / scale[self.cfg.penalty_scale]).mean()

    def zero_centred_penalty(self, x: Tensor) -> Tensor:
        """mean |grad_x E(x)|^2 on data (the code's EBM-0GP baseline)."""
        _, grad = energy_grad(self.energy, x, create_graph=True)
        return grad.flatten(1).pow(2).sum(1).mean()

    # ---------------------------------------------------------------- training

    def train_step(self, x: Tensor, step: int) -> dict[str, Tensor]:
        z = self.prior(x.shape[0]).requires_grad_()
        entropy = self.entropy_term(z)
        energy_logs = self._energy_step(x, z, entropy)
        generator_logs = self._generator_step(z.detach(), entropy)
        return detached(**energy_logs, **generator_logs)

    def _energy_step(self, x: Tensor, z: Tensor, entropy: Tensor) -> dict[str, Tensor]:
        """theta <- Adam on E_data[E] - E_{p_g}[E] + the upper-bound penalty (Eq. 20)."""
        with torch.no_grad():
            x_gen = self.generator(z)
        e_data, e_gen = self.energy(x), self.energy(x_gen)
        penalty, term = self._upper_bound_term(x, z, entropy)
        loss = e_data.mean() - e_gen.mean() + term
        self.update("energy", loss)
        return {
            "loss": loss,
            "e_data": e_data.mean(),
            "e_gen": e_gen.mean(),
            "penalty": penalty,
            "penalty_term": term,
        }

    def _upper_bound_term(self, x: Tensor, z: Tensor, entropy: Tensor) -> tuple[Tensor, Tensor]:
        """(P, its term in L_E): ReLU(w P - threshold) for the score mismatch, w P for the
        zero-centred penalty, zeros for none."""
        w = self.cfg.penalty_weight
        if self.cfg.upper_bound == "score_mismatch":
            penalty = self.score_mismatch_penalty(z.detach(), self.log_density_gradient(z, entropy))
            return penalty, F.relu(w * penalty - self.cfg.penalty_threshold)
        if self.cfg.upper_bound == "zero_centred":
            penalty = self.zero_centred_penalty(x)
            return penalty, w * penalty
        return x.new_zeros(()), x.new_zeros(())

    def _generator_step(self, z: Tensor, entropy: Tensor) -> dict[str, Tensor]:
        """G <- Adam on E_{p_g}[E] - lambda_H h: the lower bound of log Z, maximised."""
        with frozen_params(self.energy_net):
            e_gen = self.energy(self.generator(z))
        loss = e_gen.mean() - self.cfg.entropy_weight * entropy.mean()
        self.update("generator", loss)
        return {"loss_generator": loss, "entropy_term": entropy.mean()}

    # ---------------------------------------------------------------- sampling

    @torch.no_grad()
    def sample(self, n: int) -> Tensor:
        """x = G(z), z ~ N(0, I_d)."""
        with eval_mode(self.generator):
            return self.generator(self.prior(n))

    def sampling_procedure(self) -> str:
        return "one generator pass x = G(z), z ~ N(0, I) (the energy is the density exp(-E))"


def _check_generator_widths(generator: torch.nn.Module, z_dim: int) -> None:
    """The supplement's rule (Sec. B): no hidden layer of G narrower than d, or J_z cannot have
    full rank and p_g(G(z)) has no density. Checked on fully connected layers."""
    narrow = [m.out_features for m in generator.modules() if isinstance(m, torch.nn.Linear)]
    if min(narrow, default=z_dim) < z_dim:
        raise EbmlabError(
            f"a generator layer has {min(narrow)} units, fewer than z_dim = {z_dim}: its "
            "Jacobian could not have full rank (the supplement's rule, Sec. B)"
        )


def _check(cfg: Config, data_shape: tuple[int, ...]) -> None:
    check_choices(
        upper_bound=(cfg.upper_bound, UPPER_BOUNDS),
        penalty_scale=(cfg.penalty_scale, PENALTY_SCALES),
        entropy=(cfg.entropy, ENTROPIES),
    )
    if cfg.z_dim > math.prod(data_shape):
        raise EbmlabError(f"z_dim {cfg.z_dim} exceeds the data's dimension {math.prod(data_shape)}")
    if cfg.ssv_iters < 0 or cfg.penalty_weight < 0:
        raise EbmlabError("ssv_iters and penalty_weight must not be negative")
