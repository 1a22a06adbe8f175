"""Per-image reconstruction scores (RMSE, PSNR, SSIM) for images in [0, 1], shaped (N, C, H, W).

Definitions follow shared practice so numbers compare across papers: RMSE is the root of the mean
squared error of one image; PSNR = 20 log10(1 / RMSE) per image (infinite for a perfect match) and
is averaged over images, not computed from the mean error; SSIM is scikit-image's with Gaussian
weights (sigma 1.5), population covariances and data range 1.

SSIM on small images: scikit-image's Gaussian window spans 11 pixels and it refuses images
smaller than that. For such images (8 x 8 digits, say) the window size passed is the largest odd
number that fits; with Gaussian weights it only sets how wide a border is left out of the mean,
while the Gaussian filter itself (sigma 1.5, reflected edges) is unchanged.
"""

from __future__ import annotations

import numpy as np
from skimage.metrics import structural_similarity
from torch import Tensor

from ebmlab.errors import EbmlabError
from ebmlab.metrics._common import to_numpy

ImageBatch = Tensor | np.ndarray
SSIM_SIGMA = 1.5
#: scikit-image's window for sigma 1.5: 2 * int(3.5 * sigma + 0.5) + 1
SSIM_WINDOW = 11
#: slack for values that left [0, 1] through float rounding only
RANGE_TOLERANCE = 1e-6


def rmse(x: ImageBatch, y: ImageBatch, mask: ImageBatch | None = None) -> np.ndarray:
    """Root mean squared error per image.

    Args:
        x: Images (N, C, H, W) in [0, 1].
        y: Reference images, same shape.
        mask: Optional (N, 1, H, W) bool or 0/1 float; only pixels where it is nonzero count
            (all channels of a selected pixel).

    Returns:
        (N,) float64 array.

    Raises:
        EbmlabError: On mismatched shapes, values outside [0, 1], or an image whose mask
            selects no pixel.
    """
    x, y = _image_pair(x, y)
    squared = (x - y) ** 2
    if mask is None:
        return np.sqrt(squared.mean(axis=(1, 2, 3)))
    weights = np.broadcast_to(_mask_array(mask, x.shape), x.shape)
    return np.sqrt((squared * weights).sum(axis=(1, 2, 3)) / weights.sum(axis=(1, 2, 3)))


def psnr(x: ImageBatch, y: ImageBatch, mask: ImageBatch | None = None) -> np.ndarray:
    """Peak signal-to-noise ratio 20 log10(1 / RMSE) per image, in dB (inf where RMSE is 0).

    Args:
        x: Images (N, C, H, W) in [0, 1].
        y: Reference images, same shape.
        mask: Optional (N, 1, H, W) region to score, as in `rmse`.

    Returns:
        (N,) float64 array.
    """
    errors = rmse(x, y, mask)
    with np.errstate(divide="ignore"):
        return -20.0 * np.log10(errors)


def ssim(x: ImageBatch, y: ImageBatch, mask: ImageBatch | None = None) -> np.ndarray:
    """Structural similarity per image (scikit-image, Gaussian weights, sigma 1.5, range 1).

    Args:
        x: Images (N, C, H, W) in [0, 1].
        y: Reference images, same shape.
        mask: Optional (N, 1, H, W) region: the mean of the SSIM map over the selected pixels
            and all channels, instead of over the image minus its border.

    Returns:
        (N,) float64 array; 1 for identical images.
    """
    x, y = _image_pair(x, y)
    weights = None if mask is None else _mask_array(mask, x.shape)
    scores = np.empty(len(x))
    for i, (image, reference) in enumerate(zip(x, y, strict=True)):
        if weights is None:
            scores[i] = _ssim_one(image, reference, full=False)
        else:
            ssim_map = np.broadcast_to(_ssim_one(image, reference, full=True), image.shape)
            selected = np.broadcast_to(weights[i], image.shape)
            scores[i] = (ssim_map * selected).sum() / selected.sum()
    return scores


def image_scores(x: ImageBatch, y: ImageBatch, mask: ImageBatch | None = None) -> dict[str, float]:
    """Means over images of the per-image scores.

    Args:
        x: Images (N, C, H, W) in [0, 1].
        y: Reference images, same shape.
        mask: Optional (N, 1, H, W) region to score.

    Returns:
        `rmse`, `psnr` (dB; inf if any image matches exactly) and `ssim`, each averaged over
        images.
    """
    return {
        "rmse": float(rmse(x, y, mask).mean()),
        "psnr": float(psnr(x, y, mask).mean()),
        "ssim": float(ssim(x, y, mask).mean()),
    }


def _image_pair(x: ImageBatch, y: ImageBatch) -> tuple[np.ndarray, np.ndarray]:
    """Both batches as float64 arrays after checking shape and range."""
    x, y = to_numpy(x), to_numpy(y)
    if x.ndim != 4 or x.shape != y.shape:
        raise EbmlabError(
            f"image scores need two (N, C, H, W) batches of one shape, got {x.shape} and {y.shape}"
        )
    for batch in (x, y):
        if batch.size and (batch.min() < -RANGE_TOLERANCE or batch.max() > 1 + RANGE_TOLERANCE):
            raise EbmlabError(
                "image scores need values in [0, 1]; map model units with (x + 1) / 2 and clamp"
            )
    return x, y


def _mask_array(mask: ImageBatch, shape: tuple[int, ...]) -> np.ndarray:
    """The mask as float64 (N, 1, H, W) weights, checked to select something in every image."""
    weights = (to_numpy(mask) != 0).astype(np.float64)
    n, _, height, width = shape
    if weights.shape != (n, 1, height, width):
        raise EbmlabError(f"mask must have shape {(n, 1, height, width)}, got {weights.shape}")
    empty = np.flatnonzero(weights.sum(axis=(1, 2, 3)) == 0)
    if empty.size:
        raise EbmlabError(f"mask selects no pixel in image(s) {empty[:5].tolist()}")
    return weights


def _ssim_one(image: np.ndarray, reference: np.ndarray, *, full: bool) -> float | np.ndarray:
    """scikit-image SSIM of one (C, H, W) pair: the mean, or the (C, H, W) map if `full`."""
    channels, height, width = image.shape
    window = min(SSIM_WINDOW, _largest_odd(min(height, width)))
    result = structural_similarity(
        image if channels > 1 else image[0],
        reference if channels > 1 else reference[0],
        win_size=window,
        gaussian_weights=True,
        sigma=SSIM_SIGMA,
        use_sample_covariance=False,
        data_range=1.0,
        channel_axis=0 if channels > 1 else None,
        full=full,
    )
    if not full:
        return float(result)
    return np.reshape(result[1], image.shape)


def _largest_odd(size: int) -> int:
    """The largest odd number not above `size` (at least 1)."""
    return max(1, size if size % 2 else size - 1)
