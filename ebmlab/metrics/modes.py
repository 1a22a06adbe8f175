"""Mode metrics from samples alone: does a model find every component of a Gaussian mixture,
with the right weight? They need no density, so they also score a GEBM, whose exp(-E) is none."""

from __future__ import annotations

import torch
from torch import Tensor

from ebmlab.errors import EbmlabError

#: a sample within this Mahalanobis distance of a component's mean is on that mode
MODE_RADIUS = 3.0


def mode_metrics(
    samples: Tensor,
    means: Tensor,
    covariances: Tensor,
    weights: Tensor,
    radius: float = MODE_RADIUS,
) -> dict[str, float]:
    """Coverage of a mixture's modes by samples, and how the samples share out among them.

    A sample is on a mode when its Mahalanobis distance sqrt((x - m_k)^T C_k^-1 (x - m_k)) to
    some component is at most `radius`. It is shared out among the components by their
    responsibilities r_k(x) = w_k N(x; m_k, C_k) / p(x), so that samples of the mixture itself
    give each component its weight in expectation (E_p[r_k] = w_k): assigning each sample to
    its nearest component instead gives the exact mixture a TV of 0.048 on unseen-65, whose
    modes overlap, when 200,000 draws of it are scored.

    Args:
        samples: Model samples (n, D).
        means: Component means (K, D).
        covariances: Component covariances (K, D, D).
        weights: Component weights (K,), summing to 1.
        radius: Mahalanobis distance within which a sample is on its mode (3: 99.7% of a 1D
            Gaussian's mass, 98.9% of a 2D one's).

    Returns:
        `mode_coverage`: the share of samples within `radius` of some component;
        `mode_weight_tv`: total variation 0.5 sum_k |w_k - s_k| between the weights and the
        shares s_k = mean r_k(x) of the samples (0: the weights exactly; 1: every sample on
        components of weight 0).

    Raises:
        EbmlabError: If the shapes do not fit together or there are no samples.
    """
    k, dim = means.shape
    if samples.ndim != 2 or samples.shape[1] != dim or len(samples) == 0:
        raise EbmlabError(
            f"mode metrics need samples of shape (n, {dim}) with n >= 1, got {tuple(samples.shape)}"
        )
    if covariances.shape != (k, dim, dim) or weights.shape != (k,):
        raise EbmlabError(
            f"components must be means (K, D), covariances (K, D, D), weights (K,); got "
            f"{tuple(means.shape)}, {tuple(covariances.shape)}, {tuple(weights.shape)}"
        )
    device = samples.device
    cholesky = torch.linalg.cholesky(covariances.double().to(device))
    diff = samples.double()[:, None, :] - means.double().to(device)  # (n, K, D)
    whitened = torch.linalg.solve_triangular(cholesky, diff.permute(1, 2, 0), upper=False)
    squared = whitened.square().sum(1).T  # (n, K) squared Mahalanobis distances
    log_joint = weights.double().to(device).log() - cholesky.diagonal(dim1=1, dim2=2).log().sum(1)
    shares = torch.softmax(log_joint - squared / 2, dim=1).mean(0)  # the 2 pi terms cancel
    coverage = (squared.min(1).values <= radius**2).double().mean()
    tv = 0.5 * (shares - weights.double().to(device)).abs().sum()
    return {"mode_coverage": float(coverage), "mode_weight_tv": float(tv)}
