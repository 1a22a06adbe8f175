"""Inpainting: the supplement's masks of Dual-MCMC teaching, and scores of a model's recoveries.

Masks are 1 where a pixel is observed and 0 where it is to be recovered, shaped (N, 1, H, W).
The supplement's masks on 64x64 images: M20, M30, M40 hide a centre square of side 20, 30, 40
pixels (about 10%, 22% and 39% of the image), R20, R30, R40 hide 20%, 30%, 40% of the pixels.
`standard_masks` scales the squares to the image's side, so the hidden fractions stay the same
(on 28x28 MNIST: sides 9, 13 and 18 pixels), and hides random pixels for the R masks.
"""

from __future__ import annotations

import torch
from torch import Tensor

from ebmlab.metrics import image_scores

#: the supplement's reference image side, on which M20/M30/M40 are defined
REFERENCE_SIDE = 64


def centre_mask(n: int, size: int, side: int, device: torch.device | None = None) -> Tensor:
    """(n, 1, size, size) ones with a centre square of `side` pixels set to 0."""
    mask = torch.ones(n, 1, size, size, device=device)
    start = (size - side) // 2
    mask[:, :, start : start + side, start : start + side] = 0
    return mask


def random_mask(
    n: int, size: int, fraction: float, seed: int = 0, device: torch.device | None = None
) -> Tensor:
    """(n, 1, size, size): each pixel hidden with probability `fraction`, seeded."""
    generator = torch.Generator().manual_seed(seed)
    return (torch.rand(n, 1, size, size, generator=generator) >= fraction).float().to(device)


def standard_masks(n: int, size: int, seed: int = 0) -> dict[str, Tensor]:
    """M20, M30, M40 scaled from 64 px to `size`, and R20, R30, R40."""
    masks = {f"M{k}": centre_mask(n, size, round(size * k / REFERENCE_SIDE)) for k in (20, 30, 40)}
    masks |= {f"R{k}": random_mask(n, size, k / 100, seed + k) for k in (20, 30, 40)}
    return masks


def inpainting_scores(model, x: Tensor, masks: dict[str, Tensor]) -> dict[str, dict[str, dict]]:
    """{mask: {stage: {"psnr", "ssim", "rmse"}}} for `model.inpaint(x, mask)`'s recoveries,
    scored on the whole image in [0, 1] against x (model units in [-1, 1])."""
    reference = _unit(x)
    table = {}
    for name, mask in masks.items():
        recoveries = model.inpaint(x, mask.to(x.device))
        table[name] = {
            stage: image_scores(_unit(image), reference) for stage, image in recoveries.items()
        }
    return table


def _unit(images: Tensor) -> Tensor:
    return ((images.detach().float().cpu() + 1) / 2).clamp(0, 1)
