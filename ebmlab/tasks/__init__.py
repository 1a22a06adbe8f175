"""Uses of a trained model: out-of-distribution sets for scoring, and composition of energies."""

from ebmlab.tasks.compose import Composition, compose_runs
from ebmlab.tasks.ood import ood_set, standard_ood_sets

__all__ = ["Composition", "compose_runs", "ood_set", "standard_ood_sets"]
