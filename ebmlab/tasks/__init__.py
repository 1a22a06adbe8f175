"""Uses of a trained model: out-of-distribution sets for scoring, composition of energies,
and inpainting."""

from ebmlab.tasks.compose import Composition
from ebmlab.tasks.inpaint import inpainting_scores, standard_masks
from ebmlab.tasks.ood import ood_set, standard_ood_sets

__all__ = [
    "Composition",
    "inpainting_scores",
    "ood_set",
    "standard_masks",
    "standard_ood_sets",
]
