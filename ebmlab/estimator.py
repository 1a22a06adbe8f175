"""scikit-learn estimators: fit an energy-based model to a table, then score or sample it.

    from ebmlab import EnergyDensity, EnergyOutlierDetector
    density = EnergyDensity(method="cd", random_state=0).fit(X)  # X: (n_samples, n_features)
    log_p = density.score_samples(X_new)  # -E(x): log-density up to a constant
    detector = EnergyOutlierDetector(contamination=0.05, random_state=0).fit(X)
    labels = detector.predict(X_new)  # +1 inlier, -1 outlier

A fit is an ordinary ebmlab training run (the method's preset, the `Trainer`) on the table
standardised per column, written to a temporary directory that is deleted when the fit ends,
and stopped early on a loss measured on held-out rows (`HeldOutMonitor`): the method's own
training loss where it can be measured so ("dsm"), else the denoising score-matching loss of
its energy (`ebmlab.metrics.denoising_score_matching`). A fitted estimator is saved by
pickling it (`pickle`, `joblib.dump`), as any scikit-learn one.
"""

from __future__ import annotations

import copy
import dataclasses
import math
import tempfile
from typing import Any

import numpy as np
import torch
from sklearn.base import BaseEstimator, DensityMixin, OutlierMixin
from sklearn.preprocessing import StandardScaler
from sklearn.utils import check_random_state, check_scalar
from sklearn.utils.validation import check_is_fitted, validate_data

from ebmlab.api import build_method_config, resolve_device
from ebmlab.config import RunConfig, find_preset, merge, read_yaml
from ebmlab.data import Dataset
from ebmlab.data.scaling import Scaler
from ebmlab.defaults import resolve_auto
from ebmlab.errors import EbmlabError, InvalidInputError
from ebmlab.methods import Method, get_method
from ebmlab.metrics.score_matching import denoising_score_matching
from ebmlab.train import Trainer

#: the model computes in float32: inputs and standardised values must fit its range
FLOAT32_MAX = float(np.finfo(np.float32).max)
#: rows per forward pass when scoring
SCORE_BATCH = 4096
#: early stopping: training steps between two measurements of the held-out loss
VALIDATION_EVERY = 50
#: early stopping of methods without a held-out loss of their own: the noise of the denoising
#: score-matching loss, in standardised units. Its least value is at the data smoothed by this
#: noise, so a large one stops a sharpening model too soon: "cd" (lr 1e-3, up to 3,000 steps, 3
#: seeds of benchmarks/tabular_anomaly.py) scored AUROC 0.639 / 0.780 / 0.830 / 0.833 on moons
#: at 0.3 / 0.1 / 0.05 / 0.03, while wine and iris were alike at each (0.946 to 0.951, 0.995);
#: the mean over the eight tables was 0.912 at 0.1 and 0.916 at 0.05.
HELD_OUT_SIGMA = 0.05
#: early stopping: at most this many rows are held out, so that a measurement costs about one
#: training step at any table length (8 ms against 7 ms, 13 columns, one thread: 2% of a fit at
#: one per 50 steps); fewer are repeated, each copy with its own noise, to at least this many
VALIDATION_DRAWS = 2048


def _check_scalar(value: Any, name: str, target_type: type | tuple[type, ...], **bounds) -> None:
    """scikit-learn's `check_scalar`, its errors as the library's `InvalidInputError`."""
    try:
        check_scalar(value, name, target_type, **bounds)
    except (TypeError, ValueError) as err:
        raise InvalidInputError(str(err)) from None


class _EnergyEstimator(BaseEstimator):
    """What both estimators share: parameters, `fit` and `sample` (see `EnergyDensity`)."""

    def __init__(
        self,
        method: str = "cd",
        *,
        net: str | dict[str, Any] = "mlp",
        steps: int | None = None,
        batch_size: int | None = None,
        method_params: dict[str, Any] | None = None,
        early_stopping: str | bool = "auto",
        validation_fraction: float = 0.1,
        n_iter_no_change: int = 5,
        device: str = "cpu",
        random_state: int | np.random.RandomState | None = None,
        verbose: bool = False,
    ):
        self.method = method
        self.net = net
        self.steps = steps
        self.batch_size = batch_size
        self.method_params = method_params
        self.early_stopping = early_stopping
        self.validation_fraction = validation_fraction
        self.n_iter_no_change = n_iter_no_change
        self.device = device
        self.random_state = random_state
        self.verbose = verbose

    def fit(self, X, y=None):
        """Train the energy-based model on X.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            The training table, in its own units; at least 2 rows.
        y : None
            Ignored; present for API consistency.

        Returns
        -------
        self : object
            The fitted estimator.

        Raises
        ------
        InvalidInputError
            (a ValueError) for data that cannot be used (NaN, infinite or huge values, an
            empty table, one row, a wrong shape, text) or an invalid parameter value.
        ebmlab.train.TrainingDiverged
            When a loss becomes NaN or infinite: lower the learning rate or step size.
        """
        X = self._validate(X, reset=True, ensure_min_samples=2)
        self.scaler_ = StandardScaler().fit(X)
        seed = int(check_random_state(self.random_state).randint(np.iinfo(np.int32).max))
        x = torch.as_tensor(self._standardised(X), dtype=torch.float32)
        config, method_config, device = self._run_config(seed, x)
        x_fit, x_held_out = self._held_out_split(x, seed)
        x_fit = x_fit.to(device)
        scaler = Scaler(torch.as_tensor(self.scaler_.mean_), torch.as_tensor(self.scaler_.scale_))
        dataset = Dataset("array", "tabular", x_fit, x_fit, scaler)
        devices = [device] if device.type == "cuda" else []
        # the user's global torch RNG is left as it was: fitting draws from its own seed
        with torch.random.fork_rng(devices=devices), tempfile.TemporaryDirectory() as run_dir:
            torch.manual_seed(seed)  # network initialisation repeats per random_state
            trainer = self._trainer(method_config, dataset, config, run_dir, device)
            monitor = None
            if x_held_out is not None:
                x_held_out = x_held_out.to(device)
                monitor = HeldOutMonitor(trainer, x_held_out, seed, self.n_iter_no_change)
            self.history_ = trainer.fit(stop_early=monitor)
            self._keep_final_weights(trainer, monitor)
        self.method_: Method = trainer.method.eval()
        self.config_ = config
        return self

    def _keep_final_weights(self, trainer: Trainer, monitor: HeldOutMonitor | None) -> None:
        """Leave the weights to score with in `trainer.method`: those of the lowest held-out
        loss, else the averaged ones (EMA on), else the last; and set `best_step_` and
        `validation_loss_`."""
        if monitor is not None:
            trainer.method.load_state_dict(monitor.best_state)
            self.best_step_ = monitor.best_step
            self.validation_loss_ = np.array(monitor.losses, dtype=np.float64)
            return
        for name, ema in trainer.emas.items():
            ema.copy_to(getattr(trainer.method, name))
        self.best_step_ = trainer.cfg.steps
        self.validation_loss_ = None

    def _held_out_split(
        self, x: torch.Tensor, seed: int
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(training rows, held-out rows): a random `validation_fraction` of x (at least one
        row, at most all but one and `VALIDATION_DRAWS`) held out when early stopping is on,
        else (x, None)."""
        if self.early_stopping not in ("auto", True, False):
            raise InvalidInputError(
                f"early_stopping must be 'auto', True or False, got {self.early_stopping!r}"
            )
        _check_scalar(
            self.validation_fraction,
            "validation_fraction",
            float,
            min_val=0,
            max_val=1,
            include_boundaries="neither",
        )
        _check_scalar(self.n_iter_no_change, "n_iter_no_change", int, min_val=1)
        has_loss = _has_held_out_loss(get_method(self.method))
        if self.early_stopping is True and not has_loss:
            raise InvalidInputError(
                f"early_stopping needs a loss that can be measured on held-out rows, which "
                f"{self.method!r} has not (its energy re-weights a generator, so neither its "
                "training loss nor score matching judges it alone): use early_stopping=False"
            )
        if self.early_stopping is False or not has_loss:
            return x, None
        share = max(1, math.ceil(self.validation_fraction * len(x)))
        n_held_out = min(len(x) - 1, VALIDATION_DRAWS, share)
        order = torch.randperm(len(x), generator=torch.Generator().manual_seed(seed))
        return x[order[n_held_out:]], x[order[:n_held_out]]

    def _trainer(self, method_config, dataset, config, run_dir, device) -> Trainer:
        try:
            method = get_method(config.method)(method_config, dataset.shape)
            return Trainer(method, dataset, config, run_dir, device, progress=self.verbose)
        except EbmlabError as err:  # e.g. a latent size larger than the table's width
            raise InvalidInputError(str(err)) from None

    def _run_config(self, seed: int, x: torch.Tensor) -> tuple[RunConfig, Any, torch.device]:
        """The method's tabular preset (else its 2D one: vectors, standardised scale) under
        this estimator's parameters, its `auto` values derived from the standardised training
        rows x; the run config, the method's config and the device."""
        for name, value in (("steps", self.steps), ("batch_size", self.batch_size)):
            if value is not None:
                _check_scalar(value, name, int, min_val=1)
        if isinstance(self.net, str):
            net = {"kind": self.net}
        elif isinstance(self.net, dict):
            net = self.net
        else:
            raise InvalidInputError(
                f"net must be an energy net kind ('mlp') or a dict of its options, got {self.net!r}"
            )
        try:
            preset = find_preset(self.method, "array", "tabular")
            tree = merge({"method": {"name": self.method}}, read_yaml(preset) if preset else {})
            train = {"seed": seed, "device": self.device, "sample_every": 0}
            train |= {"steps": self.steps} if self.steps is not None else {}
            data = {"name": "array"}
            data |= {"batch_size": self.batch_size} if self.batch_size is not None else {}
            extra = {"method": {"energy_net": net, **(self.method_params or {})}}
            tree = merge(tree, extra | {"data": data, "train": train})
            tree["method"] = resolve_auto(tree["method"], self.method_params or {}, x)
            config = RunConfig.from_dict(tree)
            # one checkpoint, at the end, into the temporary directory
            train_config = dataclasses.replace(config.train, ckpt_every=config.train.steps)
            config = dataclasses.replace(config, train=train_config)
            return config, build_method_config(config), resolve_device(self.device)
        except EbmlabError as err:
            raise InvalidInputError(str(err)) from None

    def _validate(self, X, reset: bool, ensure_min_samples: int = 1) -> np.ndarray:
        """X checked by scikit-learn (2D, numbers, finite) as float64, in float32's range."""
        try:
            X = validate_data(
                self, X, reset=reset, dtype=np.float64, ensure_min_samples=ensure_min_samples
            )
        except ValueError as err:
            raise InvalidInputError(str(err)) from None
        largest = float(np.abs(X).max())
        if largest > FLOAT32_MAX:
            raise InvalidInputError(
                f"X holds a value of magnitude {largest:.3g}, beyond float32's range "
                f"({FLOAT32_MAX:.3g}), in which the model computes: rescale the column"
            )
        return X

    def _standardised(self, X: np.ndarray) -> np.ndarray:
        """X in model units, standardised in float64 (no precision lost to large offsets),
        checked to lie in float32's range, in which the model trains."""
        z = self.scaler_.transform(X)
        largest = float(np.abs(z).max())
        if largest > FLOAT32_MAX:
            raise InvalidInputError(
                f"X holds a value {largest:.3g} training standard deviations from its column's "
                "mean, too far to score in float32"
            )
        return z

    def _negative_energy(self, X) -> np.ndarray:
        """-E(x) per row of X, computed in float64 by a float64 copy of the trained model.

        In float32 a row's score depends on the rows scored with it: the matrix products
        (MKL's, cuBLAS's) pick kernels and summation orders by the batch's size, so one row
        alone and the same row among 20 differed by up to 5e-7 (scikit-learn's subset
        invariance check allows 1e-7). In float64 such differences fall to about 1e-15.
        """
        check_is_fitted(self)
        z = self._standardised(self._validate(X, reset=False))
        scorer = copy.deepcopy(self.method_).double()
        x = torch.as_tensor(z, dtype=torch.float64, device=self.method_.device)
        with torch.no_grad():
            energies = [scorer.energy(chunk) for chunk in x.split(SCORE_BATCH)]
        return -torch.cat(energies).cpu().numpy()

    def sample(self, n_samples: int = 1, random_state=None) -> np.ndarray:
        """Draw samples by the method's own sampling procedure, in the training table's units.

        Parameters
        ----------
        n_samples : int, default=1
            The number of samples.
        random_state : int, RandomState instance or None, default=None
            Seeds the sampler; an int makes the draw repeatable. The global torch RNG is left
            as it was.

        Returns
        -------
        X : ndarray of shape (n_samples, n_features)
        """
        check_is_fitted(self)
        _check_scalar(n_samples, "n_samples", int, min_val=1)
        seed = int(check_random_state(random_state).randint(np.iinfo(np.int32).max))
        device = self.method_.device
        with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
            torch.manual_seed(seed)
            parts = [
                self.method_.sample(len(rows)).detach().cpu()
                for rows in torch.arange(n_samples).split(SCORE_BATCH)
            ]
        return self.scaler_.inverse_transform(torch.cat(parts).double().numpy())


class HeldOutMonitor:
    """Early stopping on a method's held-out loss (`held_out_loss`), as
    `Trainer.fit(stop_early=...)` calls it after each step.

    Every `VALIDATION_EVERY` steps and at the last, the loss of the evaluation weights (the EMA,
    where it is on) on the held-out rows, repeated to `VALIDATION_DRAWS` rows with the same noise
    at every measurement (a generator seeded alike), so that two measurements differ only by the
    weights. Keeps a copy of the weights with the lowest loss and asks to stop once
    `patience` measurements in a row have not gone below it.
    """

    def __init__(self, trainer: Trainer, x_held_out: torch.Tensor, seed: int, patience: int):
        self.trainer = trainer
        repeats = math.ceil(VALIDATION_DRAWS / len(x_held_out))
        self.rows = x_held_out.repeat(repeats, *([1] * (x_held_out.ndim - 1)))
        self.seed = seed
        self.patience = patience
        self.losses: list[tuple[int, float]] = []
        self.best_step, self.best_loss = 0, math.inf
        self.best_state: dict[str, torch.Tensor] = {}

    def __call__(self, step: int) -> bool:
        if step % VALIDATION_EVERY and step != self.trainer.cfg.steps:
            return False
        method = self.trainer.method
        with self.trainer.evaluation_weights():
            loss = self.held_out_loss(method)
            if loss < self.best_loss:
                self.best_step, self.best_loss = step, loss
                self.best_state = copy.deepcopy(method.state_dict())
        self.losses.append((step, loss))
        return step - self.best_step >= self.patience * VALIDATION_EVERY

    def held_out_loss(self, method: Method) -> float:
        """`method`'s held-out loss on the rows, with the same noise at every call."""
        generator = torch.Generator(self.rows.device).manual_seed(self.seed)
        parts = [
            _held_out_loss(method, chunk, generator) * len(chunk)
            for chunk in self.rows.split(SCORE_BATCH)
        ]
        return float(sum(parts) / len(self.rows))


def _has_held_out_loss(method_class: type[Method]) -> bool:
    """Whether `_held_out_loss` can judge the method: it has a held-out loss of its own, or its
    energy is a density, which score matching judges."""
    own = callable(getattr(method_class, "validation_loss", None))
    return own or method_class.energy_is_density


def _held_out_loss(method: Method, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """The method's own loss on held-out rows where it has one (`Method.validation_loss`: the
    training loss of "dsm"), else the denoising score-matching loss of its energy: the others'
    losses contrast the data with the model's own samples, which held-out rows cannot."""
    own = getattr(method, "validation_loss", None)
    if callable(own):
        return own(x, generator)
    return denoising_score_matching(method.energy, x, HELD_OUT_SIGMA, generator)


class EnergyDensity(DensityMixin, _EnergyEstimator):
    """Density estimation with an energy-based model, p(x) ∝ exp(−E(x)), trained by ebmlab.

    Each column of X is standardised (mean 0, standard deviation 1; constant columns are only
    centred), then any registered ebmlab method trains an MLP energy on the rows, with the
    method's preset for tables (`<method>_tabular`).

    Parameters
    ----------
    method : str, default="cd"
        A method of `ebmlab.METHODS`: "cd", "shortrun", "dsm", "icd", "gebm", "bidvl",
        "bounds", "dualmcmc". "gebm" learns an energy that re-weights its generator rather
        than a density: it fits and samples, but `score_samples` refuses it (use
        `EnergyOutlierDetector` to rank rows by its -E).
    net : str or dict, default="mlp"
        The energy network: its kind ("mlp"), or a dict of options laid over the preset's,
        e.g. ``{"hidden": 256, "depth": 4}``.
    steps : int, default=None
        Training iterations; None takes the preset's (3,000 for "cd", "dsm", "shortrun").
    batch_size : int, default=None
        Rows per training batch (at most the table's length); None takes the preset's.
    method_params : dict, default=None
        Further method options over the preset's, as in a config's `method` section, e.g.
        ``{"lr": 1e-4, "langevin_steps": 40}`` (see `ebmlab info` and each method's Config).
    early_stopping : "auto" or bool, default="auto"
        Hold out `validation_fraction` of the rows, measure a loss on them every 50 steps (the
        averaged weights, where the preset keeps an EMA), keep the weights of the lowest, and
        stop once `n_iter_no_change` measurements in a row have not gone below it. The loss is
        the method's training loss where it can be measured on held-out rows ("dsm"), else the
        denoising score-matching loss of its energy at noise `HELD_OUT_SIGMA` (0.05 standard
        deviations; `ebmlab.metrics.denoising_score_matching`), since the other losses contrast
        the data with the model's own samples. "auto" and True: on for every method whose
        energy is a density, off for "gebm" (True with it is an error). On small tables long
        training overfits: on scikit-learn's wine (49 training rows, 13 columns) the outlier
        AUROC after 3,000 steps without it was 0.643 for "dsm" and 0.490 for "cd" at lr 1e-3,
        and with it 0.927 and 0.946.
    validation_fraction : float, default=0.1
        The share of rows held out for early stopping (at least one row, at most all but one
        and 2,048, so that measuring stays cheap on long tables).
    n_iter_no_change : int, default=5
        Measurements (50 steps apart) without a new lowest held-out loss before stopping.
    device : str, default="cpu"
        "cpu", "cuda", "cuda:N" or "auto" (CUDA when available). The CPU is the default: the
        small MLPs of tables train faster there, and a fit repeats bit for bit. A model fitted
        on a GPU unpickles only where CUDA is available.
    random_state : int, RandomState instance or None, default=None
        Seeds the network's initialisation, the batch order and the sampler's noise: an int
        makes `fit` repeatable. The global torch RNG is left as it was.
    verbose : bool, default=False
        Show the training progress bar.

    Attributes
    ----------
    method_ : ebmlab.methods.Method
        The trained method, in model units (standardised columns), in eval mode.
    scaler_ : sklearn.preprocessing.StandardScaler
        The per-column standardisation between the table's units and the model's.
    config_ : ebmlab.config.RunConfig
        The resolved run configuration (preset, then this estimator's parameters).
    history_ : list of dict
        The training log: a row of losses every `train.log_every` steps, as metrics.jsonl.
    best_step_ : int
        The training step whose weights were kept: that of the lowest held-out loss with early
        stopping, else the last.
    validation_loss_ : ndarray of shape (n_measurements, 2) or None
        With early stopping, each measurement's step and held-out loss; else None.
    n_features_in_ : int
        Number of columns seen during `fit`.
    feature_names_in_ : ndarray of shape (n_features_in_,)
        Column names, when X had string column names.

    Notes
    -----
    `score_samples` is log p(x) only up to the constant log Z, which no method computes and
    which differs from one fit to the next: compare scores within one fitted model, not
    across models. To choose parameters with `GridSearchCV`, pass a scoring that is blind to
    that constant, e.g. the AUROC of `EnergyOutlierDetector` on labelled outliers.

    The model trains in float32 but scores in float64 (a copy of it), so that a row's score
    does not depend on which rows are scored with it, as float32 matrix products make it.

    Examples
    --------
    >>> import numpy as np
    >>> from ebmlab import EnergyDensity
    >>> X = np.random.default_rng(0).normal(size=(500, 3))
    >>> density = EnergyDensity(steps=300, random_state=0).fit(X)
    >>> scores = density.score_samples([[0, 0, 0], [4, 4, 4]])  # higher = more likely
    >>> bool(scores[0] > scores[1])
    True
    >>> density.sample(5, random_state=0).shape
    (5, 3)
    """

    def score_samples(self, X) -> np.ndarray:
        """Log-density of each row, up to an additive constant: -E(x).

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)

        Returns
        -------
        scores : ndarray of shape (n_samples,)
            Higher is more likely.
        """
        check_is_fitted(self)
        if not self.method_.energy_is_density:
            raise InvalidInputError(
                f"method {self.method!r} learns an energy that re-weights its generator, so "
                "-E(x) is not a log-density: use EnergyOutlierDetector to rank rows by it, or "
                "a method whose energy is a density (cd, shortrun, dsm, icd, ...)"
            )
        return self._negative_energy(X)

    def score(self, X, y=None) -> float:
        """Mean log-density of the rows of X, up to the model's additive constant.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
        y : None
            Ignored.

        Returns
        -------
        score : float
        """
        return float(np.mean(self.score_samples(X)))


class EnergyOutlierDetector(OutlierMixin, _EnergyEstimator):
    """Outlier detection by the energy of an EBM trained by ebmlab: high energy = outlier.

    Fits as `EnergyDensity` (same parameters) and, as scikit-learn's `IsolationForest`,
    thresholds the score of each row: ``decision_function = score_samples - offset_``, and
    `predict` is +1 (inlier) where it is >= 0, -1 (outlier) elsewhere.

    Parameters
    ----------
    method : str, default="cd"
        A method of `ebmlab.METHODS`. For "gebm" the score is -E, its learnt critic between
        the data and its generator, rather than a log-density.
    contamination : "auto" or float, default="auto"
        The share of outliers expected in the training data. A float in (0, 0.5]:
        `offset_` is that quantile of the training rows' scores. "auto": no share is assumed;
        `offset_` is the lower fence of a box plot of the training scores,
        Q1 - 1.5 (Q3 - Q1), so only rows scored far below the bulk of the training rows are
        outliers (a few percent of clean training rows fall below it).
    net, steps, batch_size, method_params, early_stopping, validation_fraction, \
    n_iter_no_change, device, random_state, verbose
        As for `EnergyDensity`.

    Attributes
    ----------
    offset_ : float
        The score below which a row is an outlier.
    method_, scaler_, config_, history_, best_step_, validation_loss_, n_features_in_, \
    feature_names_in_
        As for `EnergyDensity`.

    Examples
    --------
    >>> import numpy as np
    >>> from ebmlab import EnergyOutlierDetector
    >>> X = np.random.default_rng(0).normal(size=(500, 3))
    >>> detector = EnergyOutlierDetector(steps=300, contamination=0.05, random_state=0).fit(X)
    >>> detector.predict([[0, 0, 0], [6, 6, 6]])
    array([ 1, -1])
    """

    def __init__(
        self,
        method: str = "cd",
        *,
        contamination: str | float = "auto",
        net: str | dict[str, Any] = "mlp",
        steps: int | None = None,
        batch_size: int | None = None,
        method_params: dict[str, Any] | None = None,
        early_stopping: str | bool = "auto",
        validation_fraction: float = 0.1,
        n_iter_no_change: int = 5,
        device: str = "cpu",
        random_state: int | np.random.RandomState | None = None,
        verbose: bool = False,
    ):
        super().__init__(
            method,
            net=net,
            steps=steps,
            batch_size=batch_size,
            method_params=method_params,
            early_stopping=early_stopping,
            validation_fraction=validation_fraction,
            n_iter_no_change=n_iter_no_change,
            device=device,
            random_state=random_state,
            verbose=verbose,
        )
        self.contamination = contamination

    def fit(self, X, y=None):
        """Train on X and set `offset_` from the training rows' scores.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
        y : None
            Ignored.

        Returns
        -------
        self : object
        """
        if self.contamination != "auto":
            _check_scalar(
                self.contamination,
                "contamination",
                (float, int),
                min_val=0,
                max_val=0.5,
                include_boundaries="right",
            )
        super().fit(X)
        scores = self.score_samples(X)
        if self.contamination == "auto":
            q1, q3 = np.percentile(scores, [25, 75])
            self.offset_ = float(q1 - 1.5 * (q3 - q1))
        else:
            self.offset_ = float(np.percentile(scores, 100 * self.contamination))
        return self

    def score_samples(self, X) -> np.ndarray:
        """-E(x) per row: the opposite of the outlier score, higher = more normal.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)

        Returns
        -------
        scores : ndarray of shape (n_samples,)
        """
        return self._negative_energy(X)

    def decision_function(self, X) -> np.ndarray:
        """``score_samples(X) - offset_``: negative for outliers.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)

        Returns
        -------
        decision : ndarray of shape (n_samples,)
        """
        return self.score_samples(X) - self.offset_

    def predict(self, X) -> np.ndarray:
        """+1 for inliers, -1 for outliers.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)

        Returns
        -------
        labels : ndarray of shape (n_samples,)
        """
        return np.where(self.decision_function(X) >= 0, 1, -1)
