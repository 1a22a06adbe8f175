"""Small helpers the metric modules share: where a model lives, batched scoring, seeding."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import torch
from torch import Tensor

Energy = Callable[[Tensor], Tensor]


def model_device(obj: Any) -> torch.device | None:
    """The device of an object's parameters, or None when it has none.

    Accepts a module, an object exposing `parameters()`, or a bound method of either (such as
    `model.energy`), so callers can pass whatever they were given.
    """
    owner = getattr(obj, "__self__", obj)
    parameters = getattr(owner, "parameters", None)
    if not callable(parameters):
        return None
    try:
        first = next(iter(parameters()))
    except (StopIteration, TypeError):
        return None
    return first.device if isinstance(first, Tensor) else None


def model_dtype(obj: Any) -> torch.dtype:
    """The floating dtype of an object's parameters, else torch's default dtype."""
    owner = getattr(obj, "__self__", obj)
    parameters = getattr(owner, "parameters", None)
    if callable(parameters):
        for param in parameters():
            if isinstance(param, Tensor) and param.is_floating_point():
                return param.dtype
    return torch.get_default_dtype()


def batched_energy(energy: Energy, x: Tensor, batch_size: int = 500) -> Tensor:
    """Energies of `x` in batches, without autograd, on the device `x` came from.

    Batches go to the energy's parameter device when it has one, so CPU data can score a model
    that lives elsewhere.
    """
    device = model_device(energy) or x.device
    parts = []
    with torch.no_grad():
        for start in range(0, len(x), batch_size):
            batch = x[start : start + batch_size].to(device)
            parts.append(energy(batch).reshape(-1).to(x.device))
    return torch.cat(parts) if parts else x.new_zeros(0)


def to_numpy(values: Tensor | np.ndarray, dtype: type = np.float64) -> np.ndarray:
    """A detached host copy of a tensor or array, in `dtype`."""
    if isinstance(values, Tensor):
        values = values.detach().cpu().numpy()
    return np.asarray(values, dtype=dtype)


@contextlib.contextmanager
def seeded(seed: int, device: torch.device | None = None) -> Iterator[None]:
    """Seed torch for a block and restore the caller's random state afterwards.

    Evaluation must be repeatable without changing the random stream of a training run that
    calls it between steps. The host generator is always restored; an accelerator's too when
    `device` is on one.
    """
    accelerated = [device] if device is not None and device.type != "cpu" else []
    device_type = device.type if accelerated else "cpu"  # torch 2.11 refuses None here
    with torch.random.fork_rng(devices=accelerated, device_type=device_type):
        torch.manual_seed(seed)
        yield
