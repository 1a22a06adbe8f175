"""Langevin dynamics: the input gradient, the step, and the bound sampler.

Update rule (unadjusted Langevin, with the step and the noise set separately):

    x_{k+1} = x_k - step_size * clip(grad_x E(x_k)) + noise * xi,    xi ~ N(0, I)

With noise = sqrt(2 * step_size) this targets exp(-E) (temperature 1). The papers' code often
uses a large step and a tiny noise (IGEBM: step 10, noise 0.005), which targets exp(-E / T) with
T = noise^2 / (2 * step_size), close to 0; `Langevin.temperature` reports it.
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch
from torch import Tensor, nn

Energy = Callable[[Tensor], Tensor]


def energy_grad(energy: Energy, x: Tensor, *, create_graph: bool = False) -> tuple[Tensor, Tensor]:
    """Energies (B,) and grad_x E, never touching any parameter's `.grad`.

    With `create_graph=False` the gradient is taken at a detached copy of x. With
    `create_graph=True` x is used as given (it may carry a graph, as the last step of ICD does)
    and the returned gradient can itself be differentiated.
    """
    with torch.enable_grad():
        if not create_graph:
            x = x.detach().requires_grad_(True)
        elif not x.requires_grad:
            x = x.requires_grad_(True)
        energies = energy(x)
        (grad,) = torch.autograd.grad(energies.sum(), x, create_graph=create_graph)
    return (energies, grad) if create_graph else (energies.detach(), grad)


@contextlib.contextmanager
def frozen_params(module: nn.Module) -> Iterator[nn.Module]:
    """Switch off requires_grad on every parameter; restore each flag exactly on exit."""
    flags = [(p, p.requires_grad) for p in module.parameters()]
    try:
        for param, _ in flags:
            param.requires_grad_(False)
        yield module
    finally:
        for param, flag in flags:
            param.requires_grad_(flag)


def _noise_like(x: Tensor, generator: torch.Generator | None) -> Tensor:
    return torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)


def _step(
    energy: Energy,
    x: Tensor,
    step_size: float,
    noise: float,
    grad_clip: float | None,
    create_graph: bool,
    generator: torch.Generator | None,
) -> tuple[Tensor, Tensor]:
    _, grad = energy_grad(energy, x, create_graph=create_graph)
    clipped = grad if grad_clip is None else grad.clamp(-grad_clip, grad_clip)
    moved = torch.add(x, clipped, alpha=-step_size)  # two kernels for the update, not four
    return moved.add_(_noise_like(x, generator), alpha=noise), grad


def _pure_update(
    energy: Energy, x: Tensor, scaled_noise: Tensor, step_size: float, grad_clip: float | None
) -> tuple[Tensor, Tensor]:
    """One step as a pure function of the chains and their noise, for torch.compile.

    The input gradient comes from torch.func.grad, so forward, backward and update form one
    graph, except for image chains (B, C, H, W) on the CPU: there it comes from
    torch.autograd.grad, at which torch.compile splits a compiled forward from a compiled
    backward. Inductor gives the convolutions of each of those two graphs one channels-last
    layout for oneDNN; in the single graph the convolution backwards get their saved inputs in
    the other layout and copy them. On 2 CPU cores (1 thread, CPU time) the conv net's step took
    1.05 of the eager floor in one graph and 0.72 split, the ResNet's 0.92 and 0.73, while the
    MLP's was better in one graph (0.80 against 0.85). Dynamo guards on device and shape, so
    each compiled graph holds one branch.
    """
    if x.device.type == "cpu" and x.dim() == 4:
        _, grad = energy_grad(energy, x)
    else:
        grad = torch.func.grad(lambda y: energy(y).sum())(x)
    clipped = grad if grad_clip is None else grad.clamp(-grad_clip, grad_clip)
    return x - step_size * clipped + scaled_noise, grad


_compile_all = contextvars.ContextVar("compile_all_langevin_steps", default=False)


@contextlib.contextmanager
def compiled_langevin(enabled: bool = True) -> Iterator[None]:
    """Within the block, every `Langevin` runs compiled steps (as with compile=True): how the
    Trainer's `train.compile` reaches the samplers that methods build themselves."""
    token = _compile_all.set(enabled)
    try:
        yield
    finally:
        _compile_all.reset(token)


@functools.cache
def _compiled_update() -> Callable:
    """`_pure_update` compiled, once per process (torch's guards recompile it per energy net
    and step settings), with large CPU matrix products through oneDNN (`cpu_matmul`); made on
    first use, so importing ebmlab does not load the compiler."""
    from ebmlab.samplers.cpu_matmul import compile_options

    return torch.compile(_pure_update, dynamic=False, options=compile_options())


def langevin_step(
    energy: Energy,
    x: Tensor,
    step_size: float,
    noise: float,
    *,
    grad_clip: float | None = None,
    create_graph: bool = False,
    generator: torch.Generator | None = None,
) -> Tensor:
    """One step x - step_size * clip(grad E) + noise * xi (detached unless `create_graph`)."""
    x_next, _ = _step(energy, x, step_size, noise, grad_clip, create_graph, generator)
    return x_next if create_graph else x_next.detach()


@dataclass(frozen=True)
class Langevin:
    """K steps of `langevin_step`, with optional clamping to a box and periodic transitions.

    Args:
        steps: number of steps K.
        step_size: the gradient step.
        noise: the noise std; None means sqrt(2 * step_size) (temperature 1).
        grad_clip: per-element clip of grad_x E (IGEBM uses 0.01 on [0, 1] pixels).
        clamp: (low, high) box the chains are clipped to after each step.
        transition: a map applied to the chains before steps 0, every, 2*every, ... (e.g. the
            data augmentation of ICD's Algorithm 2).
        every: the period of `transition`; 0 never applies it.
        compile: run each step through torch.compile (forward, input backward and update; see
            `_pure_update` for how the graphs are cut). The noise is drawn outside the graph
            from the same stream, so the chains equal the eager ones up to float rounding. The
            first call compiles (seconds to a minute); it pays off over many steps on one net.
            Freeze the net's parameters while sampling (`frozen_params`, as the methods do),
            or the compiled backward also computes their gradients (never stored in `.grad`).
    """

    steps: int
    step_size: float
    noise: float | None = None
    grad_clip: float | None = None
    clamp: tuple[float, float] | None = None
    transition: Callable[[Tensor], Tensor] | None = None
    every: int = 0
    compile: bool = False

    @property
    def noise_std(self) -> float:
        return math.sqrt(2 * self.step_size) if self.noise is None else self.noise

    @property
    def temperature(self) -> float:
        """The T in exp(-E / T) that the chain targets for small steps."""
        return self.noise_std**2 / (2 * self.step_size)

    def __call__(
        self, energy: Energy, x: Tensor, *, generator: torch.Generator | None = None
    ) -> tuple[Tensor, dict]:
        x, grad = x.detach(), x.new_zeros(x.shape)
        for k in range(self.steps):
            if self.transition is not None and self.every and k % self.every == 0:
                x = self.transition(x).detach()  # opens each block of `every` steps
            if self.compile or _compile_all.get():
                scaled_noise = self.noise_std * _noise_like(x, generator)
                x, grad = _compiled_update()(
                    energy, x, scaled_noise, self.step_size, self.grad_clip
                )
            else:
                x, grad = _step(
                    energy, x, self.step_size, self.noise_std, self.grad_clip, False, generator
                )
            if self.clamp is not None:
                x = x.clamp(*self.clamp)
        grad_norm = grad.flatten(1).norm(dim=1).mean()  # |grad_x E| at the last step
        return x.detach(), {"temperature": self.temperature, "grad_norm": grad_norm.detach()}
