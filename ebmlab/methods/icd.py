"""Improved contrastive divergence: CD plus the KL term it usually drops.

Paper: Y. Du, S. Li, J. Tenenbaum and I. Mordatch, "Improved Contrastive Divergence Training of
Energy-Based Models", ICML 2021 (shared/papers/003; restated in shared/methods.md, section 4).

Notation (paper -> code)
    E_theta(x)               self.energy_net, public `energy(x)`; optionally multiscale (Sec. 2.4)
    x_i^+ ~ p_D              x (a data batch, model units)
    B                        self.buffer (replay buffer of past chains)
    D(.)                     self.augment (data-augmentation transition, Sec. 2.3; images only)
    lambda, omega            cfg.step_size, cfg.noise (step and noise std are set separately)
    Omega(.)                 stop-gradient (.detach(); the sampler returns detached chains)
    x^- = Omega(x~^K)        x_neg
    x^-hat = x~^K            x_kl (the last step, differentiable in theta, Eq. 7)
    E_{stop_grad(theta)}     the energy evaluated under `frozen_params`
    NN(x, X), X ~ B          nearest L2 distance of each x_kl to 100 past samples (Eq. 8): X is
                             drawn from the slots the sampler has written (`buffer.past`)

Algorithm 1, one call of `train_step`:
    x~^0 ~ B with prob. 1 - reinit_prob, else U;  x~^0 = D(x~^0)           # l. 4-6
        (the authors' code augments only the rows read from B: `augment_fresh: false`)
    for k = 1..K-1:  x~^k = Omega(x~^{k-1} - lambda grad_x E(x~^{k-1}) + omega)   # l. 7-9
    x^-hat = x~^{K-1} - lambda grad_x E_theta(x~^{K-1}) + omega  (graph kept)     # last step
    x^- = Omega(x^-hat)                                                           # l. 10-11
    L_CD  = mean E(x^+) - mean E(x^-)                                             # Eq. 5
    L_opt = mean E_{stop_grad(theta)}(x^-hat)                                     # Eq. 7
    L_ent = mean -log NN(x^-hat, X)                                               # Eq. 8
    L = L_CD + L_opt + w_ent L_ent + alpha mean(E(x^+)^2 + E(x^-)^2)    # Eq. 6 + the code's reg.
    theta <- Adam(theta, clip(grad L, 0.5));  B <- B with x^- written back        # l. 12-14

The gradients of L_CD, of the penalty and of L_KL = L_opt + w_ent L_ent are taken one by one
(`Method.update` with parts) and their norms logged as `grad_norm/cd`, `grad_norm/reg` and
`grad_norm/kl`: the paper's Figure 9, drawn in each run's report. `backprop_steps` > 1
differentiates L_opt through that many last steps (App. D.2: all K steps, 3x slower).

The energy-magnitude penalty alpha, the gradient-norm clip, and the entropy weight 0.3 applied
once the buffer holds `entropy_after` past samples come from the authors' code (methods.md 4.3);
each is an option. Defaults are the paper's elsewhere (App. B.2 sampler and augmentation, 0.1%
re-initialisation); the code's augmentation is `augmentation: {}`. Rows freshly drawn from U
are not augmented, as in the authors' code (Algorithm 1 augments them too: `augment_fresh:
true`). `use_opt` / `use_ent` switch off the two halves of L_KL and `augment` the transitions,
for the paper's Table 2 ablation (benchmarks/icd_ablation.py). The EMA of the weights for
evaluation (Sec. 3.1: 0.9999) is the Trainer's `train.ema_decay`.

On points and tables (`sampler: mala`, the tabular preset) every step is Metropolis-adjusted,
the last one included: its proposal x~^{K-1} - lambda grad_x E_theta + sqrt(2 lambda) xi keeps
its graph, and the accept test (on detached values) makes x^-hat that proposal or x~^{K-1}
(`ebmlab.samplers.mala.mala_step`). An unadjusted last step at the step MALA adapts to would
over-disperse every negative (for a Gaussian of variance s^2 at lambda = s^2, one such step
doubles the variance), and the energy then learns a density too narrow: on a 1D two-mode set
with L_KL off, exact KL 14.4 with an unadjusted last step against 0.003 with a MALA one.

Sampling a trained model (`sample`), Algorithm 2: from uniform noise, N rounds of
(augment, K Langevin steps); without augmentation (vectors) the rounds are one chain.
`sample_from(energy, n)` runs the same procedure on any energy, such as a sum of several
models' energies (Sec. 3.4, `ebmlab.compose`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from ebmlab.config import check_at_least, check_positive
from ebmlab.data.augment import Augment
from ebmlab.errors import EbmlabError
from ebmlab.methods.base import Method, data_box, detached
from ebmlab.nets import build_energy
from ebmlab.samplers import (
    DataChain,
    Energy,
    Langevin,
    ReplayBuffer,
    chain_logs,
    check_chain,
    frozen_params,
    langevin_step,
)
from ebmlab.samplers.mala import mala_step


@dataclass(frozen=True)
class Config:
    """The paper's defaults (Sec. 3.1, App. B.2 CIFAR-10), the code's regularisers as options."""

    energy_net: dict[str, Any] = field(default_factory=lambda: {"kind": "auto"})
    lr: float = 2e-4
    betas: tuple[float, float] = (0.0, 0.9)
    langevin_steps: int = 40  # K
    # lambda and omega's std: App. B.2's 500 and 0.001 on [0, 1] pixels, on our [-1, 1] pixels
    # (x -> 2x - 1 halves grad_x E and doubles distances); None: sqrt(2 lambda), temperature 1
    step_size: float = 2000.0
    noise: float | None = 0.002
    use_opt: bool = True  # L_opt, Eq. 7
    use_ent: bool = True  # L_ent, Eq. 8
    backprop_steps: int = 1  # last Langevin steps L_opt is differentiated through (App. D.2: K)
    entropy_weight: float = 0.3  # authors' code; Alg. 1 writes 1
    entropy_set: int = 100  # |X|: past buffer samples for the nearest neighbour
    entropy_after: int = 1000  # L_ent only once the buffer holds this many past samples
    alpha: float = 1.0  # energy-magnitude penalty alpha (E+^2 + E-^2), authors' code
    grad_clip: float | None = 0.5  # parameters' gradient-norm clip, authors' code
    buffer_size: int = 10_000
    reinit_prob: float = 0.001  # Sec. 3.1: "resampling rate of 0.1%"
    init_low: float = -1.0  # U, the uniform initial distribution, per coordinate
    init_high: float = 1.0
    augment: bool = True  # D(.) on buffer samples and between sampling rounds (images only)
    augment_fresh: bool = False  # D(.) on fresh-noise rows too: Alg. 1 l. 6 (the code: no)
    # D(.), App. B.2: SimCLR colour strength 1, flip, resize 0.02-1; `{}` gives the authors'
    # code's recipe instead (crop 0.08-1, hue 0.4: data.augment.Augment's defaults)
    augmentation: dict[str, Any] = field(
        default_factory=lambda: {"crop_scale": (0.02, 1.0), "jitter": (0.8, 0.8, 0.8, 0.2)}
    )
    sample_rounds: int = 10  # N of Algorithm 2
    sample_round_steps: int = 20  # K of Algorithm 2 (Sec. 2.3: augment every 20 steps)
    # the chain on points and tables (ebmlab.samplers.chain): MALA, adapted toward
    # target_accept, with global moves from the data batch; the differentiable last step of
    # Eq. 7 is then a MALA step whose proposal keeps its graph
    sampler: str = "langevin"
    target_accept: float | None = None
    global_moves: int = 0

    def __post_init__(self):
        check_at_least(
            noise=(self.noise, 0),
            sample_rounds=(self.sample_rounds, 0),
            sample_round_steps=(self.sample_round_steps, 0),
            global_moves=(self.global_moves, 0),
        )
        check_positive(step_size=self.step_size)  # langevin_steps: see backprop_steps
        check_chain(self.sampler, self.target_accept)


class ICD(Method):
    """Improved CD: L_CD + L_KL with replay buffer, augmentation transitions, multiscale energy."""

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
        is_image = len(self.data_shape) == 3
        self.augment = Augment(**cfg.augmentation) if cfg.augment and is_image else None
        if not 1 <= cfg.backprop_steps <= cfg.langevin_steps:
            raise EbmlabError(
                f"backprop_steps must be between 1 and langevin_steps ({cfg.langevin_steps}), "
                f"got {cfg.backprop_steps}"
            )
        self.chain = DataChain(
            cfg.sampler,
            cfg.step_size,
            noise=cfg.noise,
            clamp=data_box(self.data_shape),
            target_accept=cfg.target_accept,
            global_moves=cfg.global_moves,
        )
        self.optimizers["energy"] = torch.optim.Adam(
            self.energy_net.parameters(), lr=cfg.lr, betas=cfg.betas
        )

    def energy(self, x: Tensor) -> Tensor:
        return self.energy_net(x)

    def _last_steps(self, x: Tensor, step_size: float | None = None) -> Tensor:
        """x^-hat: the last Langevin steps, whose gradient terms keep their graph to theta, at
        `step_size` (default: the chain's current step). On MALA chains each is a MALA step
        whose proposal keeps the graph (an accepted row carries it, a rejected row stays)."""
        step_size = self.chain.step_size if step_size is None else step_size
        if self.cfg.sampler == "mala":
            for _ in range(self.cfg.backprop_steps):
                x, _ = mala_step(self.energy_net, x, step_size, create_graph=True)
            return x
        box, noise = data_box(self.data_shape), Langevin(1, step_size, self.cfg.noise).noise_std
        for _ in range(self.cfg.backprop_steps):
            x = langevin_step(self.energy_net, x, step_size, noise, create_graph=True)
            x = x if box is None else x.clamp(*box)
        return x

    def _entropy_loss(self, x_kl: Tensor) -> Tensor:
        """Eq. 8: mean -log of each sample's L2 distance to its nearest of |X| past samples."""
        past = self.buffer.past(self.cfg.entropy_set).flatten(1)  # X ~ B, Alg. 1 l. 5
        nearest = torch.cdist(x_kl.flatten(1), past).min(dim=1).values
        return -torch.log(nearest.clamp_min(1e-12)).mean()

    def train_step(self, x: Tensor, step: int) -> dict[str, Tensor]:
        cfg = self.cfg
        x0, idx, fresh = self.buffer.sample(x.shape[0])  # Alg. 1, l. 4
        if self.augment is not None:
            augmented = self.augment(x0)  # l. 6: D(x~^0)
            x0 = augmented if cfg.augment_fresh else torch.where(_rows(fresh, x0), x0, augmented)
        stop_grad_steps = cfg.langevin_steps - cfg.backprop_steps
        with frozen_params(self.energy_net):  # l. 7-9, stop-grad steps
            x_prev, info = self.chain(self.energy_net, x0, stop_grad_steps, reference=x)
        x_kl = self._last_steps(x_prev, info["step_size"])  # x^-hat, graph to theta via grad_x E
        if stop_grad_steps:
            self.chain.adapt(info)  # the step is adapted after it is used
        x_neg = x_kl.detach()  # x^- = Omega(x~^K), l. 10
        e_pos, e_neg = self.energy_net(x), self.energy_net(x_neg)
        loss_cd = e_pos.mean() - e_neg.mean()  # Eq. 5
        loss_reg = cfg.alpha * (e_pos.pow(2).mean() + e_neg.pow(2).mean())  # authors' code
        with frozen_params(self.energy_net):
            loss_opt = self.energy_net(x_kl).mean()  # Eq. 7: E_{stop_grad(theta)}(x^-hat)
        loss_ent = self._entropy_loss(x_kl)  # Eq. 8
        # L_ent joins once the buffer holds enough past samples (a tensor test: no host sync)
        entropy_on = (self.buffer.written.sum() >= cfg.entropy_after).float()
        loss_kl = cfg.use_opt * loss_opt + cfg.use_ent * cfg.entropy_weight * entropy_on * loss_ent
        parts = {"cd": loss_cd, "reg": loss_reg}
        if cfg.use_opt or cfg.use_ent:
            parts["kl"] = loss_kl  # Eq. 6
        grad_norms = self.update("energy", parts, clip=cfg.grad_clip)  # l. 12-13
        self.buffer.update(idx, x_neg)  # l. 14
        return detached(
            loss=loss_cd + loss_reg + loss_kl,
            loss_cd=loss_cd,
            loss_reg=loss_reg,
            loss_opt=loss_opt,
            loss_ent=loss_ent,
            e_pos=e_pos.mean(),
            e_neg=e_neg.mean(),
            **grad_norms,
            **chain_logs(info),
        )

    def sample(self, n: int) -> Tensor:
        with frozen_params(self.energy_net):
            return self.sample_from(self.energy_net, n)

    def sample_from(self, energy: Energy, n: int) -> Tensor:
        """Algorithm 2 on any energy in model units (ICD composes energies this way, Sec. 3.4)."""
        cfg = self.cfg
        x0 = self.buffer.initial(n)  # Alg. 2: x~^0 ~ U
        if self.cfg.sampler == "mala":  # vectors: no augmentation, the rounds are one chain
            return self.chain(energy, x0, cfg.sample_rounds * cfg.sample_round_steps)[0]
        rounds = Langevin(
            cfg.sample_rounds * cfg.sample_round_steps,
            cfg.step_size,
            cfg.noise,
            clamp=data_box(self.data_shape),
            transition=self.augment,
            every=cfg.sample_round_steps,
        )
        return rounds(energy, x0)[0]  # N rounds of (D, K Langevin steps)


def _rows(mask: Tensor, like: Tensor) -> Tensor:
    """A per-row bool mask shaped to broadcast over `like`'s other dimensions."""
    return mask.view(-1, *[1] * (like.dim() - 1))
