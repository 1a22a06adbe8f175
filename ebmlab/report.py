"""Pictures and the per-run report.md: config, metrics table, loss curves, densities, samples."""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
import yaml  # noqa: E402
from torch import Tensor  # noqa: E402

from ebmlab.config import RunConfig, find_preset, read_yaml  # noqa: E402
from ebmlab.data import Dataset  # noqa: E402
from ebmlab.defaults import AUTO  # noqa: E402

if TYPE_CHECKING:
    from ebmlab.metrics.toy2d import Bounds

METRIC_NOTES = {
    "kl": "exact KL(p_data ‖ p_model), nats, exp(-E) normalised on a grid",
    "nll": "cross-entropy E_p_data[-log p_model], nats, on the grid",
    "data_entropy": "entropy of the data density, nats (nll = data_entropy + kl)",
    "log_z": "log normalising constant of exp(-E) on the grid",
    "mmd2": "squared MMD between model samples and test data (RBF kernels)",
    "fd_classifier": "Fréchet distance in the features of ebmlab's own classifier (not FID)",
    "fd_classifier_floor": "the same distance between train and test data: the floor",
    "kid": "kernel inception-style distance in the same classifier features",
    "confident_share": "share of samples the classifier labels with probability >= 0.9",
    "confident_label_entropy": "entropy of those labels / log(classes): 1 even, 0 one class",
    "confident_classes": "classes among the confidently labelled samples",
    "fid_inception": "FID with the standard Inception-v3 network",
    "energy_test": "mean energy of test data",
    "energy_samples": "mean energy of model samples",
    "intrinsic_dim_test": "Levina-Bickel intrinsic dimension of test data",
    "intrinsic_dim_samples": "the same for model samples",
    "recon_rmse_test": "RMSE of test examples vs their reconstructions (images: [0, 1] pixels)",
    "nll_test_grid": "held-out NLL, nats per example, exp(-E) normalised on a grid over the data",
    "loglik_test_ais": "held-out log-likelihood, nats per example, log Z by AIS",
    "loglik_test_ais_se": "its standard error (test mean and AIS log Z combined)",
}
#: one (low, high) per dimension
Box = tuple[tuple[float, float], ...]
#: points of the 1D model-density curve and cells per side of the 2D heatmaps and histograms
CURVE_POINTS, HEATMAP_CELLS, HISTOGRAM_BINS = 1000, 200, 60


def image_grid(images: Tensor, ncol: int | None = None) -> np.ndarray:
    """(N, C, H, W) in [-1, 1] -> one (rows*H, ncol*W[, 3]) array in [0, 1] with 1px gaps."""
    images = ((images.detach().float().cpu().clamp(-1, 1) + 1) / 2).numpy()
    n, channels, height, width = images.shape
    ncol = ncol or math.ceil(math.sqrt(n))
    nrow = math.ceil(n / ncol)
    grid = np.ones((nrow * (height + 1) + 1, ncol * (width + 1) + 1, channels))
    for i, img in enumerate(images):
        r, c = divmod(i, ncol)
        top, left = 1 + r * (height + 1), 1 + c * (width + 1)
        grid[top : top + height, left : left + width] = img.transpose(1, 2, 0)
    return grid[..., 0] if channels == 1 else grid


def show_images(ax: plt.Axes, images: Tensor, title: str) -> None:
    """Images (N, C, H, W) in [-1, 1] as one grid on `ax`, titled."""
    grid = image_grid(images)
    ax.imshow(grid, cmap="gray" if grid.ndim == 2 else None, vmin=0, vmax=1)
    ax.set_title(title)
    ax.axis("off")


def _scatter(ax: plt.Axes, points: Tensor, title: str, bounds: Bounds | None):
    """Points (N, 2) in the box `bounds` (a square's (low, high), or one per axis)."""
    from ebmlab.metrics.toy2d import per_dimension

    points = points.detach().cpu().numpy()
    ax.scatter(points[:, 0], points[:, 1], s=1.5, alpha=0.5)
    if bounds is not None:
        (x_low, x_high), (y_low, y_high) = per_dimension(bounds)
        ax.set_xlim(x_low, x_high)
        ax.set_ylim(y_low, y_high)
    ax.set_aspect("equal")
    ax.set_title(title)


def _histograms(ax: plt.Axes, sets: dict[str, Tensor], side: tuple[float, float] | None = None):
    """Density-normalised histograms of one-column point sets (N, 1), overlaid on shared bins."""
    values = {
        label: points.detach().cpu().double().reshape(-1).numpy() for label, points in sets.items()
    }
    if side is None:
        joined = np.concatenate(list(values.values()))
        side = (float(joined.min()), float(joined.max()))
    bins = np.linspace(*side, HISTOGRAM_BINS + 1)
    for label, points in values.items():
        ax.hist(points, bins=bins, density=True, histtype="stepfilled", alpha=0.35, label=label)


def save_samples_figure(samples: Tensor, dataset: Dataset, path: Path) -> None:
    """Samples (model units) beside data: image grids, 2D scatters of the first two columns, or
    for a one-column table both histograms on one axis."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if dataset.kind != "image" and dataset.shape == (1,):
        fig, ax = plt.subplots(figsize=(6, 4))
        _histograms(ax, {"data (test)": dataset.test[: len(samples)], "samples": samples})
        ax.set_xlabel("standardised column")
        ax.set_ylabel("density")
        ax.legend()
        fig.tight_layout()
        fig.savefig(path, dpi=100)
        plt.close(fig)
        return
    fig, axes = plt.subplots(1, 2, figsize=(9, 4.5))
    if dataset.kind == "image":
        show_images(axes[0], dataset.test[: len(samples)], "data (test)")
        show_images(axes[1], samples, "samples")
    else:
        label = "" if dataset.kind == "toy2d" else " (first two standardised columns)"
        _scatter(axes[0], dataset.test[: len(samples)], "data" + label, dataset.bounds)
        _scatter(axes[1], samples, "samples" + label, dataset.bounds)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def save_sample_panels(methods: dict[str, Any], dataset: Dataset, path: Path, n: int = 64) -> None:
    """Images only: the data, then n samples of each labelled method, one panel each."""
    panels = {"data (test)": dataset.test[:n], **{k: m.sample(n) for k, m in methods.items()}}
    columns = min(len(panels), 5)
    rows = math.ceil(len(panels) / columns)
    fig, axes = plt.subplots(rows, columns, figsize=(3 * columns, 3.2 * rows), squeeze=False)
    for ax, (label, images) in zip(axes.flat, panels.items(), strict=False):
        show_images(ax, images.detach().cpu(), label)
    for ax in axes.flat[len(panels) :]:
        ax.axis("off")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)


def save_reconstruction_figure(test: Tensor, rebuilt: Tensor, path: Path) -> None:
    """Images only: rows of test images, each followed by a row of their reconstructions."""
    ncol = 8
    rows = [
        part
        for start in range(0, len(test), ncol)
        for part in (test[start : start + ncol], rebuilt[start : start + ncol])
    ]
    fig, ax = plt.subplots(figsize=(6, 0.75 * len(rows) + 0.5))
    grid = image_grid(torch.cat([r.detach().cpu() for r in rows]), ncol=ncol)
    ax.imshow(grid, cmap="gray" if grid.ndim == 2 else None, vmin=0, vmax=1)
    ax.set_title("test images (odd rows) and their reconstructions (even rows)")
    ax.axis("off")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def save_density_figure(
    method: Any, method_name: str, dataset: Dataset, path: Path, resolution: int = 200
) -> None:
    """2D only: data density, model density exp(-E)/Z, and model samples, on one box. For a
    model whose exp(-E) is no density (GEBM), the middle panel is its re-weighting exp(-E) and
    a fourth shows samples of its base alone."""
    from ebmlab.metrics.toy2d import density_grid

    bounds = dataset.bounds
    with torch.no_grad():
        _, _, log_p = density_grid(dataset.log_density, bounds, resolution)
        _, _, neg_e = density_grid(
            lambda x: -method.energy(x.to(method.device)), bounds, resolution
        )
    samples = method.sample(2000).detach().cpu()
    is_density = method.energy_is_density
    fig, axes = plt.subplots(1, 3 if is_density else 4, figsize=(4.5 * (3 + (not is_density)), 4.5))
    _show_density(axes[0], log_p, bounds, "data density")
    title = "model density exp(-E)/Z" if is_density else "re-weighting exp(-E) of the base"
    _show_density(axes[1], neg_e, bounds, title)
    _scatter(axes[2], samples, f"samples ({method_name}.sample)", bounds)
    if not is_density:
        base = method.sample(2000, from_base=True).detach().cpu()
        _scatter(axes[3], base, "samples of the base alone", bounds)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def save_density_comparison(
    methods: dict[str, Any], dataset: Dataset, path: Path, n_samples: int = 2000
) -> None:
    """2D only: one column per labelled method (a trained `Method`), its density exp(-E)/Z above
    its samples, and the data's density in the first column. A model whose exp(-E) is no density
    (GEBM) shows its re-weighting exp(-E) and says so."""
    from ebmlab.metrics.toy2d import density_grid

    bounds = dataset.bounds
    columns = len(methods) + 1
    fig, axes = plt.subplots(2, columns, figsize=(3.2 * columns, 6.4), squeeze=False)
    _show_density(axes[0, 0], density_grid(dataset.log_density, bounds)[2], bounds, "data density")
    _scatter(axes[1, 0], dataset.test[:n_samples], "data", bounds)
    for column, (label, method) in enumerate(methods.items(), start=1):
        title = label if method.energy_is_density else f"{label}: exp(-E), not p"
        _show_density(
            axes[0, column], _neg_energy_grid(method.energy, method.device, bounds), bounds, title
        )
        _scatter(axes[1, column], method.sample(n_samples).detach().cpu(), "samples", bounds)
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def save_table_density_figure(method: Any, method_name: str, dataset: Dataset, path: Path) -> None:
    """`table_density_figure`, saved to `path`."""
    fig = table_density_figure(method, method_name, dataset)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)


def table_density_figure(method: Any, method_name: str, dataset: Dataset) -> plt.Figure:
    """A table of one or two columns, as the 2D sets are shown: exp(-E)/Z (a curve in 1D, a
    heatmap in 2D) beside a density-normalised histogram of the training split, and samples.

    exp(-E) is normalised on the grid over the box `evaluate` uses for `nll_test_grid` (the
    data's range widened on each side, `data_box`), in standardised units. Where the dataset
    knows its density (an unseen one), it is drawn too. A model whose exp(-E) is no density
    (GEBM) shows its normalised re-weighting exp(-E), says so, and adds samples of its base."""
    from ebmlab.metrics.toy2d import data_box

    box = data_box(torch.cat([dataset.train, dataset.test]))
    samples = {f"samples ({method_name}.sample)": method.sample(2000).detach().cpu()}
    if not method.energy_is_density:
        samples["samples of the base alone"] = method.sample(2000, from_base=True).detach().cpu()
    model_label = "model exp(-E)/Z" if method.energy_is_density else "re-weighting exp(-E)/Z, not p"
    draw = _table_density_1d if dataset.shape == (1,) else _table_density_2d
    fig = draw(method, dataset, box, samples, model_label)
    fig.tight_layout()
    return fig


def _table_density_1d(
    method: Any, dataset: Dataset, box: Box, samples: dict[str, Tensor], model_label: str
) -> plt.Figure:
    """One panel per point set (the data, then the samples): its histogram under the curves."""
    (side,) = box
    xs = side[0] + (side[1] - side[0]) * (np.arange(CURVE_POINTS) + 0.5) / CURVE_POINTS
    grid = torch.as_tensor(xs)[:, None]
    neg_e = -_on_grid(method.energy, method.device, grid)
    curves = [(model_label, _normalised_density(neg_e, box), {"color": "black"})]
    if dataset.log_density is not None:
        log_p = _on_grid(dataset.log_density, None, grid)
        exact = {"color": "tab:red", "linestyle": "--"}
        curves.append(("data density (exact)", _normalised_density(log_p, box), exact))
    sets = {"data (train split)": dataset.train, **samples}
    fig, axes = plt.subplots(1, len(sets), figsize=(5 * len(sets), 3.8), squeeze=False)
    for ax, (label, points) in zip(axes[0], sets.items(), strict=True):
        _histograms(ax, {label: points}, side)
        for name, density, style in curves:
            ax.plot(xs, density, label=name, **style)
        ax.set_xlim(side)
        ax.set_xlabel("standardised column")
        ax.set_ylabel("density")
        ax.legend(fontsize=8)
    return fig


def _table_density_2d(
    method: Any, dataset: Dataset, box: Box, samples: dict[str, Tensor], model_label: str
) -> plt.Figure:
    """The data's 2D histogram, the exact density where known, exp(-E)/Z, then the samples;
    the histogram and the densities share one colour scale (density per unit area)."""
    from ebmlab.metrics.toy2d import density_grid

    (x_side, y_side) = box
    train = dataset.train.double().numpy()
    histogram, _, _ = np.histogram2d(
        train[:, 0], train[:, 1], bins=HISTOGRAM_BINS, range=box, density=True
    )
    neg_e = density_grid(lambda x: -method.energy(x.to(method.device)), box, HEATMAP_CELLS)[2]
    heatmaps = {}
    if dataset.log_density is not None:
        heatmaps["data density (exact)"] = density_grid(dataset.log_density, box, HEATMAP_CELLS)[2]
    heatmaps[model_label] = neg_e
    top = max([histogram.max()] + [_normalised_density(v, box).max() for v in heatmaps.values()])
    panels = 1 + len(heatmaps) + len(samples)
    fig, axes = plt.subplots(1, panels, figsize=(4.2 * panels, 4.2), squeeze=False)
    axes = list(axes[0])
    extent = (*x_side, *y_side)
    axes[0].imshow(histogram.T, origin="lower", extent=extent, cmap="magma", vmin=0, vmax=top)
    axes[0].set_title("data (train split), histogram")
    for ax, (title, values) in zip(axes[1:], heatmaps.items(), strict=False):
        _show_density(ax, values, box, title, vmax=top)
    for ax, (title, points) in zip(axes[1 + len(heatmaps) :], samples.items(), strict=True):
        _scatter(ax, points, title, box)
    for ax in axes:
        ax.set_xlabel("standardised column 1")
        ax.set_ylabel("standardised column 2")
    return fig


def _on_grid(fn, device: torch.device | None, grid: Tensor) -> np.ndarray:
    """fn at float64 grid points, fed on `device` (else the CPU) in float32, without autograd."""
    with torch.no_grad():
        values = fn(grid.to(device or "cpu", torch.float32))
    return values.double().cpu().numpy()


def _is_grad_norm(key: str) -> bool:
    return key == "grad_norm" or key.startswith("grad_norm/")


def _neg_energy_grid(energy, device: torch.device, bounds: tuple[float, float]) -> np.ndarray:
    """-E on the plotting grid over the box, without autograd."""
    from ebmlab.metrics.toy2d import density_grid

    with torch.no_grad():
        return density_grid(lambda x: -energy(x.to(device)), bounds)[2]


def _show_density(
    ax: plt.Axes, log_values: np.ndarray, bounds: Bounds, title: str, vmax: float | None = None
):
    """A heatmap of exp(log_values) normalised over the grid, per unit area of the box (a
    square's (low, high), or one per axis); `vmax` fixes the top of the colour scale."""
    from ebmlab.metrics.toy2d import per_dimension

    (x_low, x_high), (y_low, y_high) = box = per_dimension(bounds)
    density = _normalised_density(log_values, box)
    extent = (x_low, x_high, y_low, y_high)
    ax.imshow(density, origin="lower", extent=extent, cmap="magma", vmin=0, vmax=vmax)
    ax.set_title(title)


def _normalised_density(log_values: np.ndarray, box: Box) -> np.ndarray:
    """exp(log_values) / Z on a grid of cells over `box`, per unit length or area, in float64."""
    values = torch.as_tensor(log_values, dtype=torch.float64)
    cell = math.prod(
        (high - low) / size for (low, high), size in zip(box, values.shape[::-1], strict=True)
    )
    return torch.exp(values - torch.logsumexp(values.flatten(), 0) - math.log(cell)).numpy()


def save_composition_figure(
    composition, samples: Tensor, path: Path, bounds: tuple[float, float] | None = None
) -> None:
    """A composition's samples (model units of its first model); for 2D with `bounds`, each
    model's density and the composed density beside them."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if len(composition.shape) == 3:
        fig, ax = plt.subplots(figsize=(5, 5))
        show_images(ax, samples, f"samples of the product of {len(composition.models)} models")
    elif composition.shape == (2,) and bounds is not None:
        models = composition.models
        fig, axes = plt.subplots(1, len(models) + 2, figsize=(4.2 * (len(models) + 2), 4.2))
        for k, (ax, model) in enumerate(zip(axes, models, strict=False)):
            neg_e = _neg_energy_grid(model.method.energy, model.method.device, bounds)
            _show_density(ax, neg_e, bounds, f"model {k + 1}: exp(-E_{k + 1})")
        device = composition.base.method.device
        neg_e = _neg_energy_grid(composition.model_energy, device, bounds)
        _show_density(axes[-2], neg_e, bounds, "product: exp(-sum w_i E_i)")
        _scatter(axes[-1], samples, "samples of the product", bounds)
    else:
        fig, ax = plt.subplots(figsize=(5, 5))
        _scatter(ax, samples, "samples of the product (first two columns)", None)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def save_latent_chains_figure(paths: dict[str, Tensor], data: Tensor, path: Path) -> None:
    """Chains of latent samplers mapped to 2D data space, one panel per sampler, over the data.

    `paths` maps a sampler's name to its chains' points, (steps + 1, chains, 2); each chain is
    one coloured line from its start (circle) to its end (cross)."""
    fig, axes = plt.subplots(1, len(paths), figsize=(4.5 * len(paths), 4.5), squeeze=False)
    points = data.detach().cpu().numpy()
    colours = plt.get_cmap("tab10")
    for ax, (name, chain_points) in zip(axes[0], paths.items(), strict=True):
        ax.scatter(points[:, 0], points[:, 1], s=1, color="0.8")
        for k in range(chain_points.shape[1]):
            xy = chain_points[:, k].numpy()
            ax.plot(xy[:, 0], xy[:, 1], lw=0.7, color=colours(k % 10), alpha=0.8)
            ax.plot(*xy[0], "o", color=colours(k % 10), ms=4)
            ax.plot(*xy[-1], "x", color=colours(k % 10), ms=6)
        ax.set_aspect("equal")
        ax.set_title(f"{name}: {chain_points.shape[0] - 1} steps")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def save_loss_figure(history: list[dict[str, float]], path: Path) -> None:
    skip = {"step", "it_per_s", "wall_s"}
    keys = [k for k in history[0] if k not in skip and not _is_grad_norm(k)]
    steps = [row["step"] for row in history]
    fig, axes = plt.subplots(1, len(keys), figsize=(3.6 * len(keys), 3), squeeze=False)
    for ax, key in zip(axes[0], keys, strict=True):
        ax.plot(steps, [row[key] for row in history])
        ax.set_title(key)
        ax.set_xlabel("step")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def grad_norm_keys(history: list[dict[str, float]]) -> list[str]:
    """The per-term gradient norms a method logged (`grad_norm/<term>`), if any."""
    return [k for k in history[0] if k.startswith("grad_norm/")] if history else []


def save_grad_norm_figure(history: list[dict[str, float]], path: Path) -> None:
    """The gradient magnitude of each loss term over training, on one log axis (ICD's Fig. 9)."""
    steps = [row["step"] for row in history]
    fig, ax = plt.subplots(figsize=(6, 3.5))
    for key in grad_norm_keys(history):
        ax.plot(steps, [row[key] for row in history], label=key.removeprefix("grad_norm/"))
    ax.set_yscale("log")
    ax.set_xlabel("step")
    ax.set_ylabel("gradient L2 norm")
    ax.legend(title="loss term")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def metrics_table(metrics: dict[str, float]) -> str:
    lines = ["| metric | value | meaning |", "|---|---|---|"]
    for key, value in metrics.items():
        note = METRIC_NOTES.get(key, "AUROC of -E, in vs this OOD set" if "auroc" in key else "")
        lines.append(f"| {key} | {value:.4g} | {note} |")
    return "\n".join(lines)


def save_ood_figure(
    energy, in_data: Tensor, ood_sets: dict[str, Tensor], path: Path, in_name: str = "test"
) -> None:
    """Histograms of -E (higher = more in-distribution) for the test data and each OOD set."""
    from ebmlab.metrics._common import batched_energy

    fig, ax = plt.subplots(figsize=(7, 3.8))
    scores = {f"{in_name} (in)": -batched_energy(energy, in_data)}
    scores |= {name: -batched_energy(energy, points) for name, points in ood_sets.items()}
    finite = torch.cat([v[torch.isfinite(v)] for v in scores.values()]).numpy()
    bins = np.linspace(np.percentile(finite, 0.5), np.percentile(finite, 99.5), 60)
    for name, values in scores.items():
        ax.hist(values.numpy(), bins=bins, histtype="step", density=True, linewidth=1.5, label=name)
    ax.set_xlabel("-E(x), the model's unnormalised log-density")
    ax.set_ylabel("density")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _sampling_lines(method) -> list[str]:
    """The method's own account of how its samples were drawn, where it gives one."""
    describe = getattr(method, "sampling_procedure", None)
    return [f"Samples: {describe()}.", ""] if callable(describe) else []


def _held_out_lines(metrics: dict[str, float]) -> list[str]:
    """The honest score of a density without a known one: the AIS log-likelihood, or the
    held-out NLL normalised on the grid, per test example in standardised units."""
    if "loglik_test_ais" in metrics:
        loglik, se = metrics["loglik_test_ais"], metrics["loglik_test_ais_se"]
        return [
            f"Held-out log-likelihood: **{loglik:.4g} ± {se:.2g} nats** per test example "
            "(log Z of exp(-E) by annealed importance sampling; standardised columns).",
            "",
        ]
    if "nll_test_grid" in metrics:
        return [
            f"Held-out NLL: **{metrics['nll_test_grid']:.4g} nats** per test example "
            "(exp(-E) normalised on a grid over the data's range; standardised units).",
            "",
        ]
    return []


def _derived_lines(config: RunConfig, dataset: Dataset) -> list[str]:
    """The options the preset left `auto` and the values derived from this data for them."""
    preset = find_preset(config.method, dataset.name, dataset.kind)
    preset_method = (read_yaml(preset).get("method") or {}) if preset else {}
    derived = [k for k, v in preset_method.items() if v == AUTO and k in config.method_params]
    if not derived:
        return []
    values = ", ".join(f"`{k}` = {config.method_params[k]:.4g}" for k in derived)
    return [f"Derived from the data (`{preset.stem}` says auto; see `ebmlab info`): {values}.", ""]


def write_report(
    run_dir: Path,
    method: Any,
    config: RunConfig,
    dataset: Dataset,
    metrics: dict[str, float],
    history: list[dict[str, float]],
    ood_sets: dict[str, Tensor] | None = None,
) -> Path:
    """Write report.md and its figures into `run_dir` for a trained `method` (a `Method`, with
    its final weights) and its resolved `config`; returns the report's path.

    It takes the parts of a run rather than the API's `Run`, so that the API sits on top of the
    report and not beside it (`ebmlab.api` calls this; this never imports it)."""
    figures = []
    if history:
        save_loss_figure(history, run_dir / "loss.png")
        figures.append(("Training curves", "loss.png"))
    if grad_norm_keys(history):
        save_grad_norm_figure(history, run_dir / "grad_norms.png")
        figures.append(("Gradient magnitude of each loss term", "grad_norms.png"))
    if dataset.kind == "toy2d":
        save_density_figure(method, config.method, dataset, run_dir / "density.png")
        figures.append(("Data density, model density and samples", "density.png"))
    elif dataset.kind == "tabular" and dataset.shape in ((1,), (2,)):
        save_table_density_figure(method, config.method, dataset, run_dir / "density.png")
        figures.append(("Data histogram, model density exp(-E)/Z and samples", "density.png"))
    else:
        n = 64 if dataset.kind == "image" else 2000
        save_samples_figure(method.sample(n).detach().cpu(), dataset, run_dir / "samples.png")
        figures.append(("Data and samples", "samples.png"))
    if dataset.kind == "image" and callable(getattr(method, "reconstruct", None)):
        test = dataset.test[:32].to(method.device)
        save_reconstruction_figure(test, method.reconstruct(test), run_dir / "recon.png")
        figures.append(("Test images and their reconstructions", "recon.png"))
    if ood_sets:
        save_ood_figure(method.energy, dataset.test, ood_sets, run_dir / "ood.png")
        figures.append(("Energies of test data and OOD sets", "ood.png"))
    seconds = history[-1]["wall_s"] if history else 0.0
    steps = int(history[-1]["step"]) if history else config.train.steps
    lines = [
        f"# {config.method} on {dataset.name}",
        "",
        f"{steps} steps, about {seconds:.0f} s of training "
        f"({dataset.kind} data, shape {dataset.shape}, {len(dataset.train)} training examples).",
        "",
        *_sampling_lines(method),
        *_derived_lines(config, dataset),
        *_held_out_lines(metrics),
        "## Metrics",
        "",
        metrics_table(metrics),
        "",
    ]
    for title, name in figures:
        lines += [f"## {title}", "", f"![{title}]({name})", ""]
    config_text = yaml.safe_dump(config.to_dict(), sort_keys=False)
    lines += ["## Config", "", "```yaml", config_text.rstrip(), "```", ""]
    path = run_dir / "report.md"
    path.write_text("\n".join(lines))
    return path
