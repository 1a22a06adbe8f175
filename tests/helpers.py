"""Tiny method configs shared by the tests."""

from ebmlab.config import build_dataclass
from ebmlab.methods import METHODS

# Small enough to run in milliseconds; each method keeps its own algorithm and defaults otherwise.
TINY = {
    "cd": {
        "langevin_steps": 5,
        "buffer_size": 64,
        "step_size": 0.01,
        "noise": None,
        "init_low": -3.0,
        "init_high": 3.0,
        "sample_steps": 10,
        "alpha": 0.1,
    },
    "shortrun": {"langevin_steps": 5, "step_size": 0.01, "noise": None},
    "dsm": {"sample_steps": 10},
    "icd": {
        "langevin_steps": 4,
        "buffer_size": 64,
        "step_size": 0.01,
        "noise": None,
        "init_low": -3.0,
        "init_high": 3.0,
        "sample_rounds": 2,
        "sample_round_steps": 3,
        "entropy_after": 0,
    },
    "gebm": {
        "z_dim": 2,
        "generator": {"kind": "mlp", "hidden": 32, "depth": 2},
        "energy_steps": 2,
        "warmup_energy_steps": 1,
        "latent_steps": 10,
    },
    "bounds": {
        "z_dim": 2,
        "generator": {"kind": "mlp", "hidden": 32, "depth": 2},
        "penalty_weight": 0.1,
    },
    "dualmcmc": {
        "z_dim": 2,
        "generator": {"kind": "mlp", "hidden": 32, "depth": 2},
        "encoder": {"kind": "mlp", "hidden": 32, "depth": 2},
        "x_steps": 5,
        "z_steps": 3,
        "x_step_size": 0.01,
    },
    "bidvl": {
        "z_dim": 2,
        "encoder": {"kind": "mlp", "hidden": 32, "depth": 2},
        "generator": {"kind": "mlp", "hidden": 32, "depth": 2},
    },
}


def tiny_method(name: str, shape=(2,), **extra):
    cls = METHODS[name]
    params = {
        "energy_net": {"kind": "mlp", "hidden": 32, "depth": 2},
        **TINY.get(name, {}),
        **extra,
    }
    return cls(build_dataclass(cls.Config, params, "method"), shape)
