"""The small surface every training method shares (design.md, "The few interfaces").

A method owns its networks, optimisers and sampler state. The Trainer only calls `train_step`,
`energy`, `sample`, `state_dict` and reads `ema_modules`; metrics and tasks only `energy` and
`sample`. No method inherits from another: what two share lives in samplers/, nets/, metrics/.

Optional, where a method has them: `sample_from(energy, n)`, the method's own sampling procedure
run on any energy in model units, which `ebmlab.compose` uses to sample a sum of energies;
`validation_loss(x, generator)`, the training loss on held-out rows with noise drawn from
`generator`, where that loss needs no sample of the model (DSM's: a loss that contrasts the data
with the model's own samples is no held-out criterion), on which the scikit-learn estimators
stop training early.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from ebmlab import distributed
from ebmlab.errors import EbmlabError


class Method(nn.Module, ABC):
    """Base of every method: holds the config and the one place where `backward()` runs."""

    Config: ClassVar[type]
    #: names of sub-modules whose weights the Trainer averages (EMA) for evaluation
    ema_modules: ClassVar[tuple[str, ...]] = ()
    #: whether exp(-energy) is the model's density on data space (grid metrics need it); a
    #: GEBM's energy only re-weights its generator's distribution
    energy_is_density: ClassVar[bool] = True

    def __init__(self, cfg: Any, data_shape: tuple[int, ...]):
        super().__init__()
        self.cfg = cfg
        self.data_shape = tuple(data_shape)
        self.optimizers: dict[str, torch.optim.Optimizer] = {}

    @abstractmethod
    def train_step(self, x: Tensor, step: int) -> dict[str, Tensor]:
        """One iteration of the paper's algorithm on a batch in model units."""

    @abstractmethod
    def energy(self, x: Tensor) -> Tensor:
        """Per-example energy (B,) of model-unit inputs; lower is more likely."""

    @abstractmethod
    def sample(self, n: int) -> Tensor:
        """n samples in model units, by the paper's own sampling procedure."""

    def update(
        self,
        name: str,
        loss: Tensor | Mapping[str, Tensor],
        clip: float | None = None,
        before_step: Callable[[], None] | None = None,
    ) -> dict[str, Tensor]:
        """Backward and step optimiser `name`: the seam for AMP and multi-process sync.

        Args:
            name: The optimiser, a key of `self.optimizers`.
            loss: The scalar to minimise, or named parts whose sum is minimised. For parts, the
                gradient of each is taken on its own and their sum is applied, which costs one
                backward pass over each part's graph, as one backward over the sum would where
                the parts' graphs are disjoint.
            clip: Clip the summed gradient to this L2 norm over the optimiser's parameters.
            before_step: Called after backward (and clipping), before the optimiser's step: where
                a method transforms its gradients in place (GEBM's soft clipping).

        Under torchrun the gradients are averaged over processes right after backward, so
        clipping, `before_step`, the step and the returned norms all see the gradient of the
        whole global batch, and every process takes the same step (`ebmlab.distributed`). Every
        process must therefore make the same calls, with the same part names, in one order.

        Returns:
            For parts: `grad_norm/<part>` (each part's gradient norm) and `grad_norm` (the
            summed gradient's norm, before clipping), as tensors. For a plain loss: {}.
        """
        optimizer = self.optimizers[name]
        optimizer.zero_grad(set_to_none=True)
        params = [p for group in optimizer.param_groups for p in group["params"]]
        norms = {}
        # backward passes run outside any autocast (train.amp), in the forward ops' dtypes
        with torch.autocast(self.device.type, enabled=False):
            if isinstance(loss, Mapping):
                norms = _backward_parts(loss, params)
            else:
                loss.backward()
                distributed.average_gradients(params)
        if clip is not None:
            nn.utils.clip_grad_norm_(params, clip)
        if before_step is not None:
            before_step()
        optimizer.step()
        return norms

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    def optimizer_state(self) -> dict[str, Any]:
        return {name: opt.state_dict() for name, opt in self.optimizers.items()}

    def load_optimizer_state(self, state: dict[str, Any]) -> None:
        if set(state) != set(self.optimizers):
            raise EbmlabError(
                f"checkpoint optimisers {sorted(state)} do not match {sorted(self.optimizers)}"
            )
        for name, opt in self.optimizers.items():
            opt.load_state_dict(state[name])


def _backward_parts(parts: Mapping[str, Tensor], params: list[Tensor]) -> dict[str, Tensor]:
    """Set each parameter's .grad to the sum of the parts' gradients (each averaged over
    processes); return their norms."""
    per_part = []
    for k, value in enumerate(parts.values()):
        grads = torch.autograd.grad(
            value, params, retain_graph=k < len(parts) - 1, allow_unused=True
        )
        per_part += [
            torch.zeros_like(p) if g is None else g for g, p in zip(grads, params, strict=True)
        ]
    per_part = distributed.average(per_part)  # every part in one collective
    totals = [torch.zeros_like(p) for p in params]
    norms = {}
    for k, part in enumerate(parts):
        grads = per_part[k * len(params) : (k + 1) * len(params)]
        norms[f"grad_norm/{part}"] = _norm(grads)
        totals = [t + g for t, g in zip(totals, grads, strict=True)]
    for param, total in zip(params, totals, strict=True):
        param.grad = total
    norms["grad_norm"] = _norm(totals)
    return norms


def _norm(tensors: list[Tensor]) -> Tensor:
    return torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(t) for t in tensors]))


def detached(**logs: Tensor) -> dict[str, Tensor]:
    """The logs a `train_step` returns: tensors cut from the graph, still on the device."""
    return {name: value.detach() for name, value in logs.items()}


def data_box(data_shape: tuple[int, ...]) -> tuple[float, float] | None:
    """Images live in [-1, 1] in model units, so chains are clamped there; vectors are free."""
    return (-1.0, 1.0) if len(data_shape) == 3 else None
