"""The replay buffer of persistent chains (IGEBM, ICD, JEM).

A fixed number of slots, pre-filled from the initial distribution. `sample(n)` reads n random
slots; each returned row is replaced by a fresh initial sample with probability `reinit_prob`,
and the mask of those fresh rows is returned with them (ICD's code augments only the others).
After the sampler has moved them, `update(idx, x)` writes the chains back. `past(n)` reads only
slots that have been written back, i.e. past outputs of the sampler rather than initial noise
(ICD's set of past samples). The storage and the written-slot mask are module buffers, so
`.to(device)` moves them and `state_dict()` (hence every checkpoint) carries them: a resumed run
continues the same chains. Memory: capacity * prod(shape) float32 values.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn

InitFn = Callable[[int, torch.Generator | None], Tensor]


class ReplayBuffer(nn.Module):
    """Persistent chains with random re-initialisation.

    Args:
        capacity: number of slots.
        shape: shape of one example.
        reinit_prob: share of sampled rows replaced by fresh initial samples.
        init: "uniform" (U[low, high]^shape), "gaussian" (N(0, I)), or a callable (n, generator)
            returning (n, *shape).
        low, high: the box of the uniform initial distribution.
    """

    def __init__(
        self,
        capacity: int,
        shape: tuple[int, ...],
        reinit_prob: float = 0.05,
        init: InitFn | str = "uniform",
        low: float = -1.0,
        high: float = 1.0,
    ):
        super().__init__()
        if init not in ("uniform", "gaussian") and not callable(init):
            raise ValueError(f"init must be 'uniform', 'gaussian' or a callable, got {init!r}")
        self.shape, self.reinit_prob = tuple(shape), reinit_prob
        self.init, self.low, self.high = init, low, high
        self.register_buffer("storage", torch.empty(0))
        self.storage = self.initial(capacity)
        self.register_buffer("written", torch.zeros(capacity, dtype=torch.bool))

    @property
    def capacity(self) -> int:
        return self.storage.shape[0]

    def initial(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        """n fresh draws from the initial distribution, on the storage's device."""
        device, dtype = self.storage.device, self.storage.dtype
        if callable(self.init):
            return self.init(n, generator).to(device, dtype)
        shape = (n, *self.shape)
        if self.init == "gaussian":
            return torch.randn(shape, generator=generator, device=device, dtype=dtype)
        uniform = torch.rand(shape, generator=generator, device=device, dtype=dtype)
        return uniform * (self.high - self.low) + self.low

    def sample(
        self, n: int, generator: torch.Generator | None = None
    ) -> tuple[Tensor, Tensor, Tensor]:
        """(x0, idx, fresh): n chains from random slots, the rows where `fresh` (a bool mask)
        is set replaced by initial draws, a `reinit_prob` share of them."""
        device = self.storage.device
        idx = torch.randint(self.capacity, (n,), generator=generator, device=device)
        x0 = self.storage[idx]
        fresh = torch.rand(n, generator=generator, device=device) < self.reinit_prob
        x0[fresh] = self.initial(int(fresh.sum()), generator)
        return x0, idx, fresh

    def update(self, idx: Tensor, x: Tensor) -> None:
        """Write the moved chains back into their slots."""
        self.storage[idx] = x.detach().to(self.storage.dtype)
        self.written[idx] = True

    def past(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        """n random slots among those written back (with replacement; all slots if none is)."""
        # weights 1 on written slots, or on every slot while none is: no host-device sync
        weights = (self.written | ~self.written.any()).float()
        pick = torch.multinomial(weights, n, replacement=True, generator=generator)
        return self.storage[pick]
