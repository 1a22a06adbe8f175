"""The scikit-learn estimators: scikit-learn's own checks, numbers on known data, every
method, Pipeline and GridSearchCV, and one clear error per kind of malformed input."""

import copy
import os
import pickle
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest
import torch
from sklearn.decomposition import PCA
from sklearn.exceptions import NotFittedError
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import GridSearchCV, StratifiedKFold
from sklearn.pipeline import make_pipeline
from sklearn.utils.estimator_checks import parametrize_with_checks

from ebmlab import EbmlabError, EnergyDensity, EnergyOutlierDetector, InvalidInputError, estimator
from ebmlab.methods import METHODS
from ebmlab.metrics import denoising_score_matching
from tests.helpers import TINY

# scikit-learn's checks fit dozens of times: a small net and short chains keep each fit short
FAST = {
    "steps": 20,
    "net": {"hidden": 16, "depth": 2},
    "method_params": {"langevin_steps": 5, "sample_steps": 20, "buffer_size": 256},
}
# Checks scikit-learn itself skips here, with its reasons: check_array_api_input ("SCIPY_ARRAY_API
# is not set", run below in a process that sets it) and, for the detectors,
# check_classifier_data_not_an_array ("pandas is not installed"). None is skipped or expected to
# fail by this file. The detector with contamination="auto" trains 100 steps: its box-plot fence
# flags the tail of a trained density, and a 20-step model, still nearly flat, had no tail on
# the checks' blobs to flag (0 of 300 rows), which two checks rightly demand.
CHECKED = [
    EnergyDensity(**FAST),
    EnergyOutlierDetector(contamination=0.1, **FAST),
    EnergyOutlierDetector(**{**FAST, "steps": 100}),
    EnergyDensity("dsm", **{**FAST, "method_params": {"sample_steps": 20}}),  # early stopping on
]


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Nets this small train fastest on one thread, and a shared machine stays usable."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@parametrize_with_checks(CHECKED)
def test_scikit_learn_checks(estimator, check):
    check(estimator)


ARRAY_API_CHECK = """
from sklearn.utils.estimator_checks import check_array_api_input
from tests.test_estimator import CHECKED
for estimator in CHECKED:
    name = type(estimator).__name__
    check_array_api_input(name, estimator, "numpy", expect_only_array_outputs=False)
print(len(CHECKED))
"""


def test_scikit_learn_array_api_check_with_scipy_array_api_set():
    """The check scikit-learn skips in this process: SCIPY_ARRAY_API must be set before scipy
    is imported, so it runs in a fresh one (NumPy inputs, as for any estimator without array
    API support)."""
    result = subprocess.run(
        [sys.executable, "-c", ARRAY_API_CHECK],
        env={**os.environ, "SCIPY_ARRAY_API": "1", "OMP_NUM_THREADS": "1"},
        cwd=Path(__file__).parents[1],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == [str(len(CHECKED))]


def test_a_rows_score_does_not_depend_on_the_rows_scored_with_it():
    """scikit-learn's subset-invariance check, at the default net's size (128 x 3), where
    float32 products gave one row alone and among 20 scores 5e-7 apart."""
    x = 3 * np.random.default_rng(0).uniform(size=(20, 3))
    density = EnergyDensity(steps=20, random_state=1).fit(x)
    together = density.score_samples(x)
    for size in (1, 3, 7, 16):
        batched = np.concatenate(
            [density.score_samples(x[i : i + size]) for i in range(0, 20, size)]
        )
        assert np.abs(batched - together).max() < 1e-12


SCALE = np.array([1.0, 2.0, 5.0, 10.0])
# the last column sits at 1e9, where float32 steps by 64: standardising must happen in float64
CENTRE = np.array([0.0, 3.0, -2.0, 1e9])


def gaussian(n: int, seed: int, spread: float = 1.0) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(n, 4)) * SCALE * spread + CENTRE


@pytest.fixture(scope="module")
def blob():
    return gaussian(1000, seed=0)


@pytest.fixture(scope="module")
def detector(blob):
    """The default method, `cd`, on a 4D Gaussian, briefly (200 steps, a narrower net)."""
    return EnergyOutlierDetector(
        steps=200, net={"hidden": 64}, contamination=0.1, random_state=0
    ).fit(blob)


def test_scores_fall_away_from_the_centre(detector):
    radii = np.array([0.0, 1.0, 2.0, 3.0, 4.0])
    ray = CENTRE + radii[:, None] * SCALE / 2  # |z| = radius along the diagonal
    scores = detector.score_samples(ray)
    assert np.all(np.diff(scores) < 0), scores
    assert scores[0] - scores[-1] > 5  # the Gaussian's own drop is 4^2 / 2 = 8


def test_detector_tells_far_rows_from_the_data(detector):
    far = gaussian(2000, seed=1, spread=4.0)
    far = far[(((far - CENTRE) / SCALE) ** 2).sum(1) > 25]  # beyond 5 standard deviations
    inliers = gaussian(500, seed=2)
    labels = np.r_[np.ones(len(inliers)), np.zeros(len(far))]
    auroc = roc_auc_score(labels, detector.decision_function(np.r_[inliers, far]))
    assert auroc > 0.9
    assert np.mean(detector.predict(far) == -1) > 0.9


def test_predict_flags_the_contamination_share_of_the_training_rows(detector, blob):
    flagged = np.mean(detector.predict(blob) == -1)
    assert abs(flagged - 0.1) <= 0.002
    decision = detector.decision_function(blob)
    assert np.allclose(decision, detector.score_samples(blob) - detector.offset_)


def test_samples_come_back_in_the_tables_units(detector, blob):
    samples = detector.sample(1000, random_state=0)
    assert samples.shape == (1000, 4)
    assert np.all(np.abs(samples.mean(0) - blob.mean(0)) < 0.25 * SCALE)
    assert np.all(np.abs(samples.std(0) / blob.std(0) - 1) < 0.15)
    assert np.array_equal(samples, detector.sample(1000, random_state=0))


def test_pickled_detector_predicts_the_same(detector, blob):
    copy = pickle.loads(pickle.dumps(detector))
    assert np.array_equal(copy.decision_function(blob), detector.decision_function(blob))


def test_auto_contamination_flags_only_rows_far_below_the_bulk(blob):
    detector = EnergyOutlierDetector("dsm", steps=200, net={"hidden": 64}, random_state=0)
    detector.fit(blob)
    assert 0 < np.mean(detector.predict(blob) == -1) < 0.08
    assert np.all(detector.predict(CENTRE + [[4, 4, 4, 4], [6, -6, 6, -6]] * SCALE) == -1)


def test_random_state_repeats_a_fit_and_leaves_torch_alone(blob):
    settings = {"method": "dsm", "steps": 30, "net": {"hidden": 32}}
    torch.manual_seed(123)
    before = torch.get_rng_state()
    first = EnergyDensity(**settings, random_state=7).fit(blob).score_samples(blob)
    assert torch.equal(torch.get_rng_state(), before)
    again = EnergyDensity(**settings, random_state=7).fit(blob).score_samples(blob)
    other = EnergyDensity(**settings, random_state=8).fit(blob).score_samples(blob)
    assert np.array_equal(first, again)
    assert not np.allclose(first, other)


def test_constant_column_is_centred_not_scaled():
    x = np.random.default_rng(0).normal(size=(200, 2))
    x[:, 1] = 0.1  # its float mean is not exactly 0.1: the spread is rounding, not data
    density = EnergyDensity("dsm", steps=20, net={"hidden": 16}, random_state=0).fit(x)
    assert density.scaler_.scale_[1] == 1
    near = density.score_samples([[0.0, 0.1], [0.0, 0.1001]])
    assert abs(near[0] - near[1]) < 0.01  # a scale of ~1e-8 would put the second row far off


def test_fit_leaves_no_directory_behind(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    EnergyDensity("dsm", steps=5, net={"hidden": 16}).fit(np.ones((20, 2)) * np.arange(20)[:, None])
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize("name", list(METHODS))
def test_every_method_fits_scores_and_samples_a_table(name):
    x = np.random.default_rng(0).normal(size=(64, 3)) * [1, 10, 100]
    settings = {"steps": 10, "net": {"hidden": 32, "depth": 2}, "method_params": TINY[name]}
    detector = EnergyOutlierDetector(name, random_state=0, **settings).fit(x)
    scores = detector.score_samples(x)
    assert scores.shape == (64,) and np.all(np.isfinite(scores))
    samples = detector.sample(8, random_state=0)
    assert samples.shape == (8, 3) and np.all(np.isfinite(samples))
    density = EnergyDensity(name, random_state=0, **settings).fit(x)
    if METHODS[name].energy_is_density:
        assert np.array_equal(density.score_samples(x), scores)
    else:  # gebm: -E re-weights the generator; the detector ranks by it, a density refuses
        with pytest.raises(InvalidInputError, match="not a log-density"):
            density.score_samples(x)
        assert density.sample(8, random_state=0).shape == (8, 3)


def test_pipeline_and_grid_search():
    rng = np.random.default_rng(0)
    inliers = rng.normal(size=(400, 3))
    outliers = rng.uniform(-6, 6, size=(60, 3))
    outliers = outliers[np.abs(outliers).max(1) > 4]
    pipeline = make_pipeline(PCA(2), EnergyDensity("dsm", steps=100, random_state=0))
    scores = pipeline.fit(inliers).score_samples([[0, 0, 0], [5, 5, 5]])
    assert scores[0] > scores[1]
    # the scores' constant (log Z) differs between fits: tune on labelled outliers by AUROC
    x = np.r_[inliers, outliers]
    y = np.r_[np.ones(len(inliers)), np.zeros(len(outliers))]
    search = GridSearchCV(
        EnergyOutlierDetector("dsm", net={"hidden": 32, "depth": 2}, random_state=0),
        {"steps": [1, 100]},
        scoring="roc_auc",
        cv=StratifiedKFold(3, shuffle=True, random_state=0),
    ).fit(x, y)
    assert search.best_params_ == {"steps": 100}
    assert search.cv_results_["mean_test_score"][1] > 0.95
    assert np.mean(search.predict(outliers) == -1) > 0.5


ROWS = np.random.default_rng(0).normal(size=(30, 2))


def with_value(value):
    x = ROWS.astype(object if value is None else float)
    x[3, 1] = value
    return x


# Bad input, 33 cases: 15 tables passed to fit, 8 parameter values, 6 queries (each asked of
# score_samples, decision_function and predict) and 4 other misuses. Each is one error with a
# clear message: an InvalidInputError, both an EbmlabError and the ValueError scikit-learn
# raises; but a dict in a table gets scikit-learn's TypeError and scoring before fit its
# NotFittedError, as its own checks demand.
# (case, what is passed to fit, what the one error says)
BAD_TABLES = [
    ("NaN", with_value(np.nan), "contains NaN"),
    ("infinity", with_value(np.inf), "contains infinity"),
    ("minus infinity", with_value(-np.inf), "contains infinity"),
    ("None in an object array", with_value(None), "contains NaN"),
    ("empty table", np.empty((0, 2)), "0 sample"),
    ("empty list", [], "Expected 2D array"),
    ("no columns", np.empty((5, 0)), "0 feature"),
    ("one row", ROWS[:1], "1 sample"),
    ("1D array", ROWS[:, 0], "Expected 2D array"),
    ("3D array", ROWS.reshape(3, 10, 2), "dim 3"),
    ("a scalar", 3.0, "Expected 2D array"),
    ("strings", np.array([["a", "b"]] * 10), "could not convert string to float"),
    ("ragged rows", [[1.0, 2.0], [3.0]] * 5, "inhomogeneous"),
    ("complex numbers", ROWS.astype(complex), "Complex data not supported"),
    ("huge values", with_value(1e300), "beyond float32's range"),
]
BAD_PARAMETERS = [
    ("unknown method", {"method": "nope"}, "unknown method 'nope'"),
    ("image net on a table", {"net": "conv"}, "needs image data"),
    ("net not a kind or dict", {"net": 3}, "net must be"),
    ("zero steps", {"steps": 0}, "steps == 0"),
    ("fractional steps", {"steps": 2.5}, "steps must be an instance of int"),
    ("unknown method option", {"method_params": {"nope": 1}}, r"unknown method option\(s\)"),
    ("unknown device", {"device": "tpu"}, "unknown device"),
    ("early stopping not a switch", {"early_stopping": "yes"}, "early_stopping must be"),
    (
        "early stopping without a held-out loss",
        {"method": "gebm", "early_stopping": True, "method_params": {}},
        "held-out rows",
    ),
    ("nothing to train on", {"validation_fraction": 1.0}, "validation_fraction == 1.0"),
    ("no patience", {"n_iter_no_change": 0}, "n_iter_no_change == 0"),
    (
        "latent wider than the table",
        {"method": "bounds", "method_params": {"z_dim": 64}},
        "exceeds",
    ),
]


@pytest.fixture(scope="module")
def small():
    """A detector fitted on columns of standard deviation 0.01."""
    return EnergyOutlierDetector("dsm", steps=5, net={"hidden": 16}, random_state=0).fit(ROWS / 100)


@pytest.mark.parametrize("case, table, message", BAD_TABLES, ids=[c[0] for c in BAD_TABLES])
def test_malformed_tables_get_one_clear_error(case, table, message):
    with pytest.raises(InvalidInputError, match=message) as caught:
        EnergyDensity(**FAST).fit(table)
    assert isinstance(caught.value, ValueError) and isinstance(caught.value, EbmlabError)


@pytest.mark.parametrize(
    "case, params, message", BAD_PARAMETERS, ids=[c[0] for c in BAD_PARAMETERS]
)
def test_invalid_parameters_get_one_clear_error(case, params, message):
    with pytest.raises(InvalidInputError, match=message):
        EnergyDensity(**{**FAST, **params}).fit(ROWS[:, :1])  # one column: bounds' z_dim is 2


BAD_QUERIES = [
    ("NaN", [[np.nan, 0.0]], "contains NaN"),
    ("other width", np.ones((3, 3)), "X has 3 features, but EnergyOutlierDetector is expecting 2"),
    ("empty", np.empty((0, 2)), "0 sample"),
    ("1D", [1.0, 2.0], "Expected 2D array"),
    ("huge values", [[1e300, 0.0]], "beyond float32's range"),
    ("beyond float32 once standardised", [[1e38, 0.0]], "standard deviations"),
]


@pytest.mark.parametrize("case, rows, message", BAD_QUERIES, ids=[c[0] for c in BAD_QUERIES])
def test_malformed_queries_get_one_clear_error(small, case, rows, message):
    for ask in (small.score_samples, small.decision_function, small.predict):
        with pytest.raises(InvalidInputError, match=message):
            ask(rows)


def test_other_misuses_get_one_clear_error(small):
    with pytest.raises(InvalidInputError, match="n_samples == 0"):
        small.sample(0)
    with pytest.raises(InvalidInputError, match="contamination == 0.7"):
        EnergyOutlierDetector(contamination=0.7, **FAST).fit(ROWS)
    with pytest.raises(NotFittedError):
        EnergyDensity().score_samples(ROWS)
    # a dict in a table is scikit-learn's TypeError, which its own checks demand
    with pytest.raises(TypeError, match="must be a string or a real number"):
        EnergyDensity(**FAST).fit([[{"a": 1}, 1.0]] * 10)


def early_stopped(monkeypatch, x, method="dsm", **params):
    """EnergyDensity(method) fitted on x with early stopping, and its `HeldOutMonitor`."""
    monitors = []

    class Recorded(estimator.HeldOutMonitor):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            monitors.append(self)

    monkeypatch.setattr(estimator, "HeldOutMonitor", Recorded)
    density = EnergyDensity(method, random_state=0, **params).fit(x)
    return density, monitors[0]


# 24 rows in 6 columns at a high learning rate: the held-out loss bottoms out and rises
OVERFIT = {"steps": 2000, "n_iter_no_change": 3, "method_params": {"lr": 1e-2}}
# cd's: its held-out score-matching loss rose from 3.07 at step 50 to 3.98 at 200, where it stopped
CD_OVERFIT = {
    "steps": 600,
    "n_iter_no_change": 3,
    "net": {"hidden": 32},
    "method_params": {"lr": 1e-2, "langevin_steps": 5},
}


def test_early_stopping_keeps_the_weights_of_the_lowest_held_out_loss(monkeypatch):
    x = np.random.default_rng(0).normal(size=(24, 6))
    density, monitor = early_stopped(monkeypatch, x, **OVERFIT)
    steps, losses = density.validation_loss_.T
    assert np.array_equal(steps, np.arange(1, len(steps) + 1) * 50)  # every 50 steps
    assert density.best_step_ == steps[losses.argmin()] < steps[-1] < 2000
    assert steps[-1] - density.best_step_ == 3 * 50  # stopped after 3 without a lower loss
    assert losses[-1] > losses.min()
    # the model kept scores the lowest loss again: the best weights, the same noise
    assert monitor.held_out_loss(density.method_) == pytest.approx(losses.min(), rel=1e-6)


def test_the_held_out_loss_is_measured_on_the_averaged_weights(monkeypatch):
    x = np.random.default_rng(0).normal(size=(24, 6))
    density, monitor = early_stopped(monkeypatch, x, **OVERFIT)
    assert density.config_.train.ema_decay > 0  # the tabular preset keeps an EMA
    averaged = copy.deepcopy(density.method_)
    monitor.trainer.emas["energy_net"].copy_to(averaged.energy_net)
    live = monitor.trainer.method  # the best weights are loaded into it: take the last live ones
    last = density.validation_loss_[-1, 1]
    assert monitor.held_out_loss(averaged) == pytest.approx(last, rel=1e-6)
    assert monitor.held_out_loss(live) != pytest.approx(last, rel=1e-3)


def test_held_out_rows_are_a_tenth_of_the_table_and_never_trained_on(monkeypatch):
    x = np.random.default_rng(0).normal(size=(95, 3))
    _, monitor = early_stopped(monkeypatch, x, steps=60)
    held_out = torch.unique(monitor.rows, dim=0)  # repeated to VALIDATION_DRAWS rows
    trained = monitor.trainer.train_data
    assert len(held_out) == 10 and len(trained) == 85  # ceil(0.1 x 95)
    assert len(monitor.rows) == 205 * 10  # ceil(2048 / 10) copies
    assert not (torch.cdist(held_out, trained) == 0).any()


def test_long_tables_hold_out_at_most_the_measured_draws(monkeypatch):
    x = np.random.default_rng(0).normal(size=(25_000, 2))
    _, monitor = early_stopped(monkeypatch, x, steps=1)
    assert len(monitor.rows) == estimator.VALIDATION_DRAWS == 2048  # not 2,500, not repeated
    assert len(monitor.trainer.train_data) == 25_000 - 2048


def test_early_stopping_is_on_by_default_only_where_the_loss_can_be_held_out():
    x = np.random.default_rng(0).normal(size=(30, 2))
    density = EnergyDensity("dsm", steps=120, random_state=0).fit(x)
    assert density.validation_loss_[:, 0].tolist() == [50, 100, 120]  # and at the last step
    assert len(density.history_) and density.best_step_ in (50, 100, 120)
    off = EnergyDensity("dsm", steps=120, early_stopping=False, random_state=0).fit(x)
    assert off.validation_loss_ is None and off.best_step_ == 120
    cd = EnergyDensity(steps=60, random_state=0, net={"hidden": 16}).fit(x)
    assert cd.validation_loss_[:, 0].tolist() == [50, 60]
    gebm = EnergyOutlierDetector("gebm", steps=20, random_state=0).fit(x)  # E re-weights G
    assert gebm.validation_loss_ is None and gebm.best_step_ == 20


def test_contrastive_methods_stop_on_the_held_out_score_matching_loss_of_their_energy(
    monkeypatch,
):
    x = np.random.default_rng(0).normal(size=(24, 6))
    density, monitor = early_stopped(monkeypatch, x, "cd", **CD_OVERFIT)
    steps, losses = density.validation_loss_.T
    assert density.best_step_ == steps[losses.argmin()] < steps[-1] < CD_OVERFIT["steps"]
    assert losses[-1] > losses.min() + 0.5
    generator = torch.Generator().manual_seed(monitor.seed)
    sigma = estimator.HELD_OUT_SIGMA
    kept = denoising_score_matching(density.method_.energy, monitor.rows, sigma, generator)
    assert float(kept) == pytest.approx(losses.min(), rel=1e-6)
