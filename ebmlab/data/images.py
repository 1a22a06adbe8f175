"""Image data: sklearn's bundled digits, the fetched MNIST family, arrays and image folders.

All loaders return channels-first arrays (N, C, H, W) and the value range to map onto [-1, 1].
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ebmlab.errors import EbmlabError

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg"}
GREY_MODES = {"1", "L", "LA"}  # alpha is dropped: energies model the pixels only
DEEP_GREY_MODES = {"I", "I;16", "I;16B", "F"}


def digits() -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's 1,797 8x8 digits, values 0..16, with labels."""
    from sklearn.datasets import load_digits

    bunch = load_digits()
    return bunch.images[:, None].astype(np.float32), bunch.target.astype(np.int64)


def channels_first(x: np.ndarray, source: str) -> np.ndarray:
    """(N, H, W) -> (N, 1, H, W); (N, H, W, C) or (N, C, H, W) with C in {1, 3} -> (N, C, H, W)."""
    if x.ndim == 3:
        return x[:, None]
    if x.ndim == 4 and x.shape[-1] in (1, 3):
        return x.transpose(0, 3, 1, 2)
    if x.ndim == 4 and x.shape[1] in (1, 3):
        return x
    raise EbmlabError(
        f"{source}: images must be N x H x W or N x H x W x C with C = 1 or 3, got {x.shape}"
    )


def value_range(x: np.ndarray) -> tuple[float, float]:
    """The range that maps onto [-1, 1]: 0..255 for uint8, else the data's own min and max."""
    if x.dtype == np.uint8:
        return 0.0, 255.0
    low, high = float(x.min()), float(x.max())
    return (low, high) if high > low else (low, low + 1.0)


def _read_image(path: Path) -> np.ndarray:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as img:
            if img.mode in DEEP_GREY_MODES:  # keep the bit depth; the range comes from the data
                return np.asarray(img)
            return np.asarray(img.convert("L" if img.mode in GREY_MODES else "RGB"))
    except (UnidentifiedImageError, OSError) as err:
        raise EbmlabError(f"cannot read image {path}: {err}") from None


def image_folder(root: Path) -> tuple[np.ndarray, np.ndarray | None]:
    """All PNG/JPEG files under `root`; one subfolder per class gives labels (sorted names)."""
    files = sorted(p for p in root.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise EbmlabError(f"{root} holds no .png/.jpg/.jpeg images")
    images = [_read_image(p) for p in files]
    if any(img.ndim == 3 for img in images):  # any colour image: all become RGB
        images = [np.repeat(img[..., None], 3, -1) if img.ndim == 2 else img for img in images]
    first = images[0].shape
    for path, img in zip(files, images, strict=True):
        if img.shape != first:
            raise EbmlabError(
                f"images in {root} differ in size: {path.name} is {img.shape}, "
                f"{files[0].name} is {first}; resize them to one size"
            )
    classes = sorted({p.parent for p in files})
    labels = None
    if len(classes) > 1 and all(p.parent.parent == root for p in files):
        index = {c: i for i, c in enumerate(classes)}
        labels = np.array([index[p.parent] for p in files], dtype=np.int64)
    return channels_first(np.stack(images), str(root)), labels
