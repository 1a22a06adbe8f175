"""Each method trains on a 2D density and its exact KL to the data falls; the headline holds."""

import pytest
import torch

import ebmlab
from ebmlab.api import build_method_config, resolve_config
from ebmlab.data import load_dataset
from ebmlab.methods import get_method
from ebmlab.metrics.toy2d import grid_density_metrics

pytestmark = pytest.mark.slow


def initial_kl(method_name, dataset):
    config = resolve_config(method_name, dataset, dataset.name, None, None)
    torch.manual_seed(config.train.seed)
    method = get_method(method_name)(build_method_config(config), dataset.shape)
    with torch.no_grad():
        return grid_density_metrics(method.energy, dataset.log_density, dataset.bounds)["kl"]


@pytest.mark.parametrize(
    ("name", "steps"), [("cd", 600), ("shortrun", 600), ("dsm", 600), ("icd", 600)]
)
def test_kl_falls(name, steps, tmp_path):
    dataset = load_dataset("8gaussians")
    run = ebmlab.train(name, "8gaussians", steps=steps, out=tmp_path / name, progress=False)
    before = initial_kl(name, dataset)
    assert run.metrics["kl"] < 0.6 * before, (before, run.metrics["kl"])
    assert (tmp_path / name / "report.md").is_file()


def test_default_cd_reaches_half_a_nat_on_8gaussians(tmp_path):
    """The README's headline: `ebmlab train cd --data 8gaussians` (preset budget) KL <= 0.5."""
    run = ebmlab.train("cd", "8gaussians", out=tmp_path / "cd", progress=False)
    assert run.metrics["kl"] <= 0.5


@pytest.mark.parametrize("name", ["cd", "shortrun", "dsm", "icd"])
def test_images_train_and_report_samples_with_classifier_distance(name, tmp_path):
    overrides = {"method": {"energy_net": {"kind": "conv", "width": 16}}}
    run = ebmlab.train(
        name, "digits", steps=40, out=tmp_path / name, overrides=overrides, progress=False
    )
    for key in ("fd_classifier", "fd_classifier_floor", "kid", "feature_net_acc"):
        assert key in run.metrics
    assert run.metrics["feature_net_acc"] > 0.85
    assert run.metrics["fd_classifier"] > run.metrics["fd_classifier_floor"]
    assert (tmp_path / name / "samples.png").stat().st_size > 5000
