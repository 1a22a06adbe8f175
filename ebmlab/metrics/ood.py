"""Out-of-distribution detection scored by energy: AUROC of -E(x), in-distribution positive.

Report one AUROC per OOD set, never only a mean: an average hides the set the model fails on.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
from sklearn.metrics import roc_auc_score
from torch import Tensor

from ebmlab.errors import EbmlabError
from ebmlab.metrics._common import Energy, batched_energy, to_numpy


def auroc(score_in: Tensor | np.ndarray, score_out: Tensor | np.ndarray) -> float:
    """Area under the ROC curve separating in- from out-of-distribution scores.

    Args:
        score_in: Scores of in-distribution points (higher = more in-distribution, e.g. -E).
        score_out: Scores of out-of-distribution points.

    Returns:
        1.0 when every in-distribution score is above every OOD score, 0.5 for chance, 0.0 when
        the ordering is reversed.

    Raises:
        EbmlabError: If either set is empty or a score is NaN or infinite.
    """
    inside, outside = to_numpy(score_in).reshape(-1), to_numpy(score_out).reshape(-1)
    if inside.size == 0 or outside.size == 0:
        raise EbmlabError("AUROC needs at least one in-distribution and one OOD score")
    scores = np.concatenate([inside, outside])
    if not np.isfinite(scores).all():
        raise EbmlabError("AUROC got NaN or infinite scores: the energy diverged on these inputs")
    labels = np.concatenate([np.ones(inside.size), np.zeros(outside.size)])
    return float(roc_auc_score(labels, scores))


def ood_table(
    energy: Energy,
    in_data: Tensor,
    ood_sets: Mapping[str, Tensor],
    batch_size: int = 500,
) -> dict[str, float]:
    """AUROC of the score -E(x) for held-out in-distribution data against each OOD set.

    Each OOD set should match the in-distribution data in size and preprocessing (model units,
    same shape), so the AUROC measures the model, not the pipeline.

    Args:
        energy: Maps a batch (B, ...) to energies (B,); evaluated without autograd.
        in_data: In-distribution points, usually the test split.
        ood_sets: Name -> OOD points of the same per-point shape as `in_data`.
        batch_size: Points per energy call.

    Returns:
        Name -> AUROC, in the order of `ood_sets`.

    Raises:
        EbmlabError: If an OOD set's per-point shape differs from `in_data`'s.
    """
    score_in = -batched_energy(energy, in_data, batch_size)
    table = {}
    for name, points in ood_sets.items():
        if tuple(points.shape[1:]) != tuple(in_data.shape[1:]):
            raise EbmlabError(
                f"OOD set {name!r} has points of shape {tuple(points.shape[1:])}, but the "
                f"in-distribution data has {tuple(in_data.shape[1:])}; preprocess both alike"
            )
        table[name] = auroc(score_in, -batched_energy(energy, points, batch_size))
    return table
