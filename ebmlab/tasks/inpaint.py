"""Inpainting: the supplement's masks of Dual-MCMC teaching, and scores of a model's recoveries.

Masks are 1 where a pixel is observed and 0 where it is to be recovered, shaped (N, 1, H, W).
The supplement's masks on 64x64 images: M20, M30, M40 hide a centre square of side 20, 30, 40
pixels (about 10%, 22% and 39% of the image); R20, R30, R40 hide "multiple blocks that cover
20%, 30%, 40% pixels". `standard_masks` scales the squares to the image's side, so the hidden
fractions stay the same (on 28x28 MNIST: sides 9, 13 and 18 pixels). The supplement gives no
block size for the R masks: here they are squares of side 8 px on 64 px images (scaled to the
image, 4 px on 28), dropped at random places, overlaps allowed, until exactly the fraction is
hidden (the last block only in part).
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


#: the side of the R masks' blocks on the reference side
REFERENCE_BLOCK = 8


def block_mask(
    n: int,
    size: int,
    fraction: float,
    block: int,
    seed: int = 0,
    device: torch.device | None = None,
) -> Tensor:
    """(n, 1, size, size): random `block` x `block` squares hidden in each image until exactly
    round(fraction * size^2) pixels are, seeded."""
    generator = torch.Generator().manual_seed(seed)
    target = round(fraction * size * size)
    mask = torch.ones(n, size, size)
    offsets = torch.arange(block)
    for image in mask:
        while (hidden := int((image == 0).sum())) < target:
            top, left = torch.randint(0, size - block + 1, (2,), generator=generator).tolist()
            rows, cols = torch.meshgrid(top + offsets, left + offsets, indexing="ij")
            rows, cols = rows.flatten(), cols.flatten()
            free = image[rows, cols] == 1
            needed = target - hidden  # the whole block, or what reaches the target
            image[rows[free][:needed], cols[free][:needed]] = 0
    return mask.unsqueeze(1).to(device)


def standard_masks(n: int, size: int, seed: int = 0) -> dict[str, Tensor]:
    """M20, M30, M40 scaled from 64 px to `size`, and R20, R30, R40 of blocks scaled alike."""
    masks = {f"M{k}": centre_mask(n, size, round(size * k / REFERENCE_SIDE)) for k in (20, 30, 40)}
    block = max(1, round(size * REFERENCE_BLOCK / REFERENCE_SIDE))
    masks |= {f"R{k}": block_mask(n, size, k / 100, block, seed + k) for k in (20, 30, 40)}
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
