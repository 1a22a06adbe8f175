"""Metrics that stay honest for each kind of data, and `evaluate`, which picks the ones that fit.

- toy2d.py: exact KL / NLL / log Z of a 1D or 2D model on a grid, and held-out NLL on one.
- modes.py: coverage and weights of a Gaussian mixture's modes by samples.
- mmd.py: unbiased MMD between samples (2D and tabular data).
- fd.py: Fréchet distance and KID in the features of a classifier ebmlab trains per dataset,
  and FID proper with the standard Inception network.
- ood.py: AUROC of -E(x) per OOD set.
- image.py: RMSE, PSNR and SSIM for reconstruction and inpainting.
- dimension.py: the Levina-Bickel intrinsic dimension of a point set.
- ais.py: log Z and the held-out log-likelihood by annealed importance sampling, where no
  grid can normalise exp(-E) (above two dimensions).
- score_matching.py: the denoising score-matching loss of any energy on held-out rows, which
  needs no log Z (the estimators' early stopping).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
from torch import Tensor
from tqdm.auto import tqdm

from ebmlab.errors import EbmlabError
from ebmlab.metrics._common import batched_energy, model_device, seeded
from ebmlab.metrics.ais import AISResult, ais_log_likelihood, ais_log_z
from ebmlab.metrics.dimension import intrinsic_dimension
from ebmlab.metrics.fd import (
    FeatureExtractor,
    FeatureNet,
    cache_dir,
    classifier_features,
    frechet_distance,
    inception_features,
    kid,
    random_features,
    train_feature_net,
)
from ebmlab.metrics.image import image_scores, psnr, rmse, ssim
from ebmlab.metrics.labels import confident_label_metrics
from ebmlab.metrics.mmd import mmd2
from ebmlab.metrics.modes import mode_metrics
from ebmlab.metrics.ood import auroc, ood_table
from ebmlab.metrics.score_matching import denoising_score_matching
from ebmlab.metrics.toy2d import data_box, density_grid, grid_density_metrics, held_out_nll

__all__ = [
    "FeatureExtractor",
    "AISResult",
    "FeatureNet",
    "ais_log_likelihood",
    "ais_log_z",
    "auroc",
    "cache_dir",
    "classifier_features",
    "confident_label_metrics",
    "data_box",
    "density_grid",
    "denoising_score_matching",
    "evaluate",
    "frechet_distance",
    "grid_density_metrics",
    "held_out_nll",
    "image_scores",
    "inception_features",
    "intrinsic_dimension",
    "kid",
    "mmd2",
    "mode_metrics",
    "ood_table",
    "psnr",
    "random_features",
    "reconstruction_rmse",
    "rmse",
    "ssim",
    "train_feature_net",
]

DEFAULT_SAMPLES = {"toy2d": 2_000, "tabular": 2_000, "image": 1_000}
#: largest batch handed to model.sample, to bound the memory of Langevin chains
SAMPLE_BATCH = 500


def evaluate(
    model: Any,
    dataset: Any,
    *,
    n_samples: int | None = None,
    fid: bool = False,
    ood: Mapping[str, Tensor] | None = None,
    seed: int = 0,
) -> dict[str, float]:
    """Score a model with the metrics that fit its data.

    Samples are drawn with `model.sample` (with autograd, in batches of at most 500) under a
    fixed seed, and the caller's random state is restored afterwards. Sample-based metrics
    compare against a random test subset of the same size (all of the test split if smaller).

    Keys, by dataset kind:

    - always: `energy_test`, `energy_samples`: mean energy of the test split and of the samples;
      `intrinsic_dim_test`, `intrinsic_dim_samples`: the Levina-Bickel dimension of the same
      test subset and of the samples (see `intrinsic_dimension`), each left out when the set
      has too few distinct points (e.g. a collapsed sampler).
    - toy2d, and tabular data of 1 or 2 columns, when exp(-E) is the model's density (unless
      the model sets `energy_is_density = False` as GEBM does): `nll_test_grid`, the held-out
      NLL -mean(log q(x_test)) with q = exp(-E) / Z normalised on a grid over the train and
      test range widened by a quarter of it on each side (`data_box`, `held_out_nll`); where
      the dataset has a box (`dataset.box`, or toy2d's `bounds`) also `log_z`, and with
      `dataset.log_density` also `kl` (KL(p_data || p_model), nats), `nll` (E_p[-log q],
      nats), `data_entropy` (nats) and `kl_exact_density` (1.0 if the data log-density is
      exact, 0.0 if an estimate such as a histogram); see `grid_density_metrics`.
    - toy2d and tabular: `mmd2`, the unbiased squared MMD of samples vs test points.
    - a dataset with Gaussian mixture components (`dataset.components`: 8gaussians,
      25gaussians, the unseen mixtures), for every model: `mode_coverage` and
      `mode_weight_tv` of the samples; see `mode_metrics`.
    - image, with labels: `fd_classifier` (Fréchet distance of samples vs test in the features
      of the dataset's cached classifier), `fd_classifier_floor` (the same for train vs test at
      the same sizes: the best a model can expect), `kid`, `kid_std` (KID of samples vs test in
      the same features), `feature_net_acc` (the classifier's test accuracy);
      `confident_share`, `confident_label_entropy`, `confident_classes` (the share of samples
      the classifier labels with probability >= 0.9 and the spread of those labels over the
      classes; see `confident_label_metrics`), and the same with `_test` for the test split at
      the same size, the data's own reference.
    - image, without labels: `fd_random_features`, `fd_random_features_floor`,
      `kid_random_features`, `kid_random_features_std`: the same in the features of a fixed,
      seeded, untrained network (not comparable with classifier-feature numbers).
    - image with `fid=True`: `fid_inception` and `fid_inception_floor` (standard Inception FID;
      about 9 images per second on two CPU cores, so use small n or an accelerator).
    - tabular data of more than two columns, when exp(-E) is the model's density:
      `loglik_test_ais`, the held-out log-likelihood mean(-E(x_test)) - log Z in nats per
      example, with log Z by annealed importance sampling from N(0, I) (`ais_log_z`, its
      defaults: 512 chains, 1,000 temperatures, MALA, about 3 s for a 3-layer MLP on 16
      columns on one CPU thread), and `loglik_test_ais_se`, its standard error (the
      test mean's and log Z's combined; see `ais_log_likelihood`). Both are in model units
      (standardised columns): in the user's units subtract the sum of log column scales.
    - with `ood`: `auroc/<name>` per OOD set (score -E; test split = in-distribution).
    - for models with `reconstruct(x)` (an encoder and a generator, e.g. BiDVL):
      `recon_rmse_test`, the RMSE between each test example and its reconstruction, averaged
      over the whole test split; per image in [0, 1] pixel units (see `rmse`) for images, per
      example over the model-unit coordinates otherwise (a 2D density's own coordinates, a
      table's standardised columns).

    Args:
        model: Object with `energy(x) -> (B,)` and `sample(n) -> (n, *shape)` in model units;
            if it has `parameters()`, their device is used for all computation.
        dataset: Dataset with `name`, `kind` ("toy2d", "image" or "tabular"), `train`, `test`,
            `train_labels`, `test_labels`, and for toy2d `log_density`, `log_density_exact`,
            `bounds`.
        n_samples: Samples to draw. Default: 2,000 for toy2d and tabular, 1,000 for images.
        fid: Also compute Inception FID (images only).
        ood: Name -> OOD points shaped like the test split.
        seed: Seed for sampling and for choosing subsets.

    Returns:
        Metric name -> value.

    Raises:
        EbmlabError: If the model lacks `energy` or `sample`, the dataset kind is unknown,
            `n_samples` is below 2, or `fid` is asked for non-image data.
    """
    n = _check_request(model, dataset, n_samples, fid)
    device = model_device(model) or dataset.test.device
    with seeded(seed, device):
        samples = _draw_samples(model, n)
    test = _subset(dataset.test, n, seed)
    results = {
        "energy_test": float(batched_energy(model.energy, dataset.test).mean()),
        "energy_samples": float(batched_energy(model.energy, samples).mean()),
    }
    results |= _dimensions({"test": test, "samples": samples}, seed)
    if getattr(model, "energy_is_density", True):
        results.update(_grid_metrics(model, dataset))
    results.update(_mode_metrics(samples, dataset))
    if dataset.kind in ("toy2d", "tabular"):
        results["mmd2"] = mmd2(samples, test)
    results.update(_ais_metrics(model, dataset, seed))
    if dataset.kind == "image":
        train = _subset(dataset.train, n, seed + 1)
        results.update(_feature_metrics(dataset, samples, train, test, device, seed))
        if fid:
            results.update(_inception_metrics(samples, train, test))
    if callable(getattr(model, "reconstruct", None)):
        results["recon_rmse_test"] = reconstruction_rmse(model, dataset.test, dataset.kind)
    if ood:
        table = ood_table(model.energy, dataset.test, ood)
        results.update({f"auroc/{name}": value for name, value in table.items()})
    return results


def reconstruction_rmse(model: Any, x: Tensor, kind: str, batch_size: int = 500) -> float:
    """Mean over examples of the RMSE of `model.reconstruct(x)` against x (model units in, and
    for images the error in [0, 1] pixel units, as `rmse`)."""
    device = model_device(model) or x.device
    errors = []
    for start in range(0, len(x), batch_size):
        batch = x[start : start + batch_size].to(device)
        rebuilt = model.reconstruct(batch).detach()
        if kind == "image":
            errors.append(rmse(_unit_range(rebuilt), _unit_range(batch)))
        else:
            errors.append((rebuilt - batch).flatten(1).pow(2).mean(1).sqrt().cpu().numpy())
    return float(np.concatenate(errors).mean())


def _unit_range(images: Tensor) -> Tensor:
    """Model-unit images in [-1, 1] -> [0, 1], clipped (a generator may overshoot slightly)."""
    return ((images.float() + 1) / 2).clamp(0, 1).cpu()


def _check_request(model: Any, dataset: Any, n_samples: int | None, fid: bool) -> int:
    """Validate the arguments of `evaluate` and return the number of samples to draw."""
    for method in ("energy", "sample"):
        if not callable(getattr(model, method, None)):
            raise EbmlabError(f"evaluate needs a model with an `{method}` method")
    if dataset.kind not in DEFAULT_SAMPLES:
        raise EbmlabError(
            f"unknown dataset kind {dataset.kind!r}; expected one of {sorted(DEFAULT_SAMPLES)}"
        )
    if fid and dataset.kind != "image":
        raise EbmlabError(f"fid=True needs image data, but {dataset.name!r} is {dataset.kind}")
    n = DEFAULT_SAMPLES[dataset.kind] if n_samples is None else n_samples
    if n < 2:
        raise EbmlabError(f"n_samples must be at least 2, got {n}")
    return n


def _draw_samples(model: Any, n: int) -> Tensor:
    """n model samples, drawn in batches (sampling needs autograd, so no no_grad here)."""
    sizes = [min(SAMPLE_BATCH, n - start) for start in range(0, n, SAMPLE_BATCH)]
    batches = [model.sample(size).detach() for size in tqdm(sizes, desc="sampling", leave=False)]
    return torch.cat(batches)


def _dimensions(sets: Mapping[str, Tensor], seed: int) -> dict[str, float]:
    """`intrinsic_dim_<name>` for each set with enough distinct points for the estimate."""
    results = {}
    for name, points in sets.items():
        try:
            results[f"intrinsic_dim_{name}"] = intrinsic_dimension(points, seed=seed)
        except EbmlabError:
            continue
    return results


def _subset(points: Tensor, n: int, seed: int) -> Tensor:
    """A seeded random subset of n points (all of them, shuffled, if there are fewer)."""
    order = torch.randperm(len(points), generator=torch.Generator().manual_seed(seed))
    return points[order[:n]]


def _grid_metrics(model: Any, dataset: Any) -> dict[str, float]:
    """Grid metrics for 1D and 2D points or tables: the held-out NLL always, the exact ones
    when the dataset provides the box (and density) they need."""
    if dataset.kind not in ("toy2d", "tabular") or dataset.test.shape[1:] not in ((1,), (2,)):
        return {}
    around_data = data_box(torch.cat([dataset.train, dataset.test]))
    results = {"nll_test_grid": held_out_nll(model.energy, dataset.test, around_data)}
    known_box = getattr(dataset, "box", None) or getattr(dataset, "bounds", None)
    if known_box is None:
        return results
    log_density = getattr(dataset, "log_density", None)
    results.update(grid_density_metrics(model.energy, log_density, known_box))
    if log_density is not None:
        results["kl_exact_density"] = 1.0 if dataset.log_density_exact else 0.0
    return results


def _mode_metrics(samples: Tensor, dataset: Any) -> dict[str, float]:
    components = getattr(dataset, "components", None)
    if components is None:
        return {}
    return mode_metrics(samples, components.means, components.covariances, components.weights)


def _feature_metrics(
    dataset: Any, samples: Tensor, train: Tensor, test: Tensor, device: torch.device, seed: int
) -> dict[str, float]:
    """FD, its floor and KID in classifier features, or in random features without labels."""
    labelled = dataset.train_labels is not None
    if labelled:
        features = classifier_features(dataset, device=device)
        fd_key, kid_key = "fd_classifier", "kid"
    else:
        features = random_features(dataset.train, seed=seed, device=device)
        fd_key, kid_key = "fd_random_features", "kid_random_features"
    sample_feats, train_feats, test_feats = features(samples), features(train), features(test)
    kid_mean, kid_std = kid(sample_feats, test_feats, seed=seed)
    results = {
        fd_key: frechet_distance(sample_feats, test_feats),
        f"{fd_key}_floor": frechet_distance(train_feats, test_feats),
        kid_key: kid_mean,
        f"{kid_key}_std": kid_std,
    }
    if labelled:
        results["feature_net_acc"] = features.test_accuracy
        results.update(confident_label_metrics(features.probabilities(samples)))
        test_labels = confident_label_metrics(features.probabilities(test))
        results.update({f"{key}_test": value for key, value in test_labels.items()})
    return results


def _inception_metrics(samples: Tensor, train: Tensor, test: Tensor) -> dict[str, float]:
    """Inception FID of samples vs test, and its train-vs-test floor."""
    test_feats = inception_features(test, cache=True)
    return {
        "fid_inception": frechet_distance(inception_features(samples), test_feats),
        "fid_inception_floor": frechet_distance(inception_features(train, cache=True), test_feats),
    }


def _ais_metrics(model: Any, dataset: Any, seed: int) -> dict[str, float]:
    """The held-out log-likelihood by AIS, for tables of more than two columns: one or two get
    the grid's `nll_test_grid` instead, and a model whose exp(-E) is no density gets neither."""
    wide_table = dataset.kind == "tabular" and dataset.test[0].numel() > 2
    if not (wide_table and getattr(model, "energy_is_density", True)):
        return {}
    result = ais_log_likelihood(model.energy, dataset.test, seed=seed, progress=True)
    return {"loglik_test_ais": result["loglik"], "loglik_test_ais_se": result["loglik_se"]}
