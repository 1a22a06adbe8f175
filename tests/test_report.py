"""The report of a user's own low-D table: exp(-E)/Z beside the data, normalised as evaluate
normalises it, and a one-column table trained and reported end to end."""

from __future__ import annotations

import math

import matplotlib.pyplot as plt
import numpy as np
import pytest
import torch
from torch import Tensor

import ebmlab
from ebmlab.data import load_dataset
from ebmlab.metrics.toy2d import data_box
from ebmlab.report import (
    HISTOGRAM_BINS,
    _held_out_lines,
    _table_density_1d,
    _table_density_2d,
    table_density_figure,
)


class ShiftedGaussian:
    """exp(-E) = N(mean, std^2 I) up to a constant, in model units: a method's scoring surface."""

    energy_is_density = True
    device = torch.device("cpu")

    def __init__(self, mean: list[float], std: float, constant: float = 3.0):
        self.mean, self.std, self.constant = torch.tensor(mean), std, constant

    def energy(self, x: Tensor) -> Tensor:
        return (x - self.mean).pow(2).sum(1) / (2 * self.std**2) + self.constant

    def sample(self, n: int) -> Tensor:
        return self.mean + self.std * torch.randn(n, len(self.mean))

    def pdf(self, x: np.ndarray) -> np.ndarray:
        dim = x.shape[1]
        sq = ((x - self.mean.numpy()) ** 2).sum(1) / (2 * self.std**2)
        return np.exp(-sq) / (2 * math.pi * self.std**2) ** (dim / 2)


def histogram_mean(ax) -> float:
    """The mean of the first histogram drawn on `ax`, from its outline's heights."""
    x, height = ax.patches[0].get_path().vertices.T
    return float((x * height).sum() / height.sum())


def table(columns: int, rows: int = 4000) -> ebmlab.data.Dataset:
    generator = np.random.default_rng(0)
    return load_dataset(generator.normal(size=(rows, columns)).astype("float32"))


def test_one_column_curve_is_exp_minus_e_normalised_over_the_data_box():
    dataset = table(1)
    model = ShiftedGaussian([0.3], 0.8)
    box = data_box(torch.cat([dataset.train, dataset.test]))
    fig = _table_density_1d(model, dataset, box, {"samples": model.sample(500)}, "model")
    curve = fig.axes[0].lines[0]
    xs, density = curve.get_xdata(), curve.get_ydata()
    assert density == pytest.approx(model.pdf(xs[:, None]), abs=2e-3)  # box mass ~0.9996
    assert float(np.sum(density) * (xs[1] - xs[0])) == pytest.approx(1.0, abs=1e-9)
    bars = fig.axes[0].patches[0].get_path().vertices  # the data's density-normalised histogram
    assert bars[:, 0].min() == pytest.approx(box[0][0]) and bars[:, 0].max() == pytest.approx(
        box[0][1]
    )
    plt.close(fig)


def test_two_column_heatmap_is_exp_minus_e_normalised_beside_the_histogram_on_one_scale():
    dataset = table(2)
    model = ShiftedGaussian([0.5, -0.2], 1.3)  # wider than the data: the histogram peaks higher
    box = data_box(torch.cat([dataset.train, dataset.test]))
    fig = _table_density_2d(model, dataset, box, {"samples": model.sample(500)}, "model")
    histogram, heatmap = (ax.images[0] for ax in fig.axes[:2])
    x_low, x_high, y_low, y_high = heatmap.get_extent()
    cells = heatmap.get_array().shape[0]
    xs = x_low + (x_high - x_low) * (np.arange(cells) + 0.5) / cells
    ys = y_low + (y_high - y_low) * (np.arange(cells) + 0.5) / cells
    grid = np.stack(np.meshgrid(xs, ys), -1).reshape(-1, 2)  # rows in y, as imshow draws them
    expected = model.pdf(grid).reshape(cells, cells)
    assert np.asarray(heatmap.get_array()) == pytest.approx(expected, abs=2e-3)
    assert histogram.get_array().shape == (HISTOGRAM_BINS, HISTOGRAM_BINS)
    top = max(histogram.get_array().max(), expected.max())
    assert histogram.get_clim() == heatmap.get_clim() == (0, pytest.approx(top, rel=1e-3))
    plt.close(fig)


def test_a_model_that_is_no_density_says_so_and_shows_its_base():
    class Reweighting(ShiftedGaussian):
        energy_is_density = False

        def sample(self, n: int, from_base: bool = False) -> Tensor:
            return super().sample(n) + (2.0 if from_base else 0.0)

    fig = table_density_figure(Reweighting([0.0], 1.0), "gebm", table(1))
    titles = [ax.get_legend().get_texts()[0].get_text() for ax in fig.axes]
    assert titles == ["data (train split)", "samples (gebm.sample)", "samples of the base alone"]
    assert fig.axes[0].lines[0].get_label() == "re-weighting exp(-E)/Z, not p"
    assert histogram_mean(fig.axes[1]) == pytest.approx(0.0, abs=0.2)
    assert histogram_mean(fig.axes[2]) == pytest.approx(2.0, abs=0.2)  # the base's own draws
    plt.close(fig)


def test_the_report_states_the_ais_log_likelihood_before_the_grid_nll():
    both = {"nll_test_grid": 1.234, "loglik_test_ais": -11.0944, "loglik_test_ais_se": 0.1433}
    assert "-11.09 ± 0.14 nats" in _held_out_lines(both)[0]
    assert "1.234 nats" in _held_out_lines({"nll_test_grid": 1.234})[0]
    assert _held_out_lines({"kl": 0.1}) == []


@pytest.mark.slow
def test_a_one_column_table_trains_and_gets_its_density_report(tmp_path):
    """The N x 1 table once died in the report (and in previews) with an IndexError: the
    samples figure scattered a second column it does not have."""
    x = np.random.default_rng(0).normal(size=(2000, 1)).astype("float32")
    overrides = {"train": {"sample_every": 5, "eval_samples": 200}}
    run = ebmlab.train("cd", data=x, steps=10, out=tmp_path / "run", overrides=overrides)
    report = (tmp_path / "run" / "report.md").read_text()
    assert "![Data histogram, model density exp(-E)/Z and samples](density.png)" in report
    assert (tmp_path / "run" / "density.png").stat().st_size > 0
    assert (tmp_path / "run" / "samples" / "step_10.png").stat().st_size > 0
    assert math.isfinite(run.metrics["nll_test_grid"])
    assert f"Held-out NLL: **{run.metrics['nll_test_grid']:.4g} nats**" in report
