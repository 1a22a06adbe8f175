"""The public API speaks the user's units: pixels 0..16 for digits, raw columns for tables."""

import numpy as np
import pytest
import torch

import ebmlab
from tests.helpers import TINY

TINY_IMAGE = {
    "method": {
        "energy_net": {"kind": "conv", "width": 8},
        "langevin_steps": 3,
        "sample_steps": 5,
        "buffer_size": 64,
    },
    "data": {"batch_size": 32},
    "train": {"sample_every": 0, "log_every": 5},
}


@pytest.fixture(scope="module")
def digits_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("api") / "digits"
    return ebmlab.train(
        "cd", "digits", steps=10, out=out, overrides=TINY_IMAGE, evaluate=False, progress=False
    )


def test_image_samples_come_back_in_pixel_units(digits_run):
    samples = digits_run.model.sample(6, seed=0)
    assert samples.shape == (6, 1, 8, 8)
    assert samples.min() >= 0 and samples.max() <= 16
    assert samples.max() > 1  # not the model's [-1, 1]


def test_energy_takes_pixels_in_the_users_layouts(digits_run):
    from sklearn.datasets import load_digits

    pixels = load_digits().images[:5]  # (5, 8, 8), values 0..16
    model = digits_run.model
    in_model_units = torch.as_tensor(pixels, dtype=torch.float32)[:, None] / 8 - 1
    expected = model.method.energy(in_model_units.to(model.method.device)).cpu()
    assert torch.allclose(model.energy(pixels), expected.detach(), atol=1e-5)
    for layout in (pixels[:, None], pixels[..., None]):  # a GPU may pick other conv kernels
        assert torch.allclose(model.energy(layout), model.energy(pixels), atol=1e-6)
    with pytest.raises(ebmlab.EbmlabError, match="expects"):
        model.energy(np.zeros((2, 7, 7)))


def test_loaded_run_scores_like_the_trained_one(digits_run):
    loaded = ebmlab.load(digits_run.path)
    x = np.random.default_rng(0).integers(0, 17, (4, 8, 8))
    assert torch.allclose(loaded.model.energy(x), digits_run.model.energy(x), atol=1e-6)


def test_own_ood_examples_in_user_units_get_their_auroc(digits_run):
    from sklearn.datasets import load_digits

    in_pixels = load_digits().images[:200]
    metrics = ebmlab.evaluate(
        digits_run,
        ood={"copies of data": in_pixels, "blank": np.zeros((200, 8, 8))},
        n_samples=50,
    )
    for name in ("copies of data", "blank"):
        assert 0.0 <= metrics[f"auroc/{name}"] <= 1.0
    assert (digits_run.path / "ood.png").is_file()


def test_tabular_array_round_trip_in_raw_units(tmp_path):
    rng = np.random.default_rng(0)
    table = rng.normal([100.0, -50.0], [10.0, 0.5], (2000, 2)).astype(np.float32)
    overrides = {
        "method": {"energy_net": {"kind": "mlp", "hidden": 32, "depth": 2}, **TINY["cd"]},
        "train": {"sample_every": 0},
    }
    run = ebmlab.train(
        "cd",
        table,
        steps=5,
        out=tmp_path / "t",
        overrides=overrides,
        evaluate=False,
        progress=False,
    )
    shift, scale = run.model.scaler.shift.cpu(), run.model.scaler.scale.cpu()  # maybe on a GPU
    assert torch.allclose(shift, torch.tensor([100.0, -50.0]), atol=1.0)
    x = table[:8]
    standardised = (torch.as_tensor(x) - shift) / scale
    expected = run.method.energy(standardised.to(run.method.device)).cpu()
    assert torch.allclose(run.model.energy(x), expected.detach(), atol=1e-5)
    samples = run.model.sample(500, seed=0)  # chains start in [-3, 3] standardised units
    assert 60 < float(samples[:, 0].mean()) < 140
    with pytest.raises(ebmlab.EbmlabError, match="in-memory array"):
        ebmlab.evaluate(ebmlab.load(tmp_path / "t"))


def test_unknown_method_and_resume_without_out_are_clear():
    with pytest.raises(ebmlab.EbmlabError, match="unknown method 'xyz'; choose one of: cd"):
        ebmlab.train("xyz")
    with pytest.raises(ebmlab.EbmlabError, match="resume needs the run directory"):
        ebmlab.train("cd", resume=True)


def test_config_file_data_options_reach_the_loader(tmp_path, monkeypatch):
    import ebmlab.api

    calls = []
    real_loader = ebmlab.api.load_dataset

    def recording_loader(spec, **options):
        calls.append((spec, options))
        return real_loader(spec, **options)

    monkeypatch.setattr(ebmlab.api, "load_dataset", recording_loader)
    config = tmp_path / "run.yaml"
    config.write_text(
        "method: {energy_net: {kind: mlp, hidden: 16, depth: 1}, langevin_steps: 2}\n"
        "data: {name: digits, n_train: 300, batch_size: 100}\n"
        "train: {sample_every: 0}\n"
    )
    run = ebmlab.train(
        "cd", "moons", steps=3, out=tmp_path / "r", config=config, evaluate=False, progress=False
    )
    assert run.config.data.name == "moons"  # the data given to train names the run
    assert run.config.data.n_train == 300
    assert calls == [("moons", {"n_train": 300, "seed": 0, "classes": None})]
    assert run.config.method_params["langevin_steps"] == 2
