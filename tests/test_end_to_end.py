"""Each method trains on a 2D density and its exact KL to the data falls; the headline holds."""

import pytest
import torch

import ebmlab
from ebmlab.api import build_method_config, resolve_config
from ebmlab.data import load_dataset, toy2d
from ebmlab.methods import get_method
from ebmlab.metrics.mmd import mmd2
from ebmlab.metrics.toy2d import grid_density_metrics

pytestmark = pytest.mark.slow


def initial_kl(method_name, dataset):
    config = resolve_config(method_name, dataset, dataset.name, None, None)
    torch.manual_seed(config.train.seed)
    method = get_method(method_name)(build_method_config(config), dataset.shape)
    with torch.no_grad():
        return grid_density_metrics(method.energy, dataset.log_density, dataset.bounds)["kl"]


@pytest.mark.parametrize(
    ("name", "steps"),
    [
        ("cd", 600),
        ("shortrun", 600),
        ("dsm", 600),
        ("icd", 600),
        ("bidvl", 2000),
        ("bounds", 1000),
        ("dualmcmc", 400),
    ],
)
def test_kl_falls(name, steps, tmp_path):
    dataset = load_dataset("8gaussians")
    run = ebmlab.train(name, "8gaussians", steps=steps, out=tmp_path / name, progress=False)
    before = initial_kl(name, dataset)
    assert run.metrics["kl"] < 0.6 * before, (before, run.metrics["kl"])
    assert (tmp_path / name / "report.md").is_file()


def test_gebm_samples_approach_the_data(tmp_path):
    """GEBM's energy only re-weights its base, so it has no KL to score: its samples' MMD^2 to
    the test points falls far below the untrained model's, and the mass per mode evens out."""
    dataset = load_dataset("8gaussians")
    config = resolve_config("gebm", dataset, dataset.name, None, None)
    torch.manual_seed(config.train.seed)
    untrained = get_method("gebm")(build_method_config(config), dataset.shape)
    before = mmd2(untrained.sample(2000), dataset.test[:2000])
    run = ebmlab.train("gebm", "8gaussians", steps=2000, out=tmp_path / "gebm", progress=False)
    assert run.metrics["mmd2"] < 0.05 * before, (before, run.metrics["mmd2"])
    assert run.metrics["mode_weight_tv"] < 0.25


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


def test_composed_icd_models_sample_where_the_product_has_its_mass(tmp_path):
    """ICD's composition (Sec. 3.4) on a known answer: models of 8gaussians' components
    {0, 2, 4} (E, N, NE) and {2, 4, 6} (N, NE, NW) multiply to the N and NE modes alone."""
    centres = toy2d.MIXTURES["8gaussians"][0].float()

    def modes(x):
        distance = torch.cdist(x, centres)
        near = distance.min(1).values < 3 * toy2d.EIGHT_STD
        return torch.where(near, distance.argmin(1), -1)

    runs = [
        ebmlab.train(
            "icd",
            "8gaussians",
            steps=1000,
            out=tmp_path / name,
            overrides={"data": {"classes": classes}},
            evaluate=False,
            progress=False,
        )
        for name, classes in (("a", [0, 2, 4]), ("b", [2, 4, 6]))
    ]
    alone = modes(runs[0].model.sample(2000, seed=0))
    assert float(torch.isin(alone, torch.tensor([0, 2, 4])).float().mean()) > 0.85
    assert float((alone == 0).float().mean()) > 0.2  # model a alone visits E too
    both = modes(ebmlab.compose(runs).sample(2000, seed=0))
    assert float(torch.isin(both, torch.tensor([2, 4])).float().mean()) > 0.9
    assert float((both == 0).float().mean()) < 0.02 and float((both == 6).float().mean()) < 0.02
