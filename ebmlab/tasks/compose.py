"""Composing independently trained EBMs at sampling time: a product of experts.

ICD (Du et al. 2021, Sec. 3.4) trains one conditional EBM E(x | c_i) per concept and samples
images with all the concepts at once from the sum of their energies,

    E(x | c_1, ..., c_m) = sum_i w_i E(x | c_i),    p(x | c_1, ..., c_m) ∝ prod_i p(x | c_i)^w_i,

so the composition puts its mass where every model does. Train the conditional models with
`--data.classes=[...]` (one run per label or set of labels), then `ebmlab.compose([run_a, run_b])`
or `ebmlab compose runs/a runs/b`. Samples come from the first run's own sampling procedure
(`Method.sample_from`, e.g. ICD's Algorithm 2) applied to the summed energy, with every model's
parameters frozen. The runs must model data of the same shape; each scores inputs in its own
model units, so runs trained on differently scaled data compose in the user's units.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Sequence

import torch
from torch import Tensor

from ebmlab.errors import EbmlabError
from ebmlab.samplers import frozen_params


class Composition:
    """A weighted sum of trained models' energies, scored and sampled in the user's units.

    Args:
        models: Trained `ebmlab.Model`s (e.g. `run.model`) of data of one shape; the first
            one's method samples the composition and must have `sample_from`.
        weights: One weight per model (default all 1); the product's exponents.
    """

    def __init__(self, models: Sequence, weights: Sequence[float] | None = None):
        if len(models) < 1:
            raise EbmlabError("compose needs at least one trained model")
        weights = [1.0] * len(models) if weights is None else [float(w) for w in weights]
        if len(weights) != len(models):
            raise EbmlabError(f"{len(weights)} weights for {len(models)} models; give one each")
        if not all(math.isfinite(w) for w in weights):
            raise EbmlabError(f"weights must be finite numbers, got {weights}")
        shapes = {model.shape for model in models}
        if len(shapes) > 1:
            raise EbmlabError(f"the models' data shapes differ ({sorted(shapes)}); compose alike")
        if not callable(getattr(models[0].method, "sample_from", None)):
            raise EbmlabError(
                f"the first run ({type(models[0].method).__name__}) has no sampler to run on a "
                "composed energy; put an icd, cd or gebm run first"
            )
        self.models, self.weights = list(models), weights
        self.base = models[0]

    @property
    def shape(self) -> tuple[int, ...]:
        return self.base.shape

    def model_energy(self, x: Tensor) -> Tensor:
        """sum_i w_i E_i at points x given in the first model's model units, (B,)."""
        user = self.base.scaler.to_user(x)
        total = x.new_zeros(x.shape[0])
        for weight, model in zip(self.weights, self.models, strict=True):
            own = model.scaler.to_model(user.to(model.method.device))
            total = total + weight * model.method.energy(own).to(x.device)
        return total

    def energy(self, x: Tensor, batch_size: int = 4096) -> Tensor:
        """The composed energy of inputs in user units, as a CPU tensor (N,)."""
        x = self.base.to_model_units(x)
        with torch.no_grad():
            parts = [self.model_energy(chunk) for chunk in x.split(batch_size)]
        return torch.cat(parts).cpu()

    def sample_model_units(self, n: int) -> Tensor:
        """n samples of the composition in the first model's model units."""
        with contextlib.ExitStack() as stack:
            for model in self.models:
                stack.enter_context(frozen_params(model.method))
            return self.base.method.sample_from(self.model_energy, n).detach()

    def sample(self, n: int, seed: int | None = None) -> Tensor:
        """n samples of the composition in user units, as a CPU tensor."""
        if seed is not None:
            torch.manual_seed(seed)
        return self.base.scaler.to_user(self.sample_model_units(n)).cpu()
