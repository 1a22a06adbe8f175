"""Gaussian encoders q(z | x) = N(mu(x), diag exp(log_var(x))), returning (mu, log_var).

BatchNorm between layers is an option (`batch_norm`): no MCMC runs on an encoder's input, and
BiDVL's variational models carry it "for stable training" (Kan et al., Sec. 5).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from ebmlab.errors import EbmlabError


class _GaussianHead(nn.Module):
    def __init__(self, width: int, z_dim: int, bounded_log_var: bool):
        super().__init__()
        self.mu, self.log_var = nn.Linear(width, z_dim), nn.Linear(width, z_dim)
        self.bounded = bounded_log_var

    def forward(self, h: Tensor) -> tuple[Tensor, Tensor]:
        raw = self.log_var(h)
        # -softplus keeps the variance in (0, 1), as BiDVL's encoder does
        return self.mu(h), -F.softplus(raw) if self.bounded else raw


class MLPEncoder(nn.Module):
    def __init__(
        self,
        in_shape: tuple[int, ...],
        z_dim: int,
        hidden: int = 128,
        depth: int = 3,
        bounded_log_var: bool = False,
        batch_norm: bool = False,
    ):
        super().__init__()
        layers: list[nn.Module] = []
        width = math.prod(in_shape)
        for _ in range(depth):
            layers.append(nn.Linear(width, hidden))
            layers += [nn.BatchNorm1d(hidden)] if batch_norm else []
            layers.append(nn.SiLU())
            width = hidden
        self.body, self.head = nn.Sequential(*layers), _GaussianHead(width, z_dim, bounded_log_var)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        return self.head(self.body(x.flatten(1)))


class ConvEncoder(nn.Module):
    def __init__(
        self,
        in_shape: tuple[int, int, int],
        z_dim: int,
        width: int = 32,
        bounded_log_var: bool = False,
        batch_norm: bool = False,
    ):
        super().__init__()
        widths = [in_shape[0], width, 2 * width, 4 * width]
        layers: list[nn.Module] = []
        for k, (c_in, c_out) in enumerate(zip(widths[:-1], widths[1:], strict=True)):
            layers.append(nn.Conv2d(c_in, c_out, *((3, 1, 1) if k == 2 else (4, 2, 1))))
            layers += [nn.BatchNorm2d(c_out)] if batch_norm and k > 0 else []
            layers.append(nn.LeakyReLU(0.2))
        self.body = nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.head = _GaussianHead(4 * width, z_dim, bounded_log_var)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        return self.head(self.body(x))


def reparameterise(mu: Tensor, log_var: Tensor, generator: torch.Generator | None = None) -> Tensor:
    """z = mu + exp(log_var / 2) * eps, differentiable in mu and log_var."""
    eps = torch.randn(mu.shape, generator=generator, device=mu.device, dtype=mu.dtype)
    return mu + torch.exp(0.5 * log_var) * eps


def build_encoder(shape: tuple[int, ...], z_dim: int, kind: str = "auto", **options):
    """ "mlp", "conv", or "auto" (MLP for vectors, conv for images)."""
    if kind == "auto":
        kind = "mlp" if len(shape) == 1 else "conv"
    if kind == "mlp":
        return MLPEncoder(shape, z_dim, **options)
    if kind == "conv" and len(shape) == 3:
        return ConvEncoder(shape, z_dim, **options)
    raise EbmlabError(f"unknown encoder kind {kind!r} for data of shape {shape}")
