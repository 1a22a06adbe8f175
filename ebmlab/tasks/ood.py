"""Out-of-distribution sets for scoring a model by energy, each shaped like its reference data.

An OOD set is a name. Derived sets are made from the reference dataset itself:

| name       | data kinds | what                                                            |
|------------|------------|-----------------------------------------------------------------|
| `noise`    | all        | uniform noise: pixels in [-1, 1], 2D points on the density's    |
|            |            | box, table columns between their training min and max           |
| `flipped`  | images     | the test images upside down                                     |
| `inverted` | images     | the test images' negatives (255 - pixel)                        |
| `textures` | images     | crops of scikit-image's brick, grass and gravel photographs,    |
|            |            | resized to the images' size, grey (repeated for colour data)    |
| `off-data` | 2D         | uniform points on the box where the data density is below its   |
|            |            | 1st percentile over the test points                             |

Any other name is loaded as a dataset (`fashion-mnist`, `animal-mnist`, a .npy file, a folder
of images, ...) and its test split is used. Every set has as many items as the reference's test
split, the in-distribution side (fewer if the set is smaller), and is drawn under a fixed seed.
`standard_ood_sets` lists the sets that suit a dataset: `ebmlab eval RUN --ood standard`.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

from ebmlab.data import Dataset, load_dataset
from ebmlab.data.fetch import cached_path
from ebmlab.errors import EbmlabError

TEXTURES = ("brick", "grass", "gravel")
OFF_DATA_QUANTILE = 0.01
#: fetchable 28x28 greyscale sets, OOD for one another
GREY28 = ("mnist", "fashion-mnist", "animal-mnist")


def ood_set(name: str, reference: Dataset, seed: int = 0) -> Tensor:
    """The OOD set `name` in the reference's model units and shape (see the module table).

    Raises:
        EbmlabError: If a derived set does not fit the data kind, or a loaded set's examples
            have another shape than the reference's.
    """
    generator = torch.Generator().manual_seed(seed)
    n = len(reference.test)
    if name in DERIVED:
        kinds, make = DERIVED[name]
        if reference.kind not in kinds:
            raise EbmlabError(
                f"OOD set {name!r} is made for {' and '.join(kinds)} data, not {reference.kind}"
            )
        return make(reference, n, generator)
    other = load_dataset(name)
    if other.shape != reference.shape:
        raise EbmlabError(
            f"OOD set {name} has examples of shape {other.shape}, "
            f"the model's data {reference.shape}"
        )
    return other.test[:n]


def standard_ood_sets(reference: Dataset) -> list[str]:
    """The derived sets that fit the data, and for 28x28 greyscale images the other fetched
    sets of that shape (those already in the cache)."""
    names = [name for name, (kinds, _) in DERIVED.items() if reference.kind in kinds]
    if reference.kind == "image" and reference.shape == (1, 28, 28):
        names += [n for n in GREY28 if n != reference.name and cached_path(n).is_file()]
    return names


def _noise(reference: Dataset, n: int, generator: torch.Generator) -> Tensor:
    if reference.kind == "image":
        low, high = torch.tensor(-1.0), torch.tensor(1.0)
    elif reference.kind == "toy2d":
        low, high = (torch.tensor(b) for b in reference.bounds)
    else:
        low, high = reference.train.min(dim=0).values, reference.train.max(dim=0).values
    uniform = torch.rand((n, *reference.shape), generator=generator)
    return low + (high - low) * uniform


def _flipped(reference: Dataset, n: int, generator: torch.Generator) -> Tensor:
    return reference.test[:n].flip(-2)


def _inverted(reference: Dataset, n: int, generator: torch.Generator) -> Tensor:
    return -reference.test[:n]


def _textures(reference: Dataset, n: int, generator: torch.Generator) -> Tensor:
    """Crops of random side (1 to 4 image sides) from the three photographs, area-resized."""
    from skimage import data as photographs

    channels, height, width = reference.shape
    sources = [torch.as_tensor(getattr(photographs, t)(), dtype=torch.float32) for t in TEXTURES]
    crops = []
    for k in range(n):
        source = sources[k % len(sources)]
        side = int(torch.randint(1, 5, (), generator=generator)) * max(height, width)
        top, left = (
            int(torch.randint(source.shape[i] - side + 1, (), generator=generator)) for i in (0, 1)
        )
        crop = source[top : top + side, left : left + side][None, None]
        crops.append(F.interpolate(crop, size=(height, width), mode="area")[0])
    grey = torch.stack(crops) / 127.5 - 1  # pixels 0..255 -> [-1, 1]
    return grey.expand(-1, channels, -1, -1).contiguous()


def _off_data(reference: Dataset, n: int, generator: torch.Generator) -> Tensor:
    """Uniform points on the box, kept where log p_data < its 1st percentile on test data."""
    if reference.log_density is None or reference.bounds is None:
        raise EbmlabError("OOD set 'off-data' needs a 2D density with a known log-density")
    threshold = torch.quantile(reference.log_density(reference.test).double(), OFF_DATA_QUANTILE)
    low, high = reference.bounds
    kept = []
    while sum(len(k) for k in kept) < n:
        points = low + (high - low) * torch.rand((4 * n, 2), generator=generator)
        kept.append(points[reference.log_density(points).double() < threshold])
    return torch.cat(kept)[:n]


DERIVED: dict[str, tuple[tuple[str, ...], Callable[[Dataset, int, torch.Generator], Tensor]]] = {
    "noise": (("image", "toy2d", "tabular"), _noise),
    "flipped": (("image",), _flipped),
    "inverted": (("image",), _inverted),
    "textures": (("image",), _textures),
    "off-data": (("toy2d",), _off_data),
}
