"""The map between the user's units and the model's units, stored with every run.

Models see images in [-1, 1] and tabular columns standardised; the user sees neither. A `Scaler`
is an affine map per feature, kept as module buffers so it travels in checkpoints and `.to()`.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn


class Scaler(nn.Module):
    """model = (user - shift) / scale, elementwise, broadcast over the batch dimension."""

    def __init__(self, shift: Tensor | float = 0.0, scale: Tensor | float = 1.0):
        super().__init__()
        self.register_buffer("shift", torch.as_tensor(shift, dtype=torch.float32))
        self.register_buffer("scale", torch.as_tensor(scale, dtype=torch.float32))

    @classmethod
    def identity(cls) -> Scaler:
        return cls(0.0, 1.0)

    @classmethod
    def to_unit_box(cls, low: float, high: float) -> Scaler:
        """Map the range [low, high] (e.g. pixels 0..255) onto [-1, 1]."""
        return cls((high + low) / 2.0, (high - low) / 2.0)

    @classmethod
    def standardise(cls, x: Tensor) -> Scaler:
        """Per-column mean 0 and standard deviation 1, computed in float64; a column whose
        values are all equal keeps scale 1 (its float rounding is no spread to divide by)."""
        x = x.double()
        constant = (x == x[:1]).all(dim=0)
        std = torch.where(constant, torch.ones_like(x[0]), x.std(dim=0))
        return cls(x.mean(dim=0), std)

    def to_model(self, x: Tensor) -> Tensor:
        return (x - self.shift) / self.scale

    def to_user(self, x: Tensor) -> Tensor:
        return x * self.scale + self.shift
