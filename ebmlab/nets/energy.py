"""Energy networks: x (B, ...) -> E(x) (B,). No BatchNorm: sampling would corrupt its statistics."""

from __future__ import annotations

import inspect
import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ebmlab.errors import EbmlabError
from ebmlab.nets.layers import apply_spectral_norm, make_activation


class MLPEnergy(nn.Module):
    """A fully connected energy on flattened inputs: `depth` hidden layers of `hidden` units, or
    the hidden widths listed in `widths` (e.g. Bounds' MNIST net, [2000, 1000, 500, 250, 250])."""

    def __init__(
        self,
        in_dim: int,
        hidden: int = 128,
        depth: int = 3,
        activation: str = "swish",
        spectral_norm: bool = False,
        widths: list[int] | None = None,
    ):
        super().__init__()
        layers: list[nn.Module] = []
        width = in_dim
        for out in widths or [hidden] * depth:
            layers += [nn.Linear(width, out), make_activation(activation)]
            width = out
        layers.append(nn.Linear(width, 1))
        self.net = nn.Sequential(*layers)
        if spectral_norm:
            apply_spectral_norm(self)

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x.flatten(1)).squeeze(-1)


class ConvEnergy(nn.Module):
    """A small strided conv energy for 8x8 to 32x32 images (size-agnostic by adaptive pooling)."""

    def __init__(
        self,
        in_channels: int,
        width: int = 32,
        activation: str = "swish",
        spectral_norm: bool = False,
    ):
        super().__init__()
        act = lambda: make_activation(activation)  # noqa: E731
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, width, 3, 1, 1),
            act(),
            nn.Conv2d(width, 2 * width, 4, 2, 1),
            act(),
            nn.Conv2d(2 * width, 4 * width, 4, 2, 1),
            act(),
            nn.AdaptiveAvgPool2d(1),
        )
        self.head = nn.Linear(4 * width, 1)
        if spectral_norm:
            apply_spectral_norm(self)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.features(x).flatten(1)).squeeze(-1)


class DCGANEnergy(nn.Module):
    """The DCGAN-style conv energy of Bounds' CIFAR-10 (supplement Table 3): 3x3 stride-1 and
    4x4 stride-2 convolutions in turn, doubling the channels at each halving (64 to 512 for
    `width=64`), no normalisation, then a linear map of the flattened features."""

    def __init__(
        self,
        in_channels: int,
        width: int = 64,
        activation: str = "leaky_relu",
        spectral_norm: bool = False,
        image_size: int = 32,
    ):
        super().__init__()
        layers: list[nn.Module] = [
            nn.Conv2d(in_channels, width, 3, 1, 1),
            make_activation(activation),
        ]
        channels, size = width, image_size
        for _ in range(3):
            layers += [nn.Conv2d(channels, channels, 4, 2, 1), make_activation(activation)]
            layers += [nn.Conv2d(channels, 2 * channels, 3, 1, 1), make_activation(activation)]
            channels, size = 2 * channels, size // 2
        self.features = nn.Sequential(*layers, nn.Flatten())
        self.head = nn.Linear(channels * size * size, 1)
        if spectral_norm:
            apply_spectral_norm(self)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.features(x)).squeeze(-1)


class SelfAttention(nn.Module):
    """Single-head self-attention over spatial positions, with a learned residual gate."""

    def __init__(self, channels: int):
        super().__init__()
        self.qkv = nn.Conv2d(channels, 3 * channels, 1)
        self.gate = nn.Parameter(torch.zeros(()))

    def forward(self, x: Tensor) -> Tensor:
        b, c, h, w = x.shape
        q, k, v = self.qkv(x).flatten(2).chunk(3, dim=1)
        attn = torch.softmax(q.transpose(1, 2) @ k / math.sqrt(c), dim=-1)
        return x + self.gate * (v @ attn.transpose(1, 2)).view(b, c, h, w)


class ResBlock(nn.Module):
    def __init__(self, c_in: int, c_out: int, downsample: bool, norm: str | None, activation: str):
        super().__init__()
        self.body = nn.Sequential(
            _norm_layer(norm, c_in),
            make_activation(activation),
            nn.Conv2d(c_in, c_out, 3, 1, 1),
            _norm_layer(norm, c_out),
            make_activation(activation),
            nn.Conv2d(c_out, c_out, 3, 1, 1),
        )
        self.skip = nn.Conv2d(c_in, c_out, 1) if c_in != c_out else nn.Identity()
        self.pool = nn.AvgPool2d(2) if downsample else nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        return self.pool(self.body(x) + self.skip(x))


def _norm_layer(norm: str | None, channels: int) -> nn.Module:
    """GroupNorm with 32 groups where the width allows it (ICD uses GroupNorm(32)), or none."""
    if norm is None:
        return nn.Identity()
    if norm != "group":
        raise EbmlabError(f"unknown norm {norm!r}; energy nets take 'group' or none (no BatchNorm)")
    return nn.GroupNorm(math.gcd(32, channels), channels)


class ResNetEnergy(nn.Module):
    """Residual energy: a 3x3 conv, then stages of `blocks_per_stage` blocks whose last block
    halves the resolution, optional GroupNorm and self-attention after stage `attention_stage`,
    global sum or mean pooling, and a linear head.

    ICD's CIFAR-10 net (Du et al. 2021, Table 5) is widths (64, 64, 128, 256), 2 blocks per
    stage, group norm, Swish, self-attention after stage 1, mean pooling. `skip_down=k` removes
    the first k down-sampling blocks: ICD's half- and quarter-resolution nets (App. B.1).
    """

    def __init__(
        self,
        in_channels: int,
        widths: tuple[int, ...] = (64, 128, 256),
        blocks_per_stage: int = 1,
        spectral_norm: bool = False,
        norm: str | None = None,
        activation: str = "swish",
        self_attention: bool = False,
        attention_stage: int = 0,
        pool: str = "sum",
        skip_down: int = 0,
    ):
        super().__init__()
        if pool not in ("sum", "mean"):
            raise EbmlabError(f"pool must be 'sum' or 'mean', got {pool!r}")
        self.pool = pool
        layers: list[nn.Module] = [nn.Conv2d(in_channels, widths[0], 3, 1, 1)]
        c_in, skipped = widths[0], 0
        for stage, width in enumerate(widths):
            for block in range(blocks_per_stage):
                down = block == blocks_per_stage - 1
                if down and skipped < skip_down:
                    skipped += 1
                    continue
                layers.append(ResBlock(c_in, width, down, norm, activation))
                c_in = width
            if self_attention and stage == attention_stage:
                layers.append(SelfAttention(c_in))
        layers.append(make_activation(activation))
        self.features = nn.Sequential(*layers)
        self.head = nn.Linear(c_in, 1)
        if spectral_norm:
            apply_spectral_norm(self)

    def forward(self, x: Tensor) -> Tensor:
        features = self.features(x)
        pooled = features.mean(dim=(2, 3)) if self.pool == "mean" else features.sum(dim=(2, 3))
        return self.head(pooled).squeeze(-1)


class MultiscaleEnergy(nn.Module):
    """The sum of energies of the image at several resolutions (ICD, Du et al. 2021, Sec. 2.4):
    E(x) = sum_f E_f(avgpool_f(x)) for downsampling factors f, e.g. (1, 2, 4) = full, half and
    quarter resolution, each with its own net of the same kind."""

    def __init__(self, factors: tuple[int, ...], nets: list[nn.Module]):
        super().__init__()
        self.factors = tuple(factors)
        self.nets = nn.ModuleList(nets)

    def forward(self, x: Tensor) -> Tensor:
        total = x.new_zeros(x.shape[0])
        for factor, net in zip(self.factors, self.nets, strict=True):
            total = total + net(F.avg_pool2d(x, factor) if factor > 1 else x)
        return total


ENERGY_NETS = {"mlp": MLPEnergy, "conv": ConvEnergy, "resnet": ResNetEnergy, "dcgan": DCGANEnergy}


def build_energy(
    shape: tuple[int, ...],
    kind: str = "auto",
    multiscale: tuple[int, ...] | None = None,
    **options,
) -> nn.Module:
    """The energy net for data of `shape`: "mlp", "conv", "resnet", "dcgan" (square images of a
    multiple of 8 px), or "auto" (MLP for vectors, conv up to 28 px, so MNIST trains on a CPU,
    ResNet above). `options` go to the chosen
    class's constructor. `multiscale=(1, 2, 4)` sums one such net per downsampling factor
    (images only); a ResNet at factor 2^k drops its first k down-sampling blocks, as ICD's
    are (App. B.1)."""
    if kind == "auto":
        kind = "mlp" if len(shape) == 1 else "conv" if shape[-1] <= 28 else "resnet"
    if kind not in ENERGY_NETS:
        raise EbmlabError(
            f"unknown energy_net kind {kind!r}; choose auto, {', '.join(ENERGY_NETS)}"
        )
    if kind != "mlp" and len(shape) != 3:
        raise EbmlabError(f"energy_net kind {kind} needs image data (C, H, W), got shape {shape}")
    if multiscale:
        return _multiscale(shape, kind, tuple(multiscale), options)
    cls = ENERGY_NETS[kind]
    first = math.prod(shape) if kind == "mlp" else shape[0]
    if kind == "dcgan":
        if shape[-1] % 8 or shape[-1] != shape[-2]:
            raise EbmlabError(f"energy_net dcgan needs square images of 8k px, got {shape}")
        options = {"image_size": shape[-1], **options}
    try:
        return cls(first, **options)
    except TypeError as err:
        valid = list(inspect.signature(cls).parameters)[1:]
        raise EbmlabError(f"energy_net {kind}: {err}; its options are {', '.join(valid)}") from None


def _multiscale(shape: tuple[int, ...], kind: str, factors: tuple[int, ...], options) -> nn.Module:
    powers_of_two = all(f > 0 and f & (f - 1) == 0 for f in factors)
    if len(shape) != 3 or not powers_of_two or any(shape[1] % f or shape[2] % f for f in factors):
        raise EbmlabError(
            f"multiscale {factors} needs powers of two that divide the images' height and "
            f"width, got shape {shape}"
        )
    channels, height, width = shape
    nets = []
    for factor in factors:
        extra = {"skip_down": factor.bit_length() - 1} if kind == "resnet" else {}
        nets.append(
            build_energy((channels, height // factor, width // factor), kind, **options, **extra)
        )
    return MultiscaleEnergy(factors, nets)
