"""Samplers over any energy callable x (B, ...) -> (B,): Langevin, MALA, HMC, the replay buffer.

All share one call, `sampler(energy, x, generator=None) -> (samples, info)`. They never touch a
parameter's `.grad`, never call `.train()`/`.eval()`, change `requires_grad` only on their own
chains, and work under a caller's `torch.no_grad()`.
"""

from ebmlab.samplers.adapt import DualAveraging
from ebmlab.samplers.buffer import ReplayBuffer
from ebmlab.samplers.chain import DataChain, chain_logs, check_chain
from ebmlab.samplers.hmc import HMC
from ebmlab.samplers.independence import independence_move
from ebmlab.samplers.langevin import (
    Energy,
    Langevin,
    compiled_langevin,
    energy_grad,
    frozen_params,
    langevin_step,
)
from ebmlab.samplers.mala import MALA

__all__ = [
    "DataChain",
    "DualAveraging",
    "HMC",
    "MALA",
    "Energy",
    "Langevin",
    "ReplayBuffer",
    "energy_grad",
    "frozen_params",
    "chain_logs",
    "check_chain",
    "compiled_langevin",
    "independence_move",
    "langevin_step",
]
