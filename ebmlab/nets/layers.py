"""Layers shared by the networks: activations, spectral norm, and the EMA of weights."""

from __future__ import annotations

import collections
import contextlib
import copy
from collections.abc import Iterator
from typing import Any

import torch
from torch import Tensor, nn

from ebmlab.errors import EbmlabError

ACTIVATIONS = {
    "swish": nn.SiLU,
    "elu": nn.ELU,
    "leaky_relu": lambda: nn.LeakyReLU(0.2),
    "softplus": nn.Softplus,
    "relu": nn.ReLU,
    "prelu": nn.PReLU,
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

    averaged <- d * averaged + (1 - d) * live after the t-th `update`, with the warm-up
    d = min(decay, (1 + t) / (10 + t)) of TensorFlow's ExponentialMovingAverage: without it the
    initial random weights keep a share decay^t of the average (37% after 1,000 steps at
    0.999), which short runs cannot afford. The count t travels in `state_dict`.

    BatchNorm's running statistics belong to the live weights, not to their average: a
    generator's averaged weights under the live statistics drew one MNIST class (Inception FID
    235.7 against 139.7 live). So a module with BatchNorm keeps the first training-mode input
    of each of its last `CALIBRATION_BATCHES` updates (with `record_inputs`; one per step, so a
    chain that calls the module many times a step adds one copy, not one per call), and the
    averaged weights get statistics of their own from them, as SWA's `update_bn` does, whenever
    they are used (`copy_to`, `swapped`). The inputs travel in `state_dict`.
    """

    CALIBRATION_BATCHES = 8

    def __init__(self, module: nn.Module, decay: float, record_inputs: bool = True):
        self.decay = decay
        self.updates = 0
        self.averaged = copy.deepcopy(module).requires_grad_(False)
        self.calibration: collections.deque[Tensor] = collections.deque(
            maxlen=self.CALIBRATION_BATCHES
        )
        self._awaiting_input = True
        if record_inputs and has_batch_norm(module):
            module.register_forward_pre_hook(self._record_input)

    def _record_input(self, module: nn.Module, args: tuple[Any, ...]) -> None:
        """Keep the first argument of the step's first training-mode call (one that moves
        BatchNorm's statistics)."""
        if module.training and self._awaiting_input:
            self.calibration.append(args[0].detach().clone())
            self._awaiting_input = False

    @property
    def current_decay(self) -> float:
        """The decay the next `update` uses."""
        t = self.updates + 1
        return min(self.decay, (1 + t) / (10 + t))

    @torch.no_grad()
    def update(self, module: nn.Module) -> None:
        weight = 1.0 - self.current_decay
        live = dict(module.named_parameters())
        for name, param in self.averaged.named_parameters():
            param.lerp_(live[name], weight)
        for (_, avg_buf), (_, live_buf) in zip(
            self.averaged.named_buffers(), module.named_buffers(), strict=True
        ):
            avg_buf.copy_(live_buf)
        self.updates += 1
        self._awaiting_input = True

    def state_dict(self) -> dict[str, Any]:
        return {
            "weights": self.averaged.state_dict(),
            "updates": self.updates,
            "calibration": list(self.calibration),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.averaged.load_state_dict(state["weights"])
        self.updates = int(state["updates"])
        self.calibration.clear()
        self.calibration.extend(state.get("calibration", []))

    @torch.no_grad()
    def copy_to(self, module: nn.Module) -> None:
        """Overwrite `module`'s weights with the averaged ones (and BatchNorm statistics
        recomputed for them from the recorded inputs)."""
        if self.calibration:
            torch.optim.swa_utils.update_bn(self.calibration, self.averaged)
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


def has_batch_norm(module: nn.Module) -> bool:
    return any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in module.modules())


@contextlib.contextmanager
def eval_mode(module: nn.Module) -> Iterator[nn.Module]:
    """Evaluation mode inside the block (BatchNorm statistics frozen); the flag restored after."""
    was_training = module.training
    module.eval()
    try:
        yield module
    finally:
        module.train(was_training)
