"""Generators z (B, z_dim) -> x (B, *shape). BatchNorm is allowed here (no MCMC runs on them)."""

from __future__ import annotations

import math

import torch.nn.functional as F
from torch import Tensor, nn

from ebmlab.errors import EbmlabError
from ebmlab.nets.layers import make_activation


class MLPGenerator(nn.Module):
    """`depth` hidden layers of `hidden` units, or the hidden widths listed in `widths`; each
    Linear, then BatchNorm (with `batch_norm`), then the activation; `tanh_output` bounds the
    output to (-1, 1), as images are in model units."""

    def __init__(
        self,
        z_dim: int,
        out_shape: tuple[int, ...],
        hidden: int = 128,
        depth: int = 3,
        batch_norm: bool = False,
        activation: str = "relu",
        widths: list[int] | None = None,
        tanh_output: bool = False,
    ):
        super().__init__()
        layers: list[nn.Module] = []
        width = z_dim
        for out in widths or [hidden] * depth:
            layers.append(nn.Linear(width, out))
            layers += [nn.BatchNorm1d(out)] if batch_norm else []
            layers.append(make_activation(activation))
            width = out
        layers.append(nn.Linear(width, math.prod(out_shape)))
        layers += [nn.Tanh()] if tanh_output else []
        self.net, self.out_shape = nn.Sequential(*layers), tuple(out_shape)

    def forward(self, z: Tensor) -> Tensor:
        return self.net(z).view(-1, *self.out_shape)


class DCGANGenerator(nn.Module):
    """Transposed convolutions doubling a 4x4 (or 7x7 for 28 px) seed up to the image size."""

    def __init__(
        self, z_dim: int, out_shape: tuple[int, int, int], width: int = 64, batch_norm: bool = True
    ):
        super().__init__()
        channels, height, width_px = out_shape
        size = max(height, width_px)
        base = 7 if size in (14, 28) else 4
        ups = grown_steps(size, base)
        widths = [width * 2 ** (ups - i) for i in range(ups + 1)]
        self.seed = nn.Linear(z_dim, widths[0] * base * base)
        layers: list[nn.Module] = []
        for c_in, c_out in zip(widths[:-1], widths[1:], strict=True):
            layers += [nn.BatchNorm2d(c_in)] if batch_norm else []
            layers += [nn.ReLU(), nn.ConvTranspose2d(c_in, c_out, 4, 2, 1)]
        layers += [nn.ReLU(), nn.Conv2d(widths[-1], channels, 3, 1, 1), nn.Tanh()]
        self.net, self.base, self.c0 = nn.Sequential(*layers), base, widths[0]
        self.out_size = (height, width_px)

    def forward(self, z: Tensor) -> Tensor:
        return fit_size(
            self.net(self.seed(z).view(-1, self.c0, self.base, self.base)), self.out_size
        )


def grown_steps(size: int, base: int) -> int:
    """Doublings of a base x base seed to the first size at or above `size` (at least one)."""
    return max(1, math.ceil(math.log2(size / base) - 1e-9))


def fit_size(images: Tensor, size: tuple[int, int]) -> Tensor:
    """Images drawn at a power-of-two size, resized to the data's (H, W) by area-weighted
    bilinear interpolation; a no-op at the same size. Convex weights keep tanh's [-1, 1]."""
    if tuple(images.shape[-2:]) == size:
        return images
    return F.interpolate(images, size=size, mode="bilinear", antialias=True, align_corners=False)


class UpBlock(nn.Module):
    """BN, ReLU, 2x nearest upsampling, 3x3 conv, BN, ReLU, 3x3 conv; shortcut: upsampling and
    a 1x1 conv (Bounds' supplement, Table 5)."""

    def __init__(self, c_in: int, c_out: int):
        super().__init__()
        self.body = nn.Sequential(
            nn.BatchNorm2d(c_in),
            nn.ReLU(),
            nn.Upsample(scale_factor=2),
            nn.Conv2d(c_in, c_out, 3, 1, 1),
            nn.BatchNorm2d(c_out),
            nn.ReLU(),
            nn.Conv2d(c_out, c_out, 3, 1, 1),
        )
        self.skip = nn.Sequential(nn.Upsample(scale_factor=2), nn.Conv2d(c_in, c_out, 1))

    def forward(self, x: Tensor) -> Tensor:
        return self.body(x) + self.skip(x)


class ResNetGenerator(nn.Module):
    """A linear map to a 4x4 seed of `width * 2^k` channels, k up-sampling residual blocks
    halving the channels to `width` at the image size, then BN, ReLU, a 3x3 conv and tanh (for
    64 px and width 64: 1024 channels at 4x4, Bounds' AnimeFace generator, Table 5)."""

    def __init__(self, z_dim: int, out_shape: tuple[int, int, int], width: int = 64):
        super().__init__()
        channels, height, width_px = out_shape
        ups = grown_steps(max(height, width_px), 4)
        widths = [width * 2 ** (ups - i) for i in range(ups + 1)]
        self.seed = nn.Linear(z_dim, widths[0] * 16)
        blocks = [UpBlock(c_in, c_out) for c_in, c_out in zip(widths[:-1], widths[1:], strict=True)]
        head = [nn.BatchNorm2d(widths[-1]), nn.ReLU(), nn.Conv2d(widths[-1], channels, 3, 1, 1)]
        self.net, self.c0 = nn.Sequential(*blocks, *head, nn.Tanh()), widths[0]
        self.out_size = (height, width_px)

    def forward(self, z: Tensor) -> Tensor:
        return fit_size(self.net(self.seed(z).view(-1, self.c0, 4, 4)), self.out_size)


def build_generator(z_dim: int, shape: tuple[int, ...], kind: str = "auto", **options):
    """ "mlp", "dcgan", "resnet", or "auto" (MLP for vectors, DCGAN for images)."""
    if kind == "auto":
        kind = "mlp" if len(shape) == 1 else "dcgan"
    if kind == "mlp":
        return MLPGenerator(z_dim, shape, **options)
    if kind == "dcgan" and len(shape) == 3:
        return DCGANGenerator(z_dim, shape, **options)
    if kind == "resnet" and len(shape) == 3:
        return ResNetGenerator(z_dim, shape, **options)
    raise EbmlabError(f"unknown generator kind {kind!r} for data of shape {shape}")
