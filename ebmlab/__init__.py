"""ebmlab: train, sample, score and compare energy-based models.

import ebmlab
run = ebmlab.train("cd", data="8gaussians", steps=3000, out="runs/x")
x = run.model.sample(1000); e = run.model.energy(x)
run = ebmlab.load("runs/x")
ebmlab.evaluate(run, ood=["standard"])
both = ebmlab.compose(["runs/a", "runs/b"])   # product of experts: energies summed
detector = ebmlab.EnergyOutlierDetector().fit(X)  # scikit-learn style, on a table X
"""

from ebmlab.api import Model, Run, compose, load, train
from ebmlab.api import evaluate_run as evaluate
from ebmlab.errors import EbmlabError, InvalidInputError
from ebmlab.methods import METHODS

__version__ = "0.1.0"

#: imported on first use: scikit-learn's estimator machinery adds about a second to every
#: `import ebmlab`, and so to every CLI command
_ESTIMATORS = ("EnergyDensity", "EnergyOutlierDetector")


def __getattr__(name: str):
    if name in _ESTIMATORS:
        from ebmlab import estimator

        return getattr(estimator, name)
    raise AttributeError(f"module 'ebmlab' has no attribute {name!r}")


__all__ = [
    "METHODS",
    "EbmlabError",
    "EnergyDensity",
    "EnergyOutlierDetector",
    "InvalidInputError",
    "Model",
    "Run",
    "__version__",
    "compose",
    "evaluate",
    "load",
    "train",
]
