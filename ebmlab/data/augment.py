"""Data augmentation for image chains, in torch, batched, with per-image random parameters.

Used as Langevin transitions (`Langevin(transition=Augment(...), every=K)`) and on replay-buffer
samples, as ICD does (Du et al. 2021, Sec. 2.3: augmentations as MCMC transitions that jump between
modes). Images are (N, C, H, W) in model units [-1, 1]; every op returns the same shape and range.
Each draw goes through an optional `torch.Generator`, so chains repeat under a seed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

# ITU-R BT.601 luma weights, as in the usual greyscale conversion
LUMA = (0.299, 0.587, 0.114)


def _uniform(n: int, low: float, high: float, like: Tensor, g: torch.Generator | None) -> Tensor:
    return torch.rand(n, generator=g, device=like.device, dtype=like.dtype) * (high - low) + low


def _chosen(n: int, p: float, like: Tensor, g: torch.Generator | None) -> Tensor:
    """A per-image Bernoulli(p) mask shaped (N, 1, 1, 1) for broadcasting."""
    return (torch.rand(n, generator=g, device=like.device) < p).view(-1, 1, 1, 1)


def _grey(x01: Tensor) -> Tensor:
    """Luma (N, 1, H, W) of [0, 1] images; greyscale images are their own luma."""
    if x01.shape[1] == 1:
        return x01
    weights = x01.new_tensor(LUMA).view(1, 3, 1, 1)
    return (x01 * weights).sum(1, keepdim=True)


def hflip(x: Tensor, p: float = 0.5, generator: torch.Generator | None = None) -> Tensor:
    """Mirror each image left-right with probability p."""
    return torch.where(_chosen(len(x), p, x, generator), x.flip(-1), x)


def grayscale(x: Tensor, p: float = 0.2, generator: torch.Generator | None = None) -> Tensor:
    """Replace each colour image by its luma (in every channel) with probability p."""
    x01 = (x + 1) / 2
    grey = _grey(x01).expand_as(x01)
    return torch.where(_chosen(len(x), p, x, generator), grey, x01) * 2 - 1


def _rotate_hue(x01: Tensor, turns: Tensor) -> Tensor:
    """Rotate the chroma of RGB images by `turns` of a full turn, in YIQ space (luma kept)."""
    to_yiq = x01.new_tensor(
        [[0.299, 0.587, 0.114], [0.596, -0.274, -0.322], [0.211, -0.523, 0.312]]
    )
    yiq = torch.einsum("ij,njhw->nihw", to_yiq, x01)
    angle = 2 * math.pi * turns.view(-1, 1, 1)
    cos, sin = torch.cos(angle), torch.sin(angle)
    i, q = yiq[:, 1], yiq[:, 2]
    yiq = torch.stack([yiq[:, 0], cos * i - sin * q, sin * i + cos * q], 1)
    return torch.einsum("ij,njhw->nihw", torch.linalg.inv(to_yiq), yiq)


def color_jitter(
    x: Tensor,
    brightness: float = 0.8,
    contrast: float = 0.8,
    saturation: float = 0.8,
    hue: float = 0.4,
    p: float = 0.8,
    generator: torch.Generator | None = None,
) -> Tensor:
    """With probability p per image: scale brightness, contrast and saturation by factors drawn
    from [1 - s, 1 + s], and rotate the hue by up to `hue` / 2 of a turn either way (the ranges
    of torchvision's ColorJitter). Saturation and hue apply to RGB images only."""
    n, g = len(x), generator
    x01 = (x + 1) / 2
    out = x01 * _uniform(n, 1 - brightness, 1 + brightness, x, g).view(-1, 1, 1, 1)
    mean = _grey(out).mean(dim=(1, 2, 3), keepdim=True)
    out = (out - mean) * _uniform(n, 1 - contrast, 1 + contrast, x, g).view(-1, 1, 1, 1) + mean
    if x.shape[1] == 3:
        grey = _grey(out)
        out = (out - grey) * _uniform(n, 1 - saturation, 1 + saturation, x, g).view(-1, 1, 1, 1)
        out = _rotate_hue(out + grey, _uniform(n, -hue / 2, hue / 2, x, g))
    out = out.clamp(0, 1)
    return torch.where(_chosen(n, p, x, g), out, x01) * 2 - 1


def random_resized_crop(
    x: Tensor,
    scale: tuple[float, float] = (0.08, 1.0),
    ratio: tuple[float, float] = (3 / 4, 4 / 3),
    generator: torch.Generator | None = None,
) -> Tensor:
    """Crop a random box of area share in `scale` and aspect ratio in `ratio` from each image,
    resized back to the full size (bilinear), in one batched `grid_sample`."""
    n, g = len(x), generator
    area = _uniform(n, *scale, x, g)
    log_ratio = _uniform(n, math.log(ratio[0]), math.log(ratio[1]), x, g)
    width = torch.sqrt(area * torch.exp(log_ratio)).clamp(max=1.0)
    height = torch.sqrt(area / torch.exp(log_ratio)).clamp(max=1.0)
    # box centre, in grid coordinates [-1, 1], such that the box stays inside the image
    cx = (_uniform(n, 0, 1, x, g) * 2 - 1) * (1 - width)
    cy = (_uniform(n, 0, 1, x, g) * 2 - 1) * (1 - height)
    zero = torch.zeros_like(width)
    theta = torch.stack([torch.stack([width, zero, cx], 1), torch.stack([zero, height, cy], 1)], 1)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)


def gaussian_blur(
    x: Tensor,
    kernel_size: int = 5,
    sigma: tuple[float, float] = (0.1, 2.0),
    p: float = 0.5,
    generator: torch.Generator | None = None,
) -> Tensor:
    """With probability p per image, a separable Gaussian blur with sigma drawn from `sigma`."""
    n, channels = x.shape[:2]
    sigmas = _uniform(n, *sigma, x, generator).repeat_interleave(channels)
    offsets = torch.arange(kernel_size, device=x.device, dtype=x.dtype) - (kernel_size - 1) / 2
    kernel = torch.exp(-offsets.pow(2) / (2 * sigmas.view(-1, 1).pow(2)))
    kernel = kernel / kernel.sum(1, keepdim=True)  # (N*C, k), each sums to 1
    pad = kernel_size // 2
    flat = x.reshape(1, n * channels, *x.shape[2:])
    flat = F.conv2d(
        F.pad(flat, (pad, pad, 0, 0), mode="reflect"),
        kernel.view(-1, 1, 1, kernel_size),
        groups=n * channels,
    )
    flat = F.conv2d(
        F.pad(flat, (0, 0, pad, pad), mode="reflect"),
        kernel.view(-1, 1, kernel_size, 1),
        groups=n * channels,
    )
    return torch.where(_chosen(n, p, x, generator), flat.view_as(x), x)


@dataclass(frozen=True)
class Augment:
    """The augmentation transition D(x) of ICD: crop, flip, colour jitter, greyscale, blur.

    Defaults are the ICD authors' CIFAR-10 recipe (RandomResizedCrop scale 0.08-1, h-flip,
    ColorJitter(0.8, 0.8, 0.8, 0.4) w.p. 0.8, RandomGrayscale 0.2); their CelebA recipe adds
    a 5-pixel Gaussian blur (`blur=True`) with colour strength 0.5. Any part can be switched off.
    """

    crop_scale: tuple[float, float] | None = (0.08, 1.0)
    flip: bool = True
    jitter: tuple[float, float, float, float] | None = (0.8, 0.8, 0.8, 0.4)
    jitter_p: float = 0.8
    grayscale_p: float = 0.2
    blur: bool = False
    generator: torch.Generator | None = None

    def __call__(self, x: Tensor) -> Tensor:
        g = self.generator
        if self.crop_scale is not None:
            x = random_resized_crop(x, self.crop_scale, generator=g)
        if self.flip:
            x = hflip(x, generator=g)
        if self.jitter is not None:
            x = color_jitter(x, *self.jitter, p=self.jitter_p, generator=g)
        if self.grayscale_p > 0 and x.shape[1] == 3:
            x = grayscale(x, self.grayscale_p, generator=g)
        if self.blur:
            x = gaussian_blur(x, generator=g)
        return x.clamp(-1, 1)
