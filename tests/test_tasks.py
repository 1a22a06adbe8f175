"""Uses of a trained model: OOD sets and their AUROC, and composition of energies."""

import pytest
import torch
from torch import nn

from ebmlab.api import Model
from ebmlab.data import load_dataset
from ebmlab.data.scaling import Scaler
from ebmlab.errors import EbmlabError
from ebmlab.metrics import ood_table
from ebmlab.tasks import Composition, ood_set, standard_ood_sets
from tests.helpers import tiny_method


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits")


@pytest.fixture(scope="module")
def gaussians():
    return load_dataset("8gaussians")


def test_derived_image_sets_have_the_test_split_shape_and_range(digits):
    n = len(digits.test)
    for name in ("noise", "flipped", "inverted", "textures"):
        points = ood_set(name, digits)
        assert points.shape == (n, *digits.shape), name
        assert points.min() >= -1 and points.max() <= 1, name
    assert torch.equal(ood_set("flipped", digits), digits.test.flip(-2))
    assert torch.equal(ood_set("inverted", digits), -digits.test)
    noise = ood_set("noise", digits)
    assert float(noise.mean()) == pytest.approx(0.0, abs=0.02)
    assert float(noise.var()) == pytest.approx(1 / 3, rel=0.05)  # U[-1, 1]
    textures = ood_set("textures", digits)
    assert float(textures.flatten(1).std(1).min()) > 0  # every crop has structure
    assert torch.equal(textures, ood_set("textures", digits))  # seeded


def test_off_data_points_lie_where_the_data_density_is_low(gaussians):
    points = ood_set("off-data", gaussians)
    assert points.shape == gaussians.test.shape
    low, high = gaussians.bounds
    assert points.min() >= low and points.max() <= high
    threshold = torch.quantile(gaussians.log_density(gaussians.test).double(), 0.01)
    assert (gaussians.log_density(points).double() < threshold).all()


def test_the_true_density_separates_off_data_points(gaussians):
    """Scoring by the data's own log-density is the ideal detector: AUROC near 1."""
    table = ood_table(
        lambda x: -gaussians.log_density(x),
        gaussians.test,
        {name: ood_set(name, gaussians) for name in ("off-data", "noise")},
    )
    assert table["off-data"] >= 0.99  # only the test points below the 1st percentile overlap
    assert 0.8 < table["noise"] < 1.0  # uniform noise also lands on the modes sometimes


def test_sets_that_do_not_fit_the_data_are_refused(gaussians, digits):
    with pytest.raises(EbmlabError, match="made for image data"):
        ood_set("flipped", gaussians)
    with pytest.raises(EbmlabError, match="shape"):
        ood_set("8gaussians", digits)
    assert standard_ood_sets(gaussians) == ["noise", "off-data"]
    assert standard_ood_sets(digits) == ["noise", "flipped", "inverted", "textures"]


class Quadratic(nn.Module):
    """E(x) = |x - centre|^2 / 2: a unit Gaussian's energy."""

    def __init__(self, centre):
        super().__init__()
        self.centre = nn.Parameter(torch.tensor(centre))

    def forward(self, x):
        return (x - self.centre).pow(2).sum(1) / 2


def gaussian_model(centre, **sampler):
    method = tiny_method("icd", step_size=0.01, **sampler)
    method.energy_net = Quadratic(centre)
    return Model(method, Scaler.identity(), "toy2d")


def test_product_of_two_gaussians_has_the_closed_form_mean_and_variance():
    """N(a, I)^2 * N(b, I) ∝ N((2a + b) / 3, I / 3): weights are the product's exponents."""
    sampler = {"sample_rounds": 50, "sample_round_steps": 40, "init_low": -1.0, "init_high": 1.0}
    a = gaussian_model([2.0, 0.0], **sampler)
    b = gaussian_model([-1.0, 3.0])
    composition = Composition([a, b], weights=[2, 1])
    x = composition.sample(4000, seed=0)
    mean, var = x.mean(0), x.var(0)
    assert torch.allclose(mean, torch.tensor([1.0, 1.0]), atol=0.04)
    assert torch.allclose(var, torch.full((2,), 1 / 3), rtol=0.08)
    expected = 2 * a.energy(x) + b.energy(x)
    assert torch.allclose(composition.energy(x), expected, atol=1e-5)
    for model in (a, b):  # sampling froze and then restored the parameters
        assert all(p.requires_grad and p.grad is None for p in model.method.parameters())


def test_composition_refuses_mismatched_models():
    gaussian = gaussian_model([0.0, 0.0])
    with pytest.raises(EbmlabError, match="weights"):
        Composition([gaussian, gaussian], weights=[1.0])
    image = Model(tiny_method("icd", shape=(1, 8, 8)), Scaler.identity(), "image")
    with pytest.raises(EbmlabError, match="shapes differ"):
        Composition([gaussian, image])
    score_matching = Model(tiny_method("dsm"), Scaler.identity(), "toy2d")
    with pytest.raises(EbmlabError, match="put an icd, cd or gebm run first"):
        Composition([score_matching, gaussian])
    assert Composition([gaussian, score_matching]).sample(5).shape == (5, 2)
