"""Layers shared by the networks: activations, spectral norm, and the EMA of weights."""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Iterator

import torch
from torch import nn

from ebmlab.errors import EbmlabError

ACTIVATIONS = {
    "swish": nn.SiLU,
    "elu": nn.ELU,
    "leaky_relu": lambda: nn.LeakyReLU(0.2),
    "softplus": nn.Softplus,
    "relu": nn.ReLU,
}


def make_activation(name: str) -> nn.Module:
    try:
        return ACTIVATIONS[name]()
    except KeyError:
        raise EbmlabError(
            f"unknown activation {name!r}; choose from {sorted(ACTIVATIONS)}"
        ) from None


def apply_spectral_norm(module: nn.Module) -> nn.Module:
    """Spectral normalisation on every Linear and Conv layer of `module` (in place)."""
    for name, child in module.named_children():
        if isinstance(child, nn.Linear | nn.Conv2d | nn.ConvTranspose2d):
            setattr(module, name, nn.utils.parametrizations.spectral_norm(child))
        else:
            apply_spectral_norm(child)
    return module


class EMA:
    """An exponential moving average of a module's parameters (buffers are copied as they are).

    averaged <- decay * averaged + (1 - decay) * live, after every `update`.
    """

    def __init__(self, module: nn.Module, decay: float):
        self.decay = decay
        self.averaged = copy.deepcopy(module).requires_grad_(False)

    @torch.no_grad()
    def update(self, module: nn.Module) -> None:
        live = dict(module.named_parameters())
        for name, param in self.averaged.named_parameters():
            param.lerp_(live[name], 1.0 - self.decay)
        for (_, avg_buf), (_, live_buf) in zip(
            self.averaged.named_buffers(), module.named_buffers(), strict=True
        ):
            avg_buf.copy_(live_buf)

    def state_dict(self) -> dict[str, torch.Tensor]:
        return self.averaged.state_dict()

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        self.averaged.load_state_dict(state)

    @torch.no_grad()
    def copy_to(self, module: nn.Module) -> None:
        """Overwrite `module`'s weights with the averaged ones."""
        module.load_state_dict(self.averaged.state_dict())

    @contextlib.contextmanager
    def swapped(self, module: nn.Module) -> Iterator[nn.Module]:
        """Use the averaged weights inside the block; the live ones are restored after."""
        live = copy.deepcopy(module.state_dict())
        self.copy_to(module)
        try:
            yield module
        finally:
            module.load_state_dict(live)
