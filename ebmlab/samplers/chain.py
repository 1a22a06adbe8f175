"""The data-space chain that CD-style methods run each iteration, with a step that fits the data.

`DataChain` is the one place where cd, icd, shortrun and dualmcmc choose their sampler:

- `kind="langevin"`: the papers' Langevin (`Langevin`), its step and noise as the config sets
  them (e.g. IGEBM's step 10 with noise 0.005 on images);
- `kind="mala"`: Metropolis-adjusted Langevin, exact for exp(-E) at any step size, so the
  energy's own density is what the chains sample.

With `target_accept` set (MALA only), the step is adapted after every training chain by dual
averaging toward that acceptance rate (`DualAveraging`); the first step comes from the data's
scale (`ebmlab.defaults`). With `global_moves` > 0, each training chain opens with that many
independence Metropolis moves from a kernel density of the data batch (`independence_move`),
so chains move between modes in proportion to their mass. Both are module state: checkpoints
carry the adapted step, and `info` reports it for metrics.jsonl.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from ebmlab import distributed
from ebmlab.errors import EbmlabError
from ebmlab.samplers.adapt import DualAveraging
from ebmlab.samplers.independence import independence_move, kde_bandwidths
from ebmlab.samplers.langevin import Energy, Langevin
from ebmlab.samplers.mala import MALA

CHAIN_KINDS = ("langevin", "mala")
#: info keys of a chain -> the names a method logs them under
LOGGED = {
    "grad_norm": "langevin_grad_norm",
    "accept_rate": "accept_rate",
    "global_accept_rate": "global_accept_rate",
    "step_size": "step_size",
}


def check_chain(kind: str, target_accept: float | None, broad_share: float = 0.0) -> None:
    """A method config's sampler options, checked with one clear message."""
    if not 0 <= broad_share < 1:
        raise EbmlabError(f"the global moves' broad share must lie in [0, 1), got {broad_share}")
    if kind not in CHAIN_KINDS:
        raise EbmlabError(f"sampler must be one of {', '.join(CHAIN_KINDS)}, got {kind!r}")
    if target_accept is not None and not 0 < target_accept < 1:
        raise EbmlabError(f"target_accept must lie strictly between 0 and 1, got {target_accept}")
    if kind == "langevin" and target_accept is not None:
        raise EbmlabError(
            "target_accept adapts MALA's step: set sampler: mala, or target_accept: null"
        )


def chain_logs(info: dict) -> dict[str, Tensor]:
    """A chain's diagnostics as the tensors a `train_step` returns (step_size logged as the
    step the chain took, so metrics.jsonl shows the adaptation)."""
    return {name: torch.as_tensor(info[key]) for key, name in LOGGED.items() if key in info}


class DataChain(nn.Module):
    """K steps of Langevin or MALA on data space, optionally adapted and with global moves.

    Args:
        kind: "langevin" or "mala".
        step_size: the step (the first one when adapted).
        noise, grad_clip, clamp: Langevin's options (see `Langevin`); MALA takes none.
        target_accept: adapt the step toward this acceptance rate; None keeps it fixed.
        global_moves: independence moves from the data batch's kernel density per chain.
        broad_share: the share of those moves' proposals from a broad Gaussian of the batch
            (`independence_move`), for chains that start far from the data.
    """

    def __init__(
        self,
        kind: str,
        step_size: float,
        *,
        noise: float | None = None,
        grad_clip: float | None = None,
        clamp: tuple[float, float] | None = None,
        target_accept: float | None = None,
        global_moves: int = 0,
        broad_share: float = 0.0,
    ):
        super().__init__()
        check_chain(kind, target_accept, broad_share)
        self.kind, self.fixed_step = kind, step_size
        self.noise, self.grad_clip, self.clamp = noise, grad_clip, clamp
        self.global_moves, self.broad_share = global_moves, broad_share
        self.adapter = DualAveraging(step_size, target_accept) if target_accept else None

    @property
    def step_size(self) -> float:
        """The step the next chain takes (a host sync when adapted)."""
        return self.fixed_step if self.adapter is None else float(self.adapter.step_size)

    def sampler(self, steps: int, step_size: float | None = None) -> Langevin | MALA:
        step_size = self.step_size if step_size is None else step_size
        if self.kind == "mala":
            return MALA(steps=steps, step_size=step_size)
        return Langevin(steps, step_size, self.noise, self.grad_clip, self.clamp)

    def forward(
        self,
        energy: Energy,
        x: Tensor,
        steps: int,
        *,
        reference: Tensor | None = None,
        adapt: bool = False,
    ) -> tuple[Tensor, dict]:
        """Run `steps` steps from x. `reference`: the points of the global moves' kernel
        density (the data batch); `adapt`: update the step from this chain's acceptance."""
        info: dict = {}
        if self.global_moves and reference is not None:
            rates, centres = [], reference.detach().to(x.dtype)
            bandwidths = kde_bandwidths(centres)  # one kernel density for all the moves
            for _ in range(self.global_moves):
                x, rate = independence_move(
                    energy, x, centres, bandwidths=bandwidths, broad_share=self.broad_share
                )
                rates.append(rate)
            info["global_accept_rate"] = sum(rates) / len(rates)
        step_size = self.step_size
        x, chain_info = self.sampler(steps, step_size)(energy, x)
        info |= chain_info | {"step_size": step_size}
        if adapt and steps > 0:
            self.adapt(info)
        return x, info

    def adapt(self, info: dict) -> None:
        """Update the step from a chain's `info` (a no-op for a fixed step). Under torchrun the
        acceptance is averaged over processes first, so every process keeps the same step, as
        it keeps the same weights."""
        if self.adapter is not None:
            rate = torch.as_tensor(info["accept_rate"], dtype=torch.float32)
            self.adapter.update(distributed.average([rate.to(self.adapter.count.device)])[0])
