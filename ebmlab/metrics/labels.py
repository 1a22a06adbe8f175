"""Do samples look like some class, and like every class? The classifier-confidence check.

A Fréchet distance can be small for samples that no person would read as digits (strokes and
loops with the right feature statistics). Two numbers from the dataset's own classifier say
more directly what a reader sees: the share of samples it labels with probability >= 0.9
(`confident_share`), and how evenly those confident labels spread over the classes (normalised
entropy `confident_label_entropy`, 1 when every class is equally frequent, 0 when one class takes
all: a mode-dropping check), with the number of classes that appear at all
(`confident_classes`). Scored on the test split at the same size, the same numbers are the
data's own reference: a model can hardly beat them.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from ebmlab.errors import EbmlabError

#: a sample is confidently labelled when its top class probability is at least this
CONFIDENCE = 0.9


def confident_label_metrics(
    probabilities: Tensor, threshold: float = CONFIDENCE
) -> dict[str, float]:
    """Share of confidently labelled samples and the spread of their labels over the classes.

    Args:
        probabilities: Class probabilities (n, K) of n >= 1 samples, K >= 2 classes.
        threshold: Top-class probability from which a label counts as confident.

    Returns:
        `confident_share`: the share of samples whose top class probability is >= threshold;
        `confident_label_entropy`: the entropy of their labels' frequencies divided by log K
        (left out when no sample is confident); `confident_classes`: how many classes they use.

    Raises:
        EbmlabError: If `probabilities` is not (n, K) with n >= 1 and K >= 2.
    """
    if probabilities.ndim != 2 or len(probabilities) == 0 or probabilities.shape[1] < 2:
        raise EbmlabError(
            "confident labels need class probabilities (n, K) with n >= 1 and K >= 2, got "
            f"{tuple(probabilities.shape)}"
        )
    n_classes = probabilities.shape[1]
    top, labels = probabilities.max(dim=1)
    confident = labels[top >= threshold]
    counts = torch.bincount(confident, minlength=n_classes).double()
    used = counts[counts > 0]
    results = {
        "confident_share": len(confident) / len(probabilities),
        "confident_classes": float(len(used)),
    }
    if len(confident):
        frequencies = used / used.sum()
        entropy = float(-(frequencies * frequencies.log()).sum()) / math.log(n_classes)
        results["confident_label_entropy"] = entropy
    return results
